"""Checkpoints, verification, export and search of a lab's audit trail.

Each function takes a gateway ``Unit`` (``u``): authorisation and the audit of the audit (every
query is itself an event) happen there. See ``chain`` for the event hash and ``merkle`` for the
checkpoint roots.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Row, insert, select

from labvault.audit import chain, merkle
from labvault.audit.errors import PinInvalid
from labvault.audit.pin import fingerprint
from labvault.crypto.signing import verify
from labvault.errors import InvalidInput, SignatureInvalid
from labvault.ids import utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

LOG = "labvault-audit/v1"
_EVENT_NAMES = (*chain.FIELDS, "prev_hash", "hash")
_EVENT_COLS = [t.audit_event.c[name] for name in _EVENT_NAMES]


@contextmanager
def _events(u: Unit, tenant_id: str, batch: int = 10_000) -> Iterator[Iterator[Row[Any]]]:
    """The lab's events in order, streamed; the cursor is closed even if the reader stops early."""
    result = u.execute(  # the unit's own events are written first
        tenant_id,
        select(*_EVENT_COLS)
        .where(t.audit_event.c.tenant_id == tenant_id)
        .order_by(t.audit_event.c.seq)
        .execution_options(yield_per=batch),
    )
    try:
        yield iter(result)
    finally:
        result.close()


def _checkpoints(u: Unit, tenant_id: str) -> Sequence[Row[Any]]:
    return u.execute(
        tenant_id,
        select(t.audit_checkpoint)
        .where(t.audit_checkpoint.c.tenant_id == tenant_id)
        .order_by(t.audit_checkpoint.c.size),
    ).all()


def checkpoint(u: Unit, tenant_id: str) -> dict[str, Any]:
    """G4: sign the Merkle root of the lab's events 1..n (n: the events so far).

    The signed body names the checkpoint before it (``prev``: its index, size and root) and the
    signing key's fingerprint, so a missing, deleted or reordered checkpoint shows; the lab's
    last checkpoint is also recorded in the sealed pin outside the database (``pin``) once the
    transaction commits. Refused while the database lacks a checkpoint the pin records: signing
    over a rewritten log would launder it."""
    u.authorise(tenant_id, "audit:checkpoint")
    pin = u.pin
    pinned = pin.read()["labs"].get(tenant_id) if pin is not None else None
    u.lock_trail(tenant_id)  # one signer per lab at a time: indexes stay a chain
    cr = merkle.CompactRange()
    head = chain.GENESIS
    with _events(u, tenant_id) as rows:
        for row in rows:
            cr.append(merkle.leaf_hash(row.hash))
            head = row.hash
    if cr.size == 0:
        raise InvalidInput(f"lab '{tenant_id}' has no audit events yet")
    existing = _checkpoints(u, tenant_id)
    for c in existing:
        if c.size == cr.size:
            return _checkpoint_record(c)
    last = json.loads(existing[-1].body) if existing else None
    last_index = int(last.get("index", len(existing))) if last else 0
    if pinned is not None and int(pinned["index"]) > last_index:
        raise InvalidInput(
            f"lab '{tenant_id}': the database lacks signed checkpoint {pinned['index']} recorded in "
            "the pin; no checkpoint is signed until 'labvault audit verify' is clean"
        )
    prev = None if last is None else {"index": last_index, "size": int(last["size"]), "root": last["root"]}
    public = u.platform_public_key()
    body: dict[str, Any] = {
        "log": LOG,
        "tenant": tenant_id,
        "index": last_index + 1,
        "size": cr.size,
        "root": cr.root().hex(),
        "head": head.hex(),
        "at": utcnow().isoformat(),
        "key": fingerprint(public),
        "prev": prev,
    }
    signature, signed_with = u.sign_as_platform(body)
    if signed_with != public:
        raise InvalidInput("the platform signing key changed while this checkpoint was being signed: sign it again")
    u.execute(
        tenant_id,
        insert(t.audit_checkpoint).values(
            tenant_id=tenant_id,
            size=cr.size,
            root=cr.root(),
            head=head,
            at=utcnow(),
            body=json.dumps(body, sort_keys=True),
            signature=signature,
            signer_public_key=public.hex(),
        ),
    )
    u.audit(tenant_id, "audit:checkpoint", "audit", 1)
    if pin is not None:
        u.on_commit(lambda: pin.record_checkpoint(tenant_id, body["index"], body["size"], body["root"], body["head"]))
    return {"body": body, "signature": signature, "public_key": public.hex()}


