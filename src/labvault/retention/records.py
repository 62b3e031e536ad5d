"""The gateway's part of retention: rule and hold rows, and the deletions retention decides.

``labvault.retention`` decides what is due and when (durations, holds, hooks, reports); this
module authorises, reads and writes the ``retention_rule`` and ``legal_hold`` rows, and deletes a
lab's rows in batches, decrypting only what a decision needs (a specimen's collection time, a
result's code for its category). Audit events carry counts and category names, never a value.

Categories: ``results`` (every result: the default rule), each sensitive category of
``Sensitivity`` but ``other`` (an override for the results of that category) and ``quarantine``
(refused messages). A hold's scope is one of them or ``*`` (everything).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update

from labvault.access import codec
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Sensitivity
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.store import schema as t
from labvault.store.engine import iter_tenant_rows

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

RESULTS = "results"
QUARANTINE = "quarantine"
SENSITIVE = tuple(s.value for s in Sensitivity if s is not Sensitivity.OTHER)
CATEGORIES = (RESULTS, *SENSITIVE, QUARANTINE)
EVERYTHING = "*"
MAX_DAYS = 200 * 366  # a sanity bound on what a lab can type, not a policy
BATCH = 500  # requests per purge batch (ids per IN list stay well under SQLite's limit)
_CHUNK = 500


@dataclass(frozen=True)
class Rule:
    category: str
    days: int
    legal_reference: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class Hold:
    hold_id: str
    basis: str
    scope: str
    set_by: str
    set_at: datetime
    released_by: str | None
    released_at: datetime | None

    @property
    def active(self) -> bool:
        return self.released_at is None


def check_rule(category: str, days: int, legal_reference: str) -> tuple[str, int, str]:
    """A rule as the lab gave it, checked: a known category, whole days > 0, a legal reference."""
    if category not in CATEGORIES:
        raise InvalidInput(f"unknown retention category '{category}': one of {', '.join(CATEGORIES)}")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_DAYS:
        raise InvalidInput(f"a retention period is a whole number of days between 1 and {MAX_DAYS}")
    ref = (legal_reference or "").strip()
    if not ref or len(ref) > 1000:
        raise InvalidInput("a retention rule needs its legal reference (1-1000 characters)")
    return category, days, ref


def check_rules(retention: Mapping[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """A lab's initial rules: at least ``results``, each one checked."""
    rules = {}
    for category, value in retention.items():
        if not isinstance(value, tuple) or len(value) != 2:
            raise InvalidInput("a retention rule is (days, legal reference)")
        cat, days, ref = check_rule(category, *value)
        rules[cat] = (days, ref)
    if RESULTS not in rules:
        raise InvalidInput("a lab needs a retention rule for 'results' (every result) before it can be created")
    return rules


def write_rules(u: Unit, tenant_id: str, rules: Mapping[str, tuple[int, str]]) -> None:
    """Insert or replace rules (the caller has authorised and checked them)."""
    r = t.retention_rule
    now = utcnow()
    for category, (days, ref) in rules.items():
        values = {"days": days, "legal_reference": ref, "set_by": u.principal.account_id, "set_at": now}
        where = (u._tf(r, tenant_id), r.c.category == category)
        if u.conn.execute(select(r.c.category).where(*where)).first() is None:
            u.conn.execute(insert(r).values(tenant_id=tenant_id, category=category, **values))
        else:
            u.conn.execute(update(r).where(*where).values(**values))
        u._record(tenant_id, "retention:set", category, 1)


def set_rule(u: Unit, tenant_id: str, category: str, days: int, legal_reference: str) -> Rule:
    category, days, ref = check_rule(category, days, legal_reference)
    u._authorise(tenant_id, "retention:manage")
    u.tenant(tenant_id)
    write_rules(u, tenant_id, {category: (days, ref)})
    return next(x for x in rules(u, tenant_id, action=None) if x.category == category)


def rules(u: Unit, tenant_id: str, *, action: str | None = "retention:read") -> list[Rule]:
    """The lab's rules (``action`` None: the caller has authorised already)."""
    if action is not None:
        u._authorise(tenant_id, action)
        u.tenant(tenant_id)
    r = t.retention_rule
    rows = u.conn.execute(select(r).where(u._tf(r, tenant_id)).order_by(r.c.category)).all()
    return [Rule(x.category, x.days, x.legal_reference, x.set_by, x.set_at) for x in rows]


