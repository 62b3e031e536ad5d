"""The issue's recorded attack replayed against a running ``labvault serve`` (H1, H2, H3): a vendor
support account, under a grant its lab approved, reads many patients at night for the lab, then
asks for what its instruction does not cover; a lab biologist reads a canary.

Everything is real: a ``labvault serve`` process (its consumer polling the audit stream every
second, its dispatcher every second), an aiosmtpd SMTP server on a free port, the platform's
e-mail channels at on-call levels 1 and 2 (``labvault channel add``), the lab's opening hours set
by its lab_admin (``labvault tenant details --hours``) so that the current time is outside them (no
clock is faked: the hours are chosen 12 hours away from now in the lab's time zone), the grant
requested by the support account and approved by the lab's admin (``labvault grant``), and the
reads over HTTP with the support account's own bearer token.

Scaled down, and why: the recorded attack reads 5,000 patients; 5,000 HTTP reads would take minutes.
The lab's bulk-read threshold is lowered for this lab only through the platform's rules file
(``--monitor-rules``, ``[lab.<lab>.bulk-read] gte = 40``, where the shipped rule says 300) and the
support account reads 45 patients; the shipped rules and thresholds themselves are untouched (the
vendor (20) and off-hours (10) thresholds are the shipped ones). Acknowledgement deadlines are
shortened to seconds (``LABVAULT_ALERT_ACK_MINUTES=high=12s,critical=12s``) so that escalation
shows within the test instead of after an hour.

The detection latency (the audit event's time, as committed in the trail, to the alert's
``opened_at``) is measured for each alert and printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import contextlib
import email
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from labvault.access import Principal, Purpose
from labvault.accounts import service, totp
from labvault.config import Settings
from labvault.crypto.keys import PLATFORM
from labvault.runtime import init_home, open_runtime
from labvault.synth import LabGenerator
from labvault.synth.load import SYNTHETIC_RETENTION, load_lab
from tests.conftest import TotpClock

LAB = "bio-garde"
PATIENTS, SEED = 60, 16
READS = 45  # distinct patients the support account reads (the attack's 5,000, scaled down)
BULK_GTE = 40  # this lab's bulk-read threshold in the rules file (shipped: 300)
ACK_SECONDS = 12
PASSWORD = "a Long enough test passw0rd"
BOUND_S = 60.0  # the bound: alerts within 60 seconds of the events
READ_ACTIONS = ("patient:identity:read", "patient:identity:search", "patient:request:read", "patient:result:read")
EXPECTED = ("bulk-read", "bulk-read-vendor", "off-hours-read", "export-refused")  # rules_default.toml ids
LEVEL1, LEVEL2 = "oncall-1@vendor.invalid", "oncall-2@vendor.invalid"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def night_hours(tz: str, now: datetime | None = None) -> str:
    """Opening hours for every day that exclude the current time in ``tz``: one hour, 12 hours away."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(tz))
    start = (local.hour + 12) % 24
    start = min(start, 22)  # an interval never crosses midnight; 22:00-23:00 is still 11+ hours away
    return f"mon-sun {start:02d}:00-{start + 1:02d}:00"


@dataclass
class Person:
    email: str
    secret: str | None  # TOTP secret


@dataclass
class Replay:
    home: Path
    base: str
    people: dict[str, Person]
    patients: list[str]
    personal: list[str]  # the generated patients' NIRs and names, to look for in e-mails
    mails: list[tuple[list[str], bytes]]
    clock: TotpClock
    log: Path
    events_done: dict[str, float] = field(default_factory=dict)

    def cli(self, *args: str, who: str | None = None) -> tuple[int, str, str]:
        """``labvault ARGS`` in this process (``--as`` the named person, with a fresh TOTP code)."""
        from labvault.cli import main

        totp.clock = self.clock.now  # codes of steps not used yet (see tests.conftest.TotpClock)
        env = {}
        if who is not None:
            p = self.people[who]
            env = {"LABVAULT_AS_PASSWORD": PASSWORD, "LABVAULT_AS_TOTP": self.clock.code(p.secret) if p.secret else ""}
            args = (*args, "--as", p.email)
        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        return code, out.getvalue(), err.getvalue()

    def get(self, path: str, token: str) -> int:
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=20) as r:  # loopback, plain http
                r.read()
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def alerts(self) -> list[dict]:
        """The lab's alerts as the vendor's security officer lists them (``labvault alerts list --json``)."""
        code, out, err = self.cli("alerts", "list", "--tenant", LAB, "--json", who="security")
        assert code == 0, err
        return [json.loads(x) for x in out.splitlines() if x.strip()]

    def emails(self) -> list[tuple[list[str], dict]]:
        """(recipients, the JSON payload) of every e-mail the SMTP server received."""
        out = []
        for rcpt, raw in list(self.mails):
            msg = email.message_from_bytes(raw)
            body = msg.get_payload(decode=True)
            assert isinstance(body, bytes)
            text = body.decode()
            out.append((rcpt, json.loads(text[text.index("{") :])))
        return out

    def events(self, actor: str) -> list[tuple[int, str, str, str, str | None]]:
        """(seq, at, action, outcome, object_refs) of the lab's audit events by ``actor``, in order."""
        with contextlib.closing(sqlite3.connect(self.home / "labvault.db", timeout=30)) as c:
            return c.execute(
                "SELECT seq, at, action, outcome, object_refs FROM audit_event "
                "WHERE tenant_id = ? AND actor = ? ORDER BY seq",
                (LAB, actor),
            ).fetchall()

    def account_id(self, who: str) -> str:
        with contextlib.closing(sqlite3.connect(self.home / "labvault.db", timeout=30)) as c:
            return c.execute("SELECT account_id FROM account WHERE email = ?", (self.people[who].email,)).fetchone()[0]


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.5)