def _checkpoint_record(row: Row[Any]) -> dict[str, Any]:
    return {"body": json.loads(row.body), "signature": row.signature, "public_key": row.signer_public_key}


def last_checkpoint(u: Unit, tenant_id: str) -> dict[str, Any] | None:
    u.authorise(tenant_id, "audit:verify")
    rows = _checkpoints(u, tenant_id)
    return _checkpoint_record(rows[-1]) if rows else None


def pull_checkpoints(u: Unit, tenant_id: str, since: int = 0) -> list[dict[str, Any]]:
    """G4, G6: the lab's signed checkpoints after index ``since``, with the platform key's rotation
    records, for the lab to keep out of the vendor's reach (its own cron pulls them). The lab's
    ``lab_admin`` and ``lab_dpo`` only: the vendor keeps no copy it could rewrite with the log."""
    if since < 0:
        raise InvalidInput("since is a checkpoint number, 0 or more")
    u.authorise(tenant_id, "audit:pull")
    keys = [{**r, "fingerprint": r["body"].get("fingerprint")} for r in u.platform_key_records()]
    lines = []
    for cp in _checkpoints(u, tenant_id):
        record = _checkpoint_record(cp)
        if int(record["body"].get("index", 0)) > since:
            lines.append({"type": "checkpoint", **record})
    u.audit(tenant_id, "audit:pull", "audit", len(lines))
    return keys + lines


@dataclass
class Report:
    tenant: str
    events: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    last_root: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, seq: int, problem: str) -> None:
        self.details.append(f"{seq}: {problem}")
        if self.problem is None or seq < (self.first_bad_seq or seq + 1):
            self.first_bad_seq, self.problem = seq, problem

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "last_root": self.last_root,
            "details": self.details,
        }


def signed_by(body: dict[str, Any], signature: str, trusted: list[bytes]) -> bool:
    """Is ``body`` signed by one of the trusted platform keys (the one it names, if it names one)?"""
    named = body.get("key") if isinstance(body, dict) else None
    for key in trusted:
        if named is not None and fingerprint(key) != named:
            continue
        try:
            verify(body, signature, key)
            return True
        except (SignatureInvalid, ValueError, TypeError):
            continue
    return False


def _check_signature(cp: dict[str, Any], report: Report, trusted: list[bytes], whose: str = "stored") -> bool:
    body = cp.get("body") if isinstance(cp, dict) else None
    size = int(body.get("size", 1) or 1) if isinstance(body, dict) else 1
    if isinstance(body, dict) and signed_by(body, cp.get("signature", ""), trusted):
        return True
    index = body.get("index") if isinstance(body, dict) else None
    name = f"checkpoint {index} ({size} events)" if index else f"the checkpoint of {size} events"
    report.fail(
        size,
        f"the {whose} {name} is not signed by the platform's pinned key (a checkpoint's signature does not verify)",
    )
    return False


def _check_links(stored: dict[int, dict[str, Any]], report: Report) -> None:
    """G4: each checkpoint names the one before it; a gap or a wrong link is a deleted, replaced
    or reordered checkpoint."""
    before = None
    for size in sorted(stored):
        body = stored[size]["body"]
        index = body.get("index")
        if index is None:  # signed before checkpoints were chained
            before = None
            continue
        index = int(index)
        expected = 1 if before is None else int(before["index"]) + 1
        if index != expected and (before is not None or index > 1):
            lo = 0 if before is None else int(before["size"])
            report.fail(
                lo + 1,
                f"signed checkpoint{'s' if index - expected > 1 else ''} "
                f"{expected}{'..' + str(index - 1) if index - expected > 1 else ''} "
                f"between events {lo} and {size} {'are' if index - expected > 1 else 'is'} missing "
                "(deleted or reordered)"
                if index > expected
                else f"checkpoint {index} (of {size} events) is out of order (reordered or replaced)",
            )
        elif before is not None and body.get("prev") != {
            "index": int(before["index"]),
            "size": int(before["size"]),
            "root": before["root"],
        }:
            report.fail(
                int(before["size"]) + 1,
                f"checkpoint {index} (of {size} events) does not name checkpoint "
                f"{before['index']} before it (replaced or reordered)",
            )
        before = body


def _when(value: object) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


UNSIGNED_AGE = timedelta(hours=2)  # twice the default interval of serve's checkpoint scheduler


