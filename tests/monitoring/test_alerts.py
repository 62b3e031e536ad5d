"""Alerts (H1): one live alert per key, its states with who and why, who may read and answer a
lab's alert, escalation when the acknowledgement deadline passes, channels. SQLite units of work;
``test_alerts_pg`` proves the lab isolation again under PostgreSQL's row-level security."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from labvault.access import Gateway, Principal, Purpose
from labvault.access.principal import MONITOR
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.monitoring import alerts, dispatch
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import ADMIN, lab_user, make_lab


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The channels here point at receivers on 127.0.0.1 (webhooks over plain http) or at names
    that do not resolve: the operator's opt-in LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default,
    tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'labvault.db'}"


class People:
    def __init__(self, gw: Gateway) -> None:
        make_lab(gw, "lab-a", "690000017")
        make_lab(gw, "lab-b", "440000018")
        self.admin_a = lab_user(gw, "lab-a", "lab_admin", name="Adm")
        self.dpo_a = lab_user(gw, "lab-a", "lab_dpo", name="Dpo")
        self.bio_a = lab_user(gw, "lab-a", "biologist", name="Bio")
        self.admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
        self.support = vendor_user(gw, "support")
        self.security = vendor_user(gw, "security_officer")
        self.operator = ADMIN  # the CLI operator: platform_admin (monitoring runs as MONITOR, not as it)


@pytest.fixture
def world(gateway):
    return gateway, People(gateway)


def finding(tenant="lab-a", rule="bulk-read", group="acct-1", severity=Severity.HIGH, seq=10, refs=("acct-1",)):
    return Finding(
        rule_id=rule,
        severity=severity,
        tenant_id=tenant,
        title=f"{rule} by {group}",
        group=group,
        refs=tuple(refs),
        event_count=3,
        first_seq=seq - 2,
        last_seq=seq,
        first_at=T0 - timedelta(minutes=1),
        last_at=T0,
    )


def raise_(gw: Gateway, f: Finding, now: datetime = T0) -> str:
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        alert_id = alerts.raise_alert(u, f, now=now)
    assert alert_id is not None
    return alert_id


def read(gw: Gateway, who: Principal, alert_id: str):
    with gw.unit(who, Purpose.MONITORING) as u:
        return u.find_alert(alert_id)


def test_one_live_alert_per_key_absorbs_findings_and_a_resolved_one_does_not(world):
    """H1: a finding with the key of an open alert adds to it (count, last seq, refs), another key
    opens another alert, and after resolution the same key opens a new one."""
    gw, p = world
    first = raise_(gw, finding(seq=10, refs=("acct-1", "seq-8")))
    again = raise_(gw, finding(seq=25, refs=("seq-25",), severity=Severity.CRITICAL), T0 + timedelta(minutes=1))
    other = raise_(gw, finding(group="acct-2"))
    assert again == first and other != first
    a = read(gw, p.admin_a, first)
    assert (a.event_count, a.first_seq, a.last_seq, a.state) == (6, 8, 25, "open")
    assert a.refs == ("acct-1", "seq-8", "seq-25") and a.severity == "critical"
    assert a.ack_due == T0 + timedelta(minutes=16)  # the critical deadline, from the finding that made it so
    many = raise_(gw, finding(refs=tuple(f"r{i}" for i in range(200))))
    assert many == first and len(read(gw, p.admin_a, first).refs) == alerts.MAX_REFS
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        alerts.resolve(u, first, reason="ticket 42: account was the night shift's")
    fresh = raise_(gw, finding(seq=40))
    assert fresh != first and read(gw, p.admin_a, fresh).event_count == 3


def test_states_who_and_why(world):
    """H1: open -> acknowledged -> resolved with who and why; no resolution without a reason; a
    resolved alert cannot be acknowledged; the one who acknowledges owns it."""
    gw, p = world
    alert_id = raise_(gw, finding())
    with gw.unit(p.dpo_a, Purpose.MONITORING) as u:
        with pytest.raises(InvalidInput, match="reason"):
            alerts.resolve(u, alert_id, reason="  ")
    with gw.unit(p.dpo_a, Purpose.MONITORING) as u:
        acked = alerts.acknowledge(u, alert_id, now=T0 + timedelta(minutes=5))
    assert (acked.state, acked.acknowledged_by, acked.owner) == ("acknowledged", p.dpo_a.account_id, p.dpo_a.account_id)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        done = alerts.resolve(u, alert_id, reason="known night batch", now=T0 + timedelta(minutes=9))
    assert (done.state, done.resolved_by, done.reason) == ("resolved", p.admin_a.account_id, "known night batch")
    assert done.acknowledged_by == p.dpo_a.account_id and done.resolved_at == T0 + timedelta(minutes=9)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="resolved"):
        alerts.acknowledge(u, alert_id)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        h = alerts.history(u, alert_id)
    assert [s["what"] for s in h.steps()] == ["opened", "acknowledged", "resolved"]


def test_what_a_vendor_account_or_another_lab_can_do_with_a_labs_alert(world):
    """H1, G1, G2: a lab's alert is its lab_admin's and its DPO's; the security officer reads it
    (references) but neither acknowledges nor resolves it (an acknowledgement stops escalation).
    Vendor support cannot acknowledge it, the platform admin cannot read it, another lab's admin
    neither reads nor lists it, a biologist of the lab does not see it; refusals are audited."""
    gw, p = world
    alert_id = raise_(gw, finding())
    platform_alert = raise_(gw, finding(tenant=PLATFORM, rule="scheduler-failure", group="retention"))
    with gw.unit(p.support, Purpose.SUPPORT) as u, pytest.raises(AccessDenied):
        alerts.acknowledge(u, alert_id)
    with gw.unit(ADMIN, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.alert("lab-a", alert_id)
    with gw.unit(p.admin_b, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.alert("lab-a", alert_id)
    with gw.unit(p.admin_b, Purpose.MONITORING) as u:
        with pytest.raises(Exception, match="no alert"):
            u.find_alert(alert_id)  # looked for in its own lab only: not found
    with gw.unit(p.admin_b, Purpose.MONITORING) as u:
        assert alerts.list_alerts(u) == []
    with gw.unit(p.bio_a, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        alerts.list_alerts(u)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        assert [a.alert_id for a in alerts.list_alerts(u)] == [alert_id]
    with gw.unit(ADMIN, Purpose.MONITORING) as u:  # the platform admin: the platform's own alerts
        assert [a.alert_id for a in alerts.list_alerts(u)] == [platform_alert]
    with gw.unit(p.security, Purpose.MONITORING) as u:
        assert {a.alert_id for a in alerts.list_alerts(u)} == {alert_id, platform_alert}
        assert [a.alert_id for a in alerts.list_alerts(u, "lab-a", state="open")] == [alert_id]
    with gw.unit(p.security, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        alerts.acknowledge(u, alert_id, reason="looking")
    with gw.unit(p.security, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        alerts.resolve(u, alert_id, reason="nothing")
    with gw.unit(p.security, Purpose.MONITORING) as u:
        alerts.acknowledge(u, platform_alert, reason="looking")
    with gw.engine.connect() as conn:
        denied = conn.execute(
            select(t.audit_event.c.actor, t.audit_event.c.action).where(
                t.audit_event.c.tenant_id == "lab-a", t.audit_event.c.outcome == "denied"
            )
        ).all()
    assert (p.support.account_id, "alert:ack") in denied and (ADMIN.account_id, "alert:read") in denied
    assert (p.security.account_id, "alert:ack") in denied and (p.security.account_id, "alert:resolve") in denied


def test_channels_of_a_lab_are_the_labs_own(world):
    """G1, G4: a lab's channels (where its alerts and checkpoints go) are set by its own admin or
    DPO; no vendor account adds, lists or removes them; the platform's levels are the vendor's."""
    gw, p = world
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        ch, secret = u.add_channel(
            "lab-a", kind="webhook", target="https://it.lab-a.invalid/hook", level=1, min_severity="low", at=T0
        )
    assert secret and len(secret) >= 40 and ch.signed
    with gw.engine.connect() as conn:
        stored = conn.execute(select(t.notify_channel.c.secret_wrapped)).scalar()
    assert secret.encode() not in stored  # wrapped by the platform key
    for who in (p.security, ADMIN, p.support):
        with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            u.add_channel("lab-a", kind="email", target="x@vendor.invalid", level=1, min_severity="low", at=T0)
        with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            u.remove_channel("lab-a", ch.channel_id)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.add_channel(PLATFORM, kind="email", target="x@lab.invalid", level=1, min_severity="low", at=T0)
    with gw.unit(p.admin_b, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.channels("lab-a")
    with gw.unit(p.security, Purpose.MONITORING) as u:
        u.add_channel(PLATFORM, kind="syslog", target="udp://127.0.0.1:5514", level=2, min_severity="high", at=T0)
    with gw.unit(p.dpo_a, Purpose.MONITORING) as u:
        assert [c.channel_id for c in u.channels("lab-a")] == [ch.channel_id]
        u.remove_channel("lab-a", ch.channel_id)
        assert u.channels("lab-a") == []


def _udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def test_escalation_when_the_acknowledgement_deadline_passes(world):
    """H1: a critical alert nobody acknowledges within 15 minutes goes to on-call level 2 (a new
    delivery to the level-2 channel, ``alert:escalate`` audited, a new deadline); past the highest
    level it calls that level again; once acknowledged it escalates no more."""
    gw, p = world
    level1, level2 = _udp(), _udp()
    with gw.unit(p.security, Purpose.MONITORING) as u:
        for n, s in ((1, level1), (2, level2)):
            port = s.getsockname()[1]
            u.add_channel(PLATFORM, kind="syslog", target=f"udp://127.0.0.1:{port}", level=n, min_severity="low", at=T0)
    alert_id = raise_(gw, finding(severity=Severity.CRITICAL))
    assert dispatch.run_once(gw, T0)["sent"] == 1
    assert alert_id.encode() in level1.recv(4096)
    quiet = dispatch.run_once(gw, T0 + timedelta(minutes=14))
    assert (quiet["escalated"], quiet["sent"]) == (0, 0)
    late = T0 + timedelta(minutes=15, seconds=1)
    assert dispatch.run_once(gw, late) == {
        "escalated": 1,
        "advisories": 0,
        "incidents": 0,
        "checkpoints": 0,
        "digests": 0,
        "sent": 1,
        "failed": 0,
        "given_up": 0,
    }
    line = level2.recv(4096)
    assert alert_id.encode() in line and b'level="2"' in line
    a = read(gw, p.security, alert_id)
    assert (a.level, a.ack_due) == (2, late + timedelta(minutes=15))
    again = dispatch.run_once(gw, late + timedelta(minutes=16))
    assert again["escalated"] == 1 and read(gw, p.security, alert_id).level == 2
    assert b'level="2"' in level2.recv(4096)
    with gw.unit(p.admin_a, Purpose.MONITORING) as u:
        alerts.acknowledge(u, alert_id)
    assert dispatch.run_once(gw, late + timedelta(hours=2))["escalated"] == 0
    with gw.engine.connect() as conn:
        escalations = (
            conn.execute(select(t.audit_event.c.object_refs).where(t.audit_event.c.action == "alert:escalate"))
            .scalars()
            .all()
        )
    assert [json.loads(r)[0] for r in escalations] == [alert_id, alert_id]
    level1.close()
    level2.close()


def test_a_labs_alert_goes_to_its_own_channels_a_platform_alert_does_not(world):
    """H1: a lab's alert reaches the lab's channels and the platform's; a platform alert only the
    platform's; another lab's channel gets nothing; a channel takes its minimum severity and up."""
    gw, p = world
    socks = {name: _udp() for name in ("lab-a", "lab-b", "platform", "lab-a-critical-only")}

    def add(who, tenant, name, min_severity="low"):
        with gw.unit(who, Purpose.MONITORING) as u:
            port = socks[name].getsockname()[1]
            u.add_channel(
                tenant, kind="syslog", target=f"udp://127.0.0.1:{port}", level=1, min_severity=min_severity, at=T0
            )

    add(p.admin_a, "lab-a", "lab-a")
    add(p.admin_a, "lab-a", "lab-a-critical-only", "critical")
    add(p.admin_b, "lab-b", "lab-b")
    add(p.security, PLATFORM, "platform")
    lab_alert = raise_(gw, finding())
    platform_alert = raise_(gw, finding(tenant=PLATFORM, rule="scheduler-failure", group="retention"))
    assert dispatch.run_once(gw, T0)["sent"] == 3
    got = {}
    for name, s in socks.items():
        s.settimeout(0.3)
        lines = []
        try:
            while True:
                lines.append(s.recv(4096))
        except TimeoutError:
            pass
        got[name] = lines
        s.close()
    assert [lab_alert.encode() in x for x in got["lab-a"]] == [True]
    assert sorted(b"lab-a" in x for x in got["platform"]) == [False, True]
    assert any(platform_alert.encode() in x for x in got["platform"])
    assert got["lab-b"] == [] and got["lab-a-critical-only"] == []