def _at(text: str) -> datetime:
    d = datetime.fromisoformat(text)
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _enrol(rt, by: Principal, tenant: str, name: str, email_: str, role: str) -> tuple[Principal, str | None]:
    with rt.gateway.unit(by, Purpose.ADMINISTRATION) as u:
        acct = service.create_account(u, tenant_id=tenant, name=name, email=email_, roles=[role])
    with rt.gateway.auth_unit(source_addr="127.0.0.1", user_agent="setup") as u:
        secret = service.enrol_directly(u, email_, PASSWORD)
    return Principal(acct.account_id, name, tenant, frozenset({role})), secret


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Iterator[Replay]:
    """A home with a generated lab and its people, the platform's e-mail channels at levels 1 and 2,
    the lab's hours making now off-hours, then ``labvault serve`` with the rules file and a real
    SMTP server."""
    from aiosmtpd.controller import Controller

    root = tmp_path_factory.mktemp("replay")
    home = root / "home"
    mails: list[tuple[list[str], bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mails.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
            return "250 OK"

    smtp = Controller(Handler(), hostname="127.0.0.1", port=_free_port())
    smtp.start()
    clock = TotpClock()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(totp, "clock", clock.now, raising=False)
        mp.setenv("LABVAULT_HOME", str(home))
        mp.setenv("LABVAULT_PASSPHRASE", "replay test passphrase")
        for k in ("LABVAULT_DATABASE_URL", "LABVAULT_KEY_PROVIDER", "LABVAULT_AS", "LABVAULT_ALERT_ACK_MINUTES"):
            mp.delenv(k, raising=False)
        init_home(Settings.from_env(), "Test Operator", "operator@vendor.invalid")
        rt = open_runtime(Settings.from_env())
        try:
            with rt.unit(Purpose.ADMINISTRATION) as u:
                u.create_tenant(LAB, "Bio Garde", "690000123", retention=SYNTHETIC_RETENTION, synthetic=True)
            load_lab(rt.gateway, rt.operator, LAB, patients=PATIENTS, seed=SEED)
            admin, admin_secret = _enrol(rt, rt.operator, LAB, "Paul Lefebvre", f"admin@{LAB}.invalid", "lab_admin")
            _, _ = _enrol(rt, admin, LAB, "Claire Moreau", f"bio@{LAB}.invalid", "biologist")
            _, support_secret = _enrol(rt, rt.operator, PLATFORM, "Sami Haddad", "support@vendor.invalid", "support")
            _, security_secret = _enrol(
                rt, rt.operator, PLATFORM, "Ines Roussel", "security@vendor.invalid", "security_officer"
            )
            with rt.unit(Purpose.ADMINISTRATION) as u:
                timezone = u.tenant(LAB).timezone
        finally:
            rt.close()
        records = list(LabGenerator(LAB, SEED).patients(PATIENTS))
        personal = [v for r in records for v in (r.identity.nir, r.identity.family_name) if v and len(v) > 3]
        rep = Replay(
            home=home,
            base="",
            people={
                "admin": Person(f"admin@{LAB}.invalid", admin_secret),
                "bio": Person(f"bio@{LAB}.invalid", None),
                "support": Person("support@vendor.invalid", support_secret),
                "security": Person("security@vendor.invalid", security_secret),
            },
            patients=[r.identity.patient_id for r in records],
            personal=personal,
            mails=mails,
            clock=clock,
            log=root / "serve.log",
        )
        for level, target in ((1, LEVEL1), (2, LEVEL2)):
            code, out, err = rep.cli("channel", "add", "--kind", "email", "--target", target, "--level", str(level))
            assert code == 0 and json.loads(out)["level"] == level, err
        hours = night_hours(timezone)
        code, _, err = rep.cli("tenant", "details", LAB, "--hours", hours, who="admin")
        assert code == 0, err
        rules_file = root / "monitor-rules.toml"
        rules_file.write_text(f"[lab.{LAB}.bulk-read]\ngte = {BULK_GTE}\n")
        env = {
            **os.environ,
            "LABVAULT_SMTP_HOST": "127.0.0.1",
            "LABVAULT_SMTP_PORT": str(smtp.port),
            "LABVAULT_SMTP_FROM": "labvault@vendor.invalid",
            "LABVAULT_ALERT_ACK_MINUTES": f"high={ACK_SECONDS}s,critical={ACK_SECONDS}s",
        }
        args = ["--port", "0", "--checkpoint-every", "0", "--retention-every", "0"]
        args += ["--monitor-every", "1", "--dispatch-every", "1", "--monitor-rules", str(rules_file)]
        with rep.log.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labvault.cli", "serve", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.startswith("listening on "), (line, rep.log.read_text())
            rep.base = line.split()[2].rstrip(";")
            yield rep
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
            smtp.stop()
    log = rep.log.read_text()
    assert not [v for v in personal if v in log], "a generated patient's NIR or name in the server's log"


def _token(rep: Replay, who: str, tenant: str) -> str:
    """A read token the account mints for itself (as from its own session)."""
    rt = open_runtime(Settings.from_env())
    try:
        p = Principal(rep.account_id(who), who, tenant, frozenset({"support" if who == "support" else "biologist"}))
        with rt.gateway.unit(p, Purpose.ADMINISTRATION) as u:
            return service.create_token_for(u, p, scopes=["read"], days=1)[1]
    finally:
        rt.close()


def _latency(opened_at: str, event_at: str) -> float:
    return (_at(opened_at) - _at(event_at)).total_seconds()


def test_the_recorded_attack_raises_mails_and_escalates_in_a_running_serve(replay):
    """H1, H2, H3: under an approved grant, a support account reads 45 patients outside the lab's
    hours, then asks for the lab's instructions and export packages it is refused. Within 60 s of
    the events the running serve stores bulk-read, bulk-read-vendor, off-hours-read and
    export-refused for that account, and e-mails each to the level-1 address with references only;
    nobody acknowledges the bulk read, so it escalates to level 2 (an e-mail to the level-2 address);
    the refused export, acknowledged by the lab's admin (the security officer may not), stays at
    level 1."""
    rep = replay
    support_id = rep.account_id("support")
    read = rep.patients[:READS]
    code, out, err = rep.cli(
        "grant",
        "request",
        "--tenant",
        LAB,
        "--ticket",
        "SUP-3AM",
        "--reason",
        "results shown with a wrong unit",
        "--hours",
        "2",
        "--field",
        "identity",
        *[x for pid in read for x in ("--patient", pid)],
        who="support",
    )
    assert code == 0, err
    grant_id = json.loads(out)["grant_id"]
    code, out, err = rep.cli("grant", "approve", grant_id, "--tenant", LAB, who="admin")
    assert code == 0 and json.loads(out)["state"] == "active", err
    token = _token(rep, "support", PLATFORM)

    began = time.monotonic()
    for pid in read:
        assert rep.get(f"/api/v1/tenants/{LAB}/patients/{pid}", token) == 200
    assert rep.get(f"/api/v1/tenants/{LAB}/patients/{rep.patients[-1]}", token) == 404  # not in the grant
    assert rep.get(f"/api/v1/tenants/{LAB}/instructions", token) == 403
    assert rep.get(f"/api/v1/tenants/{LAB}/migrations", token) == 403
    replay_s = time.monotonic() - began
    events = rep.events(support_id)
    last_at = _at(events[-1][1])

    def expected_mails():
        got = {p["rule"]: p for rcpt, p in rep.emails() if rcpt == [LEVEL1] and p.get("tenant") == LAB}
        return got if set(EXPECTED) <= set(got) else None

    mailed = wait_for("the expected alerts e-mailed to the level-1 address", expected_mails, BOUND_S)
    assert isinstance(mailed, dict)
    refused = mailed["export-refused"]["alert_id"]
    code, out, err = rep.cli("alerts", "ack", refused, "--reason", "ticket SUP-3AM checked", who="security")
    assert code != 0 and "lab_admin or lab_dpo" in err  # a lab's alert is the lab's to acknowledge
    code, out, err = rep.cli("alerts", "ack", refused, "--reason", "ticket SUP-3AM checked", who="admin")
    assert code == 0, err
    listed = {a["rule"]: a for a in rep.alerts() if a["dedup_key"].endswith(f"actor={support_id}")}
    assert set(EXPECTED) <= set(listed), sorted(listed)
    for rule in EXPECTED:
        a = listed[rule]
        assert a["severity"] == ("medium" if rule == "off-hours-read" else "high")
        assert support_id in a["refs"] and (_at(a["opened_at"]) - last_at).total_seconds() < BOUND_S
    assert listed["bulk-read"]["event_count"] >= BULK_GTE
    assert set(listed["bulk-read"]["refs"]) - {support_id} <= set(read)  # ids only: the patients read

    # Detection latency: the event at which each rule's condition first held (its commit time in
    # the trail) to the alert's opened_at.
    reads_ = [e for e in events if e[2] in READ_ACTIONS and e[3] == "allowed"]
    denied = [e for e in events if e[2].split(":")[0] in ("instruction", "migration", "export") and e[3] == "denied"]
    trigger = {
        "bulk-read": reads_[BULK_GTE - 1],
        "bulk-read-vendor": reads_[20 - 1],
        "off-hours-read": reads_[10 - 1],
        "export-refused": denied[0],
    }
    latency = {rule: _latency(listed[rule]["opened_at"], trigger[rule][1]) for rule in EXPECTED}
    print(
        f"\nreplay: {len(read)} reads and 2 refused requests in {replay_s:.1f} s; detection latency "
        + ", ".join(f"{rule} {s:.2f} s" for rule, s in latency.items())
    )
    assert all(0 <= s < BOUND_S for s in latency.values()), latency

    # Nobody acknowledges the bulk read: it goes to on-call level 2; the acknowledged one does not.
    bulk = listed["bulk-read"]["alert_id"]

    def escalated():
        return [p for rcpt, p in rep.emails() if rcpt == [LEVEL2] and p["alert_id"] == bulk and p["level"] == 2]

    wait_for("the unacknowledged bulk read e-mailed to level 2", escalated, ACK_SECONDS + BOUND_S)
    time.sleep(3)  # a few dispatcher rounds past the acknowledged alert's own deadline
    now = {a["alert_id"]: a for a in rep.alerts()}
    assert now[bulk]["level"] == 2 and now[bulk]["state"] == "open"
    assert now[refused]["level"] == 1 and now[refused]["state"] == "acknowledged"
    assert _at(now[refused]["ack_due"]) < datetime.now(UTC)  # its deadline passed, acknowledged in time
    assert not [p for _, p in rep.emails() if p["alert_id"] == refused and p["level"] > 1]

    # Every e-mail holds references only: no generated patient's NIR or name, no typed reason.
    raw = b"\n".join(m for _, m in rep.mails)
    assert not [v for v in rep.personal if v.encode() in raw]
    assert b"SUP-3AM checked" not in raw and b"wrong unit" not in raw


def test_a_canary_read_in_the_running_serve_raises_a_critical_alert(replay):
    """H1, H3: the lab's admin seeds a canary (``labvault canary seed``); a lab biologist reads it
    over the API; the running serve stores a critical canary-touched alert within 60 s of the read
    and e-mails it, with the canary's marker as its reference (never the generated identity)."""
    rep = replay
    code, out, err = rep.cli("canary", "seed", "--tenant", LAB, "--count", "1", who="admin")
    assert code == 0, err
    marker, _, patient = out.splitlines()[0].split()
    token = _token(rep, "bio", LAB)
    assert rep.get(f"/api/v1/tenants/{LAB}/patients/{patient}", token) == 200
    touch = [e for e in rep.events(rep.account_id("bio")) if e[2] == "canary:touch"]
    assert len(touch) == 1 and json.loads(touch[0][4]) == [marker]

    def mailed():
        return [p for rcpt, p in rep.emails() if p["rule"] == "canary-touched" and rcpt == [LEVEL1]]

    got = wait_for("the canary-touched alert e-mailed", mailed, BOUND_S)
    assert isinstance(got, list)
    alert = next(a for a in rep.alerts() if a["alert_id"] == got[0]["alert_id"])
    assert alert["severity"] == "critical" and alert["refs"] == [marker]
    seconds = _latency(alert["opened_at"], touch[0][1])
    print(f"\ncanary: detection latency {seconds:.2f} s")
    assert 0 <= seconds < BOUND_S
    assert patient not in json.dumps(got[0])
    raw = b"\n".join(m for _, m in rep.mails)
    assert not [v for v in rep.personal if v.encode() in raw]
    assert timedelta(seconds=0) <= _at(alert["ack_due"]) - _at(alert["opened_at"]) <= timedelta(seconds=ACK_SECONDS)
