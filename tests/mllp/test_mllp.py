"""The MLLP listener: ACK only after the store, AE/AR with reasons, hostile clients, kill -9 and resend;
TLS with client certificates pinned on the lab's service accounts, connection limits (C2, E1, G2)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labvault.access import Principal, Purpose
from labvault.accounts import feeds, service
from labvault.config import Settings
from labvault.ingest import intake
from labvault.interop import hl7v2
from labvault.mllp.listener import Limits, PinnedFeeds, Server, server_ssl_context
from labvault.runtime import init_home, open_runtime
from tests.conftest import ADMIN, TEST_RETENTION, first_lab_admin, make_lab
from tests.interop.messages import NIR, framed, oru
from tests.mllp.tls import Pair, no_ack, self_signed, tls_connect


def pinned_feed(gw, platform: Principal, tenant: str, cert: Pair, *, email: str | None = None) -> Principal:
    """The feed of a lab: its lab_admin creates the service account and pins the feed's client
    certificate on it (the one place these tests make a feed's account)."""
    admin = first_lab_admin(gw, platform, tenant)
    email = email or f"feed@{tenant}.invalid"
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u, tenant_id=tenant, name="Analyser feed", email=email, roles=["service"], kind="service", purpose="ingest"
        )
        feeds.pin(u, tenant, email, cert.pem)
    return Principal(new.account_id, "Analyser feed", tenant, frozenset({"service"}))


def feed_token(gw, platform: Principal, tenant: str, email: str) -> str:
    """An ``ingest`` token of the lab's feed account, minted by the lab's lab_admin."""
    admin = first_lab_admin(gw, platform, tenant)
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        return service.create_token(u, email, scopes=["ingest"], days=1)[1]


class Running:
    """A Server on a free loopback port, its event loop in a thread; ``connect`` as the pinned feed."""

    server_pair: Pair | None = None
    feed_pair: Pair | None = None

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host, self.port = asyncio.run_coroutine_threadsafe(server.start(), self.loop).result(10)
        self.serving = asyncio.run_coroutine_threadsafe(server.serve_forever(), self.loop)

    def close(self) -> None:
        self.serving.cancel()
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def tls_server(gateway, tmp_path, tenant: str = "lab-a", *, limits: Limits | None = None, **kw) -> Running:
    """The listener of ``tenant`` over TLS, trusting the certificates pinned on the lab's accounts."""
    server_pair = self_signed(tmp_path / "server", "server", server=True)
    ctx = server_ssl_context(str(server_pair.cert), str(server_pair.key))
    r = Running(
        Server(None, port=0, ssl_context=ctx, feeds=PinnedFeeds(gateway, tenant, group=50), limits=limits, **kw)
    )
    r.server_pair = server_pair
    return r


@pytest.fixture
def listener(gateway, tmp_path):
    make_lab(gateway, "lab-a")
    feed_pair = self_signed(tmp_path / "feed", "feed")
    pinned_feed(gateway, ADMIN, "lab-a", feed_pair)
    running = tls_server(gateway, tmp_path, max_frame=64 * 1024)
    running.feed_pair = feed_pair
    yield gateway, running
    running.close()


def connect(r: Running, *, source: str | None = None) -> socket.socket:
    return tls_connect(r.port, r.server_pair, r.feed_pair, source=source)


def read_ack(s: socket.socket, buf: bytearray) -> bytes:
    while b"\x1c\r" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    end = buf.index(b"\x1c\r")
    frame = bytes(buf[:end])
    del buf[: end + 2]
    assert frame.startswith(b"\x0b")
    return frame[1:]


def msa(ack: bytes) -> list[str]:
    for seg in ack.split(b"\r"):
        if seg.startswith(b"MSA|"):
            return seg.decode().split("|")
    raise AssertionError("no MSA segment")


def counts(gw) -> dict[str, int]:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return u.counts("lab-a")


