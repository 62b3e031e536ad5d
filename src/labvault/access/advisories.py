"""The gateway's part for monitoring: reports from outside: the register (labvault.monitoring.advisories).

H2, H4: a report from outside (the national agency ANSSI/CERT-FR, a lab's IT, a researcher, the
press, the police, an employee through the internal channel) is one row of ``advisory`` on the
platform (``tenant_id = PLATFORM``): its source, the sender's reference, when it was received, its
severity, an owner (an active account of the vendor), a deadline, an escalation level, the labs it
concerns. Its state goes open -> assessed -> closed: assessing records the breach verdict (yes, no,
possible) with its reasoning and the decision on telling the labs (``notify_labs``, with the labs
concerned); closing needs both.

The free text (the report's summary, the assessment's reasoning) may quote personal data (the
leaked lines themselves): it is sealed with the platform's KEK, bound to the advisory and the field
(``summary_enc``, ``assessment_enc``), as accounts' TOTP secrets are. Audit events name the
advisory id, never its text; errors name the field, never the value.

Actions (the policy table): ``advisory:read`` and ``advisory:manage`` (the vendor's
security_officer; the platform_admin reads); ``advisory:notice`` (a lab's lab_admin and lab_dpo):
the advisories that name their lab once telling the labs was decided yes, references and decisions
only (the sealed text may quote other labs' data and stays with the security team, I5).
Escalating an overdue advisory is ``advisory:manage`` or ``monitor:run`` (the monitoring process's
own principal, ``system:monitor``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from labvault.access import policy
from labvault.access.state import UnitState
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

SOURCES = ("anssi", "cert", "lab-it", "researcher", "press", "police", "employee", "other")
SEVERITIES = ("low", "medium", "high", "critical")
BREACH = ("yes", "no", "possible")
STATES = ("open", "assessed", "closed")
MAX_TEXT = 20_000


@dataclass(frozen=True, slots=True)
class Advisory:
    """One outside report as the register holds it. ``summary``/``assessment``: the opened text,
    only for the security team (None otherwise, or when not asked for)."""

    advisory_id: str
    source: str
    reference: str | None
    received_at: datetime
    severity: str
    state: str
    owner: str
    deadline: datetime
    level: int
    labs: tuple[str, ...]
    breach: str | None
    notify_labs: bool | None
    assessed_by: str | None
    assessed_at: datetime | None
    closed_by: str | None
    closed_at: datetime | None
    created_by: str
    summary: str | None = None
    assessment: str | None = None

    def overdue(self, now: datetime) -> bool:
        return self.state != "closed" and now > self.deadline

    def public(self) -> dict[str, Any]:
        """References and decisions, no free text: what a lab, a log line or an alert may carry."""
        return {
            "advisory_id": self.advisory_id,
            "source": self.source,
            "received_at": self.received_at.isoformat(),
            "severity": self.severity,
            "state": self.state,
            "owner": self.owner,
            "deadline": self.deadline.isoformat(),
            "level": self.level,
            "labs": list(self.labs),
            "breach": self.breach,
            "notify_labs": self.notify_labs,
            "assessed_at": self.assessed_at.isoformat() if self.assessed_at else None,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
        }


def _text(value: str | None, field: str, *, required: bool) -> str | None:
    if value is None or not value.strip():
        if required:
            raise InvalidInput(f"the advisory's {field} is required")
        return None
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"the advisory's {field} is longer than {MAX_TEXT} characters")
    return value.strip()


def _required(value: str | None, field: str) -> str:
    text = _text(value, field, required=True)
    return text or ""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _choice(value: str, field: str, allowed: Sequence[str]) -> str:
    v = (value or "").strip().lower()
    if v not in allowed:
        raise InvalidInput(f"the advisory's {field} is one of {', '.join(allowed)}")
    return v


class Advisories(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""

    # -- sealing: the platform's KEK, bound to the advisory and the field ---------------------------
    def _seal_advisory(self, advisory_id: str, field: str, text: str) -> bytes:
        return self._gw.keys.wrap(PLATFORM, text.encode(), f"advisory:{advisory_id}:{field}".encode())

    def _open_advisory(self, advisory_id: str, field: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        return self._gw.keys.unwrap(PLATFORM, bytes(sealed), f"advisory:{advisory_id}:{field}".encode()).decode()

    def _advisory_of(self, row: Any, *, text: bool = False) -> Advisory:
        received, deadline = _utc(row.received_at), _utc(row.deadline)
        return Advisory(
            advisory_id=row.advisory_id,
            source=row.source,
            reference=row.reference,
            received_at=received,
            severity=row.severity,
            state=row.state,
            owner=row.owner,
            deadline=deadline,
            level=row.level,
            labs=tuple(json.loads(row.labs or "[]")),
            breach=row.breach,
            notify_labs=None if row.notify_labs is None else bool(row.notify_labs),
            assessed_by=row.assessed_by,
            assessed_at=stored_utc(row.assessed_at),
            closed_by=row.closed_by,
            closed_at=stored_utc(row.closed_at),
            created_by=row.created_by,
            summary=self._open_advisory(row.advisory_id, "summary", row.summary_enc) if text else None,
            assessment=self._open_advisory(row.advisory_id, "assessment", row.assessment_enc) if text else None,
        )

    def _advisory_row(self, advisory_id: str) -> Any:
        self._scope(PLATFORM)
        a = t.advisory
        row = self.conn.execute(
            select(a).where(self._tf(a, PLATFORM), a.c.advisory_id == (advisory_id or "").strip())
        ).first()
        if row is None:
            raise NotFound("no such advisory")
        return row

    def _vendor_account(self, who: str) -> str:
        """An active account of the vendor, by id or e-mail: an advisory's owner."""
        self._scope(PLATFORM)
        a = t.account
        key = (who or "").strip()
        row = self.conn.execute(
            select(a.c.account_id, a.c.active).where(
                self._tf(a, PLATFORM), (a.c.account_id == key) | (a.c.email == key.lower())
            )
        ).first()
        if row is None or not row.active:
            raise InvalidInput("the advisory's owner is not an active account of the vendor")
        return str(row.account_id)

    def _known_labs(self, labs: Sequence[str]) -> tuple[str, ...]:
        out = sorted({lab.strip() for lab in labs if lab and lab.strip()})
        if not out:
            return ()
        self._scope("*")
        known = {
            r.tenant_id for r in self.conn.execute(select(t.tenant.c.tenant_id).where(t.tenant.c.tenant_id.in_(out)))
        }
        missing = [lab for lab in out if lab not in known]
        if missing:
            raise InvalidInput(f"unknown lab in the advisory's labs: {', '.join(missing)}")
        return tuple(out)

    # -- the security team's work ---------------------------------------------------------------------
    def advisory_add(
        self,
        *,
        source: str,
        severity: str,
        owner: str,
        deadline: datetime,
        summary: str,
        reference: str | None = None,
        received_at: datetime | None = None,
        labs: Sequence[str] = (),
    ) -> Advisory:
        """H2, H4: open a report from outside: its owner, severity and deadline; the summary sealed."""
        self._authorise(PLATFORM, "advisory:manage")
        src = _choice(source, "source", SOURCES)
        sev = _choice(severity, "severity", SEVERITIES)
        text = _required(summary, "summary")
        ref = _text(reference, "reference", required=False)
        if ref is not None and len(ref) > 200:
            raise InvalidInput("the advisory's reference is longer than 200 characters")
        owner_id = self._vendor_account(owner)
        lab_ids = self._known_labs(labs)
        advisory_id = new_id()
        now = utcnow()
        self._scope(PLATFORM)
        self.conn.execute(
            t.advisory.insert().values(
                tenant_id=PLATFORM,
                advisory_id=advisory_id,
                source=src,
                reference=ref,
                received_at=received_at or now,
                severity=sev,
                state="open",
                owner=owner_id,
                deadline=deadline,
                level=0,
                labs=json.dumps(list(lab_ids)),
                summary_enc=self._seal_advisory(advisory_id, "summary", text),
                created_by=self.principal.account_id,
            )
        )
        self._record(PLATFORM, "advisory:add", "advisory", 1, refs=[advisory_id])
        return self._advisory_of(self._advisory_row(advisory_id))

    def advisories(self, *, state: str | None = None) -> list[Advisory]:
        """The register, newest first (references and decisions; no free text)."""
        self._authorise(PLATFORM, "advisory:read")
        a = t.advisory
        q = select(a).where(self._tf(a, PLATFORM)).order_by(a.c.received_at.desc(), a.c.advisory_id)
        if state:
            q = q.where(a.c.state == _choice(state, "state", STATES))
        rows = self.conn.execute(q).all()
        self._record(PLATFORM, "advisory:list", "advisory", len(rows))
        return [self._advisory_of(r) for r in rows]

    def advisory(self, advisory_id: str) -> Advisory:
        """One advisory with its text opened (the security team's own reading, audited)."""
        self._authorise(PLATFORM, "advisory:read")
        row = self._advisory_row(advisory_id)
        self._record(PLATFORM, "advisory:read", "advisory", 1, refs=[row.advisory_id])
        return self._advisory_of(row, text=True)

    def advisory_assess(
        self,
        advisory_id: str,
        *,
        breach: str,
        reasoning: str,
        notify_labs: bool,
        labs: Sequence[str] | None,
        next_deadline: datetime,
    ) -> Advisory:
        """H2: record the breach assessment (yes/no/possible, its reasoning sealed) and the decision
        on telling the labs (with the labs concerned: at least one when yes). Open -> assessed; an
        assessed one may be assessed again (the new assessment replaces the old, audited)."""
        self._authorise(PLATFORM, "advisory:manage")
        row = self._advisory_row(advisory_id)
        if row.state == "closed":
            raise InvalidInput("a closed advisory is not assessed again")
        verdict = _choice(breach, "breach assessment", BREACH)
        text = _required(reasoning, "assessment reasoning")
        lab_ids = self._known_labs(labs) if labs is not None else tuple(json.loads(row.labs or "[]"))
        if notify_labs and not lab_ids:
            raise InvalidInput("telling the labs needs the labs concerned")
        if verdict in ("yes", "possible") and lab_ids and not notify_labs:
            # GDPR Art. 33(2): the processor tells the controller of a breach without undue delay.
            raise InvalidInput("a breach (or a possible one) of the labs named must be told to them: --notify-labs")
        now = utcnow()
        self._scope(PLATFORM)
        self.conn.execute(
            update(t.advisory)
            .where(self._tf(t.advisory, PLATFORM), t.advisory.c.advisory_id == row.advisory_id)
            .values(
                state="assessed",
                breach=verdict,
                notify_labs=1 if notify_labs else 0,
                labs=json.dumps(list(lab_ids)),
                assessment_enc=self._seal_advisory(row.advisory_id, "assessment", text),
                assessed_by=self.principal.account_id,
                assessed_at=now,
                deadline=next_deadline,
            )
        )
        self._record(
            PLATFORM,
            "advisory:assess",
            "advisory",
            1,
            refs=[row.advisory_id, f"breach:{verdict}", f"notify:{'yes' if notify_labs else 'no'}", *lab_ids],
        )
        return self._advisory_of(self._advisory_row(row.advisory_id))

    def advisory_close(self, advisory_id: str) -> Advisory:
        """H2: close, only once the breach assessment and the decision on telling the labs are recorded."""
        self._authorise(PLATFORM, "advisory:manage")
        row = self._advisory_row(advisory_id)
        if row.state == "closed":
            raise InvalidInput("this advisory is closed already")
        if row.state != "assessed" or row.breach is None or row.notify_labs is None or row.assessment_enc is None:
            self._record(PLATFORM, "advisory:close", "advisory", 0, outcome="denied", refs=[row.advisory_id])
            raise InvalidInput(
                "an advisory is closed only after its breach assessment and the decision on telling the labs"
            )
        self._scope(PLATFORM)
        self.conn.execute(
            update(t.advisory)
            .where(self._tf(t.advisory, PLATFORM), t.advisory.c.advisory_id == row.advisory_id)
            .values(state="closed", closed_by=self.principal.account_id, closed_at=utcnow())
        )
        self._record(PLATFORM, "advisory:close", "advisory", 1, refs=[row.advisory_id])
        return self._advisory_of(self._advisory_row(row.advisory_id))

    def advisory_overdue(self, now: datetime) -> list[Advisory]:
        """The advisories not closed whose deadline has passed (the escalation's input)."""
        self._authorise(PLATFORM, self._escalation_action())
        a = t.advisory
        rows = self.conn.execute(
            select(a).where(self._tf(a, PLATFORM), a.c.state != "closed").order_by(a.c.deadline, a.c.advisory_id)
        ).all()
        return [adv for adv in (self._advisory_of(r) for r in rows) if adv.overdue(now)]

    def advisory_escalate(self, advisory_id: str, new_deadline: datetime) -> Advisory:
        """H1, H2: one level up, a new deadline, an ``advisory:escalate`` event (references only)."""
        self._authorise(PLATFORM, self._escalation_action())
        row = self._advisory_row(advisory_id)
        level = int(row.level) + 1
        self._scope(PLATFORM)
        self.conn.execute(
            update(t.advisory)
            .where(self._tf(t.advisory, PLATFORM), t.advisory.c.advisory_id == row.advisory_id)
            .values(level=level, deadline=new_deadline)
        )
        self._record(PLATFORM, "advisory:escalate", "advisory", 1, refs=[row.advisory_id, f"level:{level}"])
        return replace(self._advisory_of(row), level=level, deadline=new_deadline)

    def _escalation_action(self) -> str:
        roles = self.principal.roles
        return "advisory:manage" if policy.allowed(roles, "advisory:manage") else "monitor:run"

    # -- a lab's view ---------------------------------------------------------------------------------
    def lab_advisories(self, tenant_id: str) -> list[Advisory]:
        """What a lab's lab_admin or lab_dpo reads: the advisories that name the lab and on which
        telling the labs was decided yes; references and decisions only (no sealed text)."""
        self._authorise(tenant_id, "advisory:notice")
        self._scope(PLATFORM)
        a = t.advisory
        rows = self.conn.execute(
            select(a)
            .where(self._tf(a, PLATFORM), a.c.notify_labs == 1, a.c.state != "open")
            .order_by(a.c.received_at.desc(), a.c.advisory_id)
        ).all()
        mine = [self._advisory_of(r) for r in rows if tenant_id in json.loads(r.labs or "[]")]
        # a lab sees itself among the labs concerned, never the other labs' names
        mine = [replace(adv, labs=(tenant_id,), owner="", assessed_by=None, closed_by=None) for adv in mine]
        self._record(tenant_id, "advisory:notice", "advisory", len(mine), refs=[adv.advisory_id for adv in mine])
        return mine