def verify_log(
    u: Unit,
    tenant_id: str,
    kept: Iterable[dict[str, Any]] | None = None,
    *,
    now: datetime | None = None,
    max_unsigned_age: timedelta | None = UNSIGNED_AGE,
) -> Report:
    """G4: re-derive the chain and the checkpoint roots; check every checkpoint against the
    platform's pinned keys, their links, the pinned last checkpoint; compare with what the lab
    kept, if given.

    ``kept``: the lines of a lab's pulled checkpoints (``pull_checkpoints``) or of its export
    (``export``): signed checkpoints (and event hashes). Every kept checkpoint must verify under
    the pinned keys and match the log at its size; a log shorter than one is truncated.
    ``max_unsigned_age``: events older than this that no checkpoint covers are reported (every
    checkpoint deleted, or the scheduler stopped); None: not checked.
    """
    u.authorise(tenant_id, "audit:verify")
    report = Report(tenant_id)
    try:
        trusted = u.platform_keys()
        pin = u.pin.read() if u.pin is not None else None
    except PinInvalid as exc:
        report.fail(1, str(exc))
        trusted, pin = [], None
    stored = {c.size: _checkpoint_record(c) for c in _checkpoints(u, tenant_id)}
    kept_events: dict[int, str] = {}
    kept_checkpoints: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(kept or (), 1):
        kind = line.get("type")
        try:
            if kind == "event":
                kept_events[int(line["seq"])] = str(line["hash"])
            elif kind == "checkpoint" and isinstance(line.get("body"), dict):
                kept_checkpoints[int(line["body"]["size"])] = line
        except (KeyError, TypeError, ValueError):
            what = "an event without a sequence number and hash" if kind == "event" else "a checkpoint without a size"
            raise InvalidInput(f"the lab's checkpoint file, line {n}: {what}") from None
    # A checkpoint whose signature fails is reported, and not trusted for anything else.
    kept_checkpoints = {k: cp for k, cp in kept_checkpoints.items() if _check_signature(cp, report, trusted, "lab's")}
    stored = {k: cp for k, cp in stored.items() if _check_signature(cp, report, trusted)}
    _check_links(stored, report)
    by_index = {int(cp["body"]["index"]): cp["body"] for cp in stored.values() if "index" in cp["body"]}
    for cp in kept_checkpoints.values():  # the lab's copy and the database's must be the same checkpoint
        body = cp["body"]
        mine = by_index.get(int(body.get("index", 0)))
        if mine is not None and (mine["size"], mine["root"]) != (body["size"], body["root"]):
            report.fail(
                min(int(mine["size"]), int(body["size"])),
                f"signed checkpoint {body['index']} in the database differs from the lab's copy",
            )
    pinned: dict[int, dict[str, Any]] = {}
    last_pinned = (pin or {}).get("labs", {}).get(tenant_id)
    if last_pinned is not None:
        index, size = int(last_pinned["index"]), int(last_pinned["size"])
        if index not in by_index:
            lo = max([s for s in stored if s < size], default=0)
            report.fail(
                lo + 1,
                f"signed checkpoint {index} (of {size} events), pinned outside the database, is "
                "missing from it: checkpoints were deleted",
            )
        elif (int(by_index[index]["size"]), by_index[index]["root"]) != (size, last_pinned["root"]):
            report.fail(
                min(size, int(by_index[index]["size"])),
                f"signed checkpoint {index} differs from the one pinned outside the database",
            )
        pinned[size] = {"body": {"size": size, "root": last_pinned["root"], "head": last_pinned["head"]}}
    cut = _last_cut(u, tenant_id, report, trusted)
    cr = merkle.CompactRange() if cut is None else merkle.CompactRange.from_state(json.loads(cut.frontier))
    head = chain.GENESIS if cut is None else cut.head
    expected = cr.size + 1
    sources: tuple[tuple[str, dict[int, dict[str, Any]]], ...] = (
        ("stored", stored),
        ("lab's", kept_checkpoints),
        ("pinned", pinned),
    )
    covered = max([0 if cut is None else cut.size, *stored, *pinned])
    if cut is not None:  # roots of checkpoints older than the cut can no longer be recomputed
        for _, cps in sources:
            for size, cp in list(cps.items()):
                if size < cr.size:
                    cps.pop(size)
                    report.checkpoints += 1
                elif size == cr.size:
                    cps.pop(size)
                    report.checkpoints += 1
                    if cp["body"].get("root") != cr.root().hex():
                        report.fail(size, "the retention cut does not match the signed checkpoint at its size")
        kept_events = {k: v for k, v in kept_events.items() if k > cr.size}
    wanted = sorted(set(stored) | set(kept_checkpoints) | set(pinned))
    leaf, event_hash_values, at_text = merkle.leaf_hash, chain.event_hash_values, chain.at_text
    kept_hex = kept_events
    first_unsigned_at = None
    last_good = cr.size  # the last checkpoint size every source agreed on
    for row in u.trail_rows(tenant_id, (*chain.FIELDS, "prev_hash", "hash")):
        values = list(row[:-2])
        seq, prev, stored_hash = values[1], bytes(row[-2]) if row[-2] is not None else None, row[-1]
        if seq != expected:
            report.fail(
                expected,
                f"event {expected} is missing (next stored event is {seq})"
                if seq > expected
                else f"event {seq} is out of order",
            )
            break
        if prev != head:
            report.fail(seq, f"event {seq} does not chain to event {seq - 1}")
            break
        if seq == covered + 1:
            first_unsigned_at = values[2]
        if values[2].__class__ is not str:
            values[2] = at_text(values[2])
        digest = event_hash_values(head, values)
        if stored_hash is None or digest != bytes(stored_hash):
            report.fail(seq, f"event {seq} was altered (its hash does not match its content)")
            break
        if kept_hex and seq in kept_hex and kept_hex[seq] != digest.hex():
            report.fail(seq, f"event {seq} differs from the lab's exported copy")
            break
        head = digest
        cr.append(leaf(digest))
        expected += 1
        if wanted and cr.size == wanted[0]:
            wanted.pop(0)
            root = cr.root().hex()
            matched = True
            for source, cps in sources:
                found = cps.get(cr.size)
                if found is not None and (found["body"].get("root") != root or found["body"].get("head") != head.hex()):
                    matched = False
                    report.fail(
                        seq if source == "stored" else _first_divergence(kept_events, last_good + 1),
                        f"the log up to event {seq} does not match the {source} signed checkpoint"
                        + (f" (it matched up to event {last_good})" if last_good else ""),
                    )
            last_good = seq if matched else last_good
            report.checkpoints += 1
    report.events = cr.size
    report.last_root = cr.root().hex() if cr.size else None
    if report.ok:
        for source, cps in sources:
            beyond = [s for s in sorted(cps) if s > cr.size]
            if beyond:
                report.fail(
                    cr.size + 1,
                    f"the log ends at event {cr.size} but a {source} signed checkpoint covers "
                    f"{beyond[0]} events: it was truncated",
                )
                break
        beyond_events = [s for s in kept_events if s > cr.size]
        if beyond_events:
            report.fail(
                cr.size + 1, f"the lab's export holds events up to {max(beyond_events)}; the log stops at {cr.size}"
            )
    if (
        max_unsigned_age is not None
        and first_unsigned_at is not None
        and _when(first_unsigned_at) < (now or utcnow()) - max_unsigned_age
    ):
        hours = max_unsigned_age.total_seconds() / 3600
        report.fail(
            covered + 1,
            f"events from {covered + 1} on are older than {hours:g} h and no signed checkpoint "
            "covers them: checkpoints were deleted, or none is being signed (run 'labvault "
            "serve' or 'labvault audit checkpoint')",
        )
    u.audit(tenant_id, "audit:verify", "audit", report.events, outcome="allowed" if report.ok else "alert")
    return report


