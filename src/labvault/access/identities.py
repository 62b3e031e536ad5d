"""Identity vigilance, the gateway's side: the queue of messages whose identity conflicts, an
identity's status and its changes, merges and unmerges.

The queue (``identity_queue``, a personal table): a message whose INS or local identifier points
to a stored identity with other traits is kept whole, sealed with the lab's data key like the
quarantine (``raw_enc``: the message's idempotency key, a newline, its bytes), with a reason code
(``labvault.access.matching.REASONS``) and the candidate identity's id, until the lab's staff
attach it (to the candidate or another identity), create a new identity for it, or reject it.
Resolving erases the sealed bytes; the row stays as the record of the decision.

Merges: ``merge(kept, merged)`` moves the merged identity's requests and results (their
pseudonym; specimens carry none) to the kept identity, records which requests moved
(``identity_merge``) and sets ``merged_into``; ``unmerge`` moves exactly those back. Status
changes keep who, when and on what evidence (a code of ``EVIDENCE``, never a document's value).
Every operation is authorised by the policy table and audited with ids only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from labvault.domain.identifiers import OBJECT_ID_RE, normalise_nir, validate_nir
from labvault.domain.models import Identity, IdentityStatus
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.interop.hl7v2_adt import PatientMerge

HELD, ATTACHED, CREATED, REJECTED = "held", "attached", "created", "rejected"
QUEUE_STATUSES = (HELD, ATTACHED, CREATED, REJECTED)
# What a status change rests on: a code, never a document's number or content.
EVIDENCE = ("id-card", "passport", "residence-permit", "family-record-book", "birth-certificate", "insi", "other")
SOURCES = ("cli", "api", "hl7-a40")
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Queued:
    """A message waiting in the identity-vigilance queue (no personal value: codes and ids)."""

    queue_id: str
    received_at: datetime
    format: str
    feed: str
    reason: str
    candidate_id: str | None
    status: str
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolved_to: str | None = None


@dataclass(frozen=True, slots=True)
class Merge:
    merge_id: str
    kept_id: str
    merged_id: str
    requests: int
    merged_by: str
    merged_at: datetime
    source: str
    undone_by: str | None = None
    undone_at: datetime | None = None


@dataclass(slots=True)
class IdentityView:
    """An identity as the lab's staff see it: the record, its status change, its merges."""

    identity: Identity
    status_changed_by: str | None
    status_changed_at: datetime | None
    status_evidence: str | None
    merged_from: list[str] = field(default_factory=list)  # identities merged into this one
    merges: list[Merge] = field(default_factory=list)


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not OBJECT_ID_RE.match(value):
        raise NotFound(f"no such {what} in this lab")


# -- the queue ---------------------------------------------------------------------------------


def put(
    u: Unit, tenant_id: str, key: str, raw: bytes, *, fmt: str, feed: str, reason: str, candidate_id: str | None
) -> str:
    """Keep a message whose identity conflicts, sealed. Allowed to whoever may ingest into the lab."""
    u._authorise(tenant_id, "patient:result:create")
    c = u._crypto(tenant_id)
    qid = new_id()
    sealed = c.cipher.column("identity_queue", "raw_enc").seal(qid, key.encode() + b"\n" + bytes(raw))
    u.conn.execute(
        insert(t.identity_queue).values(
            tenant_id=tenant_id,
            queue_id=qid,
            received_at=utcnow(),
            format=fmt[:16],
            feed=feed[:16],
            reason=reason[:32],
            candidate_id=candidate_id,
            status=HELD,
            key_version=c.cipher.current_version,
            raw_enc=sealed,
        )
    )
    u._record(tenant_id, "identity:queue", "message", 1, refs=[qid] + ([candidate_id] if candidate_id else []))
    return qid


def _queued(row: Any) -> Queued:
    return Queued(
        row.queue_id,
        row.received_at,
        row.format,
        row.feed,
        row.reason,
        row.candidate_id,
        row.status,
        row.resolved_at,
        row.resolved_by,
        row.resolved_to,
    )


def listing(u: Unit, tenant_id: str, *, status: str | None = HELD) -> list[Queued]:
    u._authorise(tenant_id, "identity:queue:read")
    if status is not None and status not in QUEUE_STATUSES:
        raise InvalidInput(f"a queue status is one of {', '.join(QUEUE_STATUSES)}")
    q = t.identity_queue
    stmt = select(q).where(u._tf(q, tenant_id)).order_by(q.c.received_at, q.c.queue_id)
    if status is not None:
        stmt = stmt.where(q.c.status == status)
    items = [_queued(r) for r in u.conn.execute(stmt)]
    u._record(tenant_id, "identity:queue:list", "message", len(items))
    return items


