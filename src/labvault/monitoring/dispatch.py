"""The dispatcher (H1, G4): one pass sends what is due, escalates what nobody acknowledged, and
pushes each lab's new signed audit checkpoints to that lab's own channels.

``run_once`` runs as the platform's monitoring process, the system principal ``system:monitor``
(``monitor:run``, ``Purpose.MONITORING``; no person's account holds it):

1. ``escalate``: open alerts past their acknowledgement deadline go up one on-call level and are
   queued to that level's channels (``labvault.monitoring.alerts.escalate``);
2. checkpoints: each lab's ``audit_checkpoint`` rows past its ``checkpoints`` cursor
   (``monitor_cursor``) are queued to every active channel of that lab, and the cursor moves
   forward to the last one queued, never past the lab's last checkpoint (a lab with no channel
   keeps its cursor: its checkpoints go out once it adds one). The lab keeps them outside the
   vendor's reach;
3. deliveries due (``alert_delivery.next_at`` passed, not delivered) are sent, outside any
   database transaction; a failure is retried with exponential backoff (``BACKOFF_BASE`` times
   2 to the power of the attempts made, at most ``BACKOFF_MAX``), given up after ``MAX_ATTEMPTS``.

A webhook's key is opened in the send path only, right before the call it signs (the gateway
hands the dispatcher its key still wrapped, ``ChannelKey``).

Messages carry references only: the alert's stored ids, rule, severity, counts, sequence numbers
and times (never its acknowledgement or resolution reason, typed by someone), or a checkpoint's
signed body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from labvault.access.alerts import Alert, ChannelKey, Delivery, channel_of_ref
from labvault.access.principal import MONITOR, Purpose
from labvault.breach import incidents as breach_incidents
from labvault.config import Settings
from labvault.errors import LabvaultError
from labvault.ids import utcnow
from labvault.monitoring import advisories, explained, notify
from labvault.monitoring import alerts as alerting
from labvault.monitoring.explained import Digest
from labvault.monitoring.findings import Finding, Severity

if TYPE_CHECKING:
    from labvault.access.gateway import Gateway, Unit
    from labvault.access.principal import Principal


class Runtime(Protocol):
    """What ``run_once`` needs of ``labvault.runtime.Runtime``: its gateway, its monitoring
    process's principal, its settings."""

    gateway: Gateway
    settings: Settings

    @property
    def monitor(self) -> Principal: ...


BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
MAX_ATTEMPTS = 10
CONSUMER = "checkpoints"


def backoff(attempts: int) -> timedelta:
    """The wait before the next try, after ``attempts`` failed ones (1, 2, ...): 30 s, 60 s, 120 s ..."""
    return min(BACKOFF_BASE * (2 ** max(0, attempts - 1)), BACKOFF_MAX)


def alert_message(a: Alert, delivery_id: str) -> notify.Message:
    def iso(v: datetime | None) -> str | None:
        return None if v is None else v.isoformat()

    payload = {
        "type": "alert",
        "alert_id": a.alert_id,
        "tenant": a.tenant_id,
        "rule": a.rule_id,
        "severity": a.severity,
        "state": a.state,
        "title": a.title,
        "level": a.level,
        "event_count": a.event_count,
        "first_seq": a.first_seq,
        "last_seq": a.last_seq,
        "first_at": iso(a.first_at),
        "last_at": iso(a.last_at),
        "opened_at": iso(a.opened_at),
        "ack_due": iso(a.ack_due),
        "refs": list(a.refs),
        "delivery_id": delivery_id,
    }
    return notify.Message(
        kind="alert",
        delivery_id=delivery_id,
        subject=f"[Labvault] {a.severity.upper()} {a.rule_id} ({a.tenant_id}, level {a.level}): {a.title}",
        severity=a.severity,
        payload=payload,
        sd={
            "alert_id": a.alert_id,
            "rule": a.rule_id,
            "severity": a.severity,
            "tenant": a.tenant_id,
            "level": str(a.level),
        },
    )


