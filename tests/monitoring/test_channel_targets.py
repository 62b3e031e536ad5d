"""Where a channel may send (H1, F1, G2): a lab's own ``lab_admin`` chooses its channels' targets,
and the dispatcher sends every lab's deliveries from the platform's network in one pass.

- one lab's bad target never stops the pass (any sender error is that delivery's failure);
- a webhook or syslog target inside the vendor's network (private, loopback, link-local,
  metadata, unique-local, IPv4-mapped...) is refused when the channel is added and again before
  each send, the sender connecting to the address it checked (no second lookup: DNS rebinding),
  following no redirect;
- the lab reads "failed at <time>" and the attempt count, never what its target answered (an
  HTTP status, a connection error): the operator's log keeps the detail, without the target.
"""

from __future__ import annotations

import ipaddress
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
from labvault.errors import ConfigError, InvalidInput
from labvault.monitoring import alerts, dispatch, notify, targets
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'labvault.db'}"


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
    ("kind", "target"),
    [
        ("email", "soc@lab-b.invalid\r\nBcc: someone@elsewhere.invalid"),  # ValueError from EmailMessage
        ("syslog", "tcp://" + "a" * 70 + ".invalid:514"),  # UnicodeError (idna) from create_connection
        ("syslog", "udp://a\x00b:514"),  # TypeError from sendto
    ],
)
def test_one_labs_channel_target_does_not_stop_every_labs_deliveries(gateway, smtp_server, kind, target):
    """H1, F1 (attack): lab-b's own lab_admin adds a channel whose target makes the sender raise something
    other than ``DeliveryFailed`` (a CR/LF in an e-mail address, an over-long host label, a NUL).
    Expected: that one delivery fails (recorded, retried or given up); lab-a's alert e-mail is sent
    once and recorded as delivered. Otherwise ``run_once`` would die in the network loop, recording
    nothing of the pass: lab-a's e-mail, already sent, sent again at every pass (a flood), and every
    delivery after the poisoned one (any lab's alerts and checkpoints) never sent."""
    gw = gateway
    port, mails = smtp_server
    make_lab(gw, "lab-a", "690000017")
    make_lab(gw, "lab-b", "440000018")
    admin_a = lab_user(gw, "lab-a", "lab_admin", name="Adm")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_a, Purpose.MONITORING) as u:
        u.add_channel("lab-a", kind="email", target="soc@lab-a.invalid", level=1, min_severity="low", at=T0)
    try:
        with gw.unit(admin_b, Purpose.MONITORING) as u:
            u.add_channel("lab-b", kind=kind, target=target, level=1, min_severity="low", at=T0)
    except InvalidInput:  # refused when added: a row stored before the checks still must not stop the pass
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
    alert_mails = [m for m in mails if b'"type": "digest"' not in m[1]]  # the lab's daily digest aside
    assert len(alert_mails) == 1, f"lab-a's alert e-mailed {len(alert_mails)} times; rounds crashed: {crashed}"
    with gw.engine.connect() as conn:
        d = t.alert_delivery
        rows = conn.execute(select(d).where(d.c.tenant_id == "lab-a", d.c.kind == "alert")).all()
    assert [r.delivered_at is not None for r in rows] == [True]


def test_a_channel_target_with_cr_or_lf_is_refused_when_added(gateway):
    """H1 (defence in depth): header injection (``To``/``Subject``) and the crash above start with a
    target holding control characters; the gateway should refuse them at ``add_channel``."""
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
        u.add_channel(
            "lab-b", kind="email", target="a@b.invalid\r\nBcc: c@d.invalid", level=1, min_severity="low", at=T0
        )


def _http_server(status: int, headers: dict[str, str] | None = None) -> tuple[ThreadingHTTPServer, list[str]]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def do_GET(self):
            self.do_POST()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hits


@pytest.fixture
def internal_service() -> Iterator[tuple[str, list[str]]]:
    """Something listening on the vendor's loopback (an admin port, a metadata service...)."""
    server, hits = _http_server(418)
    yield f"http://127.0.0.1:{server.server_address[1]}/internal/admin", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def opt_in(monkeypatch):
    """The operator's opt-in to private targets (tests' local receivers)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", raising=False)


PUBLIC = "93.184.216.34"  # a global unicast address (never connected to: see _pin_network)
HOOK_HOST = "hooks.lab-b.example"


class FakeResolver:
    """``socket.getaddrinfo`` answering ``answers`` in turn for HOOK_HOST (the last one repeated;
    an answer may list several addresses, comma-separated), the real resolver for anything else."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if host != HOOK_HOST:
            return self.real(host, port, *args, **kwargs)
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answer.split(",")
        ]


