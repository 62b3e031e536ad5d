"""``labvault serve`` run as a real process: it says where it listens, writes an access log (route
templates, statuses, actors; no query value, no personal data), and never swallows a scheduler
failure: logged with its traceback, counted, and recorded in the audit trail (G1, G2)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.runtime import init_home, open_runtime
from tests.conftest import TEST_RETENTION
from tests.interop.messages import NIR


@pytest.fixture
def env(tmp_path):
    home = tmp_path / "home"
    e = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "serve test passphrase"}
    e.pop("LABVAULT_DATABASE_URL", None)
    e.pop("LABVAULT_KEY_PROVIDER", None)
    init_home(Settings.from_env(e), "Test Operator", "operator@vendor.invalid")
    return e


def lab_with_reader(e: dict[str, str], tenant: str = "bio-lyon") -> tuple[str, str]:
    """A lab and one of its biologists with a read token minted by the biologist itself
    (the one place these tests create labs, accounts and tokens): (account id, token)."""
    rt = open_runtime(Settings.from_env(e))
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            u.create_tenant(tenant, "Bio Lyon", "690000123", retention=TEST_RETENTION)
            u.ensure_account(
                tenant, "bio-reader", "Claire Moreau", "claire@lab.invalid", ["biologist"], commitment="test"
            )
        bio = Principal("bio-reader", "Claire Moreau", tenant, frozenset({"biologist"}))
        with rt.gateway.unit(bio, Purpose.ADMINISTRATION) as u:
            _, token = service.create_token_for(u, bio, scopes=["read"], days=1)
    finally:
        rt.close()
    return "bio-reader", token


def start(e: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labvault.cli", "serve", "--port", "0", *args],
            env=e,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"serve did not start: {line!r} {log.read_text()!r}")
    return proc, line


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_says_where_it_listens_and_writes_an_access_log_without_personal_data(env, tmp_path):
    """G2: address, port and TLS or not printed; one access-log line per request with the method,
    the route template, the status, the duration and the actor; no query value, no personal data."""
    actor, token = lab_with_reader(env)
    log = tmp_path / "serve.log"
    proc, line = start(env, log, "--checkpoint-every", "0", "--retention-every", "0")
    try:
        assert line.startswith("listening on http://127.0.0.1:") and "(plain HTTP, no TLS)" in line, line
        base = line.split()[2].rstrip(";")
        assert get(f"{base}/health") == 200
        assert get(f"{base}/api/v1/tenants/bio-lyon/patients?nir={NIR}", token) == 200
        assert (
            get(
                f"{base}/api/v1/tenants/bio-lyon/patients?family_name=DUPONT&given_name=Jean&birth_date=1985-07-04",
                token,
            )
            == 200
        )
        assert get(f"{base}/api/v1/tenants/bio-lyon/patients?nir={NIR}", "lvt_bad_token") == 401
        assert get(f"{base}/no/such/{NIR}") in (401, 404)
    finally:
        stop(proc)
    text = log.read_text()
    access = [ln for ln in text.splitlines() if "labvault.access.http" in ln]
    assert len(access) == 5, text
    assert "method=GET route=/health status=200" in access[0] and "actor=-" in access[0]
    for ln in access[1:3]:
        assert "method=GET route=/api/v1/tenants/{tenant}/patients status=200" in ln and f"actor={actor}" in ln
    assert "route=/api/v1/tenants/{tenant}/patients status=401" in access[3] and "actor=-" in access[3]
    assert "route=- " in access[4]
    for secret in (NIR, "DUPONT", "Jean", "1985-07-04", "bio-lyon", "?", token):
        assert secret not in text, secret


def _events(e: dict[str, str], action: str) -> list[tuple[str, str, str]]:
    db = Path(e["LABVAULT_HOME"]) / "labvault.db"
    with sqlite3.connect(db) as c:
        return c.execute(
            "SELECT tenant_id, outcome, object_refs FROM audit_event WHERE action = ? ORDER BY seq", (action,)
        ).fetchall()


def test_scheduler_failures_are_logged_counted_and_audited(env, tmp_path):
    """G1, G2: the purge and checkpoint schedulers fail for real (their tables removed under the
    running server): each failure is logged with its traceback, counted, and recorded as an audit
    event of outcome 'error'; the server keeps serving."""
    lab_with_reader(env)
    log = tmp_path / "serve.log"
    proc, line = start(env, log, "--checkpoint-every", "1", "--retention-every", "1")
    try:
        db = Path(env["LABVAULT_HOME"]) / "labvault.db"
        with sqlite3.connect(db, timeout=30) as c:
            c.execute("DROP TABLE retention_rule")
            c.execute("DROP TABLE audit_checkpoint")
        time.sleep(4.5)
        base = line.split()[2].rstrip(";")
        assert get(f"{base}/health") == 200
    finally:
        stop(proc)
    text = log.read_text()
    for which in ("retention", "checkpoint"):
        failed = [ln for ln in text.splitlines() if f"scheduler {which} failed" in ln]
        assert len(failed) >= 2, text
        assert "(2 failures of this scheduler since start)" in text or "failures of this scheduler" in failed[1]
        counts = [int(ln.rsplit("(", 1)[1].split()[0]) for ln in failed]
        assert counts == sorted(counts) and counts[-1] >= 2
        events = _events(env, f"scheduler:{which}")
        assert len(events) >= 2 and {o for _, o, _ in events} == {"error"}
        assert all(json.loads(r) == ["OperationalError"] for _, _, r in events)
    assert "Traceback (most recent call last)" in text
    assert "sqlalchemy.exc.OperationalError: [message removed]" in text
    assert "no such table" not in text  # the exception's message (it may quote data) is not logged