def place_hold(u: Unit, tenant_id: str, *, basis: str, scope: str = EVERYTHING) -> Hold:
    """A legal hold, only with its recorded basis (a court order, a claim, an authority's request)."""
    text = (basis or "").strip()
    if not text or len(text) > 2000:
        raise InvalidInput("a legal hold needs its basis (1-2000 characters): what requires the data to be kept")
    if scope != EVERYTHING and scope not in CATEGORIES:
        raise InvalidInput(f"a hold's scope is '*' or a retention category: {', '.join(CATEGORIES)}")
    u._authorise(tenant_id, "retention:manage")
    u.tenant(tenant_id)
    hold = Hold(new_id(), text, scope, u.principal.account_id, utcnow(), None, None)
    u.conn.execute(insert(t.legal_hold).values(
        tenant_id=tenant_id, hold_id=hold.hold_id, basis=hold.basis, scope=scope, set_by=hold.set_by,
        set_at=hold.set_at))
    u._record(tenant_id, "retention:hold", "hold", 1, refs=[hold.hold_id])
    return hold


def release_hold(u: Unit, tenant_id: str, hold_id: str) -> None:
    u._authorise(tenant_id, "retention:manage")
    h = t.legal_hold
    where = (u._tf(h, tenant_id), h.c.hold_id == hold_id)
    row = u.conn.execute(select(h).where(*where)).first()
    if row is None:
        raise NotFound("no such legal hold in this lab (see 'labvault retention list')")
    if row.released_at is not None:
        raise InvalidInput("this legal hold is already released")
    u.conn.execute(update(h).where(*where).values(released_by=u.principal.account_id, released_at=utcnow()))
    u._record(tenant_id, "retention:release", "hold", 1, refs=[hold_id])


def holds(u: Unit, tenant_id: str, *, action: str | None = "retention:read") -> list[Hold]:
    if action is not None:
        u._authorise(tenant_id, action)
        u.tenant(tenant_id)
    h = t.legal_hold
    rows = u.conn.execute(select(h).where(u._tf(h, tenant_id)).order_by(h.c.set_at, h.c.hold_id)).all()
    return [Hold(x.hold_id, x.basis, x.scope, x.set_by, x.set_at, x.released_by, x.released_at) for x in rows]


# -- deletions ---------------------------------------------------------------------------------------
def _utc(value: datetime) -> datetime:
    """Times without a zone were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for k in range(0, len(ids), _CHUNK):
        yield ids[k : k + _CHUNK]


def purge_results(
    u: Unit, tenant_id: str, cutoffs: Mapping[str, datetime], *, request_cutoff: datetime | None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Delete the results collected before their category's cutoff (a category absent from
    ``cutoffs`` is kept), then the requests left without a result (with their specimens), then the
    identities left without a request by this run.

    A result's time is its specimen's collection; without a specimen, the earliest collection of
    its request, else the request's own time. A request that never had a result goes when its time
    is before ``request_cutoff`` (None: kept). Streams the lab by batches of ``batch`` requests
    (keyset order); returns counts per category and for ``request``, ``specimen``, ``patient``.
    """
    u._authorise(tenant_id, "retention:run")
    c = u._crypto(tenant_id)
    collected_col = c.cipher.column("specimen", "collected_at_enc")
    requested_col = c.cipher.column("request", "requested_at_enc")
    observation = c.cipher.column("result", "observation_enc")
    cut = {k: _utc(v) for k, v in cutoffs.items()}
    request_cut = None if request_cutoff is None else _utc(request_cutoff)
    counts = dict.fromkeys((*(k for k in CATEGORIES if k != QUARANTINE), "request", "specimen", "patient"), 0)
    q, s, r = t.request, t.specimen, t.result
    orphans: set[str] = set()
    last: str | None = None
    while True:
        stmt = select(q.c.request_id, q.c.pseudonym, q.c.requested_at_enc).where(u._tf(q, tenant_id))
        if last is not None:
            stmt = stmt.where(q.c.request_id > last)
        reqs = u.conn.execute(stmt.order_by(q.c.request_id).limit(batch)).all()
        if not reqs:
            break
        last = reqs[-1].request_id
        ids = [x.request_id for x in reqs]
        collected: dict[str, datetime] = {}
        first: dict[str, datetime] = {}
        for sp in u.conn.execute(select(s.c.specimen_id, s.c.request_id, s.c.collected_at_enc).where(
                u._tf(s, tenant_id), s.c.request_id.in_(ids))).all():
            at = _utc(codec.to_dt(collected_col.open(sp.specimen_id, sp.collected_at_enc).decode()))
            collected[sp.specimen_id] = at
            if sp.request_id not in first or at < first[sp.request_id]:
                first[sp.request_id] = at
        for x in reqs:
            if x.request_id not in first:
                first[x.request_id] = _utc(codec.to_dt(requested_col.open(x.request_id, x.requested_at_enc).decode()))
        expired: list[str] = []
        had: set[str] = set()
        kept: set[str] = set()
        for res in u.conn.execute(select(r.c.result_id, r.c.request_id, r.c.specimen_id, r.c.observation_enc).where(
                u._tf(r, tenant_id), r.c.request_id.in_(ids))).all():
            had.add(res.request_id)
            system, code = codec.unpack(observation.open(res.result_id, bytes(res.observation_enc)))[:2]
            sensitivity = sensitivity_of(system, code)
            category = RESULTS if sensitivity is Sensitivity.OTHER else sensitivity.value
            at = collected.get(res.specimen_id) if res.specimen_id else None
            cutoff = cut.get(category)
            if cutoff is not None and (at or first[res.request_id]) < cutoff:
                expired.append(res.result_id)
                counts[category] += 1
            else:
                kept.add(res.request_id)
        for part in _chunks(expired):
            u.conn.execute(delete(r).where(u._tf(r, tenant_id), r.c.result_id.in_(part)))
        gone = [x for x in reqs if x.request_id not in kept and (
            x.request_id in had or (request_cut is not None and first[x.request_id] < request_cut))]
        if not gone:
            continue
        gone_ids = [x.request_id for x in gone]
        counts["specimen"] += u.conn.execute(
            delete(s).where(u._tf(s, tenant_id), s.c.request_id.in_(gone_ids))).rowcount
        counts["request"] += u.conn.execute(
            delete(q).where(u._tf(q, tenant_id), q.c.request_id.in_(gone_ids))).rowcount
        candidates = {x.pseudonym for x in gone}
        left = set(u.conn.execute(select(q.c.pseudonym).distinct().where(
            u._tf(q, tenant_id), q.c.pseudonym.in_(sorted(candidates)))).scalars())
        orphans |= candidates - left
    if orphans:
        # Identities carry no pseudonym (re-linking needs the lab's key): compute it for each.
        pseudonym = c.index.pseudonym
        doomed = [pid for (pid,) in iter_tenant_rows(u.conn, "patient_identity", ("patient_id",), tenant_id)
                  if pseudonym(pid) in orphans]
        pi = t.patient_identity
        for part in _chunks(doomed):
            counts["patient"] += u.conn.execute(
                delete(pi).where(u._tf(pi, tenant_id), pi.c.patient_id.in_(part))).rowcount
    return counts


