"""Storing ingested messages through the gateway: idempotency, identity matching, the quarantine.

A message (an HL7 v2 message, an HPRIM file, a FHIR bundle) is stored whole or not at all: its
patients, prescribers, requests, specimens and results go into the caller's unit, with the
message's idempotency key, so the same message received again creates nothing. Several messages
may share one unit (group commit); each is still complete or absent.

A patient already known to the lab (same INS, by blind index) keeps its id: a new message adds
requests to the existing identity. Prescribers are matched by RPPS the same way.

Refused messages go to the quarantine: raw bytes and reason sealed with the lab's data key (the
reason names the file, whose name may be personal), for the lab to inspect, replay or drop; its
records are the gateway's (``labvault.access.quarantine``, re-exported here), as are the lookups
of known patients and prescribers by blind index (``labvault.access.matching``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import delete, insert, select

from labvault.access import identities, matching, orders
from labvault.access.quarantine import DROPPED, HELD, REPLAYED, Quarantined, get, listing, put, resolve, update_reason
from labvault.crypto.digest import sha256_hex
from labvault.domain.identifiers import normalise_nir
from labvault.errors import InvalidInput
from labvault.ids import utcnow
from labvault.lab.work import catalogue_judge
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.domain.mapped import Mapped
    from labvault.domain.models import Identity, Prescriber
    from labvault.interop.hl7v2_adt import PatientMerge

_CHUNK = 500
_CODE = re.compile(r"[^\s]+( [^\s]+)*\Z")  # a FHIR code: what every export format can carry
_SYSTEM = re.compile(r"\S+\Z")
# The quarantine's names, re-exported: ingest's callers find them here.
__all__ = [
    "DROPPED",
    "HELD",
    "REPLAYED",
    "Envelope",
    "Quarantined",
    "check",
    "get",
    "listing",
    "message_key",
    "put",
    "resolve",
    "store",
    "update_reason",
]


def message_key(sending_facility: str, control_id: str, content: bytes | None = None) -> str:
    """The idempotency key of a message: a hash, so that no identifier is kept in clear.

    ``content``: what the message says (as read), for formats whose control id does not change
    when the sender sends other values again (a CSV request, an HPRIM file named as before): the
    same again is a duplicate, anything else a message of its own (an update of its order)."""
    head = f"{sending_facility}\x1f{control_id}"
    if content is None:
        return sha256_hex(head.encode())
    return sha256_hex(f"{head}\x1f{sha256_hex(content)}".encode())


@dataclass(slots=True)
class Envelope:
    """One message to store whole: its key, its format and what it maps to (one or more patients)."""

    key: str
    format: str
    mapped: list[Mapped]
    raw: bytes = b""  # the message's bytes: kept, sealed, when its identity waits in the queue
    merges: list[PatientMerge] = dataclasses.field(default_factory=list)  # HL7 ADT^A40: identities to merge

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
        if ident.nir is None:
            pass  # no INS: the identity is matched on its sender's identifier and its traits
        elif ident.ins_oid.endswith(".8"):
            try:
                validate_nir(ident.nir)
            except InvalidInput:
                raise InvalidInput("PID/P: INS-NIR is not a valid NIR (bad length, format or key)") from None
        elif not normalise_nir(ident.nir):
            raise InvalidInput("PID/P: INS-NIA is empty")
        for k, r in enumerate(m.results, 1):
            if not _CODE.match(r.code) or not _SYSTEM.match(r.code_system):
                raise InvalidInput(
                    "result code or code system is not a code (empty, control characters or stray whitespace)"
                )
            for x in (r.value_num, r.ref_low, r.ref_high):
                if x is not None and not is_finite(x):  # every reader refuses these first, at their field
                    raise InvalidInput(f"result {k}: a number is not finite (NaN or infinity)")


def store(
    u: Unit,
    tenant_id: str,
    envelopes: Sequence[Envelope],
    *,
    feed: str,
    instruction: str | None = None,
    on_conflict: str | None = None,
) -> list[str]:
    """Store each envelope not stored before; returns ``accepted``, ``duplicate`` or ``queued``
    (its identity conflicts: kept whole in the identity-vigilance queue, nothing stored) for each.
    ``instruction``: the id of the lab's instruction the messages come in under (named in the audit).
    ``on_conflict``: the lab's decision on a queued message being stored again (see
    ``labvault.access.matching.match_messages``)."""
    u.authorise(tenant_id, "patient:result:create")
    refs = [f"feed:{feed}"] + ([instruction] if instruction else [])
    keys = [e.key for e in envelopes]
    known: set[str] = set()
    im = t.ingest_message
    for k in range(0, len(keys), _CHUNK):
        known.update(
            u.execute(
                tenant_id,
                select(im.c.message_key).where(im.c.tenant_id == tenant_id, im.c.message_key.in_(keys[k : k + _CHUNK])),
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
        u.audit(tenant_id, "ingest:duplicate", "message", duplicates, refs=refs)
    if not fresh:
        return outcomes
    zone = lab_zone(u, tenant_id)
    for e in fresh:
        for m in e.mapped:
            localise(m, zone)
    fresh, matched = _match_or_queue(
        u, tenant_id, fresh, outcomes, envelopes, feed=feed, on_conflict=on_conflict, keep_raw=instruction is None
    )
    if not fresh:
        return outcomes
    for e in fresh:
        if e.merges:
            identities.merge_as_sent(u, tenant_id, e.merges)
    mapped = [m for e in fresh for m in e.mapped]
    patient_ids: dict[str, str] = {}
    new_patients: dict[str, Identity] = {}
    attach: list[tuple[str, str, str]] = []
    for decided in matched:
        for mapped_id, match in decided.items():
            patient_ids[mapped_id] = match.patient_id
            if match.create is not None:
                new_patients.setdefault(match.patient_id, match.create)
            attach.extend((match.patient_id, system, value) for system, value in match.attach)
    prescriber_ids = matching.match_prescribers(u, tenant_id, [p for m in mapped for p in m.prescribers])
    new_prescribers: dict[str, Prescriber] = {}
    key_of = {id(m): e.key for e in fresh for m in e.mapped}
    incoming: list[orders.Incoming] = []
    for m in mapped:
        for p in m.prescribers:
            if prescriber_ids[p.prescriber_id] == p.prescriber_id:
                new_prescribers.setdefault(p.prescriber_id, p)
        requests = [
            dataclasses.replace(
                r,
                patient_id=patient_ids.get(r.patient_id, r.patient_id),
                prescriber_id=prescriber_ids.get(r.prescriber_id, r.prescriber_id) if r.prescriber_id else None,
            )
            for r in m.requests
        ]
        incoming.append(orders.Incoming(key_of[id(m)], requests, m.specimens, m.results))
    if new_patients:  # a file sent again derives the same ids: its patient is stored already
        stored = u.stored_patient_ids(tenant_id, list(new_patients))
        new_patients = {k: v for k, v in new_patients.items() if k not in stored}
    if new_patients:
        u.add_patients(tenant_id, list(new_patients.values()))
    if attach:
        u.add_local_ids(tenant_id, attach)
    if new_prescribers:
        stored = u.stored_prescriber_ids(tenant_id, list(new_prescribers))
        new_prescribers = {k: v for k, v in new_prescribers.items() if k not in stored}
    if new_prescribers:
        u.add_prescribers(tenant_id, list(new_prescribers.values()))
    # The same order again (same order numbers, or the same ids) updates its request: orders.
    # An analyser's results on the lab's own specimens are judged by the lab's catalogue (loaded
    # only when a message names one of them).
    orders.store_messages(u, tenant_id, incoming, judge=catalogue_judge(u, tenant_id))
    now = utcnow()
    rows = [
        {
            "tenant_id": tenant_id,
            "message_key": e.key,
            "format": e.format,
            "feed": feed,
            "received_at": now,
            "requests": sum(len(m.requests) for m in e.mapped),
            "results": e.results,
        }
        for e in fresh
    ]
    for k in range(0, len(rows), _CHUNK):
        u.execute(tenant_id, insert(im).values(rows[k : k + _CHUNK]))
    u.audit(tenant_id, "ingest:message", "message", len(fresh), refs=refs)
    return outcomes


def lab_zone(u: Unit, tenant_id: str) -> tzinfo:
    """The lab's time zone (``Tenant.timezone``, Europe/Paris unless set otherwise)."""
    name = u.execute(tenant_id, select(t.tenant.c.timezone).where(t.tenant.c.tenant_id == tenant_id)).scalar()
    return _zone(name or "Europe/Paris")


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> tzinfo:
    return ZoneInfo(name)


