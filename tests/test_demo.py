"""`make demo`'s command, end to end on a small scale, as a new user would run it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import need


def test_demo_end_to_end(tmp_path):
    need(shutil.which("age") is not None, "the age CLI is missing: apt-get install age")
    env = {**os.environ, "LABVAULT_HOME": str(tmp_path / "demo"), "LABVAULT_PASSPHRASE": "demo passphrase here"}
    env.pop("LABVAULT_DATABASE_URL", None)
    env.pop("LABVAULT_KEY_PROVIDER", None)
    args = [sys.executable, "-m", "labvault.cli", "demo", "--labs", "2", "--patients", "60"]
    for _ in range(2):  # a second run rebuilds the demo home
        out = subprocess.run(args, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "total: 2 labs, 120 patients" in text
    assert "2 of 2 labs synthetic" in text and text.count(" synthetic ") >= 2  # each lab marked
    assert text.count("not found") == 4 and "FOUND" not in text
    assert "nothing in clear" in text
    # how to open the web interface on the demo home, with an account and its current TOTP code
    assert "open http://127.0.0.1:8000/ in a browser" in text and "biologist (password only)" in text
    m = re.search(r"\.venv/bin/python -c '(import pyotp; print\(pyotp\.TOTP\(\"[A-Z2-7]+\"\)\.now\(\)\))'", text)
    assert m, text[-1500:]
    code = subprocess.run([sys.executable, "-c", m.group(1)], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"\d{6}\n", code)
    assert "INS/NIR" in text and "results (8 newest shown)" in text
    # The migration scenario: everything refused, the instructed package opened by the age CLI.
    assert "the operator asks for every field since 2015: REFUSED (beyond instruction 'MIG-2021-NEWLIS'" in text
    assert "(= the manifest); free-text comments in it: none" in text
    assert "package still on disk: no; package key in the key provider: no" in text
    assert "signature verifies" in text
    # the vendor's own administrator: each attempt refused with its reason, none let through (E1, F2, D2, A8)
    assert "ALLOWED" not in text
    for attempt in (
        "add its own account to",
        "mint a token for",
        "demote",
        "fill bio-reelle with generated data",
        "crypto-shred bio-reelle without its signed deletion instruction",
    ):
        assert re.search(re.escape(attempt) + r"[^\n]*: refused \(", text), attempt


def test_demo_refuses_a_real_home(tmp_path):
    home = tmp_path / "real"
    home.mkdir()
    (home / "keyring.json").write_text("{}")
    env = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "demo passphrase here"}
    out = subprocess.run([sys.executable, "-m", "labvault.cli", "demo"], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "not a demo home" in out.stderr
    assert (home / "keyring.json").read_text() == "{}"
