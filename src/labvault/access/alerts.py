"""The gateway's part for monitoring: alerts, notification channels and deliveries
(``labvault.monitoring.alerts``, ``labvault.monitoring.dispatch``).

Every database operation on ``alert``, ``alert_delivery``, ``notify_channel`` (and the
``checkpoints`` cursor of ``monitor_cursor``) is here, authorised through the policy table and
audited with references only (alert, channel and delivery ids, never a value):

- ``monitor:run``: raising alerts, queueing and sending deliveries, escalating, pushing a lab's
  signed checkpoints (the monitoring consumer and the dispatcher, ``Purpose.MONITORING``). Only
  the platform's own process holds it, the system principal ``system:monitor``
  (``labvault.access.principal.MONITOR``): no person's account, vendor or lab, reaches a lab's
  channels, their keys, its deliveries or its cursors through it;
- ``alert:read``, ``alert:ack``, ``alert:resolve``: a lab's alerts are read, acknowledged and
  resolved by its own ``lab_admin`` and ``lab_dpo``; the vendor's ``security_officer`` reads them
  (references only) but acknowledges and resolves the platform's alerts only (an acknowledgement
  stops escalation: the vendor never stops it on an alert about a lab, which may be about the
  vendor's own staff). The platform admin reads the platform's alerts only;
- ``channel:manage``: a lab's channels by the lab's own ``lab_admin``/``lab_dpo`` only (a lab keeps
  its checkpoints outside the vendor's reach: no vendor account adds, lists or removes them); the
  platform's on-call channels (levels 1, 2, 3 ...) by the vendor's security officer and platform
  admin.

A webhook channel's HMAC key is generated here, returned once, and stored wrapped by the
platform key (as accounts' TOTP secrets are), bound to the channel's id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from labvault.access.state import UnitState
from labvault.access.watch import advance_cursor
from labvault.crypto.keys import PLATFORM, KeyProvider
from labvault.crypto.tokens import new_token
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, stored_utc
from labvault.store import schema as t

STATES = ("open", "acknowledged", "resolved")
LIVE = ("open", "acknowledged")  # an alert that still absorbs findings of its key
CHANNEL_KINDS = ("email", "webhook", "syslog")
SEVERITIES = ("low", "medium", "high", "critical")
# Checks of a channel's kind and target, each raising with a one-line reason: the monitoring's
# (``labvault.monitoring.targets.check_channel_target``), installed by ``labvault.runtime.install_hooks``.
TARGET_CHECKS: list[Callable[[str, str], None]] = []
DIGEST_CURSOR = "digest"  # the last day whose access digest went to the lab's e-mail channels
CHECKPOINTS_CURSOR = "checkpoints"  # the cursor of each lab's signed checkpoints pushed to its channels
MAX_REFS = 50  # references kept on one alert (the first ones, then the latest)
ALERT_READERS_OF_A_LAB = frozenset({"security_officer"})  # vendor roles that read a lab's alerts
# What a vendor account does with a lab's alerts: read them (references); never acknowledge or resolve.
VENDOR_ON_A_LABS_ALERTS = frozenset({"alert:read"})


@dataclass(frozen=True, slots=True)
class Alert:
    tenant_id: str
    alert_id: str
    rule_id: str
    severity: str
    state: str
    title: str
    dedup_key: str
    refs: tuple[str, ...]
    event_count: int
    first_seq: int | None
    last_seq: int | None
    first_at: datetime | None
    last_at: datetime | None
    opened_at: datetime
    ack_due: datetime
    level: int
    owner: str | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    reason: str | None

    def public(self) -> dict[str, Any]:
        """The alert as the CLI, the API and the messages show it: references only."""

        def iso(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {
            "alert_id": self.alert_id,
            "tenant": self.tenant_id,
            "rule": self.rule_id,
            "severity": self.severity,
            "state": self.state,
            "title": self.title,
            "dedup_key": self.dedup_key,
            "refs": list(self.refs),
            "event_count": self.event_count,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_at": iso(self.first_at),
            "last_at": iso(self.last_at),
            "opened_at": iso(self.opened_at),
            "ack_due": iso(self.ack_due),
            "level": self.level,
            "owner": self.owner,
            "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": iso(self.acknowledged_at),
            "resolved_by": self.resolved_by,
            "resolved_at": iso(self.resolved_at),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Channel:
    tenant_id: str
    channel_id: str
    kind: str
    target: str
    level: int
    min_severity: str
    active: bool
    created_by: str
    created_at: datetime
    signed: bool  # a webhook with its HMAC key

    def public(self) -> dict[str, Any]:
        return {
            "channel_id": self.channel_id,
            "tenant": self.tenant_id,
            "kind": self.kind,
            "target": self.target,
            "level": self.level,
            "min_severity": self.min_severity,
            "active": self.active,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    tenant_id: str
    delivery_id: str
    kind: str  # alert, checkpoint, digest, advisory
    subject_id: str
    channel_id: str
    level: int
    attempts: int
    next_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None

    def public(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "kind": self.kind,
            "subject_id": self.subject_id,
            "channel_id": self.channel_id,
            "level": self.level,
            "attempts": self.attempts,
            "next_at": None if self.next_at is None else self.next_at.isoformat(),
            "delivered_at": None if self.delivered_at is None else self.delivered_at.isoformat(),
            "last_error": self.last_error,
        }


def _alert_of(r: Any) -> Alert:
    return Alert(
        tenant_id=r.tenant_id,
        alert_id=r.alert_id,
        rule_id=r.rule_id,
        severity=r.severity,
        state=r.state,
        title=r.title,
        dedup_key=r.dedup_key,
        refs=tuple(json.loads(r.refs)) if r.refs else (),
        event_count=r.event_count,
        first_seq=r.first_seq,
        last_seq=r.last_seq,
        first_at=stored_utc(r.first_at),
        last_at=stored_utc(r.last_at),
        opened_at=stored_utc(r.opened_at),
        ack_due=stored_utc(r.ack_due),
        level=r.level,
        owner=r.owner,
        acknowledged_by=r.acknowledged_by,
        acknowledged_at=stored_utc(r.acknowledged_at),
        resolved_by=r.resolved_by,
        resolved_at=stored_utc(r.resolved_at),
        reason=r.reason,
    )


def _channel_of(r: Any) -> Channel:
    return Channel(
        tenant_id=r.tenant_id,
        channel_id=r.channel_id,
        kind=r.kind,
        target=r.target,
        level=r.level,
        min_severity=r.min_severity,
        active=bool(r.active),
        created_by=r.created_by,
        created_at=stored_utc(r.created_at),
        signed=r.secret_wrapped is not None,
    )


def _delivery_of(r: Any) -> Delivery:
    return Delivery(
        tenant_id=r.tenant_id,
        delivery_id=r.delivery_id,
        kind=r.kind,
        subject_id=r.subject_id,
        channel_id=r.channel_id,
        level=r.level,
        attempts=r.attempts,
        next_at=stored_utc(r.next_at),
        delivered_at=stored_utc(r.delivered_at),
        last_error=r.last_error,
    )


def channel_ref(tenant_id: str, ch: Channel) -> str:
    """How a delivery of ``tenant_id`` names its channel: the id, or ``platform/<id>`` for a
    platform channel carrying a lab's alert (the delivery stays with its alert, in the lab)."""
    return ch.channel_id if ch.tenant_id == tenant_id else f"{PLATFORM}/{ch.channel_id}"


