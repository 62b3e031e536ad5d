"""Delivering alerts and a lab's signed checkpoints (H1, G4): e-mail to a real local SMTP server,
signed webhooks to a real local HTTP server that checks the signature (retried with backoff),
RFC 5424 syslog over UDP and TCP; and no personal value in any of them (the generated patient's
name and NIR are looked for in every message)."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message as Mail
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from labvault.access import Gateway, Purpose
from labvault.access.principal import MONITOR
from labvault.audit import service as audit
from labvault.config import Settings
from labvault.domain.identifiers import normalise_nir
from labvault.monitoring import alerts, dispatch, notify
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The channels here point at receivers on 127.0.0.1 (webhooks over plain http) or at names
    that do not resolve: the operator's opt-in LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default,
    tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
SEED = 11


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'labvault.db'}"


# -- real local servers --------------------------------------------------------------------------


class Hook:
    """A webhook receiver: answers 503 ``fail`` times, then checks each request's signature with
    the channel's key and keeps the verified bodies."""

    def __init__(self) -> None:
        self.key = b""
        self.fail = 0
        self.calls = 0
        self.bodies: list[bytes] = []
        self.bad: list[bytes] = []


@pytest.fixture
def hook() -> Iterator[tuple[str, Hook]]:
    state = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            state.calls += 1
            if state.calls <= state.fail:
                self.send_response(503)
                self.end_headers()
                return
            stamp, signature = self.headers[notify.TIMESTAMP_HEADER], self.headers[notify.SIGNATURE_HEADER]
            ok = notify.verify(state.key, stamp, body, signature)
            (state.bodies if ok else state.bad).append(body)
            self.send_response(204 if ok else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/labvault", state
    server.shutdown()
    server.server_close()


# -- the world: a lab with a generated patient whose reads are on the trail -----------------------


class World:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        make_lab(gw, "lab-a", "690000017")
        load_lab(gw, ADMIN, "lab-a", patients=2, seed=SEED)
        self.patient = LabGenerator("lab-a", SEED).patient(0).identity
        self.admin = lab_user(gw, "lab-a", "lab_admin", name="Adm")
        bio = lab_user(gw, "lab-a", "biologist", name="Bio")
        with gw.unit(bio, Purpose.CARE) as u:
            u.get_patient("lab-a", self.patient.patient_id)
        with gw.engine.connect() as conn:
            ev = conn.execute(
                select(t.audit_event)
                .where(t.audit_event.c.tenant_id == "lab-a", t.audit_event.c.actor == bio.account_id)
                .order_by(t.audit_event.c.seq.desc())
            ).first()
        assert ev is not None and ev.object_refs
        self.finding = Finding(
            rule_id="bulk-read",
            severity=Severity.CRITICAL,
            tenant_id="lab-a",
            title="bulk read of patients by one account",
            group=bio.account_id,
            refs=(bio.account_id, f"seq:{ev.seq}", *json.loads(ev.object_refs)),
            event_count=1,
            first_seq=ev.seq,
            last_seq=ev.seq,
            first_at=T0,
            last_at=T0,
        )

    @property
    def personal(self) -> list[bytes]:
        """What must never be in a message: the patient's names, NIR, birth date."""
        p = self.patient
        nir = normalise_nir(p.nir)
        return [
            p.family_name.encode(),
            p.given_names.split()[0].encode(),
            nir.encode(),
            nir[:13].encode(),
            p.birth_date.isoformat().encode(),
        ]

    def assert_no_personal(self, payload: bytes) -> None:
        for value in self.personal:
            assert value not in payload, "a personal value is in a message"

    def channel(self, kind: str, target: str, level: int = 1) -> str | None:
        with self.gw.unit(self.admin, Purpose.MONITORING) as u:
            _, secret = u.add_channel("lab-a", kind=kind, target=target, level=level, min_severity="low", at=T0)
        return secret

    def raise_and_ack(self) -> str:
        """Raise the alert, then acknowledge it with a reason someone typed that names the patient:
        a reason never travels (the delivery queued at raising is still sent)."""
        with self.gw.unit(MONITOR, Purpose.MONITORING) as u:
            alert_id = alerts.raise_alert(u, self.finding, now=T0)
        assert alert_id
        with self.gw.unit(self.admin, Purpose.MONITORING) as u:
            alerts.acknowledge(u, alert_id, reason=f"called the ward about {self.patient.family_name}", now=T0)
        return alert_id


@pytest.fixture
def world(gateway):
    return World(gateway)


def test_email_to_a_real_smtp_server_holds_references_only(world, smtp_server):
    """H1: a lab's alert e-mailed through a real local SMTP server: subject with the severity and
    rule, body with the alert's id and references; no name, NIR or birth date of the patient whose
    reads raised it."""
    port, mails = smtp_server
    world.channel("email", "security@lab-a.invalid")
    alert_id = world.raise_and_ack()
    settings = Settings.from_env({}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="alerts@labvault.invalid")
    counts = dispatch.run_once(world.gw, T0, settings=settings)
    assert (counts["sent"], counts["digests"]) == (2, 1)  # the alert, and the lab's digest of yesterday
    alert_mails = [m for m in mails if b"bulk-read" in m[1]]
    assert len(alert_mails) == 1
    rcpt, raw = alert_mails[0]
    assert rcpt == ["security@lab-a.invalid"]
    mail: Mail = message_from_bytes(raw)
    assert mail["From"] == "alerts@labvault.invalid" and mail["To"] == "security@lab-a.invalid"
    assert "CRITICAL bulk-read (lab-a, level 1)" in mail["Subject"]
    text = mail.get_payload(decode=True)
    payload = json.loads(text[text.index(b"{") :])
    assert payload["alert_id"] == alert_id and payload["rule"] == "bulk-read" and payload["tenant"] == "lab-a"
    assert payload["refs"] == list(world.finding.refs)
    world.assert_no_personal(raw)


def test_without_a_relay_an_email_fails_and_is_retried(world, caplog):
    """H1, G2: with no SMTP relay set, the e-mail is not lost: the failure is recorded (the lab
    reads "failed at <time>", the operator's log says why) and retried."""
    world.channel("email", "security@lab-a.invalid")
    world.raise_and_ack()
    with caplog.at_level("WARNING", logger="labvault.monitoring.notify"):
        counts = dispatch.run_once(world.gw, T0, settings=Settings.from_env({}))
    assert (counts["sent"], counts["failed"]) == (0, 2)  # the alert and the lab's digest
    with world.gw.engine.connect() as conn:
        d = conn.execute(select(t.alert_delivery).where(t.alert_delivery.c.kind == "alert")).one()
    assert (d.attempts, d.delivered_at, d.last_error) == (1, None, "failed at 2026-03-02T03:00:00+00:00")
    assert "email: no SMTP relay configured (LABVAULT_SMTP_HOST)" in caplog.text
    assert "security@lab-a.invalid" not in caplog.text


def test_signed_webhook_retried_with_backoff_until_the_server_takes_it(world, hook, caplog):
    """H1: the webhook carries an HMAC-SHA256 over "timestamp.body" with the key shown once at
    channel creation (the receiver verifies it); the server fails twice (503): the delivery is
    retried after 30 s then 60 s (not before), then delivered; attempts and times recorded."""
    url, state = hook
    secret = world.channel("webhook", url)
    assert secret
    state.key, state.fail = secret.encode(), 2
    alert_id = world.raise_and_ack()
    run = lambda at: dispatch.run_once(world.gw, at)  # noqa: E731

    def delivery():
        with world.gw.engine.connect() as conn:
            return conn.execute(select(t.alert_delivery)).one()

    with caplog.at_level("WARNING", logger="labvault.monitoring.notify"):
        assert run(T0)["failed"] == 1
    d = delivery()
    assert (d.attempts, d.last_error) == (1, "failed at 2026-03-02T03:00:00+00:00")
    assert "webhook: HTTP 503" in caplog.text  # the operator's log, not the lab's history
    assert d.next_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=30)
    assert run(T0 + timedelta(seconds=29))["failed"] == 0 and state.calls == 1  # not yet due
    assert run(T0 + timedelta(seconds=30))["failed"] == 1
    assert delivery().next_at.replace(tzinfo=UTC) == T0 + timedelta(seconds=90)
    assert run(T0 + timedelta(seconds=89))["sent"] == 0
    assert run(T0 + timedelta(seconds=90))["sent"] == 1
    d = delivery()
    assert (d.attempts, d.delivered_at.replace(tzinfo=UTC), d.next_at) == (3, T0 + timedelta(seconds=90), None)
    assert state.bad == [] and len(state.bodies) == 1
    body = json.loads(state.bodies[0])
    assert body["alert_id"] == alert_id and body["type"] == "alert" and body["severity"] == "critical"
    world.assert_no_personal(state.bodies[0])
    assert run(T0 + timedelta(hours=1))["sent"] == 0  # delivered once only
    # a forged body does not verify with the same signature
    stamp = str(int(T0.timestamp()))
    good = notify.sign(state.key, stamp, state.bodies[0])
    assert not notify.verify(state.key, stamp, state.bodies[0].replace(b"critical", b"low"), good)
    assert dispatch.backoff(1) == timedelta(seconds=30) and dispatch.backoff(20) == dispatch.BACKOFF_MAX


