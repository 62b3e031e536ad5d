"""The gateway's part for the incident register (labvault.breach.incidents): incidents, each lab's
part and 72-hour clock, the phased versions of what is told, the timeline.

I1, I3, I5: an incident is one row of ``incident`` owned by the platform (the processor's incident,
which may concern several labs) or by a lab (its own). Each lab concerned has one ``incident_lab``
row in its own tenant: its clock (``aware_at``, ``deadline`` = ``aware_at`` + 72 h; for the
processor's incident the clock starts at the processor's notice to the lab), its counts, its
decisions. What is told (the processor's ``notice`` to a lab, the lab's ``art33`` draft) is kept as
sealed versions (initial, then complementary) in the lab's tenant; the timeline (``incident_step``)
holds references and counts only.

Free text (facts, effects, remedial action, reasoning, reasons for a delay or an exemption) is
sealed with the owner's key (``keys.wrap`` of the lab, or of the platform), bound to the incident
and the field. Who may do what is the policy table's: ``incident:manage`` (the security officer on
the platform's incidents; a lab's lab_admin/lab_dpo on the lab's), ``incident:read``,
``incident:decide`` (a lab's lab_admin and lab_dpo: decisions and the Art. 33 draft),
``incident:letters`` (the lab's lab_dpo only: the affected patients' names and addresses, opened
under ``Purpose.BREACH``, audited with the count), ``incident:remind`` (``system:monitor`` only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from labvault.access.principal import Purpose
from labvault.access.state import UnitState
from labvault.crypto.digest import sha256_hex
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Identity
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

CLOCK = timedelta(hours=72)
REMINDERS = (24, 48, 66)  # hours after the lab's awareness
KINDS = ("confidentiality", "integrity", "availability")
DECISIONS = ("notify", "no-risk")
GROUNDS = ("encrypted", "measures", "disproportionate")  # GDPR Art. 34(3) (a), (b), (c)
DOCUMENTS = ("notice", "art33")
MAX_TEXT = 20_000
FACT_FIELDS = ("facts", "effects", "remedial")
# A lab's own acts on its part: the vendor reads the step and the part's state, never these.
LAB_ACTS = frozenset({"decided", "notified", "exempted", "letters", "drafted"})


@dataclass(frozen=True, slots=True)
class LabPart:
    """One lab's part of an incident: its clock, counts and decisions (references and counts only)."""

    tenant_id: str
    incident_id: str
    owner: str
    state: str
    aware_at: datetime
    deadline: datetime
    reminders: int
    notice_at: datetime | None
    patients: int | None
    records: int | None
    categories: dict[str, int]
    severity: dict[str, Any] | None
    decision: str | None
    decided_by: str | None
    decided_at: datetime | None
    notified_at: datetime | None
    authority_ref: str | None
    art34: str | None
    letters_at: datetime | None
    letters: int | None

    @property
    def clock_started(self) -> bool:
        """A lab's own incident: from its awareness; the processor's: from its notice to the lab."""
        return self.owner != PLATFORM or self.notice_at is not None

    def remaining(self, now: datetime) -> timedelta:
        return self.deadline - now

    def public(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {
            "tenant": self.tenant_id,
            "incident_id": self.incident_id,
            "owner": self.owner,
            "state": self.state,
            "clock_started": self.clock_started,
            "aware_at": iso(self.aware_at),
            "deadline": iso(self.deadline),
            "reminders": self.reminders,
            "notice_at": iso(self.notice_at),
            "patients": self.patients,
            "records": self.records,
            "categories": dict(self.categories),
            "severity": self.severity,
            "decision": self.decision,
            "decided_at": iso(self.decided_at),
            "notified_at": iso(self.notified_at),
            "authority_ref": self.authority_ref,
            "art34": self.art34,
            "letters_at": iso(self.letters_at),
            "letters": self.letters,
        }


@dataclass(frozen=True, slots=True)
class Incident:
    """An incident as the caller may see it: a lab sees its own part only (``labs``/``parts``)."""

    owner: str
    incident_id: str
    title: str
    kind: str
    state: str
    aware_at: datetime
    occurred_at: datetime | None
    advisory_id: str | None
    analysis_id: str | None
    labs: tuple[str, ...]
    severity: dict[str, Any] | None
    opened_by: str
    opened_at: datetime
    closed_at: datetime | None
    parts: tuple[LabPart, ...] = ()
    facts: dict[str, str] | None = None  # opened: the owner's people only (``incident`` show)

    def part(self, tenant_id: str) -> LabPart:
        for p in self.parts:
            if p.tenant_id == tenant_id:
                return p
        raise NotFound("this lab has no part in this incident")

    def public(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "owner": self.owner,
            "title": self.title,
            "kind": self.kind,
            "state": self.state,
            "aware_at": self.aware_at.isoformat(),
            "occurred_at": None if self.occurred_at is None else self.occurred_at.isoformat(),
            "advisory_id": self.advisory_id,
            "analysis_id": self.analysis_id,
            "labs": list(self.labs),
            "severity": self.severity,
            "opened_by": self.opened_by,
            "opened_at": self.opened_at.isoformat(),
            "closed_at": None if self.closed_at is None else self.closed_at.isoformat(),
            "parts": [p.public() for p in self.parts],
        }


@dataclass(frozen=True, slots=True)
class Version:
    """One phased version of a document told (``notice`` or ``art33``), its body opened."""

    tenant_id: str
    incident_id: str
    document: str
    version: int
    phase: str
    sha256: str
    created_by: str
    created_at: datetime
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step:
    tenant_id: str
    incident_id: str
    seq: int
    at: datetime
    step: str
    by: str
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id,
            "seq": self.seq,
            "at": self.at.isoformat(),
            "step": self.step,
            "by": self.by,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Scope:
    """One lab's counts from a leak analysis (``leak_match``): no patient id, no value."""

    tenant_id: str
    patients: int
    records: int
    ambiguous: int
    categories: dict[str, int]
    fields: tuple[str, ...]


def _utc(v: datetime) -> datetime:
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


def _text(value: str | None, what: str, *, required: bool = False) -> str | None:
    if value is None or not value.strip():
        if required:
            raise InvalidInput(f"the incident's {what} is required")
        return None
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"the incident's {what} is longer than {MAX_TEXT} characters")
    return value.strip()


