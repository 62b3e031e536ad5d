"""Alerts under PostgreSQL's row-level security (H1, G1): with the application's tenant filter
off, a lab's admin still sees nothing of another lab's alerts or channels; the dispatcher and the
security officer work across labs through the administrative scope '*'."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from itertools import count

import pytest

from labvault.access import Gateway, Purpose
from labvault.access.principal import MONITOR
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, NotFound
from labvault.monitoring import alerts, dispatch
from labvault.monitoring.findings import Finding, Severity
from tests.access.conftest import vendor_user
from tests.conftest import ADMIN, lab_user, make_lab


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The channels here point at receivers on 127.0.0.1 (webhooks over plain http) or at names
    that do not resolve: the operator's opt-in LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default,
    tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
_dbs = count()


@pytest.fixture
def pg(pg_cluster, keyring, tmp_path):
    from labvault.store.engine import make_engine, migrate

    url = pg_cluster.createdb(f"alerts{os.getpid()}_{next(_dbs)}")
    engine = make_engine(url)
    migrate(engine)
    gw = Gateway(engine, keyring)
    with gw.bootstrap(ADMIN) as u:
        u.ensure_account(PLATFORM, ADMIN.account_id, ADMIN.name, "admin@test.invalid", ADMIN.roles, commitment="test")
        u.ensure_platform_keys()
    make_lab(gw, "lab-a", "690000017")
    make_lab(gw, "lab-b", "440000018")
    yield gw
    engine.dispose()


def test_row_level_security_keeps_a_labs_alerts_its_own(pg):
    """H1, G1: on PostgreSQL with the tenant filter off, lab B's admin neither finds nor lists lab
    A's alert nor its channels; the security officer lists both labs' alerts; the dispatcher
    escalates and delivers across labs."""
    gw = pg
    admin_a, admin_b = lab_user(gw, "lab-a", "lab_admin", name="Adm"), lab_user(gw, "lab-b", "lab_admin", name="Adm")
    officer = vendor_user(gw, "security_officer")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    with gw.unit(admin_a, Purpose.MONITORING) as u:
        u.add_channel(
            "lab-a",
            kind="syslog",
            target=f"udp://127.0.0.1:{sock.getsockname()[1]}",
            level=2,
            min_severity="low",
            at=T0,
        )
    ids = {}
    for lab in ("lab-a", "lab-b"):
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            ids[lab] = alerts.raise_alert(
                u, Finding("bulk-read", Severity.CRITICAL, lab, "bulk read", "acct-1"), now=T0
            )
    bare = Gateway(gw.engine, gw.keys, tenant_filter=False)
    with bare.unit(admin_b, Purpose.MONITORING) as u:
        assert [a.alert_id for a in alerts.list_alerts(u)] == [ids["lab-b"]]
    with bare.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(NotFound):
        u.alert("lab-b", ids["lab-a"])
    with bare.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        u.channels("lab-a")
    with bare.unit(admin_b, Purpose.MONITORING) as u:
        assert u.channels("lab-b") == []
    with bare.unit(officer, Purpose.MONITORING) as u:
        assert {a.alert_id for a in alerts.list_alerts(u)} == set(ids.values())
    counts = dispatch.run_once(bare, T0 + timedelta(minutes=16))
    assert counts["escalated"] == 2 and counts["sent"] == 1  # lab A's level-2 channel; lab B has none
    assert ids["lab-a"].encode() in sock.recv(4096)
    sock.close()
