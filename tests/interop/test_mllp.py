"""The MLLP listener: ACK only after the store, AE/AR with reasons, hostile clients, kill -9 and resend."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from labvault.access import Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.access import intake
from labvault.interop import hl7v2
from labvault.interop.ingest import Ingestor
from labvault.interop.mllp import Server
from labvault.runtime import init_home, open_runtime
from tests.conftest import ADMIN, TEST_RETENTION, first_lab_admin, lab_user, make_lab
from tests.interop.messages import framed, oru


class Running:
    """A Server on a free loopback port, its event loop in a thread."""

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


@pytest.fixture
def listener(gateway):
    make_lab(gateway, "lab-a")
    feed = lab_user(gateway, "lab-a", "technician", name="Feed")
    running = Running(Server(Ingestor(gateway, feed, "lab-a", feed="mllp", group=50), port=0, max_frame=64 * 1024))
    yield gateway, running
    running.close()


def connect(r: Running) -> socket.socket:
    s = socket.create_connection((r.host, r.port), timeout=20)
    return s


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
    err = [seg for seg in ack.split(b"\r") if seg.startswith(b"ERR|")][0].decode()
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
    gw, r = listener
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


# ---------------------------------------------------------------- kill -9 in the middle of 10,000 messages
N = 10_000


def _start(env: dict[str, str], token_file: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "labvault.cli", "mllp", "--tenant", "lab-a", "--port", "0", "--token-file",
         str(token_file)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()!r}")
    return proc, int(line.split()[2].rsplit(":", 1)[1])


def _send(port: int, messages: dict[str, bytes], acked: set[str], *, kill_after: int | None = None,
          proc: subprocess.Popen | None = None, window: int = 200) -> None:
    """Send all ``messages`` with up to ``window`` un-ACKed; record ACKed control ids (AA only)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
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
    home = tmp_path / "home"
    env = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "mllp test passphrase"}
    env.pop("LABVAULT_DATABASE_URL", None)
    env.pop("LABVAULT_KEY_PROVIDER", None)
    settings = Settings.from_env(env)
    init_home(settings, "Test Operator", "operator@vendor.invalid")
    rt = open_runtime(settings)
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.create_tenant("lab-a", "Lab A", "690000017", retention=TEST_RETENTION)
        admin = first_lab_admin(rt.gateway, rt.operator, "lab-a")  # the lab adds its feed and mints its token
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id="lab-a", name="Analyser feed", email="feed@lab-a.invalid",
                                   roles=["service"], kind="service", purpose="ingest")
            _, token = service.create_token(u, "feed@lab-a.invalid", scopes=["ingest"], days=1)
    finally:
        rt.close()
    token_file = tmp_path / "token"
    token_file.write_text(token)

    messages = {f"K{k:05d}": oru(f"K{k:05d}") for k in range(N)}
    facility = hl7v2.to_domain(hl7v2.parse(messages["K00000"])).sending_facility
    acked: set[str] = set()
    proc, port = _start(env, token_file)
    try:
        _send(port, messages, acked, kill_after=3000, proc=proc)
    finally:
        proc.kill()
        proc.communicate(timeout=30)  # EOF once the parser process has seen its parent die, too
    assert 3000 <= len(acked) < N, "the kill must land mid-stream"

    rt = open_runtime(Settings.from_env(env))
    try:  # every message ACKed before the kill is in the store
        with rt.gateway.engine.connect() as c:
            stored = set(c.exec_driver_sql("SELECT message_key FROM ingest_message").scalars())
        assert {intake.message_key(f'hl7v2:{facility}', k) for k in acked} <= stored
    finally:
        rt.close()

    proc, port = _start(env, token_file)
    try:
        _send(port, {k: v for k, v in messages.items() if k not in acked}, acked)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(acked) == N

    rt = open_runtime(Settings.from_env(env))
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            c = u.counts("lab-a")
        with rt.gateway.engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT count(*) FROM ingest_message").scalar_one()
    finally:
        rt.close()
    assert keys == N and c["request"] == N and c["result"] == 2 * N and c["patient_identity"] == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_mllp_over_tls(gateway, tmp_path):
    import ssl

    from labvault.interop.mllp import server_ssl_context

    make_lab(gateway, "lab-a")
    feed = lab_user(gateway, "lab-a", "technician", name="Feed")
    cert, key = _self_signed(tmp_path)
    r = Running(Server(Ingestor(gateway, feed, "lab-a", feed="mllp"), port=0,
                       ssl_context=server_ssl_context(str(cert), str(key))))
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection((r.host, r.port), timeout=20) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as s:
            buf = bytearray()
            s.sendall(framed(oru("TLS1")))
            assert msa(read_ack(s, buf))[:3] == ["MSA", "AA", "TLS1"]
        with socket.create_connection((r.host, r.port), timeout=20) as plain:  # no TLS: no ACK, no store
            plain.sendall(framed(oru("PLAIN1")))
            answer = b""
            try:
                while chunk := plain.recv(4096):
                    answer += chunk
            except OSError:
                pass
            assert b"MSA|" not in answer
    finally:
        r.close()
    assert counts(gateway)["request"] == 1