def _last_cut(u: Unit, tenant_id: str, report: Report, trusted: list[bytes] | None = None) -> Row[Any] | None:
    row = u.execute(
        tenant_id,
        select(t.audit_cut).where(t.audit_cut.c.tenant_id == tenant_id).order_by(t.audit_cut.c.size.desc()).limit(1),
    ).first()
    if row is not None and trusted is not None:
        _check_signature(
            {"body": json.loads(row.body), "signature": row.signature}, report, trusted, "retention cut at"
        )
    return row


DEFAULT_RETENTION_DAYS = 365


def set_retention(u: Unit, tenant_id: str, days: int, reason: str | None) -> dict[str, Any]:
    """The lab decides how long its audit trail is kept; past 365 days only with a recorded reason."""
    u.authorise(tenant_id, "audit:retention")
    if not 30 <= days <= 3650:
        raise InvalidInput("audit retention is from 30 to 3,650 days")
    if days > DEFAULT_RETENTION_DAYS and not (reason or "").strip():
        raise InvalidInput("keeping the audit trail longer than 365 days needs a recorded justification (--reason)")
    from sqlalchemy import update

    u.execute(
        tenant_id,
        update(t.tenant)
        .where(t.tenant.c.tenant_id == tenant_id)
        .values(audit_retention_days=days, audit_retention_reason=(reason or "").strip()[:1000] or None),
    )
    u.audit(tenant_id, "audit:retention", "tenant", 1)
    return {"tenant": tenant_id, "days": days, "reason": (reason or "").strip() or None}


