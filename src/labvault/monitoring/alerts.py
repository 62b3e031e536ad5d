"""Alerts (H1): what a finding becomes, who answers it, and what happens when nobody does.

``raise_alert`` is THE sink of ``labvault.monitoring.findings``: one live alert per
``(tenant, dedup_key)``. A finding whose key has an open or acknowledged alert adds to it (event
count, last sequence number and time, references up to ``MAX_REFS``) instead of opening another;
a resolved alert absorbs nothing (the next finding opens a new one).

States: ``open`` -> ``acknowledged`` -> ``resolved`` (``open`` -> ``resolved`` too), with who, when
and why; a reason is required to resolve; a resolved alert cannot be acknowledged again. The one
who acknowledges becomes the owner.

Each alert has an acknowledgement deadline by severity (``DEFAULT_ACK``; configurable, see
``ack_deadlines``). When it passes with the alert still open, ``escalate`` raises its on-call
level by one (platform channels carry levels 1, 2, 3 ...; past the highest level with a
channel, the highest is called again), queues a delivery to the channels of that level, records
``alert:escalate`` and sets a new deadline.

Where an alert goes: a platform alert to the platform's channels of its level; a lab's alert to
the platform's channels of its level (the vendor's security officer answers it too) and to the
lab's own channels of that level. A channel takes alerts of its ``min_severity`` or above.

Everything here goes through the gateway (``labvault.access.alerts``): references only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from labvault.access.alerts import MAX_REFS, Alert, Channel, Delivery
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput
from labvault.ids import new_id, utcnow
from labvault.monitoring.findings import Finding, Severity

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

DEFAULT_ACK: dict[Severity, timedelta] = {
    Severity.CRITICAL: timedelta(minutes=15),
    Severity.HIGH: timedelta(hours=1),
    Severity.MEDIUM: timedelta(hours=4),
    Severity.LOW: timedelta(hours=24),
}
Deadlines = Mapping[Severity, timedelta]


MIN_ACK = timedelta(seconds=5)
MAX_ACK = timedelta(days=7)


def ack_deadlines(text: str | None) -> dict[Severity, timedelta]:
    """Deadlines from a setting such as ``critical=10,high=45`` (minutes per severity; a value
    ending in ``s`` is in seconds, e.g. ``high=20s``, for drills and tests); the rest keep their
    defaults. ``None`` or empty: the defaults. Each is 5 seconds to 7 days."""
    out = dict(DEFAULT_ACK)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, _, amount = part.partition("=")
        amount = amount.strip().lower()
        seconds = amount.endswith("s")
        try:
            sev = Severity(name.strip().lower())
            value = int(amount[:-1] if seconds else amount)
        except ValueError:
            raise InvalidInput(
                "acknowledgement deadlines are written severity=minutes (or seconds with an 's'), "
                "e.g. critical=15,high=60 or high=20s"
            ) from None
        wait = timedelta(seconds=value) if seconds else timedelta(minutes=value)
        if not MIN_ACK <= wait <= MAX_ACK:
            raise InvalidInput("an acknowledgement deadline is 5 seconds to 7 days")
        out[sev] = wait
    return out


def deadline(severity: str, deadlines: Deadlines | None = None) -> timedelta:
    return (deadlines or DEFAULT_ACK)[Severity(severity)]


def _merge_refs(old: tuple[str, ...], new: tuple[str, ...]) -> list[str]:
    """The first references kept, then the latest, ``MAX_REFS`` in all, each once."""
    seen = dict.fromkeys([*old, *new])
    refs = list(seen)
    if len(refs) <= MAX_REFS:
        return refs
    head = MAX_REFS // 2
    return refs[:head] + refs[-(MAX_REFS - head) :]


def raise_alert(
    u: Unit, finding: Finding, *, now: datetime | None = None, deadlines: Deadlines | None = None
) -> str | None:
    """H1: store a finding as an alert (a new one, or added to the live one of its key); the
    alert's id. A new alert is queued at once for the level-1 channels it reaches."""
    now = now or utcnow()
    tenant = finding.tenant_id
    sev = Severity(finding.severity)
    live = u.live_alert(tenant, finding.dedup_key)
    if live is not None:
        severity = max(Severity(live.severity), sev, key=lambda s: s.rank)
        ack_due = live.ack_due
        if severity != live.severity and live.state == "open":
            ack_due = min(ack_due, now + deadline(severity, deadlines))
        last_seq = max((s for s in (live.last_seq, finding.last_seq) if s is not None), default=None)
        last_at = max((s for s in (live.last_at, finding.last_at) if s is not None), default=None)
        u.absorb_finding(
            tenant,
            live.alert_id,
            severity=str(severity),
            refs=_merge_refs(live.refs, tuple(finding.refs)),
            event_count=live.event_count + finding.event_count,
            last_seq=last_seq,
            last_at=last_at,
            ack_due=ack_due,
        )
        return live.alert_id
    alert = Alert(
        tenant_id=tenant,
        alert_id=new_id(),
        rule_id=finding.rule_id[:64],
        severity=str(sev),
        state="open",
        title=finding.title[:200],
        dedup_key=finding.dedup_key,
        refs=tuple(_merge_refs((), tuple(finding.refs))),
        event_count=finding.event_count,
        first_seq=finding.first_seq,
        last_seq=finding.last_seq,
        first_at=finding.first_at,
        last_at=finding.last_at,
        opened_at=now,
        ack_due=now + deadline(sev, deadlines),
        level=1,
        owner=None,
        acknowledged_by=None,
        acknowledged_at=None,
        resolved_by=None,
        resolved_at=None,
        reason=None,
    )
    u.store_alert(alert)
    u.queue_deliveries(tenant, kind="alert", subject_id=alert.alert_id, level=1, channels=reach(u, alert, 1), at=now)
    return alert.alert_id


