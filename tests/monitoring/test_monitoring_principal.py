"""Who runs the monitoring (H1, H4, G4, G5): the platform's own process, the system principal
``system:monitor``, never a person's account. What a vendor account reaches through the
monitoring's actions (a lab's channels, their webhook keys, its checkpoints' cursor, its alerts'
deliveries, its alerts' acknowledgement), cursors that only move forward to what exists, and two
consumers at once (one lease: a bulk read split between them is still one bulk read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from labvault.access import Gateway, Principal, Purpose
from labvault.access.alerts import ChannelKey
from labvault.access.principal import MONITOR
from labvault.accounts import service as accounts
from labvault.audit import service as audit
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.monitoring import alerts, dispatch
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.consumer import Consumer
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import ADMIN, lab_user, make_lab
from tests.monitoring.events import ListSink

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The lab's webhook here names a host that does not resolve: the operator's opt-in
    LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default, tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _lab_with_webhook(gw: Gateway) -> tuple[Principal, str]:
    make_lab(gw, "lab-a")
    admin = lab_user(gw, "lab-a", "lab_admin", name="Adm")
    with gw.unit(admin, Purpose.MONITORING) as u:
        ch, secret = u.add_channel(
            "lab-a", kind="webhook", target="https://soc.lab-a.invalid/hook", level=1, min_severity="low", at=T0
        )
    assert secret
    return admin, ch.channel_id


def _lab_alert(gw: Gateway, lab: str = "lab-a", rule: str = "canary-touched") -> str:
    finding = Finding(rule, Severity.CRITICAL, lab, "canary", "m", refs=("m",), first_at=T0, last_at=T0)
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        alert_id = alerts.raise_alert(u, finding, now=T0)
    assert alert_id
    return alert_id


@SQLITE
@pytest.mark.parametrize("role", ["security_officer", "platform_admin"])
def test_a_vendor_account_neither_lists_a_labs_channels_nor_takes_its_webhook_key(gateway, role):
    """G4, H1 (docs/design/monitoring-alerts.md: "A lab's channels ... No vendor account touches
    them"): ``channels()`` refuses a vendor account, and so do the dispatcher's reads of the same
    rows (``delivery_channels``: the targets; ``channel_for_delivery``: the webhook's key), which
    only the monitoring process may call; even to it, the key comes wrapped."""
    gw = gateway
    _, channel_id = _lab_with_webhook(gw)
    vendor = vendor_user(gw, role)
    with gw.unit(vendor, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.channels("lab-a")
    with gw.unit(vendor, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.delivery_channels("lab-a")
    with gw.unit(vendor, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.channel_for_delivery("lab-a", channel_id)
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        assert [c.channel_id for c in u.delivery_channels("lab-a")] == [channel_id]
        channel, key = u.channel_for_delivery("lab-a", channel_id)
    assert channel.channel_id == channel_id and isinstance(key, ChannelKey)
    assert "wrapped" in repr(key) and len(key.open()) > 16  # opened by the send path only


@SQLITE
def test_a_vendor_account_cannot_stop_a_labs_checkpoints_reaching_its_channel(gateway):
    """G4: the lab's signed checkpoints go to its own channel "outside the vendor's reach". The
    vendor's security officer cannot move the lab's ``checkpoints`` cursor (refused, recorded);
    the monitoring process itself cannot move it past the lab's last checkpoint, nor back: the
    next checkpoint is queued to the lab's channel."""
    gw = gateway
    _lab_with_webhook(gw)
    so = vendor_user(gw, "security_officer")
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.move_cursor("lab-a", "checkpoints", 10**9, T0)
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        audit.checkpoint(u, "lab-a")
    with gw.unit(MONITOR, Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="past what exists"):
        u.move_cursor("lab-a", "checkpoints", 10**9, T0)
    with gw.unit(MONITOR, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
        u.move_cursor("lab-a", "rules-lease", 1, T0)  # not a cursor this method moves
    assert dispatch.run_once(gw, T0)["checkpoints"] == 1, "the lab's new checkpoint was never queued to its channel"
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        since, _ = u.checkpoints_after("lab-a")
        u.move_cursor("lab-a", "checkpoints", 0, T0)  # back: ignored (nothing is sent twice)
        assert u.checkpoints_after("lab-a")[0] == since > 0
    with gw.engine.connect() as c:
        refused = c.execute(
            select(t.audit_event.c.actor).where(
                t.audit_event.c.tenant_id == "lab-a",
                t.audit_event.c.action == "monitor:run",
                t.audit_event.c.outcome == "denied",
            )
        ).all()
    assert [r.actor for r in refused] == [so.account_id]


@SQLITE
def test_the_rules_cursor_moves_forward_only_to_what_exists(gateway):
    """H1: the ``rules`` cursor is never set past the lab's last audit event (which would skip
    the events to come), nor moved back."""
    gw = gateway
    make_lab(gw, "lab-a")
    bio = lab_user(gw, "lab-a")
    _read(gw, bio, "lab-a", 0, 3)
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        head = u.monitor_head("lab-a")
        with pytest.raises(InvalidInput, match="past what exists"):
            u.monitor_advance("rules", "lab-a", head + 1000)
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        u.monitor_advance("rules", "lab-a", head)
        u.monitor_advance("rules", "lab-a", 1)
        assert u.monitor_cursors("rules")["lab-a"] == head
        with pytest.raises(InvalidInput):
            u.monitor_advance("rules-lease", "lab-a", 1)


@SQLITE
def test_a_vendor_account_cannot_downgrade_or_mark_delivered_a_labs_alert(gateway):
    """H1, G5: the security officer cannot rewrite a lab's critical alert (``absorb_finding``:
    severity low, a far deadline) nor mark its pending delivery to the lab's channel delivered
    (``delivery_done``) without anything sent: both refused."""
    gw = gateway
    admin, _ = _lab_with_webhook(gw)
    alert_id = _lab_alert(gw)
    so = vendor_user(gw, "security_officer")
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.absorb_finding(
            "lab-a",
            alert_id,
            severity="low",
            refs=(),
            event_count=0,
            last_seq=None,
            last_at=None,
            ack_due=T0 + timedelta(days=365),
        )
    with gw.unit(so, Purpose.MONITORING) as u:
        pending = u.deliveries("lab-a", alert_id)  # read: references only
    assert pending and all(d.delivered_at is None for d in pending)
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.delivery_done("lab-a", pending[0].delivery_id, attempts=1, delivered_at=T0, next_at=None, error=None)
    with gw.unit(admin, Purpose.MONITORING) as u:
        stored = u.alert("lab-a", alert_id)
        assert all(d.delivered_at is None for d in u.deliveries("lab-a", alert_id))
    assert stored.severity == "critical" and stored.ack_due < T0 + timedelta(days=1)


@SQLITE
def test_a_vendor_account_reads_a_labs_alert_but_never_acknowledges_or_resolves_it(gateway):
    """H1: acknowledging stops escalation, so a lab's alert (it may be about the vendor's own
    staff) is acknowledged and resolved by the lab's lab_admin or lab_dpo only; the vendor's
    security officer reads it (references) and answers the platform's own alerts."""
    gw = gateway
    make_lab(gw, "lab-a")
    dpo = lab_user(gw, "lab-a", "lab_dpo", name="Dpo")
    alert_id = _lab_alert(gw, rule="bulk-read-vendor")
    platform_alert = _lab_alert(gw, PLATFORM, rule="password-spraying")
    so = vendor_user(gw, "security_officer")
    with gw.unit(so, Purpose.MONITORING) as u:
        assert u.find_alert(alert_id).state == "open"
        assert alert_id in {a.alert_id for a in alerts.list_alerts(u)}
    for act in (
        lambda u: alerts.acknowledge(u, alert_id, reason="seen", now=T0),
        lambda u: alerts.resolve(u, alert_id, reason="fine", now=T0),
    ):
        with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(AccessDenied, match="lab_admin or lab_dpo"):
            act(u)
    with gw.unit(dpo, Purpose.MONITORING) as u:
        assert u.find_alert(alert_id).state == "open"  # untouched by the vendor
        assert alerts.acknowledge(u, alert_id, reason="looking", now=T0).acknowledged_by == dpo.account_id
        assert alerts.resolve(u, alert_id, reason="explained", now=T0).state == "resolved"
    with gw.unit(so, Purpose.MONITORING) as u:
        assert alerts.acknowledge(u, platform_alert, reason="mine", now=T0).acknowledged_by == so.account_id


@SQLITE
def test_monitor_run_is_no_persons_and_the_monitor_role_no_accounts(gateway):
    """G5: ``monitor:run`` is the platform's own process's: the vendor's security officer and
    platform admin do not hold it; the role ``monitor`` is given to no account (created or
    changed), and one written into an account's row by hand grants nothing. A principal calling
    itself a system one gets the policy's roles, not its own, for the monitoring purpose only."""
    gw = gateway
    make_lab(gw, "lab-a")
    for role in ("security_officer", "platform_admin"):
        with gw.unit(vendor_user(gw, role), Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            u.monitor_cursors("rules")
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u, pytest.raises(InvalidInput, match="never to an account"):
        accounts.create_account(u, tenant_id=PLATFORM, name="Mon Itor", email="mon@vendor.invalid", roles=["monitor"])
    so = vendor_user(gw, "security_officer", name="Sec")
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u, pytest.raises(InvalidInput, match="never to an account"):
        accounts.set_roles(u, f"{so.account_id}@vendor.invalid", ["security_officer", "monitor"])
    with gw.engine.begin() as c:
        c.execute(
            update(t.account).where(t.account.c.account_id == so.account_id).values(roles="security_officer,monitor")
        )
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.monitor_cursors("rules")
    forged = Principal("system:monitor", "x", PLATFORM, frozenset({"platform_admin"}), "system")
    with gw.unit(forged, Purpose.MONITORING) as u:
        assert u.principal.roles == frozenset({"monitor"})
        with pytest.raises(AccessDenied):
            u.channels("lab-a")
    with pytest.raises(AccessDenied), gw.unit(MONITOR, Purpose.ADMINISTRATION):
        pass
    with pytest.raises(AccessDenied), gw.unit(Principal("system:other", "x", kind="system"), Purpose.MONITORING):
        pass
    with pytest.raises(AccessDenied), gw.unit(Principal("system:monitor", "x"), Purpose.MONITORING):
        pass  # a person called so: no such account


def _read(gw: Gateway, who: Principal, lab: str, first: int, n: int) -> None:
    with gw.unit(who, Purpose.CARE) as u:
        for i in range(first, first + n):
            u.audit(lab, "patient:result:read", "result", 1, refs=[f"pat-{i:05d}"])


@SQLITE
def test_two_consumers_at_once_still_see_one_bulk_read(gateway):
    """H1: ``serve`` (``--monitor-every``) and ``labvault monitor run`` at the same time share the
    ``rules`` cursors, each with its windows in memory: were both to evaluate, 300 distinct reads
    in the hour taken alternately would be 150 in each window and neither would raise
    ``bulk-read`` (gte 300). One lease: the second consumer waits (and says so once), the holder
    sees the 300 and raises the finding once; when the holder stops, the other takes over with
    its windows warmed from the cursors (nothing raised again)."""
    gw = gateway
    make_lab(gw, "lab-a")
    bio = lab_user(gw, "lab-a")
    sink_a, sink_b = ListSink(), ListSink()
    told: list[str] = []
    serve_side = Consumer(gw, MONITOR, rules_mod.shipped(), sink=sink_a)
    cli_side = Consumer(gw, MONITOR, rules_mod.shipped(), sink=sink_b, notice=told.append)
    serve_side.poll()
    cli_side.poll()
    for k in range(6):  # 6 bursts of 50 distinct patients; the two consumers poll in turn
        _read(gw, bio, "lab-a", k * 50, 50)
        (serve_side if k % 2 == 0 else cli_side).poll()
    serve_side.poll()
    cli_side.poll()
    raised = [f for f in sink_a.findings + sink_b.findings if f.rule_id == "bulk-read"]
    assert len(raised) == 1, "300 distinct patients read in minutes: one bulk-read alert"
    assert raised[0].event_count == 300 and sink_b.findings == []
    assert cli_side.waiting and len(told) == 1 and "waits" in told[0]
    serve_side.release()
    _read(gw, bio, "lab-a", 1000, 1)
    assert [f.rule_id for f in cli_side.poll() if f.rule_id == "bulk-read"] == ["bulk-read"]  # the same group
    assert not cli_side.waiting and serve_side.poll() == [] and serve_side.waiting


@SQLITE
def test_a_lease_left_by_a_stopped_consumer_expires(gateway):
    """H1: a consumer that died holding the lease does not stop monitoring: its lease expires
    and another takes over."""
    gw = gateway
    make_lab(gw, "lab-a")
    gone = Consumer(gw, MONITOR, rules_mod.shipped(), sink=ListSink(), lease_seconds=0.0)
    gone.poll()
    after = Consumer(gw, MONITOR, rules_mod.shipped(), sink=ListSink())
    after.poll()
    assert not after.waiting


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_the_lease_under_row_level_security_alone(db_url, keyring, gateway):
    """H1, F1: on PostgreSQL with the application's tenant filter off (row-level security alone),
    the lease row is taken, kept and given up on the platform's scope; the second consumer waits
    while the first holds it, and the cursors still move forward only."""
    make_lab(gateway, "lab-a")
    bio = lab_user(gateway, "lab-a")
    rls_only = Gateway(gateway.engine, keyring, tenant_filter=False)
    first = Consumer(rls_only, MONITOR, rules_mod.shipped(), sink=ListSink())
    second = Consumer(rls_only, MONITOR, rules_mod.shipped(), sink=ListSink())
    first.poll()
    _read(gateway, bio, "lab-a", 0, 3)
    assert second.poll() == [] and second.waiting
    first.poll()
    assert not first.waiting and first.last_read == 3
    first.release()
    second.poll()
    assert not second.waiting
    with rls_only.unit(MONITOR, Purpose.MONITORING) as u:
        head = u.monitor_head("lab-a")
        assert u.monitor_cursors("rules")["lab-a"] == head
        with pytest.raises(InvalidInput):
            u.monitor_advance("rules", "lab-a", head + 1)