def purge(u: Unit, tenant_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Delete the events older than the lab's retention, cut at a checkpoint boundary.

    The cut keeps what verification needs to go on (the head hash and the Merkle compact range
    at the cut) in a signed record; the signed checkpoints all stay.
    """
    from datetime import timedelta

    u.authorise(tenant_id, "audit:purge")
    days = DEFAULT_RETENTION_DAYS
    if tenant_id != "platform":
        row = u.execute(
            tenant_id, select(t.tenant.c.audit_retention_days).where(t.tenant.c.tenant_id == tenant_id)
        ).first()
        days = (row.audit_retention_days if row is not None else None) or DEFAULT_RETENTION_DAYS
    limit = (now or utcnow()) - timedelta(days=days)
    report = Report(tenant_id)
    cut = _last_cut(u, tenant_id, report)
    start = 0 if cut is None else cut.size
    cr = merkle.CompactRange() if cut is None else merkle.CompactRange.from_state(json.loads(cut.frontier))
    sizes = [c.size for c in _checkpoints(u, tenant_id) if c.size > start]
    best, best_state, best_head = None, None, None
    head = chain.GENESIS if cut is None else cut.head
    with _events(u, tenant_id) as rows:
        for row in rows:
            if row.seq <= start:
                continue
            at = row.at if row.at.tzinfo else row.at.replace(tzinfo=limit.tzinfo)
            if at >= limit:
                break
            cr.append(merkle.leaf_hash(row.hash))
            head = row.hash
            if cr.size in sizes:
                best, best_state, best_head = cr.size, cr.state(), head
    if best is None:
        u.audit(tenant_id, "audit:purge", "audit", 0)
        return {"tenant": tenant_id, "cut": start, "deleted": 0, "retention_days": days}
    # set together with ``best``: the compact range and the hash of the event just appended to it
    best_state, best_head = cast("dict[str, Any]", best_state), cast(bytes, best_head)
    body = {
        "log": LOG,
        "kind": "retention-cut",
        "tenant": tenant_id,
        "size": best,
        "head": best_head.hex(),
        "root": merkle.CompactRange.from_state(best_state).root().hex(),
        "retention_days": days,
        "at": utcnow().isoformat(),
    }
    signature, public = u.sign_as_platform(body)
    u.execute(
        tenant_id,
        insert(t.audit_cut).values(
            tenant_id=tenant_id,
            size=best,
            head=best_head,
            frontier=json.dumps(best_state),
            at=utcnow(),
            body=json.dumps(body, sort_keys=True),
            signature=signature,
            signer_public_key=public.hex(),
        ),
    )
    deleted = u.delete_trail(tenant_id, start, best)
    u.audit(tenant_id, "audit:purge", "audit", deleted)
    return {"tenant": tenant_id, "cut": best, "deleted": deleted, "retention_days": days}


def _first_divergence(kept_events: dict[int, str], seq: int) -> int:
    return seq if not kept_events else min(kept_events)


def consistency(u: Unit, tenant_id: str, old_size: int) -> dict[str, Any]:
    """A proof that the lab's log of ``old_size`` events is a prefix of today's log."""
    u.authorise(tenant_id, "audit:verify")
    leaves = []
    head = chain.GENESIS
    with _events(u, tenant_id) as rows:
        for r in rows:  # hashes re-derived from the events' content, not taken as stored
            head = chain.event_hash(head, dict(zip(chain.FIELDS, r, strict=False)))
            leaves.append(merkle.leaf_hash(head))
    if not 0 < old_size <= len(leaves):
        raise InvalidInput(f"the log has {len(leaves)} events; a proof needs 1 <= old size <= that")
    proof = merkle.consistency_proof(leaves, old_size)
    u.audit(tenant_id, "audit:consistency", "audit", 1)
    return {
        "old_size": old_size,
        "new_size": len(leaves),
        "old_root": merkle.root(leaves[:old_size]).hex(),
        "new_root": merkle.root(leaves).hex(),
        "proof": [p.hex() for p in proof],
    }


def _event_json(ev: dict[str, Any]) -> dict[str, Any]:
    out = {k: ev[k] for k in chain.FIELDS}
    out["at"] = chain.at_text(ev["at"]) if isinstance(ev["at"], datetime) else ev["at"]
    out["seq"] = int(out.pop("seq"))
    out["prev_hash"] = ev["prev_hash"].hex() if ev["prev_hash"] else None
    out["hash"] = ev["hash"].hex() if ev["hash"] else None
    return out


def export(u: Unit, tenant_id: str) -> Iterator[dict[str, Any]]:
    """The lab's events and checkpoints as JSON-able lines, for the lab to keep."""
    u.authorise(tenant_id, "audit:read")
    signer_key = u.platform_public_key().hex()
    with _events(u, tenant_id) as events:
        rows = list(events)
    checkpoints = _checkpoints(u, tenant_id)
    u.audit(tenant_id, "audit:export", "audit", len(rows))
    yield {
        "type": "header",
        "log": LOG,
        "tenant": tenant_id,
        "public_key": signer_key,
        "exported_at": utcnow().isoformat(),
    }
    for row in rows:
        yield {"type": "event", **_event_json(dict(zip(_EVENT_NAMES, row, strict=True)))}
    for cp in checkpoints:
        yield {"type": "checkpoint", **_checkpoint_record(cp)}


def search(
    u: Unit,
    tenant_id: str,
    *,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    patient_id: str | None = None,
    limit: int = 1000,
    actors: Sequence[str] | None = None,
    before_seq: int | None = None,
    after_seq: int | None = None,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Events of a lab by actor (or any of ``actors``), action (prefix), time range and patient,
    and sequence number (``before_seq``, ``after_seq``: pages that stay put while the log grows);
    ``limit`` of them, oldest first or newest first; the query is audited."""
    u.authorise(tenant_id, "audit:read")
    ae = t.audit_event
    q = select(*_EVENT_COLS).where(ae.c.tenant_id == tenant_id)
    if actor:
        q = q.where(ae.c.actor == actor)
    if actors is not None:
        q = q.where(ae.c.actor.in_(list(actors)))
    if action:
        q = q.where(ae.c.action.startswith(action))
    if since:
        q = q.where(ae.c.at >= since)
    if until:
        q = q.where(ae.c.at <= until)
    if patient_id:
        q = q.where(ae.c.object_refs.contains(json.dumps(patient_id)))
    if before_seq is not None:
        q = q.where(ae.c.seq < before_seq)
    if after_seq is not None:
        q = q.where(ae.c.seq > after_seq)
    order = ae.c.seq.desc() if newest_first else ae.c.seq
    rows = u.execute(tenant_id, q.order_by(order).limit(limit)).all()  # the unit's own events first
    u.audit(tenant_id, "audit:search", "audit", len(rows), refs=[patient_id] if patient_id else None)
    return [_event_json(dict(zip(_EVENT_NAMES, r, strict=True))) for r in rows]


@dataclass(frozen=True)
class Person:
    """An actor of a lab's trail as people know it: name and e-mail; ``vendor`` for a vendor
    account the lab's grants name."""

    account_id: str
    name: str
    email: str | None
    vendor: bool = False


def people(u: Unit, tenant_id: str) -> tuple[dict[str, Person], dict[str, Any]]:
    """The lab's accounts and the vendor accounts its support grants name, by account id (the
    names a trail's reader sees instead of ids), with the lab's grants by id."""
    from labvault.access import grants as grant_service
    from labvault.accounts import service as accounts

    found = {
        a["account_id"]: Person(a["account_id"], a["name"], a["email"]) for a in accounts.list_accounts(u, tenant_id)
    }
    grants = {g.grant_id: g for g in grant_service.list_grants(u, tenant_id)}
    for g in grants.values():
        if g.account_id not in found and g.requester_name:
            found[g.account_id] = Person(g.account_id, g.requester_name, g.requester_email, vendor=True)
    return found, grants


def account_for_email(u: Unit, tenant_id: str, email: str) -> str:
    """The account id of the lab's person (or vendor account its grants name) with this e-mail;
    an unknown e-mail is an error naming no value."""
    wanted = email.strip().casefold()
    found, _ = people(u, tenant_id)
    for p in found.values():
        if p.email and p.email.casefold() == wanted:
            return p.account_id
    raise InvalidInput("no account of this lab has this e-mail address")