def _takes(ch: Channel, severity: str) -> bool:
    return Severity(severity).rank >= Severity(ch.min_severity).rank


def reach(u: Unit, alert: Alert, level: int) -> list[Channel]:
    """The channels an alert at ``level`` goes to: the platform's of that level, and for a lab's
    alert the lab's own of that level; each taking the alert's severity."""
    owners = [PLATFORM] if alert.tenant_id == PLATFORM else [PLATFORM, alert.tenant_id]
    out = []
    for owner in owners:
        out += [c for c in u.delivery_channels(owner) if c.level == level and _takes(c, alert.severity)]
    return out


def top_level(u: Unit, alert: Alert) -> int:
    owners = [PLATFORM] if alert.tenant_id == PLATFORM else [PLATFORM, alert.tenant_id]
    levels = [c.level for owner in owners for c in u.delivery_channels(owner) if _takes(c, alert.severity)]
    return max(levels, default=1)


def escalate(u: Unit, now: datetime, *, deadlines: Deadlines | None = None) -> list[tuple[str, int]]:
    """H1: every open alert past its acknowledgement deadline goes up one on-call level (up to the
    highest level with a channel, called again after that), is queued to that level's channels,
    audited ``alert:escalate`` and given a new deadline. The (alert id, level) escalated."""
    done = []
    for alert in u.overdue_alerts(now):
        level = min(alert.level + 1, max(top_level(u, alert), alert.level))
        if u.escalate_alert(
            alert.tenant_id, alert.alert_id, level=level, ack_due=now + deadline(alert.severity, deadlines)
        ):
            u.queue_deliveries(
                alert.tenant_id,
                kind="alert",
                subject_id=alert.alert_id,
                level=level,
                channels=reach(u, alert, level),
                at=now,
            )
            done.append((alert.alert_id, level))
    return done


# -- the people's side: list, read, acknowledge, resolve --------------------------------------------


def list_alerts(u: Unit, tenant: str | None = None, *, state: str | None = None, limit: int = 500) -> list[Alert]:
    """Alerts this account may read (a lab's for its lab_admin/lab_dpo and the security officer)."""
    return u.alerts(tenant, state=state, limit=limit)


@dataclass(frozen=True, slots=True)
class History:
    alert: Alert
    deliveries: list[Delivery]

    def steps(self) -> list[dict[str, object]]:
        """What happened to the alert, in time order: opened, each delivery, escalations (a
        delivery at a higher level), acknowledged, resolved. References only."""
        a = self.alert
        out: list[dict[str, object]] = [{"at": a.opened_at, "what": "opened", "level": 1, "who": None}]
        for d in self.deliveries:
            out.append(
                {
                    "at": d.delivered_at or d.next_at,
                    "what": "delivered" if d.delivered_at else ("retrying" if d.next_at else "failed"),
                    "level": d.level,
                    "who": d.channel_id,
                    "attempts": d.attempts,
                }
            )
        if a.acknowledged_at is not None and a.acknowledged_by is not None:
            out.append({"at": a.acknowledged_at, "what": "acknowledged", "level": a.level, "who": a.acknowledged_by})
        if a.resolved_at is not None:
            out.append({"at": a.resolved_at, "what": "resolved", "level": a.level, "who": a.resolved_by})
        return sorted(out, key=lambda s: (s["at"] is None, str(s["at"])))


def history(u: Unit, alert_id: str) -> History:
    """One alert (found among those this account may read) with its deliveries."""
    a = u.find_alert(alert_id)
    return History(a, u.deliveries(a.tenant_id, a.alert_id))


def acknowledge(u: Unit, alert_id: str, *, reason: str | None = None, now: datetime | None = None) -> Alert:
    """H1: acknowledge an open alert (``alert:ack``): the account becomes its owner; escalation
    stops. A resolved alert cannot be acknowledged."""
    return u.set_alert_state(
        u.alert_tenant(alert_id),
        alert_id,
        action="alert:ack",
        state="acknowledged",
        at=now or utcnow(),
        reason=_reason(reason, required=False),
        expect=("open",),
    )


def resolve(u: Unit, alert_id: str, *, reason: str, now: datetime | None = None) -> Alert:
    """H1: resolve an open or acknowledged alert (``alert:resolve``), with a reason (required)."""
    why = _reason(reason, required=True)
    return u.set_alert_state(
        u.alert_tenant(alert_id),
        alert_id,
        action="alert:resolve",
        state="resolved",
        at=now or utcnow(),
        reason=why,
        expect=("open", "acknowledged"),
    )


def _reason(reason: str | None, *, required: bool) -> str | None:
    text = " ".join((reason or "").split())
    if not text:
        if required:
            raise InvalidInput("resolving an alert needs a reason (--reason)")
        return None
    if len(text) > 500:
        raise InvalidInput("a reason is 500 characters at most")
    return text