def _row(u: Unit, tenant_id: str, qid: str) -> Any:
    if not isinstance(qid, str) or not OBJECT_ID_RE.match(qid):
        raise InvalidInput("a queue id is 1 to 64 letters, digits, '.', '_', ':' or '-'")
    q = t.identity_queue
    row = u.conn.execute(select(q).where(u._tf(q, tenant_id), q.c.queue_id == qid)).first()
    if row is None:
        raise NotFound("no such queued message in this lab (see 'labvault identity queue')")
    return row


def get(u: Unit, tenant_id: str, qid: str) -> tuple[Queued, str | None, bytes | None]:
    """The item, its message key and its bytes (None once resolved)."""
    u._authorise(tenant_id, "identity:queue:read")
    row = _row(u, tenant_id, qid)
    key = raw = None
    if row.raw_enc is not None:
        blob = u._crypto(tenant_id).cipher.column("identity_queue", "raw_enc").open(qid, bytes(row.raw_enc))
        head, _, raw = blob.partition(b"\n")
        key = head.decode()
    u._record(tenant_id, "identity:queue:read", "message", 1, refs=[qid])
    return _queued(row), key, raw


def close(u: Unit, tenant_id: str, qid: str, status: str, resolved_to: str | None) -> Queued:
    """Record the lab's decision on a held message; its sealed bytes are erased."""
    if status not in (ATTACHED, CREATED, REJECTED):
        raise ValueError(status)
    u._authorise(tenant_id, "identity:resolve")
    row = _row(u, tenant_id, qid)
    if row.status != HELD:
        raise InvalidInput(f"this message was already {row.status}")
    q = t.identity_queue
    u.conn.execute(
        update(q)
        .where(u._tf(q, tenant_id), q.c.queue_id == qid)
        .values(
            status=status,
            raw_enc=None,
            resolved_at=utcnow(),
            resolved_by=u.principal.account_id,
            resolved_to=resolved_to,
        )
    )
    action = {ATTACHED: "identity:attach", CREATED: "identity:create", REJECTED: "identity:reject"}[status]
    u._record(tenant_id, action, "message", 1, refs=[qid] + ([resolved_to] if resolved_to else []))
    return _queued(_row(u, tenant_id, qid))


def authorise_resolve(u: Unit, tenant_id: str) -> None:
    """Fail before any work when this principal may not resolve queued messages."""
    u.authorise(tenant_id, "identity:resolve")


# -- identities --------------------------------------------------------------------------------


def _identity_row(u: Unit, tenant_id: str, patient_id: str) -> Any:
    _check_id(patient_id, "patient")
    pi = t.patient_identity
    row = u.conn.execute(select(pi).where(u._tf(pi, tenant_id), pi.c.patient_id == patient_id)).first()
    if row is None:
        raise NotFound("no such patient in this lab")
    return row


def live_patient(u: Unit, tenant_id: str, patient_id: str) -> str:
    """A stored identity that was not merged into another (to attach a message to it)."""
    u._authorise(tenant_id, "identity:resolve")
    row = _identity_row(u, tenant_id, patient_id)
    if row.merged_into:
        raise InvalidInput("this identity was merged into another: attach to that one")
    return str(row.patient_id)


def _merges(u: Unit, tenant_id: str, patient_id: str) -> list[Merge]:
    m = t.identity_merge
    rows = u.conn.execute(
        select(m)
        .where(u._tf(m, tenant_id), (m.c.kept_id == patient_id) | (m.c.merged_id == patient_id))
        .order_by(m.c.merged_at, m.c.merge_id)
    ).all()
    return [
        Merge(
            r.merge_id,
            r.kept_id,
            r.merged_id,
            len(json.loads(r.requests)),
            r.merged_by,
            r.merged_at,
            r.source,
            r.undone_by,
            r.undone_at,
        )
        for r in rows
    ]


def show(u: Unit, tenant_id: str, patient_id: str) -> IdentityView:
    """An identity with its status change and merge links (the read is audited)."""
    ident = u.get_patient(tenant_id, patient_id)
    row = _identity_row(u, tenant_id, patient_id)
    pi = t.patient_identity
    merged_from = list(
        u.conn.execute(
            select(pi.c.patient_id)
            .where(u._tf(pi, tenant_id), pi.c.merged_into == patient_id)
            .order_by(pi.c.patient_id)
        ).scalars()
    )
    return IdentityView(
        ident,
        row.status_changed_by,
        row.status_changed_at,
        row.status_evidence,
        merged_from,
        _merges(u, tenant_id, patient_id),
    )