RFC5424 = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>[!-~]{1,255}) labvault - "
    rb"(?P<msgid>[!-~]{1,32}) \[labvault@32473(?P<params>( [a-z_]{1,32}=\"(?:[^\"\\\]]|\\.)*\")+)\] "
    rb"\xef\xbb\xbf(?P<msg>.*)$",
    re.S,
)


def _params(raw: bytes) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in re.findall(rb'([a-z_]+)="((?:[^"\\\]]|\\.)*)"', raw)}


def test_syslog_rfc5424_over_udp_and_tcp_with_octet_counting(world):
    """H1: one RFC 5424 line per alert (PRI = facility 13 * 8 + severity 2 for critical, version 1,
    UTC time, structured data labvault@32473 with the alert's id, rule, severity, lab and level),
    over UDP and over TCP framed by octet counting (RFC 6587); no personal value."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(5)
    world.channel("syslog", f"udp://127.0.0.1:{udp.getsockname()[1]}")
    world.channel("syslog", f"tcp://127.0.0.1:{tcp.getsockname()[1]}")
    alert_id = world.raise_and_ack()
    got: list[bytes] = []

    def accept():
        conn, _ = tcp.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            got.append(data)

    th = threading.Thread(target=accept)
    th.start()
    assert dispatch.run_once(world.gw, T0)["sent"] == 2
    th.join(5)
    line = udp.recv(65536)
    framed = got[0]
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(line) and rest == line
    m = RFC5424.match(line)
    assert m is not None, line
    assert int(m["pri"]) == 13 * 8 + 2 and m["ts"] == b"2026-03-02T03:00:00.000Z" and m["msgid"] == b"alert"
    assert _params(m["params"]) == {
        "alert_id": alert_id,
        "rule": "bulk-read",
        "severity": "critical",
        "tenant": "lab-a",
        "level": "1",
    }
    assert m["msg"].decode().startswith("[Labvault] CRITICAL bulk-read")
    world.assert_no_personal(line)
    udp.close()
    tcp.close()
    sd = notify.Message("alert", "d", "s", "low", {}, {"rule": 'a"b]c\\'})
    assert b'rule="a\\"b\\]c\\\\"' in notify.syslog_line(sd, now=T0, hostname="h")


def test_a_labs_signed_checkpoints_go_to_its_own_channel_once(world, hook):
    """G4, H1: each new signed checkpoint of the lab is pushed to the lab's channel (the lab keeps
    it outside the vendor's reach) and verifies with the platform key; the cursor
    (monitor_cursor 'checkpoints') makes each go once; a checkpoint names no personal value."""
    url, state = hook
    secret = world.channel("webhook", url)
    assert secret
    state.key = secret.encode()
    with world.gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        first = audit.checkpoint(u, "lab-a")
    counts = dispatch.run_once(world.gw, T0)
    assert (counts["checkpoints"], counts["sent"]) == (1, 1)
    assert dispatch.run_once(world.gw, T0 + timedelta(minutes=1))["checkpoints"] == 0
    with world.gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        second = audit.checkpoint(u, "lab-a")
    assert dispatch.run_once(world.gw, T0 + timedelta(minutes=2))["checkpoints"] == 1
    bodies = [json.loads(b) for b in state.bodies]
    assert [b["type"] for b in bodies] == ["checkpoint", "checkpoint"]
    assert [b["checkpoint"]["body"] for b in bodies] == [first["body"], second["body"]]
    for b in bodies:
        cp = b["checkpoint"]
        assert audit.signed_by(cp["body"], cp["signature"], [bytes.fromhex(cp["public_key"])])
    with world.gw.engine.connect() as conn:
        cursor = conn.execute(select(t.monitor_cursor).where(t.monitor_cursor.c.consumer == "checkpoints")).one()
    assert (cursor.tenant_id, cursor.seq) == ("lab-a", second["body"]["size"])
    for raw in state.bodies:
        world.assert_no_personal(raw)


def test_the_labs_daily_access_digest_is_e_mailed_once(world, smtp_server):
    """H1, G5: each lab's review of the day's accesses goes to its own e-mail channels once a day
    (counts per account, the unexplained reads by sequence number), references only; the next
    round the same day sends nothing more; a lab without an e-mail channel gets none."""
    port, mails = smtp_server
    world.channel("email", "dpo@lab-a.invalid")
    settings = Settings.from_env({}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="alerts@labvault.invalid")
    # The day the world's reads happened is over: a round the day after sends its digest.
    with world.gw.engine.connect() as conn:
        ev = conn.execute(select(t.audit_event).where(t.audit_event.c.tenant_id == "lab-a")).all()
    happened = max(e.at for e in ev)
    happened = happened if happened.tzinfo else happened.replace(tzinfo=UTC)
    after = happened + timedelta(days=1)
    counts = dispatch.run_once(world.gw, after, settings=settings)
    assert (counts["digests"], counts["sent"]) == (1, 1)
    ((rcpt, raw),) = mails
    assert rcpt == ["dpo@lab-a.invalid"]
    mail: Mail = message_from_bytes(raw)
    assert "lab-a" in mail["Subject"] and "unexplained accesses of" in mail["Subject"]
    text = mail.get_payload(decode=True)
    payload = json.loads(text[text.index(b"{") :])
    assert payload["type"] == "digest" and payload["accesses"] >= 1
    assert payload["accesses"] == payload["explained"] + payload["to_review"]
    world.assert_no_personal(raw)
    again = dispatch.run_once(world.gw, after + timedelta(hours=1), settings=settings)
    assert (again["digests"], again["sent"]) == (0, 0) and len(mails) == 1