def channel_of_ref(tenant_id: str, ref: str) -> tuple[str, str]:
    """The (tenant, channel id) a delivery's ``channel_id`` names (see ``channel_ref``)."""
    owner, _, channel_id = ref.rpartition("/")
    return (owner, channel_id) if owner == PLATFORM else (tenant_id, ref)


def _secret_context(tenant_id: str, channel_id: str) -> bytes:
    return f"channel:{tenant_id}:{channel_id}".encode()


class ChannelKey:
    """A webhook channel's HMAC key, still wrapped by the platform key: the dispatcher opens it
    (``open``) in its send path, right before the call it signs, and keeps nothing of it after."""

    __slots__ = ("_context", "_keys", "_wrapped")

    def __init__(self, keys: KeyProvider, wrapped: bytes, context: bytes) -> None:
        self._keys, self._wrapped, self._context = keys, wrapped, context

    def open(self) -> bytes:
        return self._keys.unwrap(PLATFORM, self._wrapped, self._context)

    def __repr__(self) -> str:
        return "ChannelKey(wrapped)"


class Alerts(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""

    # -- who may do what with a lab's alerts ------------------------------------------------------

    def _authorise_alerts(self, tenant_id: str, action: str) -> None:
        """``action`` on the alerts of ``tenant_id``: the policy table, then a lab's alerts stay the
        lab's: read by the vendor's security officer too (references), acknowledged and resolved
        by the lab's own lab_admin and lab_dpo only (another vendor role, or another action, is
        refused, recorded in the lab's trail)."""
        self._authorise(tenant_id, action)
        p = self.principal
        if not self._check or not p.is_platform or tenant_id == PLATFORM:
            return
        if not (ALERT_READERS_OF_A_LAB & p.roles):
            self._deny(tenant_id, action, "a lab's alerts are for its lab_admin, its lab_dpo and the security officer")
        if action not in VENDOR_ON_A_LABS_ALERTS:
            self._deny(
                tenant_id, action, "a lab's alerts are acknowledged and resolved by its own lab_admin or lab_dpo"
            )

    def _authorise_channels(self, tenant_id: str) -> None:
        """A lab's channels are its own people's; the platform's, the vendor's (``channel:manage``)."""
        self._authorise(tenant_id, "channel:manage")
        if self._check and self.principal.is_platform and tenant_id != PLATFORM:
            self._deny(
                tenant_id,
                "channel:manage",
                "a lab's channels are set by the lab's own lab_admin or lab_dpo, out of the vendor's reach",
            )

    # -- alerts: raised by the monitoring consumer -------------------------------------------------

    def live_alert(self, tenant_id: str, dedup_key: str) -> Alert | None:
        """The open or acknowledged alert of this key in the lab (``monitor:run``), if any."""
        self._authorise(tenant_id, "monitor:run")
        a = t.alert
        row = self.conn.execute(
            select(a)
            .where(self._tf(a, tenant_id), a.c.dedup_key == dedup_key, a.c.state.in_(LIVE))
            .order_by(a.c.opened_at.desc())
            .limit(1)
        ).first()
        return None if row is None else _alert_of(row)

    def store_alert(self, alert: Alert) -> None:
        """Insert a new alert (``monitor:run``); audited ``alert:raise`` with its id and rule."""
        self._authorise(alert.tenant_id, "monitor:run")
        values = alert.public()
        row = {
            "tenant_id": alert.tenant_id,
            "alert_id": alert.alert_id,
            "rule_id": alert.rule_id,
            "severity": alert.severity,
            "state": alert.state,
            "title": alert.title[:200],
            "dedup_key": alert.dedup_key[:200],
            "refs": json.dumps(values["refs"]),
            "event_count": alert.event_count,
            "first_seq": alert.first_seq,
            "last_seq": alert.last_seq,
            "first_at": alert.first_at,
            "last_at": alert.last_at,
            "opened_at": alert.opened_at,
            "ack_due": alert.ack_due,
            "level": alert.level,
            "owner": alert.owner,
        }
        self.conn.execute(insert(t.alert).values(**row))
        self._record(alert.tenant_id, "alert:raise", "alert", 1, refs=[alert.alert_id, alert.rule_id])

    def absorb_finding(
        self,
        tenant_id: str,
        alert_id: str,
        *,
        severity: str,
        refs: Sequence[str],
        event_count: int,
        last_seq: int | None,
        last_at: datetime | None,
        ack_due: datetime,
    ) -> None:
        """Add a finding to a live alert of the same key (``monitor:run``): counts, last event, refs."""
        self._authorise(tenant_id, "monitor:run")
        a = t.alert
        self.conn.execute(
            update(a)
            .where(self._tf(a, tenant_id), a.c.alert_id == alert_id)
            .values(
                severity=severity,
                refs=json.dumps(list(refs)),
                event_count=event_count,
                last_seq=last_seq,
                last_at=last_at,
                ack_due=ack_due,
            )
        )
        self._record(tenant_id, "alert:update", "alert", 1, refs=[alert_id])

    def alert_for_delivery(self, tenant_id: str, alert_id: str) -> Alert:
        """An alert as the dispatcher sends it (``monitor:run``): its stored references only."""
        self._authorise(tenant_id, "monitor:run")
        return self._alert_row(tenant_id, alert_id)

    # -- alerts: read, acknowledge, resolve --------------------------------------------------------

    def _alert_row(self, tenant_id: str, alert_id: str) -> Alert:
        a = t.alert
        row = self.conn.execute(select(a).where(self._tf(a, tenant_id), a.c.alert_id == alert_id)).first()
        if row is None:
            raise NotFound(f"no alert '{alert_id}' in lab '{tenant_id}'")
        return _alert_of(row)

    def alert(self, tenant_id: str, alert_id: str) -> Alert:
        """One alert (``alert:read``); audited ``alert:read``."""
        self._authorise_alerts(tenant_id, "alert:read")
        found = self._alert_row(tenant_id, alert_id)
        self._record(tenant_id, "alert:read", "alert", 1, refs=[alert_id])
        return found

    def alert_tenant(self, alert_id: str) -> str:
        """The lab an alert belongs to, to authorise an action on it there (its refusal is then
        recorded in that lab's trail): a lab account's own lab; for a vendor account, looked up
        across labs (an alert id is unguessable; only its lab is told, nothing of the alert)."""
        p = self.principal
        if not p.is_platform:
            return p.tenant_id
        self._scope("*")
        a = t.alert
        row = self.conn.execute(select(a.c.tenant_id).where(a.c.alert_id == alert_id)).first()
        self._scope(PLATFORM)
        if row is None:
            raise NotFound(f"no alert '{alert_id}'")
        return str(row.tenant_id)

    def find_alert(self, alert_id: str) -> Alert:
        """An alert by its id alone (``alert:read`` in its lab): a lab account finds its own lab's
        only; the security officer any lab's; the platform admin the platform's."""
        return self.alert(self.alert_tenant(alert_id), alert_id)

    def alerts(self, tenant_id: str | None = None, *, state: str | None = None, limit: int = 500) -> list[Alert]:
        """Alerts, newest first (``alert:read``): one lab's (or the platform's), or, with no lab
        named, every one this principal may read (a lab account: its own lab's; the security
        officer: every lab's and the platform's; the platform admin: the platform's)."""
        if state is not None and state not in STATES:
            raise InvalidInput(f"state is one of {', '.join(STATES)}")
        p = self.principal
        a = t.alert
        q = select(a).order_by(a.c.opened_at.desc(), a.c.alert_id).limit(max(1, min(limit, 5000)))
        if state is not None:
            q = q.where(a.c.state == state)
        if tenant_id is None and p.is_platform and (not self._check or ALERT_READERS_OF_A_LAB & p.roles):
            self._authorise(PLATFORM, "alert:read")
            self._scope("*")
            rows = self.conn.execute(q).all()
            self._scope(PLATFORM)
            tenants = sorted({r.tenant_id for r in rows}) or [PLATFORM]
        else:
            lab = tenant_id if tenant_id is not None else p.tenant_id
            self._authorise_alerts(lab, "alert:read")
            rows = self.conn.execute(q.where(self._tf(a, lab))).all()
            tenants = [lab]
        found = [_alert_of(r) for r in rows]
        for lab in tenants:
            mine = [x.alert_id for x in found if x.tenant_id == lab]
            self._record(lab, "alert:list", "alert", len(mine), refs=mine[:100])
        return found

    def set_alert_state(
        self,
        tenant_id: str,
        alert_id: str,
        *,
        action: str,
        state: str,
        at: datetime,
        reason: str | None,
        expect: Sequence[str],
    ) -> Alert:
        """Move an alert to ``state`` (``alert:ack`` -> acknowledged, ``alert:resolve`` ->
        resolved) from one of ``expect``; who and when recorded on it; audited with its id."""
        self._authorise_alerts(tenant_id, action)
        current = self._alert_row(tenant_id, alert_id)
        if current.state not in expect:
            raise InvalidInput(f"alert '{alert_id}' is {current.state}: it cannot be {state} now")
        who = self.principal.account_id
        values: dict[str, Any] = {"state": state}
        if reason is not None:
            values["reason"] = reason[:500]
        if state == "acknowledged" or current.acknowledged_by is None:
            values.update(acknowledged_by=who, acknowledged_at=at)
        if current.owner is None or state == "acknowledged":
            values["owner"] = who
        if state == "resolved":
            values.update(resolved_by=who, resolved_at=at)
        a = t.alert
        self.conn.execute(update(a).where(self._tf(a, tenant_id), a.c.alert_id == alert_id).values(**values))
        self._record(tenant_id, action, "alert", 1, refs=[alert_id])
        return self._alert_row(tenant_id, alert_id)

    # -- escalation --------------------------------------------------------------------------------

    def overdue_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        """Open alerts whose acknowledgement deadline has passed, every lab's (``monitor:run``)."""
        self._authorise(PLATFORM, "monitor:run")
        self._scope("*")
        a = t.alert
        rows = self.conn.execute(
            select(a).where(a.c.state == "open", a.c.ack_due <= now).order_by(a.c.ack_due).limit(limit)
        ).all()
        self._scope(PLATFORM)
        return [_alert_of(r) for r in rows]

    def escalate_alert(self, tenant_id: str, alert_id: str, *, level: int, ack_due: datetime) -> bool:
        """Raise an open alert to on-call ``level`` with a new deadline (``monitor:run``); audited
        ``alert:escalate``. False when it was acknowledged or resolved meanwhile."""
        self._authorise(tenant_id, "monitor:run")
        a = t.alert
        done = self.conn.execute(
            update(a)
            .where(self._tf(a, tenant_id), a.c.alert_id == alert_id, a.c.state == "open")
            .values(level=level, ack_due=ack_due)
        ).rowcount
        if done:
            self._record(tenant_id, "alert:escalate", "alert", 1, refs=[alert_id, f"level:{level}"])
        return bool(done)

    # -- channels ----------------------------------------------------------------------------------

    def add_channel(
        self, tenant_id: str, *, kind: str, target: str, level: int, min_severity: str, at: datetime
    ) -> tuple[Channel, str | None]:
        """A channel of the lab (or of the platform's on-call ``level``); a webhook's HMAC key is
        returned once, and kept wrapped by the platform key. Audited ``channel:add``."""
        if kind not in CHANNEL_KINDS:
            raise InvalidInput(f"a channel's kind is one of {', '.join(CHANNEL_KINDS)}")
        if min_severity not in SEVERITIES:
            raise InvalidInput(f"min_severity is one of {', '.join(SEVERITIES)}")
        if not 1 <= level <= 9:
            raise InvalidInput("a channel's level is 1 to 9")
        if not target or len(target) > 500:
            raise InvalidInput("a channel needs a target (an address, a URL or host:port), 500 characters at most")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
            raise InvalidInput("a channel's target holds no control character (no line break)")
        self._authorise_channels(tenant_id)
        # After authorising: the check resolves the host (public addresses only). Installed at
        # start-up (``labvault.runtime.install_hooks``); none installed: no channel is added.
        if not TARGET_CHECKS:
            raise InvalidInput("channels cannot be added: no target check is installed")
        for check in TARGET_CHECKS:
            check(kind, target)
        channel_id = new_id()
        secret = new_token() if kind == "webhook" else None
        wrapped = (
            None
            if secret is None
            else self._gw.keys.wrap(PLATFORM, secret.encode(), _secret_context(tenant_id, channel_id))
        )
        self.conn.execute(
            insert(t.notify_channel).values(
                tenant_id=tenant_id,
                channel_id=channel_id,
                kind=kind,
                target=target,
                level=level,
                min_severity=min_severity,
                secret_wrapped=wrapped,
                active=1,
                created_by=self.principal.account_id,
                created_at=at,
            )
        )
        self._record(tenant_id, "channel:add", "channel", 1, refs=[channel_id, kind])
        return self._channel_row(tenant_id, channel_id), secret

    def _channel_row(self, tenant_id: str, channel_id: str) -> Channel:
        c = t.notify_channel
        row = self.conn.execute(select(c).where(self._tf(c, tenant_id), c.c.channel_id == channel_id)).first()
        if row is None:
            raise NotFound(f"no channel '{channel_id}' in '{tenant_id}'")
        return _channel_of(row)

    def channels(self, tenant_id: str, *, active_only: bool = True) -> list[Channel]:
        """The lab's (or the platform's) channels (``channel:manage``); audited ``channel:list``."""
        self._authorise_channels(tenant_id)
        found = self._channels(tenant_id, active_only=active_only)
        self._record(tenant_id, "channel:list", "channel", len(found))
        return found

    def _channels(self, tenant_id: str, *, active_only: bool = True) -> list[Channel]:
        c = t.notify_channel
        q = select(c).where(self._tf(c, tenant_id)).order_by(c.c.level, c.c.created_at)
        if active_only:
            q = q.where(c.c.active == 1)
        return [_channel_of(r) for r in self.conn.execute(q).all()]

    def remove_channel(self, tenant_id: str, channel_id: str) -> Channel:
        """Stop a channel (kept, inactive, for the deliveries that name it); audited ``channel:remove``."""
        self._authorise_channels(tenant_id)
        self._channel_row(tenant_id, channel_id)
        c = t.notify_channel
        self.conn.execute(
            update(c).where(self._tf(c, tenant_id), c.c.channel_id == channel_id).values(active=0, secret_wrapped=None)
        )
        self._record(tenant_id, "channel:remove", "channel", 1, refs=[channel_id])
        return self._channel_row(tenant_id, channel_id)

    def delivery_channels(self, tenant_id: str) -> list[Channel]:
        """Active channels of a lab or of the platform, for the dispatcher (``monitor:run``)."""
        self._authorise(tenant_id, "monitor:run")
        return self._channels(tenant_id)

    def channel_for_delivery(self, tenant_id: str, channel_id: str) -> tuple[Channel, ChannelKey | None]:
        """A channel and its webhook key, still wrapped, for the dispatcher only (``monitor:run``):
        the key is opened in the dispatcher's send path (``ChannelKey.open``), nowhere else."""
        self._authorise(tenant_id, "monitor:run")
        c = t.notify_channel
        row = self.conn.execute(select(c).where(self._tf(c, tenant_id), c.c.channel_id == channel_id)).first()
        if row is None:
            raise NotFound(f"no channel '{channel_id}' in '{tenant_id}'")
        key = (
            None
            if row.secret_wrapped is None
            else ChannelKey(self._gw.keys, bytes(row.secret_wrapped), _secret_context(tenant_id, channel_id))
        )
        return _channel_of(row), key

    # -- deliveries --------------------------------------------------------------------------------

    def queue_deliveries(
        self, tenant_id: str, *, kind: str, subject_id: str, level: int, channels: Sequence[Channel], at: datetime
    ) -> list[str]:
        """One delivery per channel, due at ``at`` (``monitor:run``); the deliveries' ids. Each
        delivery lives in the tenant of its subject (a lab's alert sent to a platform channel too)."""
        self._authorise(tenant_id, "monitor:run")
        ids = []
        for ch in channels:
            delivery_id = new_id()
            self.conn.execute(
                insert(t.alert_delivery).values(
                    tenant_id=tenant_id,
                    delivery_id=delivery_id,
                    kind=kind,
                    subject_id=subject_id,
                    channel_id=channel_ref(tenant_id, ch),
                    level=level,
                    attempts=0,
                    next_at=at,
                )
            )
            ids.append(delivery_id)
        if ids:
            self._record(tenant_id, "alert:queue", "delivery", len(ids), refs=[subject_id, *ids[:20]])
        return ids

    def deliveries(self, tenant_id: str, subject_id: str) -> list[Delivery]:
        """An alert's deliveries, in order (``alert:read``): its history on the channels."""
        self._authorise_alerts(tenant_id, "alert:read")
        d = t.alert_delivery
        rows = self.conn.execute(
            select(d).where(self._tf(d, tenant_id), d.c.subject_id == subject_id).order_by(d.c.delivery_id)
        ).all()
        return [_delivery_of(r) for r in rows]

    def due_deliveries(self, now: datetime, limit: int = 200) -> list[Delivery]:
        """Deliveries not yet delivered whose time has come, every lab's (``monitor:run``)."""
        self._authorise(PLATFORM, "monitor:run")
        self._scope("*")
        d = t.alert_delivery
        rows = self.conn.execute(
            select(d)
            .where(d.c.delivered_at.is_(None), d.c.next_at.is_not(None), d.c.next_at <= now)
            .order_by(d.c.next_at, d.c.delivery_id)
            .limit(limit)
        ).all()
        self._scope(PLATFORM)
        return [_delivery_of(r) for r in rows]

    def delivery_done(
        self,
        tenant_id: str,
        delivery_id: str,
        *,
        attempts: int,
        delivered_at: datetime | None,
        next_at: datetime | None,
        error: str | None,
    ) -> None:
        """Record an attempt (``monitor:run``): delivered, or the next try's time (None: given up)."""
        self._authorise(tenant_id, "monitor:run")
        d = t.alert_delivery
        self.conn.execute(
            update(d)
            .where(self._tf(d, tenant_id), d.c.delivery_id == delivery_id)
            .values(
                attempts=attempts,
                delivered_at=delivered_at,
                next_at=next_at,
                last_error=None if error is None else error[:200],
            )
        )
        outcome = "allowed" if delivered_at is not None else "error"
        self._record(tenant_id, "alert:deliver", "delivery", 1, outcome=outcome, refs=[delivery_id])

    # -- a lab's signed checkpoints, pushed to its channels -----------------------------------------

    def digest_sent_through(self, tenant_id: str) -> date | None:
        """The last day whose access digest was queued to the lab's e-mail channels (``monitor:run``)."""
        self._authorise(tenant_id, "monitor:run")
        cur = t.monitor_cursor
        row = self.conn.execute(
            select(cur.c.seq).where(self._tf(cur, tenant_id), cur.c.consumer == DIGEST_CURSOR)
        ).first()
        return None if row is None else date.fromordinal(int(row.seq))

    def mark_digest_sent(self, tenant_id: str, day: date, at: datetime) -> None:
        """Record that ``day``'s digest was queued: forward only, and never past the day of ``at``
        (a lab's yesterday is at most UTC's today), so no later digest is skipped by a cursor moved ahead."""
        self._authorise(tenant_id, "monitor:run")
        advance_cursor(self, tenant_id, DIGEST_CURSOR, day.toordinal(), at.date().toordinal(), at)

    def checkpoints_after(self, tenant_id: str, consumer: str = "checkpoints") -> tuple[int, list[dict[str, Any]]]:
        """The lab's signed checkpoints not yet pushed (``monitor:run``): the cursor (the size of
        the last pushed one) and the records after it (body, signature, public key: no event)."""
        self._authorise(tenant_id, "monitor:run")
        cur = t.monitor_cursor
        row = self.conn.execute(select(cur.c.seq).where(self._tf(cur, tenant_id), cur.c.consumer == consumer)).first()
        since = 0 if row is None else int(row.seq)
        cp = t.audit_checkpoint
        rows = self.conn.execute(select(cp).where(self._tf(cp, tenant_id), cp.c.size > since).order_by(cp.c.size)).all()
        return since, [
            {
                "size": int(r.size),
                "body": json.loads(r.body),
                "signature": r.signature,
                "public_key": r.signer_public_key,
            }
            for r in rows
        ]

    def checkpoint_record(self, tenant_id: str, size: int) -> dict[str, Any]:
        """One signed checkpoint of the lab, to send (``monitor:run``)."""
        self._authorise(tenant_id, "monitor:run")
        cp = t.audit_checkpoint
        r = self.conn.execute(select(cp).where(self._tf(cp, tenant_id), cp.c.size == size)).first()
        if r is None:
            raise NotFound(f"no checkpoint of size {size} in lab '{tenant_id}'")
        return {"body": json.loads(r.body), "signature": r.signature, "public_key": r.signer_public_key}

    def move_cursor(self, tenant_id: str, consumer: str, seq: int, at: datetime) -> None:
        """Move the lab's ``checkpoints`` cursor forward to ``seq`` (``monitor:run``): never back,
        never beyond the lab's last signed checkpoint (a cursor past it would keep every later
        checkpoint from the lab's channels)."""
        self._authorise(tenant_id, "monitor:run")
        if consumer != CHECKPOINTS_CURSOR:
            raise InvalidInput(f"this cursor is the '{CHECKPOINTS_CURSOR}' one only")
        cp = t.audit_checkpoint
        last = int(self.conn.execute(select(func.max(cp.c.size)).where(self._tf(cp, tenant_id))).scalar() or 0)
        advance_cursor(self, tenant_id, consumer, seq, last, at)