def test_ack_codes(listener):
    gw, r = listener
    s, buf = connect(r), bytearray()
    s.sendall(framed(oru("M1")))
    assert msa(read_ack(s, buf))[:3] == ["MSA", "AA", "M1"]
    s.sendall(framed(oru("M1")))  # the same message again: acknowledged, not stored twice
    assert msa(read_ack(s, buf))[:3] == ["MSA", "AA", "M1"]
    s.sendall(framed(oru("M2", nir="185077512345600")))
    ack = read_ack(s, buf)
    assert msa(ack)[1] == "AE" and "not a valid NIR" in msa(ack)[3]
    err = next(seg for seg in ack.split(b"\r") if seg.startswith(b"ERR|")).decode()
    assert "quarantine" in err.split("|")[8] and err.split("|")[3].startswith("207^")
    assert b"185077512345600" not in ack
    s.sendall(framed(oru("M3").replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01")))
    assert msa(read_ack(s, buf))[1] == "AR"
    s.sendall(b"garbage before a frame" + framed(b"not hl7 at all"))
    assert msa(read_ack(s, buf))[1] == "AR"
    s.close()
    c = counts(gw)
    assert c["request"] == 1 and c["result"] == 2


def test_acks_come_back_in_order_for_pipelined_frames(listener):
    gw, r = listener
    s, buf = connect(r), bytearray()
    s.sendall(b"".join(framed(oru(f"P{k}")) for k in range(200)))
    assert [msa(read_ack(s, buf))[2] for _ in range(200)] == [f"P{k}" for k in range(200)]
    s.close()
    assert counts(gw)["request"] == 200


def test_a_client_leaving_mid_frame_stores_nothing(listener):
    gw, r = listener
    s = connect(r)
    whole = framed(oru("HALF"))
    s.sendall(whole[: len(whole) // 2])
    s.close()
    s2, buf = connect(r), bytearray()
    s2.sendall(framed(oru("AFTER")))
    assert msa(read_ack(s2, buf))[2] == "AFTER"
    s2.close()
    assert counts(gw)["request"] == 1


def test_a_huge_frame_is_refused_and_the_server_lives_on(listener):
    _gw, r = listener
    s, buf = connect(r), bytearray()
    try:
        s.sendall(b"\x0bMSH|^~\\&|" + b"x" * (200 * 1024))
    except OSError:
        pass  # the server may close before reading it all
    try:
        assert msa(read_ack(s, buf))[1] == "AR"
    except (ConnectionError, OSError):
        pass
    s.close()
    s2, buf2 = connect(r), bytearray()
    s2.sendall(framed(oru("OK")))
    assert msa(read_ack(s2, buf2))[1] == "AA"
    s2.close()
    assert r.server.stats.oversized == 1


# ---------------------------------------------------------------- kill -9 in the middle of 3,000 messages
N = 3_000  # 15 windows of 200 un-ACKed messages: the kill lands with a full window in flight
KILL_AFTER = 1_000


def _start(env: dict[str, str], pki: dict[str, Pair], log: Path) -> tuple[subprocess.Popen, int]:
    """The listener process; its log (stderr) goes to ``log``."""
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labvault.cli",
                "mllp",
                "--tenant",
                "lab-a",
                "--port",
                "0",
                "--tls-cert",
                str(pki["server"].cert),
                "--tls-key",
                str(pki["server"].key),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {log.read_text()!r}")
    assert "(TLS, client certificates pinned" in line and ": 1 pinned" in line, line
    return proc, int(line.split()[2].rsplit(":", 1)[1])


def _send(
    port: int,
    pki: dict[str, Pair],
    messages: dict[str, bytes],
    acked: set[str],
    *,
    kill_after: int | None = None,
    proc: subprocess.Popen | None = None,
    window: int = 200,
) -> None:
    """Send all ``messages`` with up to ``window`` un-ACKed; record ACKed control ids (AA only)."""
    s = tls_connect(port, pki["server"], pki["feed"], timeout=30)
    buf = bytearray()
    order = list(messages)
    sent = 0
    inflight: list[str] = []
    try:
        while sent < len(order) or inflight:
            while sent < len(order) and len(inflight) < window:
                s.sendall(framed(messages[order[sent]]))
                inflight.append(order[sent])
                sent += 1
            fields = msa(read_ack(s, buf))
            assert fields[2] == inflight[0]
            inflight.pop(0)
            if fields[1] == "AA":
                acked.add(fields[2])
            if kill_after is not None and len(acked) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                kill_after = None
    except (ConnectionError, OSError):
        pass  # the server died: what was not ACKed will be sent again
    finally:
        s.close()


def test_kill_minus_9_mid_stream_then_resend_stores_every_acked_message_once(tmp_path):
    """C2, E1, G2: the listener process over TLS, its feed authenticated by a pinned certificate;
    killed mid-stream; its access log names peer, account and ACK code, never a sent value."""
    home = tmp_path / "home"
    env = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "mllp test passphrase"}
    env.pop("LABVAULT_DATABASE_URL", None)
    env.pop("LABVAULT_KEY_PROVIDER", None)
    settings = Settings.from_env(env)
    init_home(settings, "Test Operator", "operator@vendor.invalid")
    pki = {
        "server": self_signed(tmp_path / "pki", "server", server=True),
        "feed": self_signed(tmp_path / "pki", "feed"),
    }
    rt = open_runtime(settings)
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.create_tenant("lab-a", "Lab A", "690000017", retention=TEST_RETENTION)
        feed = pinned_feed(rt.gateway, rt.operator, "lab-a", pki["feed"])
    finally:
        rt.close()

    messages = {f"K{k:05d}": oru(f"K{k:05d}") for k in range(N)}
    facility = hl7v2.to_domain(hl7v2.parse(messages["K00000"])).sending_facility
    acked: set[str] = set()
    proc, port = _start(env, pki, tmp_path / "first.log")
    try:
        _send(port, pki, messages, acked, kill_after=KILL_AFTER, proc=proc)
    finally:
        proc.kill()
        proc.communicate(timeout=30)  # EOF once the parser process has seen its parent die, too
    assert KILL_AFTER <= len(acked) < N, "the kill must land mid-stream"

    rt = open_runtime(Settings.from_env(env))
    try:  # every message ACKed before the kill is in the store
        with rt.gateway.engine.connect() as c:
            stored = set(c.exec_driver_sql("SELECT message_key FROM ingest_message").scalars())
        assert {intake.message_key(f"hl7v2:{facility}", k) for k in acked} <= stored
    finally:
        rt.close()

    remaining = {k: v for k, v in messages.items() if k not in acked}
    proc, port = _start(env, pki, tmp_path / "second.log")
    try:
        _send(port, pki, remaining, acked)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    err = (tmp_path / "second.log").read_text()
    assert proc.returncode == 0, err
    assert len(acked) == N
    # The access log: one line per message with the peer, the feed's account, the ACK code.
    lines = [ln for ln in err.splitlines() if "labvault.access.mllp" in ln and "event=message" in ln]
    assert len(lines) == len(remaining)
    assert all(f"account={feed.account_id}" in ln and "ack=AA" in ln and "peer=127.0.0.1:" in ln for ln in lines)
    assert NIR not in err and "DUPONT" not in err and "K0" not in err

    rt = open_runtime(Settings.from_env(env))
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            c = u.counts("lab-a")
        with rt.gateway.engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT count(*) FROM ingest_message").scalar_one()
            actors = set(
                conn.exec_driver_sql(
                    "SELECT DISTINCT actor FROM audit_event WHERE tenant_id = 'lab-a' AND action = 'ingest:message'"
                ).scalars()
            )
    finally:
        rt.close()
    assert keys == N and c["request"] == N and c["result"] == 2 * N and c["patient_identity"] == 1
    assert actors == {feed.account_id}  # stored as the account the certificate is pinned on


# ---------------------------------------------------------------- authentication and connection limits
def _events(gw, tenant: str, action: str) -> list[tuple[str, str]]:
    """The lab's audit events of ``action`` (read in the lab's row-level-security scope)."""
    from sqlalchemy import func, select

    with gw.engine.begin() as c:
        if c.dialect.name == "postgresql":
            c.execute(select(func.set_config("labvault.tenant", tenant, True)))
        return [
            tuple(r)
            for r in c.exec_driver_sql(
                f"SELECT outcome, object_refs FROM audit_event WHERE tenant_id = '{tenant}' "
                f"AND action = '{action}' ORDER BY seq"
            ).all()
        ]


def test_a_client_without_a_pinned_certificate_gets_no_ack_and_stores_nothing(listener, tmp_path):
    """C2, E1: no client certificate, a certificate nobody pinned, one pinned on another lab's
    service account, one unpinned since: no ACK, nothing stored; the pinned feed is ACKed."""
    gw, r = listener
    make_lab(gw, "lab-b", "690000025")
    other_lab = self_signed(tmp_path / "b", "feed-b")
    pinned_feed(gw, ADMIN, "lab-b", other_lab)
    stranger = self_signed(tmp_path / "x", "stranger")
    for client in (None, stranger, other_lab):
        try:
            s = tls_connect(r.port, r.server_pair, client)
        except (OSError, ssl.SSLError):
            continue  # refused during the handshake: fine, nothing was sent
        assert b"MSA|" not in no_ack(s, framed(oru("NOPE")))
    # A certificate pinned, trusted by the running listener, then unpinned by the lab: refused too.
    later = self_signed(tmp_path / "later", "later")
    pinned_feed(gw, ADMIN, "lab-a", later, email="later@lab-a.invalid")
    r.server.feeds.trust(r.server.ssl)
    s = tls_connect(r.port, r.server_pair, later)
    s.sendall(framed(oru("LATER1")))
    assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "LATER1"]
    s.close()
    with gw.unit(first_lab_admin(gw, ADMIN, "lab-a"), Purpose.ADMINISTRATION) as u:
        feeds.unpin(u, "lab-a", "later@lab-a.invalid")
    s = tls_connect(r.port, r.server_pair, later)
    assert b"MSA|" not in no_ack(s, framed(oru("LATER2")))
    assert counts(gw)["request"] == 1
    assert ("denied", f'["{feeds.fingerprint(_der(later))}"]') in _events(gw, "lab-a", "feed:connect")
    refused = r.server.stats.refused
    assert (
        refused["no-certificate"] >= 1
        and refused["certificate-refused"] >= 2
        and refused["certificate-not-pinned"] == 1
    ), refused
    s = connect(r)
    s.sendall(framed(oru("OK1")))
    assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "OK1"]
    s.close()
    assert counts(gw)["request"] == 2


def _der(pair: Pair) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pair.pem.decode())