def _add(gw: Gateway, who, kind: str, target: str, tenant: str = "lab-b") -> None:
    with gw.unit(who, Purpose.MONITORING) as u:
        u.add_channel(tenant, kind=kind, target=target, level=1, min_severity="low", at=T0)


def _store(gw: Gateway, who, kind: str, target: str, tenant: str = "lab-b") -> None:
    """A channel row as stored before the check existed (or written around it)."""
    with gw.engine.begin() as conn:
        conn.execute(
            t.notify_channel.insert().values(
                tenant_id=tenant,
                channel_id=f"stored-{kind}",
                kind=kind,
                target=target,
                level=1,
                min_severity="low",
                active=1,
                created_by=who.account_id,
                created_at=T0,
            )
        )


def _alert(gw: Gateway, alert_id: str):
    with gw.unit(MONITOR, Purpose.MONITORING) as u:
        return u.alert_for_delivery("lab-b", alert_id)


def _seen_by_lab(gw: Gateway, who, alert_id: str) -> list[tuple[int, str | None]]:
    with gw.unit(who, Purpose.MONITORING) as u:
        h = alerts.history(u, alert_id)
    return [(d.attempts, d.last_error) for d in h.deliveries]


@pytest.mark.parametrize(
    "target",
    [
        "https://169.254.169.254/latest/meta-data/",  # the cloud metadata service (link-local)
        "https://127.0.0.1:5432/",  # the vendor's own database port
        "https://[::1]:8000/api/v1/",
        "https://10.0.0.5/",
        "https://192.168.1.10/",
        "https://172.16.0.1/",
        "https://[fd00:ec2::254]/",  # unique-local (fc00::/7): an IPv6 metadata service
        "https://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "https://[::ffff:169.254.169.254]/",
        "https://[2002:7f00:1::]/",  # 6to4 carrying 127.0.0.1
        "https://100.100.100.200/",  # shared address space (a cloud's metadata service)
        "https://0.0.0.0:8000/",
        "https://224.0.0.1/",
        "https://localhost:8000/",  # a name resolving to loopback
        "https://2130706433/",  # 127.0.0.1 written as one number
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:5432/",
        "http://[::1]:8000/api/v1/",
        "http://10.0.0.5/",
        "http://hooks.lab-b.example/",  # plain http: refused whatever the address
        "https://user:secret@hooks.lab-b.example/",  # user information
        "ftp://hooks.lab-b.example/",
        "https://hooks.lab-b.example/a b",
        "https://hooks.lab-b.example:0/",
        "https://hooks.lab-b.example:99999/",
    ],
)
def test_a_lab_admin_cannot_point_a_webhook_at_the_vendors_internal_network(gateway, monkeypatch, target):
    """H1, F1 (attack, SSRF): a lab's admin sets a webhook channel to an address inside the
    vendor's network; the dispatcher would POST there from the server and record the outcome
    (``HTTP 418``, ``ConnectionRefusedError``, ``TimeoutError``) where the lab reads it (the
    alert's deliveries): a port scanner with an oracle. Refused at ``add_channel``, with a one-line
    reason that does not repeat the target; nothing stored."""
    monkeypatch.setattr(socket, "getaddrinfo", FakeResolver(PUBLIC))
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with gw.unit(admin_b, Purpose.MONITORING) as u, pytest.raises(InvalidInput) as refused:
        u.add_channel("lab-b", kind="webhook", target=target, level=1, min_severity="low", at=T0)
    reason = str(refused.value)
    assert "\n" not in reason and target not in reason and "secret" not in reason
    assert reason.startswith("webhook channel refused: ")
    with gw.engine.connect() as conn:
        assert conn.execute(select(t.notify_channel)).all() == []


@pytest.mark.parametrize(
    "target",
    ["udp://127.0.0.1:514", "tcp://[::1]:6514", "10.1.2.3:514", "tcp://169.254.169.254:80", f"tcp://{HOOK_HOST}:6514"],
)
def test_a_syslog_target_inside_the_vendors_network_is_refused(gateway, monkeypatch, target):
    """H1, F1: the same rule for syslog hosts (UDP and TCP): a TCP syslog target is a port probe
    too. ``HOOK_HOST`` resolves to 10.0.0.7 here: a name is judged by what it resolves to."""
    monkeypatch.setattr(socket, "getaddrinfo", FakeResolver("10.0.0.7"))
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with pytest.raises(InvalidInput, match=r"^syslog channel refused: the host must resolve to public"):
        _add(gw, admin_b, "syslog", target)


