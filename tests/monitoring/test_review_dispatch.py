"""Security review: the dispatcher and the channels a lab's admin sets.

A lab's own ``lab_admin`` chooses its channels' targets (any text up to 500 characters). The
dispatcher sends every lab's deliveries in one pass and records them once the network is done.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from labvault.access import Gateway, Purpose
from labvault.access.principal import MONITOR
from labvault.config import Settings
from labvault.errors import InvalidInput
from labvault.monitoring import alerts, dispatch
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'labvault.db'}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, list[tuple[list[str], bytes]]]]:
    from aiosmtpd.controller import Controller

    mails: list[tuple[list[str], bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mails.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mails
    controller.stop()


def _finding(tenant: str, group: str = "acct-1") -> Finding:
    return Finding(
        rule_id="bulk-read",
        severity=Severity.HIGH,
        tenant_id=tenant,
        title="bulk read",
        group=group,
        refs=(group,),
        event_count=1,
        first_seq=1,
        last_seq=1,
        first_at=T0,
        last_at=T0,
    )


def _raise(gw: Gateway, tenant: str, at: datetime) -> str:
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        alert_id = alerts.raise_alert(u, _finding(tenant), now=at)
    assert alert_id
    return alert_id


@pytest.mark.parametrize(
    "kind,target",
    [
        ("email", "soc@lab-b.invalid\r\nBcc: someone@elsewhere.invalid"),  # ValueError from EmailMessage
        ("syslog", "tcp://" + "a" * 70 + ".invalid:514"),  # UnicodeError (idna) from create_connection
        ("syslog", "udp://a\x00b:514"),  # TypeError from sendto
    ],
)
def test_one_labs_channel_target_does_not_stop_every_labs_deliveries(gateway, smtp_server, kind, target):
    """Attack: lab-b's own lab_admin adds a channel whose target makes the sender raise something
    other than ``DeliveryFailed`` (a CR/LF in an e-mail address, an over-long host label, a NUL).
    Expected: that one delivery fails (recorded, retried or given up); lab-a's alert e-mail is sent
    once and recorded as delivered. Found: ``run_once`` dies in the network loop, so nothing of the
    pass is recorded; lab-a's e-mail, already sent, is sent again at every pass (a flood), and every
    delivery after the poisoned one (any lab's alerts and checkpoints) is never sent."""
    gw = gateway
    port, mails = smtp_server
    make_lab(gw, "lab-a", "690000017")
    make_lab(gw, "lab-b", "440000018")
    admin_a = lab_user(gw, "lab-a", "lab_admin", name="Adm")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_a, Purpose.MONITORING) as u:
        u.add_channel("lab-a", kind="email", target="soc@lab-a.invalid", level=1, min_severity="low", at=T0)
    try:
        with gw.unit(admin_b, Purpose.MONITORING) as u:  # before the fix: accepted (only the length was checked)
            u.add_channel("lab-b", kind=kind, target=target, level=1, min_severity="low", at=T0)
    except (
        InvalidInput
    ):  # refused now: a row stored before the fix (or any other bad target) still must not stop the pass
        with gw.engine.begin() as conn:
            conn.execute(
                t.notify_channel.insert().values(
                    tenant_id="lab-b",
                    channel_id="poisoned",
                    kind=kind,
                    target=target,
                    level=1,
                    min_severity="low",
                    active=1,
                    created_by=admin_b.account_id,
                    created_at=T0,
                )
            )
    _raise(gw, "lab-a", T0)  # due first
    _raise(gw, "lab-b", T0 + timedelta(seconds=1))  # lab-b raises an alert of its own (5 bad logins will do)
    settings = Settings.from_env({}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="alerts@labvault.invalid")
    crashed = []
    for n in range(3):  # as serve's dispatch thread does: a failed round is logged, the next one runs
        try:
            dispatch.run_once(gw, T0 + timedelta(seconds=2 + n), settings=settings)
        except Exception as exc:
            crashed.append(type(exc).__name__)
    assert len(mails) == 1, f"lab-a's alert e-mailed {len(mails)} times; rounds crashed: {crashed}"
    with gw.engine.connect() as conn:
        rows = conn.execute(select(t.alert_delivery).where(t.alert_delivery.c.tenant_id == "lab-a")).all()
    assert [r.delivered_at is not None for r in rows] == [True]


def test_a_channel_target_with_cr_or_lf_is_refused_when_added(gateway):
    """Defence in depth: header injection (``To``/``Subject``) and the crash above start with a
    target holding control characters; the gateway should refuse them at ``add_channel``."""
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
        u.add_channel(
            "lab-b", kind="email", target="a@b.invalid\r\nBcc: c@d.invalid", level=1, min_severity="low", at=T0
        )


@pytest.fixture
def internal_service() -> Iterator[tuple[str, list[str]]]:
    """Something listening on the vendor's loopback (an admin port, a metadata service...)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(418)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/internal/admin", hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://127.0.0.1:5432/",  # the vendor's own database port
        "http://[::1]:8000/api/v1/",
        "http://10.0.0.5/",
    ],
)
def test_a_lab_admin_cannot_point_a_webhook_at_the_vendors_internal_network(gateway, target):
    """Attack (SSRF): a lab's admin sets a webhook channel to an address inside the vendor's
    network; the dispatcher POSTs there from the server and records the outcome (``HTTP 418``,
    ``ConnectionRefusedError``, ``TimeoutError``) where the lab reads it (the alert's deliveries):
    a port scanner with an oracle. Expected: refused at ``add_channel``."""
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
        u.add_channel("lab-b", kind="webhook", target=target, level=1, min_severity="low", at=T0)


def test_ssrf_oracle_the_lab_reads_what_its_webhook_reached(gateway, internal_service):
    """The oracle, end to end: the loopback service is hit by the dispatcher, and lab-b's admin
    reads its answer's status in the alert's delivery history."""
    gw = gateway
    url, hits = internal_service
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_b, Purpose.MONITORING) as u:
        try:
            u.add_channel("lab-b", kind="webhook", target=url, level=1, min_severity="low", at=T0)
        except InvalidInput:
            return  # refused: the fix
    alert_id = _raise(gw, "lab-b", T0)
    dispatch.run_once(gw, T0)
    with gw.unit(admin_b, Purpose.MONITORING) as u:
        h = alerts.history(u, alert_id)
    seen = [d.last_error for d in h.deliveries]
    assert hits == [] and "webhook: HTTP 418" not in seen, (hits, seen)