def _choice(value: str, what: str, allowed: Sequence[str]) -> str:
    v = (value or "").strip().lower()
    if v not in allowed:
        raise InvalidInput(f"the incident's {what} is one of {', '.join(allowed)}")
    return v


def _vendor_view(part: LabPart) -> LabPart:
    """A lab's part as the vendor reads it: its clock, state and counts; its decision, who took it,
    the authority's reference, the Art. 34 exemption and letters are the lab's own."""
    return replace(
        part,
        decision=None,
        decided_by=None,
        decided_at=None,
        authority_ref=None,
        art34=None,
        letters_at=None,
        letters=None,
    )


def _part_of(r: Any) -> LabPart:
    return LabPart(
        tenant_id=r.tenant_id,
        incident_id=r.incident_id,
        owner=r.owner,
        state=r.state,
        aware_at=_utc(r.aware_at),
        deadline=_utc(r.deadline),
        reminders=int(r.reminders),
        notice_at=stored_utc(r.notice_at),
        patients=r.patients,
        records=r.records,
        categories=json.loads(r.categories or "{}"),
        severity=json.loads(r.severity) if r.severity else None,
        decision=r.decision,
        decided_by=r.decided_by,
        decided_at=stored_utc(r.decided_at),
        notified_at=stored_utc(r.notified_at),
        authority_ref=r.authority_ref,
        art34=r.art34,
        letters_at=stored_utc(r.letters_at),
        letters=r.letters,
    )