def checkpoint_message(tenant_id: str, record: dict[str, Any], delivery_id: str) -> notify.Message:
    body = record["body"]
    return notify.Message(
        kind="checkpoint",
        delivery_id=delivery_id,
        subject=f"[Labvault] signed audit checkpoint {body.get('index')} of lab {tenant_id}",
        severity="info",
        payload={"type": "checkpoint", "tenant": tenant_id, "delivery_id": delivery_id, "checkpoint": record},
        sd={
            "tenant": tenant_id,
            "index": str(body.get("index")),
            "size": str(body.get("size")),
            "root": str(body.get("root")),
        },
    )


def push_checkpoints(u: Unit, now: datetime) -> int:
    """Queue each lab's new signed checkpoints to all its active channels; how many queued."""
    queued = 0
    for lab in u.list_tenants():
        _, records = u.checkpoints_after(lab.id, CONSUMER)
        if not records:
            continue
        channels = u.delivery_channels(lab.id)
        if not channels:
            continue
        for record in records:
            u.queue_deliveries(
                lab.id, kind="checkpoint", subject_id=str(record["size"]), level=1, channels=channels, at=now
            )
            queued += 1
        u.move_cursor(lab.id, CONSUMER, records[-1]["size"], now)
    return queued


def digest_message(d: Digest, delivery_id: str) -> notify.Message:
    """A lab's daily access review for its own e-mail channels: counts per account and the
    unexplained reads, references only (``explained.digest_text``)."""
    subject, body = explained.digest_text(d)
    return notify.Message(
        kind="digest",
        delivery_id=delivery_id,
        subject=subject,
        severity="info",
        payload={
            "type": "digest",
            "tenant": d.tenant_id,
            "day": d.day.isoformat(),
            "accesses": d.total,
            "explained": d.explained,
            "to_review": d.unexplained_count,
            "delivery_id": delivery_id,
            "text": body,
        },
        sd={"tenant": d.tenant_id, "day": d.day.isoformat(), "to_review": str(d.unexplained_count)},
    )


def push_digests(u: Unit, now: datetime) -> int:
    """Queue each lab's access digest of its yesterday (in its time zone) to its e-mail channels,
    once a day (the lab's ``digest`` cursor); a lab seen for the first time starts at yesterday."""
    queued = 0
    for lab in u.list_tenants():
        if lab.status != "active":
            continue
        channels = [c for c in u.delivery_channels(lab.id) if c.kind == "email"]
        if not channels:
            continue
        yesterday = now.astimezone(ZoneInfo(lab.timezone or "Europe/Paris")).date() - timedelta(days=1)
        done = u.digest_sent_through(lab.id)
        if done is not None and done >= yesterday:
            continue
        # The day by its ordinal: audit references never hold a date (they could be a birth date).
        day = str(yesterday.toordinal())
        u.queue_deliveries(lab.id, kind="digest", subject_id=day, level=1, channels=channels, at=now)
        u.mark_digest_sent(lab.id, yesterday, now)
        queued += 1
    return queued


@dataclass
class _Job:
    delivery: Delivery
    kind: str | None = None
    target: str | None = None
    key: ChannelKey | None = None
    message: notify.Message | None = None
    error: str | None = None  # set when the message could not even be built (a channel removed)


def _prepare(u: Unit, d: Delivery) -> _Job:
    owner, channel_id = channel_of_ref(d.tenant_id, d.channel_id)
    try:
        channel, key = u.channel_for_delivery(owner, channel_id)
    except LabvaultError:
        return _Job(d, error="channel unknown")
    if not channel.active:
        return _Job(d, error="channel removed")
    try:  # one message that cannot be built (a lab no longer readable) is that delivery's failure alone
        if d.kind == "alert":
            message = alert_message(u.alert_for_delivery(d.tenant_id, d.subject_id), d.delivery_id)
        elif d.kind == "checkpoint":
            record = u.checkpoint_record(d.tenant_id, int(d.subject_id))
            message = checkpoint_message(d.tenant_id, record, d.delivery_id)
        elif d.kind == "digest":
            day = date.fromordinal(int(d.subject_id))
            message = digest_message(explained.digest(u, d.tenant_id, day), d.delivery_id)
        else:
            return _Job(d, error=f"no sender for '{d.kind}' deliveries")
    except LabvaultError as exc:
        return _Job(d, error=f"{d.kind}: {type(exc).__name__}")
    return _Job(d, channel.kind, channel.target, key, message)


