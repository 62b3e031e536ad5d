"""The quarantine's records: refused messages kept sealed for the lab to inspect, replay or drop.

Raw bytes and reason are sealed with the lab's data key (the reason names the file, whose name
may be personal); the quarantine table is a personal-data table, reached only here. Each
function authorises its action and audits it; ``labvault.ingest`` decides what to quarantine
and what a replay does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

HELD, REPLAYED, DROPPED = "held", "replayed", "dropped"


@dataclass(frozen=True, slots=True)
class Quarantined:
    quarantine_id: str
    received_at: datetime
    format: str
    feed: str
    size: int
    status: str
    reason: str | None  # decrypted for the lab; None once dropped


def _seal(u: Unit, tenant_id: str, column: str, qid: str, value: bytes) -> tuple[bytes, int]:
    c = u._crypto(tenant_id)
    return c.cipher.column("quarantine", column).seal(qid, value), c.cipher.current_version


def put(u: Unit, tenant_id: str, raw: bytes, reason: str, *, fmt: str, feed: str) -> str:
    """Keep a refused message, encrypted. Allowed to whoever may ingest into the lab."""
    u._authorise(tenant_id, "patient:result:create")
    qid = new_id()
    raw_enc, version = _seal(u, tenant_id, "raw_enc", qid, raw)
    reason_enc, _ = _seal(u, tenant_id, "reason_enc", qid, reason.encode())
    u.conn.execute(
        insert(t.quarantine).values(
            tenant_id=tenant_id,
            quarantine_id=qid,
            received_at=utcnow(),
            format=fmt[:16],
            feed=feed[:16],
            size=len(raw),
            status=HELD,
            key_version=version,
            raw_enc=raw_enc,
            reason_enc=reason_enc,
        )
    )
    u._record(tenant_id, "quarantine:create", "quarantine", 1, refs=[qid, f"feed:{feed[:16]}"])
    return qid


def _item(u: Unit, tenant_id: str, row: Any) -> Quarantined:
    reason = None
    if row.reason_enc is not None:
        cipher = u._crypto(tenant_id).cipher.column("quarantine", "reason_enc")
        reason = cipher.open(row.quarantine_id, row.reason_enc).decode()
    return Quarantined(row.quarantine_id, row.received_at, row.format, row.feed, row.size, row.status, reason)


def listing(u: Unit, tenant_id: str, *, status: str | None = HELD) -> list[Quarantined]:
    u._authorise(tenant_id, "quarantine:read")
    q = t.quarantine
    stmt = select(q).where(u._tf(q, tenant_id)).order_by(q.c.received_at, q.c.quarantine_id)
    if status is not None:
        stmt = stmt.where(q.c.status == status)
    items = [_item(u, tenant_id, row) for row in u.conn.execute(stmt)]
    u._record(tenant_id, "quarantine:list", "quarantine", len(items))
    return items


def _row(u: Unit, tenant_id: str, qid: str) -> Any:
    q = t.quarantine
    row = u.conn.execute(select(q).where(u._tf(q, tenant_id), q.c.quarantine_id == qid)).first()
    if row is None:
        raise NotFound("no such quarantined message in this lab (see 'labvault quarantine list')")
    return row


def get(u: Unit, tenant_id: str, qid: str) -> tuple[Quarantined, bytes | None]:
    """The item and its raw bytes (None once replayed or dropped)."""
    from labvault.domain.identifiers import OBJECT_ID_RE

    if not OBJECT_ID_RE.match(qid):
        raise InvalidInput("a quarantine id is 1 to 64 letters, digits, '.', '_', ':' or '-'")
    u._authorise(tenant_id, "quarantine:read")
    row = _row(u, tenant_id, qid)
    raw = None
    if row.raw_enc is not None:
        raw = u._crypto(tenant_id).cipher.column("quarantine", "raw_enc").open(qid, row.raw_enc)
    u._record(tenant_id, "quarantine:read", "quarantine", 1, refs=[qid])
    return _item(u, tenant_id, row), raw


def resolve(u: Unit, tenant_id: str, qid: str, status: str) -> None:
    """Mark an item replayed or dropped; its ciphertexts are erased either way."""
    if status not in (REPLAYED, DROPPED):
        raise ValueError(status)
    u._authorise(tenant_id, "quarantine:manage")
    row = _row(u, tenant_id, qid)
    if row.status != HELD:
        raise InvalidInput(f"this message was already {row.status}")
    q = t.quarantine
    u.conn.execute(
        update(q)
        .where(u._tf(q, tenant_id), q.c.quarantine_id == qid)
        .values(
            status=status,
            raw_enc=None,
            reason_enc=None,
            resolved_at=utcnow(),
            resolved_by=u.principal.account_id,
        )
    )
    u._record(tenant_id, f"quarantine:{'replay' if status == REPLAYED else 'drop'}", "quarantine", 1, refs=[qid])


def update_reason(u: Unit, tenant_id: str, qid: str, reason: str) -> None:
    """A replay that failed again: the item stays held with the new reason."""
    u._authorise(tenant_id, "quarantine:manage")
    _row(u, tenant_id, qid)
    reason_enc, _ = _seal(u, tenant_id, "reason_enc", qid, reason.encode())
    q = t.quarantine
    u.conn.execute(update(q).where(u._tf(q, tenant_id), q.c.quarantine_id == qid).values(reason_enc=reason_enc))
    u._record(tenant_id, "quarantine:replay-failed", "quarantine", 1, refs=[qid])
