"""Storing ingested messages through the gateway: idempotency, identity matching, the quarantine.

A message (an HL7 v2 message, an HPRIM file, a FHIR bundle) is stored whole or not at all: its
patients, prescribers, requests, specimens and results go into the caller's unit, with the
message's idempotency key, so the same message received again creates nothing. Several messages
may share one unit (group commit); each is still complete or absent.

A patient already known to the lab (same INS, by blind index) keeps its id: a new message adds
requests to the existing identity. Prescribers are matched by RPPS the same way.

Refused messages go to the quarantine: raw bytes and reason sealed with the lab's data key (the
reason names the file, whose name may be personal), for the lab to inspect, replay or drop.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from labvault.domain.identifiers import normalise_nir
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.domain.mapped import Mapped

_CHUNK = 500
_CODE = re.compile(r"[^\s]+( [^\s]+)*\Z")  # a FHIR code: what every export format can carry
_SYSTEM = re.compile(r"\S+\Z")
HELD, REPLAYED, DROPPED = "held", "replayed", "dropped"


def message_key(sending_facility: str, control_id: str) -> str:
    """The idempotency key of a message: a hash, so that no identifier is kept in clear."""
    return sha256(f"{sending_facility}\x1f{control_id}".encode()).hexdigest()


@dataclass(slots=True)
class Envelope:
    """One message to store whole: its key, its format and what it maps to (one or more patients)."""

    key: str
    format: str
    mapped: list[Mapped]

    @property
    def results(self) -> int:
        return sum(len(m.results) for m in self.mapped)


def check(envelope: Envelope) -> None:
    """What the store would refuse, found before any write, so that one bad message does not
    roll back the others of its group. Raises ``InvalidInput`` naming no value."""
    from labvault.domain.identifiers import validate_nir
    from labvault.interop._common import is_finite

    for m in envelope.mapped:
        ident = m.identity
        if ident.ins_oid.endswith(".8"):
            try:
                validate_nir(ident.nir)
            except InvalidInput:
                raise InvalidInput("PID/P: INS-NIR is not a valid NIR (bad length, format or key)") from None
        elif not normalise_nir(ident.nir):
            raise InvalidInput("PID/P: INS-NIA is empty")
        for k, r in enumerate(m.results, 1):
            if not _CODE.match(r.code) or not _SYSTEM.match(r.code_system):
                raise InvalidInput("result code or code system is not a code (empty, control characters or "
                                   "stray whitespace)")
            for x in (r.value_num, r.ref_low, r.ref_high):
                if x is not None and not is_finite(x):  # every reader refuses these first, at their field
                    raise InvalidInput(f"result {k}: a number is not finite (NaN or infinity)")


def store(u: Unit, tenant_id: str, envelopes: Sequence[Envelope], *, feed: str, instruction: str | None = None
          ) -> list[str]:
    """Store each envelope not stored before; returns ``accepted`` or ``duplicate`` for each.
    ``instruction``: the id of the lab's instruction the messages come in under (named in the audit)."""
    u._authorise(tenant_id, "patient:result:create")
    refs = [f"feed:{feed}"] + ([instruction] if instruction else [])
    keys = [e.key for e in envelopes]
    known: set[str] = set()
    im = t.ingest_message
    for k in range(0, len(keys), _CHUNK):
        known.update(
            u.conn.execute(
                select(im.c.message_key).where(u._tf(im, tenant_id), im.c.message_key.in_(keys[k : k + _CHUNK]))
            ).scalars()
        )
    outcomes: list[str] = []
    fresh: list[Envelope] = []
    for e in envelopes:
        if e.key in known:
            outcomes.append("duplicate")
            continue
        known.add(e.key)
        fresh.append(e)
        outcomes.append("accepted")
    duplicates = len(envelopes) - len(fresh)
    if duplicates:
        u._record(tenant_id, "ingest:duplicate", "message", duplicates, refs=refs)
    if not fresh:
        return outcomes
    mapped = [m for e in fresh for m in e.mapped]
    patient_ids = _match_patients(u, tenant_id, mapped)
    prescriber_ids = _match_prescribers(u, tenant_id, mapped)
    new_patients = {}
    new_prescribers = {}
    requests, specimens, results = [], [], []
    for m in mapped:
        pid = patient_ids[m.identity.patient_id]
        if pid == m.identity.patient_id:
            new_patients.setdefault(pid, m.identity)
        for p in m.prescribers:
            if prescriber_ids[p.prescriber_id] == p.prescriber_id:
                new_prescribers.setdefault(p.prescriber_id, p)
        for r in m.requests:
            requests.append(dataclasses.replace(
                r, patient_id=patient_ids.get(r.patient_id, r.patient_id),
                prescriber_id=prescriber_ids.get(r.prescriber_id, r.prescriber_id) if r.prescriber_id else None,
            ))
        specimens.extend(m.specimens)
        results.extend(m.results)
    if new_patients:
        u.add_patients(tenant_id, list(new_patients.values()))
    if new_prescribers:
        u.add_prescribers(tenant_id, list(new_prescribers.values()))
    u.add_requests(tenant_id, requests)
    if specimens:
        u.add_specimens(tenant_id, specimens)
    if results:
        u.add_results(tenant_id, results)
    now = utcnow()
    u.conn.execute(
        insert(im),
        [
            {"tenant_id": tenant_id, "message_key": e.key, "format": e.format, "feed": feed, "received_at": now,
             "requests": sum(len(m.requests) for m in e.mapped), "results": e.results}
            for e in fresh
        ],
    )
    u._record(tenant_id, "ingest:message", "message", len(fresh), refs=refs)
    return outcomes


