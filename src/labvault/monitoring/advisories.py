"""Reports from outside (H2, H4): the register's service, the default deadlines and the escalation.

A report from the national agency (ANSSI, CERT-FR), a lab's IT, a researcher, the press, the police
or an employee through the internal channel is registered with an owner, a severity and a deadline;
it cannot be closed without a recorded breach assessment and a decision on telling the labs; an
item past its deadline escalates (one level up, a new deadline, an ``advisory:escalate`` event and a
finding handed to the alerts). The gateway's part ``labvault.access.advisories`` does the reads and
writes; this module decides the deadlines and hands findings on.

Default deadlines (the time to assess, then again the time to close once assessed), by severity:

- critical: 24 hours. A critical report (leaked lines, an agency's alert) must leave room, after the
  assessment, for the labs (the controllers) to notify their authority within the 72 hours of
  GDPR Art. 33(1): the processor tells them "without undue delay" (Art. 33(2)).
- high: 72 hours, the Art. 33 clock itself.
- medium: 7 days; low: 30 days (a researcher's report on a weakness with no data seen, a press
  question): answered within the month, as a data subject's request would be (Art. 12(3)).

Escalating gives the item a new deadline of half its severity's delay (at least 4 hours): nobody
answered once, the next level has less time, not more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from labvault.access.advisories import SEVERITIES, Advisory
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput
from labvault.ids import utcnow
from labvault.monitoring.findings import Finding, Severity, Sink

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

DEADLINES: dict[str, timedelta] = {
    "critical": timedelta(hours=24),
    "high": timedelta(hours=72),
    "medium": timedelta(days=7),
    "low": timedelta(days=30),
}
MIN_ESCALATION = timedelta(hours=4)
RULE_ID = "advisory:overdue"


def default_deadline(severity: str, start: datetime) -> datetime:
    sev = (severity or "").strip().lower()
    if sev not in DEADLINES:
        raise InvalidInput(f"the advisory's severity is one of {', '.join(SEVERITIES)}")
    return start + DEADLINES[sev]


def escalation_delay(severity: str) -> timedelta:
    return max(DEADLINES.get(severity, DEADLINES["high"]) / 2, MIN_ESCALATION)


def add(
    u: Unit,
    *,
    source: str,
    severity: str,
    owner: str,
    summary: str,
    reference: str | None = None,
    received_at: datetime | None = None,
    labs: Sequence[str] = (),
    deadline: datetime | None = None,
) -> Advisory:
    """H2, H4: register a report from outside; its deadline by severity unless given."""
    start = received_at or utcnow()
    due = deadline or default_deadline(severity, start)
    return u.advisory_add(
        source=source,
        severity=severity,
        owner=owner,
        deadline=due,
        summary=summary,
        reference=reference,
        received_at=received_at,
        labs=labs,
    )


def assess(
    u: Unit,
    advisory_id: str,
    *,
    breach: str,
    reasoning: str,
    notify_labs: bool,
    labs: Sequence[str] | None = None,
    now: datetime | None = None,
) -> Advisory:
    """H2: the breach assessment and the decision on telling the labs; the deadline to close follows."""
    current = u.advisory(advisory_id)
    due = default_deadline(current.severity, now or utcnow())
    return u.advisory_assess(
        advisory_id, breach=breach, reasoning=reasoning, notify_labs=notify_labs, labs=labs, next_deadline=due
    )


def close(u: Unit, advisory_id: str) -> Advisory:
    return u.advisory_close(advisory_id)


def listing(u: Unit, state: str | None = None) -> list[Advisory]:
    return u.advisories(state=state)


def show(u: Unit, advisory_id: str) -> Advisory:
    return u.advisory(advisory_id)


def for_lab(u: Unit, tenant_id: str) -> list[Advisory]:
    return u.lab_advisories(tenant_id)


@dataclass(frozen=True, slots=True)
class Escalation:
    advisory_id: str
    level: int
    deadline: datetime
    alert_id: str | None


def _severity(adv: Advisory, level: int) -> Severity:
    base = Severity(adv.severity)
    # each level unanswered raises the alert one step, up to critical
    return sorted(Severity, key=lambda s: s.rank)[min(base.rank + level - 1, Severity.CRITICAL.rank)]


def finding(adv: Advisory, level: int, now: datetime) -> Finding:
    """What an overdue advisory hands the alerts: references only (its id, its level), never its text."""
    return Finding(
        rule_id=RULE_ID,
        severity=_severity(adv, level),
        tenant_id=PLATFORM,
        title=f"Outside report {adv.advisory_id} past its deadline (escalation level {level})",
        group=f"{adv.advisory_id}:level:{level}",
        refs=(adv.advisory_id, f"level:{level}", f"owner:{adv.owner}"),
        event_count=1,
        first_at=adv.deadline,
        last_at=now,
    )


def _raise_alert(u: Unit, f: Finding) -> str | None:
    # The alerts' own module (``labvault.monitoring.alerts.raise_alert``), imported when first used.
    import importlib

    raise_alert: Sink = importlib.import_module("labvault.monitoring.alerts").raise_alert
    return raise_alert(u, f)


def escalate_overdue(u: Unit, *, now: datetime | None = None, sink: Sink | None = None) -> list[Escalation]:
    """H1, H2: every advisory not closed past its deadline goes one level up with a new deadline, an
    ``advisory:escalate`` event, and a finding handed to ``sink`` (the alerts by default)."""
    at = now or utcnow()
    give = sink or _raise_alert
    out = []
    for adv in u.advisory_overdue(at):
        due = at + escalation_delay(adv.severity)
        done = u.advisory_escalate(adv.advisory_id, due)
        alert_id = give(u, finding(adv, done.level, at))
        out.append(Escalation(adv.advisory_id, done.level, due, alert_id))
    return out