def _aware(value: datetime | None, zone: tzinfo) -> datetime | None:
    return value.replace(tzinfo=zone) if value is not None and value.tzinfo is None else value


def localise(m: Mapped, zone: tzinfo) -> None:
    """Every time of a message made zone-aware: a local time written without a zone (HPRIM, HL7 v2
    without an offset, a CSV) is a time in the lab's zone, so no naive time meets an aware one."""
    for r in m.requests:
        r.requested_at = _aware(r.requested_at, zone) or r.requested_at
        r.reported_at = _aware(r.reported_at, zone)
        r.message_at = _aware(r.message_at, zone)
    for s in m.specimens:
        s.collected_at = _aware(s.collected_at, zone) or s.collected_at
        s.received_at = _aware(s.received_at, zone)
    for x in m.results:
        if x.validated_at is not None and x.validated_at.tzinfo is None:
            x.validated_at = x.validated_at.replace(tzinfo=zone)
        if x.message_at is not None and x.message_at.tzinfo is None:
            x.message_at = x.message_at.replace(tzinfo=zone)


def _match_or_queue(
    u: Unit,
    tenant_id: str,
    fresh: list[Envelope],
    outcomes: list[str],
    envelopes: Sequence[Envelope],
    *,
    feed: str,
    on_conflict: str | None,
    keep_raw: bool,
) -> tuple[list[Envelope], list[dict[str, matching.Match]]]:
    """Match each fresh message's identities (``labvault.access.matching``); a message whose
    identity conflicts goes whole to the identity-vigilance queue, its outcome ``queued``, and its
    key is recorded so that the same message sent again is a duplicate. Under an instruction
    (``keep_raw`` False) its bytes are not kept: they hold what the instruction may leave out, and
    the lab can only reject it and have it sent again. Returns the messages to store, with their
    matches."""
    decisions = matching.match_messages(
        u, tenant_id, [[m.identity for m in e.mapped] for e in fresh], on_conflict=on_conflict
    )
    where = {e.key: k for k, e in enumerate(envelopes) if outcomes[k] == "accepted"}
    keep: list[Envelope] = []
    matched: list[dict[str, matching.Match]] = []
    queued: list[Envelope] = []
    for e, d in zip(fresh, decisions, strict=True):
        if isinstance(d, matching.Conflict):
            raw = e.raw if keep_raw else b""
            identities.put(
                u, tenant_id, e.key, raw, fmt=e.format, feed=feed, reason=d.reason, candidate_id=d.candidate_id
            )
            outcomes[where[e.key]] = "queued"
            queued.append(e)
        else:
            keep.append(e)
            matched.append(d)
    if queued:
        now = utcnow()
        rows = [
            {
                "tenant_id": tenant_id,
                "message_key": e.key,
                "format": e.format,
                "feed": feed,
                "received_at": now,
                "requests": 0,
                "results": 0,
            }
            for e in queued
        ]
        for k in range(0, len(rows), _CHUNK):
            u.execute(tenant_id, insert(t.ingest_message).values(rows[k : k + _CHUNK]))
    return keep, matched


def forget_queued(u: Unit, tenant_id: str, key: str) -> None:
    """The record of a queued message's key, removed when the lab resolves it so that the message
    can be stored; only a placeholder (no request, no result) is removed."""
    im = t.ingest_message
    u.execute(
        tenant_id,
        delete(im).where(im.c.tenant_id == tenant_id, im.c.message_key == key, im.c.requests == 0, im.c.results == 0),
    )