def change_status(
    u: Unit, tenant_id: str, patient_id: str, to: IdentityStatus | str, *, evidence: str, ins: str | None = None
) -> None:
    """Set an identity's status, recording who, when and on what evidence (a code of ``EVIDENCE``).
    ``qualified`` and ``recovered`` need an INS: the stored one, or ``ins`` (an INS-NIR, checked),
    recorded then."""
    try:
        status = IdentityStatus(to)
    except ValueError:
        raise InvalidInput(f"a status is one of {', '.join(s.value for s in IdentityStatus)}") from None
    if evidence not in EVIDENCE:
        raise InvalidInput(f"the evidence is a code, one of {', '.join(EVIDENCE)}")
    value = validate_nir(ins) if ins else None
    u._authorise(tenant_id, "identity:status")
    c = u._crypto(tenant_id)
    row = _identity_row(u, tenant_id, patient_id)
    if row.merged_into:
        raise InvalidInput("this identity was merged into another: change that one's status")
    changes: dict[str, Any] = {}
    if value is not None:
        bidx = c.index.nir(value)
        if row.nir_bidx is not None and bytes(row.nir_bidx) != bidx:
            raise InvalidInput("this identity holds another INS: it is not replaced by a status change")
        pi = t.patient_identity
        other = u.conn.execute(
            select(pi.c.patient_id).where(
                u._tf(pi, tenant_id), pi.c.nir_bidx == bidx, pi.c.patient_id != patient_id, pi.c.merged_into.is_(None)
            )
        ).first()
        if other is not None:
            raise InvalidInput("another identity of this lab holds this INS: merge them, or check the INS")
        if row.nir_bidx is None:
            changes.update(
                nir_bidx=bidx,
                nir_enc=c.cipher.column("patient_identity", "nir_enc").seal(patient_id, normalise_nir(value).encode()),
                ins_oid="1.2.250.1.213.1.4.8",
                key_version=row.key_version,
            )
            if c.cipher.current_version != row.key_version:
                raise InvalidInput("this identity is sealed under an older key: rotate the lab's keys first")
    has_ins = row.nir_bidx is not None or value is not None
    if status in (IdentityStatus.QUALIFIED, IdentityStatus.RECOVERED) and not has_ins:
        raise InvalidInput(f"a {status.value} identity needs an INS (give it with --ins)")
    pi = t.patient_identity
    u.conn.execute(
        update(pi)
        .where(u._tf(pi, tenant_id), pi.c.patient_id == patient_id)
        .values(
            identity_status=status.value,
            status_changed_by=u.principal.account_id,
            status_changed_at=utcnow(),
            status_evidence=evidence,
            **changes,
        )
    )
    u._record(tenant_id, f"identity:status:{status.value}", "patient", 1, refs=[patient_id])


# -- merges ------------------------------------------------------------------------------------


def merge(u: Unit, tenant_id: str, kept_id: str, merged_id: str, *, source: str) -> Merge:
    """Merge ``merged_id`` into ``kept_id``: its requests and results move to the kept identity."""
    if source not in SOURCES:
        raise ValueError(source)
    u._authorise(tenant_id, "identity:merge:hl7" if source == "hl7-a40" else "identity:merge")
    if kept_id == merged_id:
        raise InvalidInput("an identity cannot be merged into itself")
    kept = _identity_row(u, tenant_id, kept_id)
    merged = _identity_row(u, tenant_id, merged_id)
    if kept.merged_into:
        raise InvalidInput("the identity to keep was itself merged into another: keep that one")
    if merged.merged_into:
        raise InvalidInput("this identity was already merged (unmerge it first)")
    c = u._crypto(tenant_id)
    q = t.request
    old = c.index.pseudonym(merged_id)
    moved = sorted(u.conn.execute(select(q.c.request_id).where(u._tf(q, tenant_id), q.c.pseudonym == old)).scalars())
    _move(u, tenant_id, moved, kept_id)
    now = utcnow()
    mid = new_id()
    u.conn.execute(
        insert(t.identity_merge).values(
            tenant_id=tenant_id,
            merge_id=mid,
            kept_id=kept_id,
            merged_id=merged_id,
            requests=json.dumps(moved),
            merged_by=u.principal.account_id,
            merged_at=now,
            source=source,
        )
    )
    pi = t.patient_identity
    u.conn.execute(update(pi).where(u._tf(pi, tenant_id), pi.c.patient_id == merged_id).values(merged_into=kept_id))
    u._record(tenant_id, "identity:merge", "patient", 2, refs=[kept_id, merged_id, mid])
    return Merge(mid, kept_id, merged_id, len(moved), u.principal.account_id, now, source)