class Incidents(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""

    # -- sealing: the owner's key (the lab's, or the platform's), bound to the incident and field ----
    def _seal_incident(self, tenant_id: str, incident_id: str, what: str, data: Mapping[str, Any]) -> bytes:
        blob = json.dumps(dict(data), ensure_ascii=False, sort_keys=True).encode()
        return self._gw.keys.wrap(tenant_id, blob, f"incident:{incident_id}:{what}".encode())

    def _open_incident(self, tenant_id: str, incident_id: str, what: str, sealed: bytes | None) -> dict[str, Any]:
        if sealed is None:
            return {}
        blob = self._gw.keys.unwrap(tenant_id, bytes(sealed), f"incident:{incident_id}:{what}".encode())
        out = json.loads(blob)
        return out if isinstance(out, dict) else {}

    def _viewer(self, tenant_id: str | None) -> str:
        return tenant_id or self.principal.tenant_id

    # -- rows -----------------------------------------------------------------------------------------
    def _incident_row(self, owner: str, incident_id: str) -> Any:
        i = t.incident
        self._scope(owner)
        row = self.conn.execute(
            select(i).where(self._tf(i, owner), i.c.incident_id == (incident_id or "").strip())
        ).first()
        if row is None:
            raise NotFound("no such incident")
        return row

    def _part_row(self, tenant_id: str, incident_id: str) -> Any:
        p = t.incident_lab
        self._scope(tenant_id)
        row = self.conn.execute(
            select(p).where(self._tf(p, tenant_id), p.c.incident_id == (incident_id or "").strip())
        ).first()
        if row is None:
            raise NotFound("no such incident in this lab")
        return row

    def _parts(self, owner: str, incident_id: str, labs: Sequence[str]) -> tuple[LabPart, ...]:
        out = []
        for lab in labs:
            p = t.incident_lab
            self._scope(lab)
            r = self.conn.execute(
                select(p).where(self._tf(p, lab), p.c.incident_id == incident_id, p.c.owner == owner)
            ).first()
            if r is not None:
                part = _part_of(r)
                out.append(_vendor_view(part) if self.principal.is_platform else part)
        return tuple(out)

    def _incident_of(self, row: Any, parts: tuple[LabPart, ...], *, only: str | None = None) -> Incident:
        labs = tuple(json.loads(row.labs or "[]"))
        severity = json.loads(row.severity) if row.severity else None
        if only is not None:  # a lab sees itself among the labs concerned, never the other labs
            labs = (only,)
            parts = tuple(p for p in parts if p.tenant_id == only)
            if row.tenant_id != only:  # the processor's score weighs every lab's categories: its own
                severity = parts[0].severity if parts else None
        return Incident(
            owner=row.tenant_id,
            incident_id=row.incident_id,
            title=row.title,
            kind=row.kind,
            state=row.state,
            aware_at=_utc(row.aware_at),
            occurred_at=stored_utc(row.occurred_at),
            advisory_id=row.advisory_id,
            analysis_id=row.analysis_id,
            labs=labs,
            severity=severity,
            opened_by=row.opened_by,
            opened_at=_utc(row.opened_at),
            closed_at=stored_utc(row.closed_at),
            parts=parts,
        )

    def _step(self, tenant_id: str, incident_id: str, step: str, detail: Mapping[str, Any] | None = None) -> None:
        s = t.incident_step
        self._scope(tenant_id)
        last = self.conn.execute(
            select(func.max(s.c.seq)).where(self._tf(s, tenant_id), s.c.incident_id == incident_id)
        ).scalar()
        self.conn.execute(
            s.insert().values(
                tenant_id=tenant_id,
                incident_id=incident_id,
                seq=int(last or 0) + 1,
                at=utcnow(),
                step=step,
                by=self.principal.account_id,
                detail=json.dumps(dict(detail or {}), sort_keys=True),
            )
        )

    def _lab_owner(self, tenant_id: str, incident_id: str) -> tuple[Any, Any]:
        """A lab's part and the incident row it belongs to (read across tenants for the owner's row)."""
        part = self._part_row(tenant_id, incident_id)
        row = self._incident_row(part.owner, incident_id)
        self._scope(tenant_id)
        return part, row

    # -- the register ---------------------------------------------------------------------------------
    def incident_open(
        self,
        *,
        title: str,
        aware_at: datetime,
        owner: str | None = None,
        kind: str = "confidentiality",
        labs: Sequence[str] = (),
        scopes: Mapping[str, Scope] | None = None,
        severity: Mapping[str, Any] | None = None,
        lab_severity: Mapping[str, Mapping[str, Any]] | None = None,
        analysis_id: str | None = None,
        advisory_id: str | None = None,
        occurred_at: datetime | None = None,
        facts: Mapping[str, str] | None = None,
    ) -> Incident:
        """I1: register an incident. ``owner``: the platform (the processor's incident, one part per
        lab concerned) or a lab (its own: one part, its clock started at ``aware_at``)."""
        who = owner or self.principal.tenant_id
        self._authorise(who, "incident:manage")
        name = _text(title, "title", required=True) or ""
        if len(name) > 200:
            raise InvalidInput("the incident's title is longer than 200 characters")
        k = _choice(kind, "kind", KINDS)
        aware = _utc(aware_at)
        now = utcnow()
        if aware > now + timedelta(minutes=5):
            raise InvalidInput("the incident's aware_at is in the future")
        scope_map = dict(scopes or {})
        concerned = sorted({*labs, *scope_map})
        if who != PLATFORM:
            stray = [lab for lab in concerned if lab != who]
            if stray:
                raise InvalidInput("a lab's own incident concerns that lab only")
            concerned = [who]
        elif not concerned:
            raise InvalidInput("the processor's incident needs the labs concerned (--analysis or --lab)")
        for lab in concerned:
            if lab != who:
                self.tenant(lab)  # an unknown lab is a 404
        if advisory_id is not None:
            advisory_id = advisory_id.strip() or None
        if advisory_id is not None:  # an outside report of the processor's own advisory register
            if who != PLATFORM:
                raise InvalidInput("a lab's own incident names no advisory: the advisory register is the processor's")
            try:
                advisory_id = self._advisory_row(advisory_id).advisory_id  # type: ignore[attr-defined]
            except NotFound:
                raise InvalidInput("no such advisory in the advisory register") from None
        sealed = {f: v for f, v in ((f, _text((facts or {}).get(f), f)) for f in FACT_FIELDS) if v}
        incident_id = new_id()
        self._scope(who)
        self.conn.execute(
            t.incident.insert().values(
                tenant_id=who,
                incident_id=incident_id,
                title=name,
                kind=k,
                state="open",
                aware_at=aware,
                occurred_at=occurred_at,
                advisory_id=advisory_id,
                analysis_id=analysis_id,
                labs=json.dumps(concerned),
                severity=json.dumps(dict(severity)) if severity else None,
                facts_enc=self._seal_incident(who, incident_id, "facts", sealed) if sealed else None,
                opened_by=self.principal.account_id,
                opened_at=now,
            )
        )
        self._step(who, incident_id, "opened", {"labs": len(concerned), "analysis": analysis_id})
        self._record(who, "incident:open", "incident", 1, refs=[incident_id])
        for lab in concerned:
            sc = scope_map.get(lab)
            sev = (lab_severity or {}).get(lab) or severity
            self._scope(lab)
            self.conn.execute(
                t.incident_lab.insert().values(
                    tenant_id=lab,
                    incident_id=incident_id,
                    owner=who,
                    state="open",
                    aware_at=aware,
                    deadline=aware + CLOCK,
                    reminders=0,
                    patients=sc.patients if sc else None,
                    records=sc.records if sc else None,
                    categories=json.dumps(sc.categories if sc else {}),
                    severity=json.dumps(dict(sev)) if sev else None,
                )
            )
            if lab != who:
                self._step(lab, incident_id, "opened", {"owner": "processor"})
            if sc is not None:
                self._step(lab, incident_id, "analysed", {"patients": sc.patients, "records": sc.records})
            if lab != who:
                self._record(lab, "incident:open", "incident", 1, refs=[incident_id])
        return self._incident_of(self._incident_row(who, incident_id), self._parts(who, incident_id, concerned))

    def incidents(self, tenant_id: str | None = None, *, state: str | None = None) -> list[Incident]:
        """The register as the caller sees it: the platform's incidents with every lab's part (the
        vendor), or the incidents a lab has a part in, its own part only (a lab's people)."""
        viewer = self._viewer(tenant_id)
        self._authorise(viewer, "incident:read")
        out: list[Incident] = []
        if viewer == PLATFORM:
            i = t.incident
            q = select(i).where(self._tf(i, PLATFORM)).order_by(i.c.opened_at.desc(), i.c.incident_id)
            if state:
                q = q.where(i.c.state == state)
            for row in self.conn.execute(q).all():
                labs = json.loads(row.labs or "[]")
                out.append(self._incident_of(row, self._parts(PLATFORM, row.incident_id, labs)))
            self._scope(PLATFORM)
        else:
            p = t.incident_lab
            parts = [
                _part_of(r)
                for r in self.conn.execute(select(p).where(self._tf(p, viewer)).order_by(p.c.deadline)).all()
            ]
            for part in parts:
                row = self._incident_row(part.owner, part.incident_id)
                if state and row.state != state:
                    continue
                out.append(self._incident_of(row, (part,), only=viewer))
            self._scope(viewer)
        self._record(viewer, "incident:list", "incident", len(out))
        return out

    def incident(self, incident_id: str, tenant_id: str | None = None) -> Incident:
        """One incident: the owner's people see its sealed facts opened (audited); a lab of the
        processor's incident sees its own part only."""
        viewer = self._viewer(tenant_id)
        self._authorise(viewer, "incident:read")
        if viewer == PLATFORM:
            row = self._incident_row(PLATFORM, incident_id)
            inc = self._incident_of(row, self._parts(PLATFORM, row.incident_id, json.loads(row.labs or "[]")))
        else:
            part, row = self._lab_owner(viewer, incident_id)
            inc = self._incident_of(row, (_part_of(part),), only=viewer)
        if row.tenant_id == viewer:
            facts = self._open_incident(row.tenant_id, row.incident_id, "facts", row.facts_enc)
            inc = replace(inc, facts={k: str(v) for k, v in facts.items()})
        self._scope(viewer)
        self._record(viewer, "incident:read", "incident", 1, refs=[row.incident_id])
        return inc

    def incident_update(
        self,
        incident_id: str,
        *,
        tenant_id: str | None = None,
        facts: Mapping[str, str] | None = None,
        severity: Mapping[str, Any] | None = None,
        severity_reason: str | None = None,
        state: str | None = None,
    ) -> Incident:
        """I1: the owner updates the facts, effects and remedial action (sealed), the severity (a
        reason required, sealed with the facts) or the state (open, contained)."""
        owner = self._viewer(tenant_id)
        self._authorise(owner, "incident:manage")
        row = self._incident_row(owner, incident_id)
        if row.state == "closed":
            raise InvalidInput("a closed incident is not updated")
        sealed = self._open_incident(owner, row.incident_id, "facts", row.facts_enc)
        for f in FACT_FIELDS:
            v = _text((facts or {}).get(f), f)
            if v:
                sealed[f] = v
        values: dict[str, Any] = {}
        changed = [f for f in FACT_FIELDS if (facts or {}).get(f)]
        if severity is not None:
            why = _text(severity_reason, "severity reason", required=True) or ""
            sealed.setdefault("severity_reasons", [])
            sealed["severity_reasons"] = [*list(sealed["severity_reasons"]), why]
            values["severity"] = json.dumps(dict(severity))
            changed.append("severity")
        if state is not None:
            values["state"] = _choice(state, "state", ("open", "contained"))
            changed.append("state")
        if not changed:
            raise InvalidInput("nothing to update: give facts, effects, remedial action, a severity or a state")
        values["facts_enc"] = self._seal_incident(owner, row.incident_id, "facts", sealed)
        self.conn.execute(
            update(t.incident)
            .where(self._tf(t.incident, owner), t.incident.c.incident_id == row.incident_id)
            .values(**values)
        )
        self._step(owner, row.incident_id, "updated", {"fields": changed})
        self._record(owner, "incident:update", "incident", 1, refs=[row.incident_id, *changed])
        return self.incident(row.incident_id, owner)

    def incident_close(self, incident_id: str, tenant_id: str | None = None) -> Incident:
        """Close an incident: the owner's; every lab part decided (notify and notified, or no-risk)."""
        owner = self._viewer(tenant_id)
        self._authorise(owner, "incident:manage")
        row = self._incident_row(owner, incident_id)
        if row.state == "closed":
            raise InvalidInput("this incident is closed already")
        parts = self._parts(owner, row.incident_id, json.loads(row.labs or "[]"))
        undecided = [p for p in parts if p.state == "open"]
        if owner != PLATFORM and undecided:
            self._record(owner, "incident:close", "incident", 0, outcome="denied", refs=[row.incident_id])
            raise InvalidInput("an incident is closed only after the lab's decision (notified, or no risk)")
        now = utcnow()
        self._scope(owner)
        self.conn.execute(
            update(t.incident)
            .where(self._tf(t.incident, owner), t.incident.c.incident_id == row.incident_id)
            .values(state="closed", closed_by=self.principal.account_id, closed_at=now)
        )
        self._step(owner, row.incident_id, "closed", {"undecided_labs": len(undecided)})
        self._record(owner, "incident:close", "incident", 1, refs=[row.incident_id])
        return self._incident_of(self._incident_row(owner, row.incident_id), parts)

    def incident_timeline(self, incident_id: str, tenant_id: str | None = None) -> list[Step]:
        """The steps, oldest first: the owner's and, for the vendor, each lab's; a lab, its own."""
        viewer = self._viewer(tenant_id)
        self._authorise(viewer, "incident:read")
        if viewer == PLATFORM:
            row = self._incident_row(PLATFORM, incident_id)
            tenants = [PLATFORM, *json.loads(row.labs or "[]")]
        else:
            part = self._part_row(viewer, incident_id)
            tenants = [part.tenant_id]
        s = t.incident_step
        out: list[Step] = []
        for ten in tenants:
            self._scope(ten)
            for r in self.conn.execute(
                select(s).where(self._tf(s, ten), s.c.incident_id == incident_id).order_by(s.c.seq)
            ).all():
                detail = json.loads(r.detail or "{}")
                if ten != PLATFORM and viewer == PLATFORM and r.step in LAB_ACTS:
                    detail = {}  # the lab's decisions are its own: the vendor reads the step's name only
                out.append(Step(ten, r.incident_id, int(r.seq), _utc(r.at), r.step, r.by, detail))
        self._scope(viewer)
        out.sort(key=lambda st: (st.at, st.tenant_id != PLATFORM, st.seq))
        self._record(viewer, "incident:read", "incident_step", len(out), refs=[incident_id])
        return out

    # -- what is told: phased versions -----------------------------------------------------------------
    def _versions(self, tenant_id: str, incident_id: str, document: str) -> list[Version]:
        v = t.incident_version
        rows = self.conn.execute(
            select(v)
            .where(self._tf(v, tenant_id), v.c.incident_id == incident_id, v.c.document == document)
            .order_by(v.c.version)
        ).all()
        return [
            Version(
                tenant_id=tenant_id,
                incident_id=r.incident_id,
                document=r.document,
                version=int(r.version),
                phase=r.phase,
                sha256=r.body_sha256,
                created_by=r.created_by,
                created_at=_utc(r.created_at),
                body=self._open_incident(tenant_id, incident_id, f"{document}:{r.version}", r.body_enc),
            )
            for r in rows
        ]

    def _add_version(self, tenant_id: str, incident_id: str, document: str, body: Mapping[str, Any]) -> Version:
        before = self._versions(tenant_id, incident_id, document)
        number = len(before) + 1
        phase = "initial" if number == 1 else "complementary"
        data = {**dict(body), "phase": phase, "version": number}
        blob = json.dumps(data, ensure_ascii=False, sort_keys=True).encode()
        now = utcnow()
        self._scope(tenant_id)
        self.conn.execute(
            t.incident_version.insert().values(
                tenant_id=tenant_id,
                incident_id=incident_id,
                document=document,
                version=number,
                phase=phase,
                key_version=None,
                body_enc=self._seal_incident(tenant_id, incident_id, f"{document}:{number}", data),
                body_sha256=sha256_hex(blob),
                created_by=self.principal.account_id,
                created_at=now,
            )
        )
        return Version(tenant_id, incident_id, document, number, phase, sha256_hex(blob), self.principal.account_id,
                       now, data)  # fmt: skip

    def incident_notice(self, incident_id: str, bodies: Mapping[str, Mapping[str, Any]]) -> list[Version]:
        """I2, I5: the processor's notice to each lab (SCC 2021/915 clause 9.2), one version per lab
        in that lab's tenant (initial, then complementary); the first starts the lab's clock."""
        self._authorise(PLATFORM, "incident:manage")
        row = self._incident_row(PLATFORM, incident_id)
        labs = json.loads(row.labs or "[]")
        stray = [lab for lab in bodies if lab not in labs]
        if stray:
            raise InvalidInput("a notice for a lab the incident does not concern")
        out = []
        now = utcnow()
        for lab in labs:
            if lab not in bodies:
                continue
            self._authorise(lab, "incident:manage")
            part = self._part_row(lab, row.incident_id)
            version = self._add_version(lab, row.incident_id, "notice", bodies[lab])
            values: dict[str, Any] = {}
            if part.notice_at is None:  # the lab becomes aware now: its 72 hours start
                values = {"notice_at": now, "aware_at": now, "deadline": now + CLOCK, "reminders": 0}
            if values:
                self.conn.execute(
                    update(t.incident_lab)
                    .where(self._tf(t.incident_lab, lab), t.incident_lab.c.incident_id == row.incident_id)
                    .values(**values)
                )
            self._step(lab, row.incident_id, "notice", {"version": version.version, "phase": version.phase})
            self._record(lab, "incident:notice", "incident", 1, refs=[row.incident_id, f"v{version.version}"])
            out.append(version)
        self._step(PLATFORM, row.incident_id, "notice", {"labs": len(out)})
        self._record(PLATFORM, "incident:notice", "incident", len(out), refs=[row.incident_id])
        return out

    def incident_versions(self, incident_id: str, tenant_id: str, document: str) -> list[Version]:
        """The versions kept of a lab's notice (``incident:read``) or Art. 33 draft (the lab's own
        lab_admin/lab_dpo: ``incident:decide``), oldest first, bodies opened."""
        doc = _choice(document, "document", DOCUMENTS)
        self._authorise(tenant_id, "incident:read" if doc == "notice" else "incident:decide")
        self._part_row(tenant_id, incident_id)
        out = self._versions(tenant_id, incident_id, doc)
        self._record(
            tenant_id,
            "incident:notice:read" if doc == "notice" else "incident:draft:read",
            "incident_version",
            len(out),
            refs=[incident_id],
        )
        return out

    def incident_draft(self, incident_id: str, tenant_id: str, body: Mapping[str, Any]) -> Version:
        """I3: keep a version of the lab's Art. 33(3) draft (the lab's lab_admin or lab_dpo)."""
        self._authorise(tenant_id, "incident:decide")
        self._part_row(tenant_id, incident_id)
        version = self._add_version(tenant_id, incident_id, "art33", body)
        self._step(tenant_id, incident_id, "drafted", {"version": version.version, "phase": version.phase})
        self._record(tenant_id, "incident:draft", "incident", 1, refs=[incident_id, f"v{version.version}"])
        return version

    def incident_dpo(self, tenant_id: str) -> tuple[str, str] | None:
        """The lab's DPO contact for its draft: the name and e-mail of its active lab_dpo account."""
        self._authorise(tenant_id, "incident:read")
        a = t.account
        for r in self.conn.execute(
            select(a.c.name, a.c.email, a.c.roles).where(self._tf(a, tenant_id), a.c.active == 1).order_by(a.c.name)
        ).all():
            if "lab_dpo" in (r.roles or "").split(","):
                return str(r.name), str(r.email)
        return None

    def incident_contact(self) -> tuple[str, str]:
        """The acting account's name and e-mail (the vendor's contact on its notices)."""
        a = t.account
        self._scope(self.principal.tenant_id)
        r = self.conn.execute(
            select(a.c.name, a.c.email).where(
                self._tf(a, self.principal.tenant_id), a.c.account_id == self.principal.account_id
            )
        ).first()
        return (str(r.name), str(r.email)) if r is not None else (self.principal.name, "")

    # -- a lab's decisions --------------------------------------------------------------------------------
    def _reasons(self, part: Any) -> dict[str, Any]:
        return self._open_incident(part.tenant_id, part.incident_id, "reasons", part.reasons_enc)

    def _set_part(self, tenant_id: str, incident_id: str, values: Mapping[str, Any]) -> LabPart:
        p = t.incident_lab
        self._scope(tenant_id)
        self.conn.execute(
            update(p).where(self._tf(p, tenant_id), p.c.incident_id == incident_id).values(**dict(values))
        )
        return _part_of(self._part_row(tenant_id, incident_id))

    def incident_decide(self, incident_id: str, tenant_id: str, *, decision: str, reasoning: str) -> LabPart:
        """I1, I3: the lab's decision on notifying the authority (notify / no-risk) and its reasoning."""
        self._authorise(tenant_id, "incident:decide")
        d = _choice(decision, "decision", DECISIONS)
        why = _text(reasoning, "decision reasoning", required=True)
        part, _row = self._lab_owner(tenant_id, incident_id)
        if part.notified_at is not None:
            raise InvalidInput("the authority has been notified already: the decision stands")
        reasons = {**self._reasons(part), "decision": why}
        got = self._set_part(
            tenant_id,
            part.incident_id,
            {
                "decision": d,
                "decided_by": self.principal.account_id,
                "decided_at": utcnow(),
                "state": "not-notified" if d == "no-risk" else "open",
                "reasons_enc": self._seal_incident(tenant_id, part.incident_id, "reasons", reasons),
            },
        )
        self._step(tenant_id, part.incident_id, "decided", {"decision": d})
        self._record(tenant_id, "incident:decide", "incident", 1, refs=[part.incident_id, f"decision:{d}"])
        return got

    def incident_notified(
        self, incident_id: str, tenant_id: str, *, at: datetime, reference: str, delay_reason: str | None = None
    ) -> LabPart:
        """I3: record the authority's notification (Art. 33). Past the lab's 72-hour deadline a reason
        for the delay is required (Art. 33(1)); refused without."""
        self._authorise(tenant_id, "incident:decide")
        part, _row = self._lab_owner(tenant_id, incident_id)
        when = _utc(at)
        if when > utcnow() + timedelta(minutes=5):
            raise InvalidInput("the notification's time is in the future")
        if when < _utc(part.aware_at) and part.owner != PLATFORM:
            # a lab's own incident: nothing is notified before the lab became aware (a date set back
            # would dodge the reason for the delay); a processor's: the lab may have known first
            raise InvalidInput("the notification's time is before the lab's awareness of the incident")
        ref = _text(reference, "authority reference", required=True) or ""
        if len(ref) > 100:
            raise InvalidInput("the authority reference is longer than 100 characters")
        if part.decision == "no-risk":
            raise InvalidInput("the lab decided no risk: record the decision to notify first")
        late = when > _utc(part.deadline)
        why = _text(delay_reason, "reason for the delay")
        if late and why is None:
            self._record(tenant_id, "incident:notified", "incident", 0, outcome="denied", refs=[part.incident_id])
            raise InvalidInput(
                "notified after the 72-hour deadline: the reason for the delay is required (GDPR Art. 33(1))"
            )
        reasons = self._reasons(part)
        if why:
            reasons["delay"] = why
        got = self._set_part(
            tenant_id,
            part.incident_id,
            {
                "state": "notified",
                "decision": "notify",
                "decided_by": part.decided_by or self.principal.account_id,
                "decided_at": part.decided_at or utcnow(),
                "notified_at": when,
                "authority_ref": ref,
                "reasons_enc": self._seal_incident(tenant_id, part.incident_id, "reasons", reasons),
            },
        )
        self._step(tenant_id, part.incident_id, "notified", {"late": late})
        self._record(
            tenant_id, "incident:notified", "incident", 1, refs=[part.incident_id, "late" if late else "in-time"]
        )
        return got

    def incident_reasons(self, incident_id: str, tenant_id: str) -> dict[str, Any]:
        """The lab's sealed reasoning (decision, delay, exemption), for its own lab_admin/lab_dpo."""
        self._authorise(tenant_id, "incident:decide")
        part = self._part_row(tenant_id, incident_id)
        self._record(tenant_id, "incident:reasons:read", "incident", 1, refs=[part.incident_id])
        return self._reasons(part)

    def incident_exempt(self, incident_id: str, tenant_id: str, *, ground: str, reason: str) -> LabPart:
        """Art. 34(3): no letters, on a ground (encrypted, measures, disproportionate) and a reason."""
        self._authorise(tenant_id, "incident:decide")
        g = _choice(ground, "exemption ground", GROUNDS)
        why = _text(reason, "exemption reason", required=True)
        part, _row = self._lab_owner(tenant_id, incident_id)
        if part.art34 == "letters":
            raise InvalidInput("the letters have been written already")
        reasons = {**self._reasons(part), "exemption": why}
        art34 = "public" if g == "disproportionate" else f"exempt-{g}"
        got = self._set_part(
            tenant_id,
            part.incident_id,
            {"art34": art34, "reasons_enc": self._seal_incident(tenant_id, part.incident_id, "reasons", reasons)},
        )
        self._step(tenant_id, part.incident_id, "exempted", {"ground": g})
        self._record(tenant_id, "incident:exempt", "incident", 1, refs=[part.incident_id, f"ground:{g}"])
        return got

    # -- Art. 34 letters: the lab's DPO opens the affected patients' names and addresses -----------------
    def _affected(self, tenant_id: str, part: Any, row: Any, given: Sequence[str] | None) -> list[str]:
        reasons = self._reasons(part)
        known: list[str] | None = None
        if row.analysis_id:  # the analysis's sealed list (labvault.access.breach)
            known = list(self.affected_patients(tenant_id, row.analysis_id))  # type: ignore[attr-defined]
        elif reasons.get("affected"):
            known = list(reasons["affected"])
        if known is None:
            if not given:
                raise InvalidInput("the affected patients are not known: no analysis names them for this lab")
            return sorted(set(given))
        if given:
            outside = set(given) - set(known)
            if outside:
                self._deny(tenant_id, "incident:letters", "a patient outside the incident's affected list")
            return sorted(set(given))
        return sorted(set(known))

    def incident_addressees(
        self, incident_id: str, tenant_id: str, patient_ids: Sequence[str] | None = None
    ) -> list[Identity]:
        """Art. 34: the affected patients' identities (name, address) for their letters: the lab's own
        lab_dpo only (``incident:letters``), under ``Purpose.BREACH``, for the incident's affected
        patients only (the analysis's list, or the one the lab's DPO recorded first for a lab's own
        incident); audited with the count."""
        self._authorise(tenant_id, "incident:letters")
        if self.purpose != Purpose.BREACH:
            self._deny(tenant_id, "incident:letters", "the affected patients are opened under the breach purpose only")
        part, row = self._lab_owner(tenant_id, incident_id)
        if part.decision == "no-risk" or (part.art34 or "").startswith("exempt") or part.art34 == "public":
            raise InvalidInput("no letters: the lab decided no risk or recorded an Art. 34(3) exemption")
        ids = self._affected(tenant_id, part, row, patient_ids)
        reasons = self._reasons(part)
        if not reasons.get("affected"):
            reasons["affected"] = ids
            self._set_part(
                tenant_id,
                part.incident_id,
                {"reasons_enc": self._seal_incident(tenant_id, part.incident_id, "reasons", reasons)},
            )
        c = self._crypto(tenant_id)
        pi = t.patient_identity
        rows: list[Any] = []
        for i in range(0, len(ids), 500):
            rows += self.conn.execute(
                select(pi).where(self._tf(pi, tenant_id), pi.c.patient_id.in_(ids[i : i + 500]))
            ).all()
        if len(rows) != len(ids):
            self._record(tenant_id, "incident:letters:open", "patient", 0, outcome="error", refs=[part.incident_id])
            raise NotFound("an affected patient is not a patient of this lab")
        rows.sort(key=lambda r: r.patient_id)
        people = self._identities(c, tenant_id, rows)  # type: ignore[attr-defined]
        self._record(tenant_id, "incident:letters:open", "patient", len(people), refs=[part.incident_id])
        return list(people)

    def incident_letters_written(self, incident_id: str, tenant_id: str, count: int) -> LabPart:
        """Record that the lab's letters were written (the count only)."""
        self._authorise(tenant_id, "incident:letters")
        part = self._part_row(tenant_id, incident_id)
        got = self._set_part(
            tenant_id, part.incident_id, {"art34": "letters", "letters": int(count), "letters_at": utcnow()}
        )
        self._step(tenant_id, part.incident_id, "letters", {"letters": int(count)})
        self._record(tenant_id, "incident:letters", "incident", int(count), refs=[part.incident_id])
        return got

    # -- the clock's reminders: the monitoring process ------------------------------------------------
    def incident_clocks(self) -> list[LabPart]:
        """Every lab part still open whose clock has started (``incident:remind``: system:monitor)."""
        self._authorise(PLATFORM, "incident:remind")
        p = t.incident_lab
        self._scope("*")
        rows = self.conn.execute(select(p).where(p.c.state == "open").order_by(p.c.deadline)).all()
        return [part for part in (_part_of(r) for r in rows) if part.clock_started]

    def incident_pending_notices(self) -> list[tuple[str, str, int]]:
        """(lab, incident, version) of the notices not yet sent to the lab's channels."""
        self._authorise(PLATFORM, "incident:remind")
        v, s = t.incident_version, t.incident_step
        self._scope("*")
        made = self.conn.execute(
            select(v.c.tenant_id, v.c.incident_id, v.c.version).where(v.c.document == "notice")
        ).all()
        sent = {
            (r.tenant_id, r.incident_id, json.loads(r.detail or "{}").get("version"))
            for r in self.conn.execute(
                select(s.c.tenant_id, s.c.incident_id, s.c.detail).where(s.c.step == "notice-sent")
            ).all()
        }
        return sorted(
            (r.tenant_id, r.incident_id, int(r.version))
            for r in made
            if (r.tenant_id, r.incident_id, int(r.version)) not in sent
        )

    def incident_notice_sent(self, tenant_id: str, incident_id: str, version: int, alert_id: str | None) -> None:
        self._authorise(tenant_id, "incident:remind")
        self._step(tenant_id, incident_id, "notice-sent", {"version": version, "alert": alert_id})
        self._record(tenant_id, "incident:notice:sent", "incident", 1, refs=[incident_id, f"v{version}"])

    def incident_claim_reminder(self, tenant_id: str, incident_id: str, hour: int) -> bool:
        """Take the reminder of ``hour`` for this pass: False when another pass took it already (the
        count only moves forward, row-locked by the update: two processes never both send it)."""
        self._authorise(tenant_id, "incident:remind")
        if hour not in REMINDERS:
            raise InvalidInput("a reminder is at 24, 48 or 66 hours")
        p = t.incident_lab
        self._scope(tenant_id)
        n = REMINDERS.index(hour) + 1
        done = self.conn.execute(
            update(p)
            .where(self._tf(p, tenant_id), p.c.incident_id == incident_id, p.c.state == "open", p.c.reminders < n)
            .values(reminders=n)
        )
        return bool(done.rowcount)

    def incident_reminded(self, tenant_id: str, incident_id: str, hour: int, alert_id: str | None) -> None:
        """One reminder sent (24, 48 or 66 h): counted on the lab's part, a step of its timeline."""
        self._authorise(tenant_id, "incident:remind")
        if hour not in REMINDERS:
            raise InvalidInput("a reminder is at 24, 48 or 66 hours")
        self._step(tenant_id, incident_id, f"reminder-{hour}h", {"alert": alert_id})
        self._record(tenant_id, "incident:remind", "incident", 1, refs=[incident_id, f"{hour}h"])
