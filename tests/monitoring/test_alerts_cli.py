"""``labvault alerts`` and ``labvault channel`` as a lab's admin and the platform's operator run
them (H1): the lab's own channel added with ``--as``, its alert listed, acknowledged and resolved
(a reason required), ``alerts dispatch --once`` sending it as the monitoring process; no account
is given the role ``monitor``."""

from __future__ import annotations

import json
import socket

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.config import Settings
from labvault.monitoring import alerts
from labvault.monitoring.findings import Finding, Severity
from labvault.runtime import open_runtime
from labvault.store import schema as t
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_grant_cli import account, as_


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The channels here point at receivers on 127.0.0.1 (webhooks over plain http) or at names
    that do not resolve: the operator's opt-in LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default,
    tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


LAB = "bio-lyon"


def test_alerts_and_channels_from_the_cli(home, capsys, monkeypatch):
    """H1, G1: a lab's admin adds its channel (a vendor operator cannot), sees its lab's alert,
    acknowledges it, cannot resolve it without a reason, resolves it; dispatch sends it."""
    assert run(capsys, "init")[0] == 0
    args = ["--name", "Bio Lyon", "--finess", "690000123", "--retention", "results=10y"]
    assert run(capsys, "tenant", "add", LAB, *args, "--retention-ref", "CSP art. R.1112-7")[0] == 0
    secret = account(LAB, "Paul Lefebvre", "admin@bio-lyon.invalid", "lab_admin")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    target = f"udp://127.0.0.1:{sock.getsockname()[1]}"
    code, _, err = run(capsys, "channel", "add", "--tenant", LAB, "--kind", "syslog", "--target", target)
    assert code != 0 and "lab's own lab_admin" in one_line_error(err)
    as_(monkeypatch, secret)
    code, out, err = run(
        capsys,
        "channel",
        "add",
        "--tenant",
        LAB,
        "--kind",
        "syslog",
        "--target",
        target,
        "--as",
        "admin@bio-lyon.invalid",
    )
    assert code == 0, err
    assert json.loads(out)["target"] == target
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.monitor, Purpose.MONITORING) as u:  # as the consumer raises it
            f = Finding("off-hours-read", Severity.MEDIUM, LAB, "reads outside opening hours", "acct-9", ("acct-9",))
            alert_id = alerts.raise_alert(u, f)
    finally:
        rt.close()
    as_(monkeypatch, secret)
    code, out, err = run(capsys, "alerts", "list", "--tenant", LAB, "--json", "--as", "admin@bio-lyon.invalid")
    assert code == 0, err
    listed = [json.loads(x) for x in out.splitlines()]
    assert [(a["alert_id"], a["state"], a["rule"]) for a in listed] == [(alert_id, "open", "off-hours-read")]
    as_(monkeypatch, secret)
    code, out, err = run(capsys, "alerts", "ack", alert_id, "--as", "admin@bio-lyon.invalid")
    assert code == 0 and "acknowledged" in out, err
    as_(monkeypatch, secret)
    code, _, err = run(capsys, "alerts", "resolve", alert_id, "--reason", " ", "--as", "admin@bio-lyon.invalid")
    assert code != 0 and "needs a reason" in one_line_error(err)
    as_(monkeypatch, secret)
    code, out, err = run(
        capsys, "alerts", "resolve", alert_id, "--reason", "planned inventory", "--as", "admin@bio-lyon.invalid"
    )
    assert code == 0 and "resolved" in out, err
    code, out, err = run(capsys, "alerts", "dispatch", "--once")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["sent"] == 1
    assert alert_id.encode() in sock.recv(4096)
    sock.close()
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as c:
            actors = {
                r.actor for r in c.execute(select(t.audit_event).where(t.audit_event.c.action == "alert:deliver"))
            }
    finally:
        rt.close()
    assert actors == {"system:monitor"}  # the dispatcher runs as the monitoring process, not the operator
    code, _, err = run(capsys, "user", "add", "--name", "Mon Itor", "--email", "m@vendor.invalid", "--role", "monitor")
    assert code != 0 and "never to an account" in one_line_error(err)
