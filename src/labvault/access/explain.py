"""The gateway's part for explained accesses (labvault.monitoring.explained): which reads of a lab's
personal data its relations explain.

G5, G6, H1: an access is a read event of the lab's trail (``READS``: ``patient:identity:read``,
``patient:request:read``, ``patient:result:read``, ``report:read``, ``specimen:timeline``, allowed),
except a read that named no patient and returned no record (an empty worklist: it reached no one).
Its ``object_refs`` hold ids only: a patient id (identity, a patient's requests, results or
cumulative report), a request id (a request's results, a report), a result id, a specimen id, a
report id. Each ref is resolved to the patient it concerns (the request's or result's pseudonym; a
patient id through the lab's blind index), and the access is *explained* when the actor has a
relation with every patient it reached:

- ``entered-request``: the actor entered one of the patient's requests (``request.entered_by``);
- ``specimen``: the actor received, rejected or moved a specimen of one of those requests (the
  trail's ``specimen:*`` events by the same actor, whose refs name the request);
- ``entered-result``, ``validated-technical``, ``validated-biological``: the actor entered or
  validated a result of one of those requests (``result.entered_by/technical_by/biological_by``);
- ``issued-report``: the actor issued one of those requests' reports (``lab_report.issued_by``);
- ``grant``: the event names a support grant (``grant_id``) approved for that actor, in force then;
- ``instruction``: an export under the lab's signed instruction (purpose ``export``, the actor used
  an instruction of the lab before, ``instruction:use``).

The relation is the patient's (a biologist who validated a patient's earlier results reads the new
ones), whatever the order (a technician reads an identity, then enters the request). A read that
names no patient (a whole-lab scan) is explained by a grant or an instruction only. What remains is
what the lab's DPO reviews. Action ``access:review`` (lab_admin, lab_dpo): a vendor account never
holds it, so the vendor never sees which patients a lab's staff read.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from labvault.access.state import UnitState
from labvault.domain.identifiers import OBJECT_ID_RE
from labvault.store import schema as t

READS = (
    "patient:identity:read",
    "patient:request:read",
    "patient:result:read",
    "report:read",
    "specimen:timeline",
)
_CHUNK = 500
_NOT_SPECIMEN_MOVES = ("specimen:timeline",)


@dataclass(frozen=True, slots=True)
class Access:
    """One read of the lab's personal data and whether a relation explains it (``reason``: the
    relation, or why none does). References only."""

    seq: int
    at: datetime
    actor: str
    actor_roles: str
    action: str
    refs: tuple[str, ...]
    purpose: str
    grant_id: str | None
    explained: bool
    reason: str


def _utc(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(set(ids))
    for k in range(0, len(items), _CHUNK):
        yield items[k : k + _CHUNK]


def _refs(text: str | None) -> tuple[str, ...]:
    try:
        refs = json.loads(text) if text else []
    except ValueError:
        return ()
    return tuple(str(r) for r in refs if isinstance(r, str))


class Explain(UnitState):
    """Mixed into Unit: the reads of a day and the relations that explain them."""

    def explained_accesses(self, tenant_id: str, start: datetime, end: datetime) -> list[Access]:
        """G5, H1: the lab's reads of personal data between ``start`` (included) and ``end``
        (excluded), each explained or not; the review itself is audited (``access:review``)."""
        self._authorise(tenant_id, "access:review")
        self._flush_events()
        self._scope(tenant_id)
        ae = t.audit_event
        lo, hi = start.astimezone(UTC), end.astimezone(UTC)
        rows = self.conn.execute(
            select(
                ae.c.seq,
                ae.c.at,
                ae.c.actor,
                ae.c.actor_roles,
                ae.c.action,
                ae.c.object_refs,
                ae.c.purpose,
                ae.c.grant_id,
            )
            .where(
                ae.c.tenant_id == tenant_id,
                ae.c.action.in_(READS),
                ae.c.outcome == "allowed",
                # a read that named no patient and returned nothing (an empty worklist) reached no one
                or_(ae.c.record_count > 0, ae.c.object_refs.is_not(None)),
                ae.c.at >= lo,
                ae.c.at < hi,
            )
            .order_by(ae.c.seq)
        ).all()
        events = [
            (r.seq, _utc(r.at), r.actor, r.actor_roles or "", r.action, _refs(r.object_refs), r.purpose, r.grant_id)
            for r in rows
        ]
        patients_of = self._patients_of_refs(tenant_id, {ref for e in events for ref in e[5]})
        relations = self._relations(tenant_id, {p for ps in patients_of.values() for p in ps})
        grants = self._grants(tenant_id, {e[7] for e in events if e[7]})
        instructed = self._instruction_users(tenant_id)
        out = []
        for seq, at, actor, roles, action, refs, purpose, grant_id in events:
            explained, reason = self._explain(
                actor, at, seq, refs, purpose, grant_id, patients_of, relations, grants, instructed
            )
            out.append(Access(seq, at, actor, roles, action, refs, purpose, grant_id, explained, reason))
        self._record(tenant_id, "access:review", "audit", len(out))
        return out

    @staticmethod
    def _explain(
        actor: str,
        at: datetime,
        seq: int,
        refs: Sequence[str],
        purpose: str,
        grant_id: str | None,
        patients_of: dict[str, frozenset[str]],
        relations: dict[str, dict[str, str]],
        grants: dict[str, tuple[str, datetime, datetime | None, datetime | None]],
        instructed: dict[str, int],
    ) -> tuple[bool, str]:
        if grant_id:
            g = grants.get(grant_id)
            in_force = g is not None and g[1] <= at and (g[2] is None or at < g[2]) and (g[3] is None or at < g[3])
            if in_force and g is not None and g[0] == actor:
                return True, "grant"
            return False, "grant-not-in-force"
        if purpose == "export" and actor in instructed and instructed[actor] <= seq:
            return True, "instruction"
        reached = [patients_of[r] for r in refs if r in patients_of]
        if not reached:
            return False, "no-patient-named" if not refs else "unknown-reference"
        reasons: list[str] = []
        for patients in reached:
            found = next((relations[p][actor] for p in sorted(patients) if actor in relations.get(p, {})), None)
            if found is None:
                return False, "no-relation"
            reasons.append(found)
        return True, reasons[0]

    # -- what the refs name ---------------------------------------------------------------------------
    def _patients_of_refs(self, tenant_id: str, refs: set[str]) -> dict[str, frozenset[str]]:
        """ref -> the pseudonyms of the patients it names (one, or none when it names no row)."""
        ids = {r for r in refs if OBJECT_ID_RE.match(r)}
        out: dict[str, frozenset[str]] = {}
        q, res, sp, rep = t.request, t.result, t.specimen, t.lab_report
        request_of: dict[str, str] = {}  # specimen, report -> request
        for chunk in _chunks(ids):
            for r in self.conn.execute(
                select(q.c.request_id, q.c.pseudonym).where(self._tf(q, tenant_id), q.c.request_id.in_(chunk))
            ):
                out[r.request_id] = frozenset({r.pseudonym})
            for r in self.conn.execute(
                select(res.c.result_id, res.c.pseudonym).where(self._tf(res, tenant_id), res.c.result_id.in_(chunk))
            ):
                out[r.result_id] = frozenset({r.pseudonym})
            for r in self.conn.execute(
                select(sp.c.specimen_id, sp.c.request_id).where(self._tf(sp, tenant_id), sp.c.specimen_id.in_(chunk))
            ):
                request_of[r.specimen_id] = r.request_id
            for r in self.conn.execute(
                select(rep.c.report_id, rep.c.request_id).where(self._tf(rep, tenant_id), rep.c.report_id.in_(chunk))
            ):
                request_of[r.report_id] = r.request_id
        pseudo_of_request: dict[str, str] = {}
        for chunk in _chunks(request_of.values()):
            for r in self.conn.execute(
                select(q.c.request_id, q.c.pseudonym).where(self._tf(q, tenant_id), q.c.request_id.in_(chunk))
            ):
                pseudo_of_request[r.request_id] = r.pseudonym
        for ref, request_id in request_of.items():
            if request_id in pseudo_of_request:
                out[ref] = frozenset({pseudo_of_request[request_id]})
        rest = ids - set(out)
        if rest:  # patient ids: through the lab's blind index (a pseudonym no request has names none)
            index = self._crypto(tenant_id).index
            pseudo = {ref: index.pseudonym(ref) for ref in rest}
            known: set[str] = set()
            for chunk in _chunks(pseudo.values()):
                known |= {
                    r.pseudonym
                    for r in self.conn.execute(
                        select(q.c.pseudonym).where(self._tf(q, tenant_id), q.c.pseudonym.in_(chunk))
                    )
                }
            patients = self._known_patients(tenant_id, {ref for ref, p in pseudo.items() if p not in known})
            out.update({ref: frozenset({p}) for ref, p in pseudo.items() if p in known or ref in patients})
        return out

    def _known_patients(self, tenant_id: str, patient_ids: set[str]) -> set[str]:
        """Patients with an identity and no request yet (a patient read before any request)."""
        pi = t.patient_identity
        found: set[str] = set()
        for chunk in _chunks(patient_ids):
            found |= {
                r.patient_id
                for r in self.conn.execute(
                    select(pi.c.patient_id).where(self._tf(pi, tenant_id), pi.c.patient_id.in_(chunk))
                )
            }
        return found

    # -- the lab's relations with those patients --------------------------------------------------------
    def _relations(self, tenant_id: str, pseudonyms: set[str]) -> dict[str, dict[str, str]]:
        """pseudonym -> {actor: the first relation found}, from the lab's own tables and trail."""
        rel: dict[str, dict[str, str]] = defaultdict(dict)
        q, res, rep = t.request, t.result, t.lab_report
        patient_of: dict[str, str] = {}  # request id -> pseudonym
        for chunk in _chunks(pseudonyms):
            for r in self.conn.execute(
                select(q.c.request_id, q.c.pseudonym, q.c.entered_by).where(
                    self._tf(q, tenant_id), q.c.pseudonym.in_(chunk)
                )
            ):
                patient_of[r.request_id] = r.pseudonym
                if r.entered_by:
                    rel[r.pseudonym].setdefault(r.entered_by, "entered-request")
        for chunk in _chunks(patient_of):
            for rs in self.conn.execute(
                select(res.c.request_id, res.c.entered_by, res.c.technical_by, res.c.biological_by).where(
                    self._tf(res, tenant_id), res.c.request_id.in_(chunk)
                )
            ):
                p = patient_of[rs.request_id]
                for who, why in (
                    (rs.entered_by, "entered-result"),
                    (rs.technical_by, "validated-technical"),
                    (rs.biological_by, "validated-biological"),
                ):
                    if who:
                        rel[p].setdefault(who, why)
            for rr in self.conn.execute(
                select(rep.c.request_id, rep.c.issued_by).where(self._tf(rep, tenant_id), rep.c.request_id.in_(chunk))
            ):
                rel[patient_of[rr.request_id]].setdefault(rr.issued_by, "issued-report")
        if patient_of:
            ae = t.audit_event
            for ev in self.conn.execute(
                select(ae.c.actor, ae.c.object_refs).where(
                    ae.c.tenant_id == tenant_id,
                    ae.c.action.startswith("specimen:"),
                    ae.c.action.not_in(_NOT_SPECIMEN_MOVES),
                    ae.c.outcome == "allowed",
                )
            ):
                refs = _refs(ev.object_refs)
                # a specimen's move names the specimen, then its request (access/work.py)
                if len(refs) >= 2 and refs[1] in patient_of:
                    rel[patient_of[refs[1]]].setdefault(ev.actor, "specimen")
        return rel

    def _grants(
        self, tenant_id: str, grant_ids: set[str]
    ) -> dict[str, tuple[str, datetime, datetime | None, datetime | None]]:
        """grant id -> (its account, approved at, expires at, revoked at): approved ones only."""
        g = t.access_grant
        out = {}
        for chunk in _chunks(grant_ids):
            for r in self.conn.execute(
                select(g.c.grant_id, g.c.account_id, g.c.approved_at, g.c.expires_at, g.c.revoked_at).where(
                    self._tf(g, tenant_id), g.c.grant_id.in_(chunk), g.c.approved_at.is_not(None)
                )
            ):
                out[r.grant_id] = (
                    r.account_id,
                    _utc(r.approved_at),
                    None if r.expires_at is None else _utc(r.expires_at),
                    None if r.revoked_at is None else _utc(r.revoked_at),
                )
        return out

    def _instruction_users(self, tenant_id: str) -> dict[str, int]:
        """actor -> the first seq at which it used one of the lab's signed instructions."""
        ae = t.audit_event
        out: dict[str, int] = {}
        for r in self.conn.execute(
            select(ae.c.actor, ae.c.seq)
            .where(ae.c.tenant_id == tenant_id, ae.c.action == "instruction:use", ae.c.outcome == "allowed")
            .order_by(ae.c.seq)
        ):
            out.setdefault(r.actor, r.seq)
        return out
