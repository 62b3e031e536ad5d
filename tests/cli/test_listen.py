"""``labvault serve`` and ``labvault mllp`` on a port another process holds: one error line saying
so and what to do, exit 1, no traceback, nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from labvault.access import Purpose
from labvault.config import Settings
from labvault.runtime import init_home, open_runtime
from tests.conftest import TEST_RETENTION
from tests.mllp.test_mllp import feed_token, pinned_feed
from tests.mllp.tls import self_signed


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, "LABVAULT_HOME": str(tmp_path / "home"), "LABVAULT_PASSPHRASE": "listen test passphrase"}
    e.pop("LABVAULT_DATABASE_URL", None)
    e.pop("LABVAULT_KEY_PROVIDER", None)
    init_home(Settings.from_env(e), "Test Operator", "operator@vendor.invalid")
    return e


@pytest.fixture
def taken():
    """A loopback port another process (here: this one) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _one_line(proc: subprocess.CompletedProcess, port: int) -> None:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[-1] == (
        f"labvault: error: cannot listen on 127.0.0.1:{port}: the port is already in use "
        "(another process listens there: choose another --port)"
    ), proc.stderr
    assert [ln for ln in lines if ln.startswith("labvault:")] == lines[-1:]


def test_serve_on_a_taken_port(env, taken):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labvault.cli",
            "serve",
            "--port",
            str(taken),
            "--checkpoint-every",
            "0",
            "--retention-every",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line(proc, taken)
    assert "listening on" not in proc.stdout


@pytest.mark.parametrize("parsers", ["1", "0"])
def test_mllp_on_a_taken_port(env, taken, tmp_path, parsers):
    """The listener had started its committer (and its parser process): they stop, the process exits."""
    rt = open_runtime(Settings.from_env(env))
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.create_tenant("lab-a", "Lab A", "690000017", retention=TEST_RETENTION)
        pinned_feed(rt.gateway, rt.operator, "lab-a", self_signed(tmp_path / "pki", "feed"))
        (tmp_path / "token").write_text(feed_token(rt.gateway, rt.operator, "lab-a", "feed@lab-a.invalid"))
    finally:
        rt.close()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labvault.cli",
            "mllp",
            "--tenant",
            "lab-a",
            "--port",
            str(taken),
            "--insecure-plaintext",
            "--token-file",
            str(tmp_path / "token"),
            "--parsers",
            parsers,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line(proc, taken)
    assert "listening on" not in proc.stdout