def _move(u: Unit, tenant_id: str, request_ids: list[str], patient_id: str) -> None:
    """Give requests (and their results) to ``patient_id``: its pseudonym, and the order keys that
    find an order again (``records.order_keys``: they name the patient), so that the same order
    received for either identity still updates its request."""
    from types import SimpleNamespace

    from labvault.access import codec
    from labvault.access.records import order_keys

    c = u._crypto(tenant_id)
    pseudonym = c.index.pseudonym(patient_id)
    opener = c.cipher.column("request", "order_enc")
    sealer = c.cipher.column("request", "patient_enc")
    q, r = t.request, t.result
    for k in range(0, len(request_ids), _CHUNK):
        part = request_ids[k : k + _CHUNK]
        u.conn.execute(update(q).where(u._tf(q, tenant_id), q.c.request_id.in_(part)).values(pseudonym=pseudonym))
        for request_id in part:  # the sealed patient id follows the request (revision 0019)
            u.conn.execute(
                update(q)
                .where(u._tf(q, tenant_id), q.c.request_id == request_id)
                .values(patient_enc=sealer.seal(request_id, patient_id.encode()))
            )
        u.conn.execute(update(r).where(u._tf(r, tenant_id), r.c.request_id.in_(part)).values(pseudonym=pseudonym))
        for row in u.conn.execute(
            select(q.c.request_id, q.c.order_enc).where(
                u._tf(q, tenant_id), q.c.request_id.in_(part), q.c.order_enc.is_not(None)
            )
        ).all():
            placer, filler, sender, _ = codec.unpack(opener.open(row.request_id, bytes(row.order_enc)))
            numbers = SimpleNamespace(patient_id=patient_id, placer_number=placer, filler_number=filler, sender=sender)
            filler_key, placer_key = order_keys(c, numbers)  # type: ignore[arg-type]
            u.conn.execute(
                update(q)
                .where(u._tf(q, tenant_id), q.c.request_id == row.request_id)
                .values(order_bidx=filler_key, placer_bidx=placer_key)
            )


def unmerge(u: Unit, tenant_id: str, merged_id: str) -> Merge:
    """Undo the merge of ``merged_id``: exactly the requests it moved go back; ``merged_into`` cleared."""
    u._authorise(tenant_id, "identity:merge")
    row = _identity_row(u, tenant_id, merged_id)
    if not row.merged_into:
        raise InvalidInput("this identity is not merged into another")
    m = t.identity_merge
    rec = u.conn.execute(
        select(m)
        .where(u._tf(m, tenant_id), m.c.merged_id == merged_id, m.c.undone_at.is_(None))
        .order_by(m.c.merged_at.desc(), m.c.merge_id.desc())
    ).first()
    if rec is None or rec.kept_id != row.merged_into:
        raise InvalidInput("no merge of this identity is recorded: it cannot be undone here")
    c = u._crypto(tenant_id)
    moved = list(json.loads(rec.requests))
    q = t.request
    kept_pseudonym = c.index.pseudonym(rec.kept_id)
    still: list[str] = []
    for k in range(0, len(moved), _CHUNK):  # only those still the kept identity's (not purged, not re-merged)
        still += u.conn.execute(
            select(q.c.request_id).where(
                u._tf(q, tenant_id), q.c.request_id.in_(moved[k : k + _CHUNK]), q.c.pseudonym == kept_pseudonym
            )
        ).scalars()
    _move(u, tenant_id, sorted(still), merged_id)
    now = utcnow()
    u.conn.execute(
        update(m)
        .where(u._tf(m, tenant_id), m.c.merge_id == rec.merge_id)
        .values(undone_by=u.principal.account_id, undone_at=now)
    )
    pi = t.patient_identity
    u.conn.execute(update(pi).where(u._tf(pi, tenant_id), pi.c.patient_id == merged_id).values(merged_into=None))
    u._record(tenant_id, "identity:unmerge", "patient", 2, refs=[rec.kept_id, merged_id, rec.merge_id])
    return Merge(
        rec.merge_id,
        rec.kept_id,
        merged_id,
        len(still),
        rec.merged_by,
        rec.merged_at,
        rec.source,
        u.principal.account_id,
        now,
    )


def merge_as_sent(u: Unit, tenant_id: str, merges: Sequence[PatientMerge]) -> list[Merge]:
    """The merges an HL7 ADT^A40 asks for: each patient found by its INS or a local identifier
    (merges followed); an unknown one refuses the whole message (``InvalidInput``, kept in the
    quarantine by ingest). A merge already done is not done again."""
    from labvault.access.matching import find_patient

    done: list[Merge] = []
    for m in merges:
        kept = find_patient(u, tenant_id, m.surviving_ins, m.surviving_ids)
        gone = find_patient(u, tenant_id, m.merged_ins, m.merged_ids)
        if kept is None:
            raise InvalidInput("ADT^A40: the surviving patient (PID) is not known to the lab")
        if gone is None:
            raise InvalidInput("ADT^A40: the patient to merge (MRG-1) is not known to the lab")
        if kept != gone:
            done.append(merge(u, tenant_id, kept, gone, source="hl7-a40"))
    return done