def _source(
    source: Runtime | Gateway, principal: Principal | None, settings: Settings | None
) -> tuple[Gateway, Principal, Settings]:
    from labvault.access.gateway import Gateway

    if isinstance(source, Gateway):
        return source, principal or MONITOR, settings or Settings.from_env()
    return source.gateway, principal or source.monitor, settings or source.settings


def remind_incidents(u: Unit, now: datetime | None = None) -> list[breach_incidents.Reminder]:
    """I3: the incident clocks' pass (``incident:remind``): each processor's notice not yet delivered
    and each lab's reminder at 24, 48 and 66 hours raised as an alert on the lab, so that the lab's
    own channels get it (``labvault.breach.incidents.remind``)."""
    at = now or utcnow()

    def alert(
        unit: Unit, tenant: str, rule: str, severity: str, title: str, group: str, refs: tuple[str, ...]
    ) -> str | None:
        f = Finding(rule, Severity(severity), tenant, title, group, refs, first_at=at, last_at=at)
        return alerting.raise_alert(unit, f, now=at)

    return breach_incidents.remind(u, now=at, alert=alert)


def run_once(
    source: Runtime | Gateway,
    now: datetime | None = None,
    *,
    principal: Principal | None = None,
    settings: Settings | None = None,
) -> dict[str, int]:
    """One pass (see the module's docstring), as ``principal`` (by default the monitoring process).
    Counts: ``escalated`` (alerts), ``advisories`` (outside reports escalated), ``incidents`` (notices
    and clock reminders raised), ``checkpoints`` and
    ``digests`` (queued), ``sent``, ``failed``, ``given_up``."""
    gw, who, cfg = _source(source, principal, settings)
    now = now or utcnow()
    deadlines = alerting.ack_deadlines(cfg.alert_ack_minutes)
    with gw.unit(who, Purpose.MONITORING) as u:
        # Outside reports past their deadline first: each escalation raises an alert, sent below.
        reports = advisories.escalate_overdue(u, now=now, sink=lambda unit, f: alerting.raise_alert(unit, f, now=now))
        reminded = remind_incidents(u, now)
        escalated = alerting.escalate(u, now, deadlines=deadlines)
        pushed = push_checkpoints(u, now)
        digests = push_digests(u, now)
    with gw.unit(who, Purpose.MONITORING) as u:
        jobs = [_prepare(u, d) for d in u.due_deliveries(now)]
    for job in jobs:  # the network, outside any transaction
        if job.error is not None or job.message is None or job.kind is None or job.target is None:
            continue
        try:
            key = None if job.key is None else job.key.open()
            notify.send(cfg, job.kind, job.target, key, job.message, now=now)
            del key
        except notify.DeliveryFailed as exc:
            job.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - one channel's target (set by a lab) never stops the pass
            job.error = f"{job.kind}: {type(exc).__name__}"
    counts = {
        "escalated": len(escalated),
        "advisories": len(reports),
        "incidents": len(reminded),
        "checkpoints": pushed,
        "digests": digests,
        "sent": 0,
        "failed": 0,
        "given_up": 0,
    }
    if not jobs:
        return counts
    with gw.unit(who, Purpose.MONITORING) as u:
        for job in jobs:
            d = job.delivery
            attempts = d.attempts + 1
            if job.error is None:
                u.delivery_done(
                    d.tenant_id, d.delivery_id, attempts=attempts, delivered_at=now, next_at=None, error=None
                )
                counts["sent"] += 1
                continue
            final = job.message is None or attempts >= MAX_ATTEMPTS
            next_at = None if final else now + backoff(attempts)
            u.delivery_done(
                d.tenant_id, d.delivery_id, attempts=attempts, delivered_at=None, next_at=next_at, error=job.error
            )
            counts["given_up" if final else "failed"] += 1
    return counts