def test_a_public_target_is_accepted_and_a_name_resolving_inside_is_not(gateway, monkeypatch):
    """H1: an https webhook and a syslog host whose name resolves to a global address are
    accepted, an e-mail address too (not one naming an address literal); the same name answering
    a private address among its addresses is refused."""
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    monkeypatch.setattr(socket, "getaddrinfo", FakeResolver(PUBLIC))
    _add(gw, admin_b, "webhook", f"https://{HOOK_HOST}/labvault?x=1")
    _add(gw, admin_b, "syslog", f"tcp://{HOOK_HOST}:6514")
    _add(gw, admin_b, "email", "soc@lab-b.invalid")  # handed to the operator's relay: no address rule
    with pytest.raises(InvalidInput, match="address literal"):
        _add(gw, admin_b, "email", "soc@[10.0.0.5]")
    resolver = FakeResolver(f"{PUBLIC},192.168.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with pytest.raises(InvalidInput):
        _add(gw, admin_b, "webhook", f"https://{HOOK_HOST}/other")
    assert resolver.asked == 1
    with gw.engine.connect() as conn:
        kinds = sorted(r.kind for r in conn.execute(select(t.notify_channel)).all())
    assert kinds == ["email", "syslog", "webhook"]


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        (PUBLIC, True),
        ("127.0.0.1", False),
        ("10.255.255.255", False),
        ("172.31.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.251", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:a00:1::", False),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
    ],
)
def test_which_addresses_are_public(address, public):
    """H1: the address rule, address by address (IPv4-mapped, 6to4, Teredo and NAT64 addresses
    judged on the IPv4 address they carry)."""
    assert targets.is_public(ipaddress.ip_address(address)) is public