def _match_patients(u: Unit, tenant_id: str, mapped: Sequence[Mapped]) -> dict[str, str]:
    """Mapped patient id -> the id to store under: the lab's existing patient with the same INS,
    or the first patient of this batch with it, or the mapped id itself."""
    c = u._crypto(tenant_id)
    pi = t.patient_identity
    return _match(u, tenant_id, pi, pi.c.nir_bidx, pi.c.patient_id,
                  [(c.index.nir(normalise_nir(m.identity.nir)), m.identity.patient_id) for m in mapped])


def _match_prescribers(u: Unit, tenant_id: str, mapped: Sequence[Mapped]) -> dict[str, str]:
    """The same for prescribers, by RPPS."""
    c = u._crypto(tenant_id)
    pr = t.prescriber
    return _match(u, tenant_id, pr, pr.c.rpps_bidx, pr.c.prescriber_id,
                  [(c.index.rpps(p.rpps), p.prescriber_id) for m in mapped for p in m.prescribers])


def _match(u: Unit, tenant_id: str, table, bidx_col, id_col, pairs: list[tuple[bytes, str]]) -> dict[str, str]:
    """(blind index, mapped id) pairs -> {mapped id: stored id}: the stored row with the same blind
    index if there is one, else the first mapped id with it."""
    by_bidx: dict[bytes, list[str]] = {}
    for bidx, i in pairs:
        by_bidx.setdefault(bidx, []).append(i)
    existing: dict[bytes, str] = {}
    bidxs = list(by_bidx)
    for k in range(0, len(bidxs), _CHUNK):
        for bidx, stored in u.conn.execute(
            select(bidx_col, id_col).where(u._tf(table, tenant_id), bidx_col.in_(bidxs[k : k + _CHUNK]))
        ):
            existing.setdefault(bytes(bidx), stored)
    return {i: existing.get(bidx, ids[0]) for bidx, ids in by_bidx.items() for i in ids}


# -- the quarantine ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Quarantined:
    quarantine_id: str
    received_at: datetime
    format: str
    feed: str
    size: int
    status: str
    reason: str | None  # decrypted for the lab; None once dropped


def _seal(u: Unit, tenant_id: str, column: str, qid: str, value: bytes):
    c = u._crypto(tenant_id)
    return c.cipher.column("quarantine", column).seal(qid, value), c.cipher.current_version


def put(u: Unit, tenant_id: str, raw: bytes, reason: str, *, fmt: str, feed: str) -> str:
    """Keep a refused message, encrypted. Allowed to whoever may ingest into the lab."""
    u._authorise(tenant_id, "patient:result:create")
    qid = new_id()
    raw_enc, version = _seal(u, tenant_id, "raw_enc", qid, raw)
    reason_enc, _ = _seal(u, tenant_id, "reason_enc", qid, reason.encode())
    u.conn.execute(insert(t.quarantine).values(
        tenant_id=tenant_id, quarantine_id=qid, received_at=utcnow(), format=fmt[:16], feed=feed[:16], size=len(raw),
        status=HELD, key_version=version, raw_enc=raw_enc, reason_enc=reason_enc,
    ))
    u._record(tenant_id, "quarantine:create", "quarantine", 1, refs=[qid, f"feed:{feed[:16]}"])
    return qid


def _item(u: Unit, tenant_id: str, row) -> Quarantined:
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


def _row(u: Unit, tenant_id: str, qid: str):
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
        update(q).where(u._tf(q, tenant_id), q.c.quarantine_id == qid).values(
            status=status, raw_enc=None, reason_enc=None, resolved_at=utcnow(), resolved_by=u.principal.account_id,
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