def test_a_certificate_pinned_while_the_listener_runs_is_accepted_without_restart(gateway, tmp_path):
    """C2: the listener re-reads the lab's pins; a new feed is ACKed within the refresh period."""
    make_lab(gateway, "lab-a")
    r = tls_server(gateway, tmp_path, refresh_every=0.2)
    try:
        feed = self_signed(tmp_path / "feed", "feed")
        pinned_feed(gateway, ADMIN, "lab-a", feed)
        time.sleep(1.0)
        s = tls_connect(r.port, r.server_pair, feed)
        s.sendall(framed(oru("NEW1")))
        assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "NEW1"]
        s.close()
    finally:
        r.close()


def test_a_hundred_idle_connections_from_one_address_do_not_stop_a_certified_feed(gateway, tmp_path):
    """C2: 100 idle TCP connections from one address, 100 more that finish TLS without a
    certificate and stay, 40 idle ones from 40 other addresses: the certified feed is still ACKed,
    at once; the flooding address never holds more than its cap."""
    make_lab(gateway, "lab-a")
    feed = self_signed(tmp_path / "feed", "feed")
    pinned_feed(gateway, ADMIN, "lab-a", feed)
    limits = Limits(max_connections=64, max_per_address=8, max_pending=32, handshake_timeout=60)
    r = tls_server(gateway, tmp_path, limits=limits)
    held: list[socket.socket] = []
    try:
        for _ in range(100):  # idle: not a byte sent
            held.append(socket.create_connection((r.host, r.port), timeout=5, source_address=("127.0.0.2", 0)))
        for _ in range(100):  # TLS without a client certificate, then idle
            try:
                held.append(tls_connect(r.port, r.server_pair, None, source="127.0.0.3", timeout=5))
            except (OSError, ssl.SSLError):
                pass
        for k in range(40):  # a spread-out flood filling the pool of unauthenticated connections
            held.append(socket.create_connection((r.host, r.port), timeout=5, source_address=(f"127.0.1.{k + 1}", 0)))
        time.sleep(0.5)
        started = time.monotonic()
        s = tls_connect(r.port, r.server_pair, feed, timeout=10)
        s.sendall(framed(oru("FLOOD1")))
        assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "FLOOD1"]
        assert time.monotonic() - started < 10  # at once, not after the flood times out (60 s)
        s.close()
        stats = r.server.stats
        assert stats.refused["per-address-cap"] >= 92, stats.refused
        assert r.server._by_addr.get("127.0.0.2", 0) <= limits.max_per_address
        assert len(r.server._pending) <= limits.max_pending
    finally:
        for h in held:
            h.close()
        r.close()
    assert counts(gateway)["request"] == 1