def test_dns_rebinding_a_name_checked_public_then_answering_loopback_is_refused_at_send(
    gateway, monkeypatch, internal_service, caplog
):
    """H1, F1, G2 (attack, DNS rebinding): the lab's name resolves to a public address when the
    channel is added, then to 127.0.0.1 when the dispatcher sends. The send-time check refuses
    it: the internal service is never reached; the lab reads "failed at <time>" and the attempt
    count only; the operator's log says why, without the target."""
    url, hits = internal_service
    port = int(url.split(":")[2].split("/")[0])
    resolver = FakeResolver(PUBLIC, "127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    _add(gw, admin_b, "webhook", f"https://{HOOK_HOST}:{port}/internal/admin")
    alert_id = _raise(gw, "lab-b", T0)
    with caplog.at_level("WARNING", logger="labvault.monitoring.notify"):
        counts = dispatch.run_once(gw, T0, settings=Settings.from_env({}))
    assert (counts["sent"], counts["failed"], resolver.asked) == (0, 1, 2)
    assert hits == []
    assert _seen_by_lab(gw, admin_b, alert_id) == [(1, "failed at 2026-03-02T03:00:00+00:00")]
    assert "webhook: target refused (the host must resolve to public" in caplog.text
    assert HOOK_HOST not in caplog.text and f":{port}" not in caplog.text


def test_the_sender_connects_to_the_address_it_checked(gateway, monkeypatch, internal_service):
    """H1, F1: between the send-time check and the connection there is no second lookup (one
    that would answer 127.0.0.1 here): the connection goes to the checked public address, for a
    webhook and for a syslog line over TCP."""
    url, hits = internal_service
    port = int(url.split(":")[2].split("/")[0])
    resolver = FakeResolver(PUBLIC, PUBLIC, "127.0.0.1")  # add, send-time check, then loopback
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    tried: list[tuple[str, int]] = []
    real_connect = socket.create_connection

    def pinned_network(address, *args, **kwargs):
        tried.append(address)
        if address[0] != "127.0.0.1":
            raise ConnectionRefusedError  # the test never leaves the machine
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", pinned_network)
    gw = gateway
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    _add(gw, admin_b, "webhook", f"https://{HOOK_HOST}:{port}/internal/admin")
    alert_id = _raise(gw, "lab-b", T0)
    assert dispatch.run_once(gw, T0, settings=Settings.from_env({}))["failed"] == 1
    assert (tried, hits) == ([(PUBLIC, port)], [])
    assert _seen_by_lab(gw, admin_b, alert_id) == [(1, "failed at 2026-03-02T03:00:00+00:00")]
    monkeypatch.setattr(socket, "getaddrinfo", FakeResolver(PUBLIC, "127.0.0.1"))
    message = dispatch.alert_message(_alert(gw, alert_id), "d-1")
    with pytest.raises(notify.DeliveryFailed, match=r"^syslog: ConnectionRefusedError$"):
        notify.send_syslog(f"tcp://{HOOK_HOST}:{port}", message, now=T0)
    assert tried == [(PUBLIC, port), (PUBLIC, port)]


def test_ssrf_oracle_the_lab_reads_what_its_webhook_reached(gateway, internal_service, caplog):
    """H1, F1, G2: the oracle, end to end. A webhook row pointing at the loopback service, stored
    around the gateway's check (as before it existed): the dispatcher's own check refuses it, the
    service is not hit, and lab-b's admin reads neither a status nor an exception's kind in the
    alert's delivery history."""
    gw = gateway
    url, hits = internal_service
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    with pytest.raises(InvalidInput):
        _add(gw, admin_b, "webhook", url)
    _store(gw, admin_b, "webhook", url)
    alert_id = _raise(gw, "lab-b", T0)
    with caplog.at_level("WARNING", logger="labvault.monitoring.notify"):
        dispatch.run_once(gw, T0, settings=Settings.from_env({}))
    seen = _seen_by_lab(gw, admin_b, alert_id)
    assert hits == [] and seen == [(1, "failed at 2026-03-02T03:00:00+00:00")], (hits, seen)
    assert "webhook: target refused (a webhook's URL starts with https://)" in caplog.text


def test_with_the_operators_opt_in_the_lab_still_reads_failed_only(gateway, internal_service, opt_in, caplog):
    """H1, G2: with LABVAULT_CHANNELS_ALLOW_PRIVATE on (tests, a trusted deployment), a plain
    http loopback webhook is accepted and reached; its answer (418) is in the operator's log, and
    the lab's history shows "failed at <time>" and the attempt count, the same for every failure."""
    gw = gateway
    url, hits = internal_service
    make_lab(gw, "lab-b", "440000018")
    admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
    _add(gw, admin_b, "webhook", url)
    alert_id = _raise(gw, "lab-b", T0)
    with caplog.at_level("WARNING", logger="labvault.monitoring.notify"):
        dispatch.run_once(gw, T0)
        dispatch.run_once(gw, T0 + timedelta(seconds=30))
    assert hits == ["/internal/admin", "/internal/admin"]
    assert _seen_by_lab(gw, admin_b, alert_id) == [(2, "failed at 2026-03-02T03:00:30+00:00")]
    assert caplog.text.count("webhook: HTTP 418") == 2 and "127.0.0.1" not in caplog.text


def test_a_redirect_is_not_followed(gateway, internal_service, opt_in):
    """H1, F1: a webhook answering 302 towards another address is a failed delivery; the
    redirect's target is never requested (a public receiver could otherwise bounce the request
    inside)."""
    gw = gateway
    inside, hits = internal_service
    bouncer, bounced = _http_server(302, {"Location": inside})
    try:
        make_lab(gw, "lab-b", "440000018")
        admin_b = lab_user(gw, "lab-b", "lab_admin", name="Adm")
        _add(gw, admin_b, "webhook", f"http://127.0.0.1:{bouncer.server_address[1]}/hook")
        alert_id = _raise(gw, "lab-b", T0)
        assert dispatch.run_once(gw, T0)["failed"] == 1
        assert (bounced, hits) == (["/hook"], [])
        assert _seen_by_lab(gw, admin_b, alert_id) == [(1, "failed at 2026-03-02T03:00:00+00:00")]
    finally:
        bouncer.shutdown()
        bouncer.server_close()


def test_the_operators_setting_is_off_by_default(tmp_path):
    """H1: LABVAULT_CHANNELS_ALLOW_PRIVATE is off unless set (environment or TOML file); a value
    other than yes/no is a configuration error."""
    assert Settings.from_env({}).channels_allow_private is False
    assert Settings.from_env({"LABVAULT_CHANNELS_ALLOW_PRIVATE": "1"}).channels_allow_private is True
    assert Settings.from_env({"LABVAULT_CHANNELS_ALLOW_PRIVATE": "no"}).channels_allow_private is False
    (tmp_path / "labvault.toml").write_text("[labvault]\nchannels_allow_private = true\n")
    assert Settings.from_env({"LABVAULT_HOME": str(tmp_path)}).channels_allow_private is True
    with pytest.raises(ConfigError):
        Settings.from_env({"LABVAULT_CHANNELS_ALLOW_PRIVATE": "maybe"})