def purge_quarantine(u: Unit, tenant_id: str, cutoff: datetime) -> int:
    """Delete the refused messages received before ``cutoff``, whatever became of them."""
    u._authorise(tenant_id, "retention:run")
    qt = t.quarantine
    return u.conn.execute(delete(qt).where(u._tf(qt, tenant_id), qt.c.received_at < _utc(cutoff))).rowcount


# Personal tables emptied at the end of a contract, children first; tenant_key goes by shredding.
END_TABLES = ("result", "specimen", "request", "prescriber", "patient_identity", "quarantine")


def delete_lab_rows(u: Unit, tenant_id: str) -> dict[str, int]:
    """Delete every row of the lab in every personal table but its keys; counts per table."""
    u._authorise(tenant_id, "tenant:end")
    u.tenant(tenant_id)
    missing = t.PERSONAL_TABLES - {*END_TABLES, "tenant_key"}
    if missing:  # a personal table added later must be listed above, not silently left behind
        raise RuntimeError(f"tenant end does not know the personal tables {sorted(missing)}")
    out = {}
    for name in END_TABLES:
        tbl = t.metadata.tables[name]
        out[name] = u.conn.execute(delete(tbl).where(u._tf(tbl, tenant_id))).rowcount
    return out


def store_signed_record(u: Unit, tenant_id: str, kind: str, body: dict) -> dict:
    """Sign ``body`` (no personal value in it) with the platform key and keep it for the lab."""
    signer, public = u._platform_signer()
    u._scope(tenant_id)
    record = {"record_id": new_id(), "body": body, "signature": signer.sign(body), "public_key": public.hex()}
    u.conn.execute(insert(t.signed_record).values(
        tenant_id=tenant_id, record_id=record["record_id"], kind=kind, body=json.dumps(body, sort_keys=True),
        signature=record["signature"], signer_public_key=record["public_key"], created_at=utcnow()))
    return record


def platform_public_keys(u: Unit) -> set[str]:
    """Hex of every platform signing public key, retired ones too (they verify older records)."""
    previous = u._scoped
    u._scope(PLATFORM)
    tk = t.tenant_key
    rows = u.conn.execute(select(tk.c.public).where(tk.c.tenant_id == PLATFORM, tk.c.purpose == "signing")).all()
    if previous is not None:
        u._scope(previous)
    return {bytes(x.public).hex() for x in rows if x.public}