def test_an_incomplete_frame_times_out_within_seconds(gateway, tmp_path):
    """C2: half a frame, or a frame trickled a byte at a time, is dropped after the frame timeout
    (nothing stored, nothing ACKed); an idle connection between frames is kept."""
    make_lab(gateway, "lab-a")
    feed = self_signed(tmp_path / "feed", "feed")
    pinned_feed(gateway, ADMIN, "lab-a", feed)
    r = tls_server(gateway, tmp_path, limits=Limits(frame_timeout=1.0, idle_timeout=30))
    try:
        whole = framed(oru("SLOW1"))
        s = tls_connect(r.port, r.server_pair, feed)
        started = time.monotonic()
        s.sendall(whole[: len(whole) // 2])
        assert s.recv(4096) == b""  # closed by the server
        assert time.monotonic() - started < 3
        s.close()
        s = tls_connect(r.port, r.server_pair, feed)
        started = time.monotonic()
        try:
            for b in whole[:-1]:  # one byte every 0.1 s: would take seconds more than allowed
                s.sendall(bytes([b]))
                time.sleep(0.1)
        except OSError:
            pass
        assert time.monotonic() - started < 4
        s.close()
        s = tls_connect(r.port, r.server_pair, feed)
        time.sleep(1.5)  # idle between frames: kept
        s.sendall(whole)
        assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "SLOW1"]
        s.close()
    finally:
        r.close()
    assert r.server.stats.frame_timeouts == 2
    assert counts(gateway)["request"] == 1


def test_insecure_plaintext_on_loopback_ingests_as_the_token_account(tmp_path):
    """C2, E1: ``--insecure-plaintext`` (loopback only) says so when it starts, and ingests as the
    service account of ``--token-file``; its access log names that account."""
    home = tmp_path / "home"
    env = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "mllp test passphrase"}
    env.pop("LABVAULT_DATABASE_URL", None)
    env.pop("LABVAULT_KEY_PROVIDER", None)
    init_home(Settings.from_env(env), "Test Operator", "operator@vendor.invalid")
    rt = open_runtime(Settings.from_env(env))
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.create_tenant("lab-a", "Lab A", "690000017", retention=TEST_RETENTION)
        feed = pinned_feed(rt.gateway, rt.operator, "lab-a", self_signed(tmp_path / "pki", "feed"))
        (tmp_path / "token").write_text(feed_token(rt.gateway, rt.operator, "lab-a", "feed@lab-a.invalid"))
    finally:
        rt.close()
    log = tmp_path / "mllp.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "labvault.cli",
                "mllp",
                "--tenant",
                "lab-a",
                "--port",
                "0",
                "--insecure-plaintext",
                "--token-file",
                str(tmp_path / "token"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:") and "plain TCP, no TLS (--insecure-plaintext)" in line, (
            line,
            log.read_text(),
        )
        with socket.create_connection(("127.0.0.1", int(line.split()[2].rsplit(":", 1)[1])), timeout=20) as s:
            s.sendall(framed(oru("PLAIN1")))
            assert msa(read_ack(s, bytearray()))[:3] == ["MSA", "AA", "PLAIN1"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    text = log.read_text()
    assert f"account={feed.account_id}" in text and "ack=AA" in text and "tls=False" in text
