"""The CLI as a person uses it: one-line errors, non-zero exits, nothing half-written."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labvault.access import Purpose
from labvault.cli import main
from labvault.config import Settings
from labvault.runtime import open_runtime
from labvault.synth import LabGenerator
from tests.cli.helpers import PASSWORD, enrolled_account

PW = "cli test passphrase"
VALID_NIR = "1800175000001" + f"{97 - int('1800175000001') % 97:02d}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("LABVAULT_HOME", str(h))
    monkeypatch.setenv("LABVAULT_PASSPHRASE", PW)
    monkeypatch.delenv("LABVAULT_DATABASE_URL", raising=False)
    monkeypatch.delenv("LABVAULT_KEY_PROVIDER", raising=False)
    return h


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("labvault: error: ")
    return lines[0]


def test_init_twice_and_tenants(home, capsys):
    code, out, _ = run(capsys, "init", "--admin-name", "Alice Martin", "--admin-email", "alice@vendor.invalid")
    assert code == 0 and "keyring   created" in out and "alice@vendor.invalid" in out
    ring = (home / "keyring.json").read_bytes()
    code, out, _ = run(capsys, "init", "--admin-name", "Alice Martin", "--admin-email", "alice@vendor.invalid")
    assert code == 0 and "keyring   opened" in out and "already recorded" in out
    assert (home / "keyring.json").read_bytes() == ring
    assert (
        run(
            capsys,
            "tenant",
            "add",
            "bio-lyon",
            "--name",
            "Bio Lyon",
            "--finess",
            "690000123",
            "--retention",
            "results=10y",
            "--retention-ref",
            "test rule",
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "tenant", "list", "--json")
    assert (code == 0 and json.loads(out.strip().splitlines()[0])["id"] == "bio-lyon") or '"bio-lyon"' in out


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (
            [
                "tenant",
                "add",
                "Bad_Id",
                "--name",
                "X",
                "--finess",
                "690000123",
                "--retention",
                "results=10y",
                "--retention-ref",
                "test rule",
            ],
            "lab id",
        ),
        (
            [
                "tenant",
                "add",
                "bio-x",
                "--name",
                "X",
                "--finess",
                "12",
                "--retention",
                "results=10y",
                "--retention-ref",
                "test rule",
            ],
            "FINESS",
        ),
        (["patient", "find", "--tenant", "nope", "--nir", VALID_NIR], "unknown lab"),
        (["patient", "find", "--tenant", "bio-lyon", "--nir", "180017500000199"], "invalid NIR"),
        (["patient", "find", "--tenant", "bio-lyon", "--family-name", "X"], "give --nir"),
        (["keys", "status", "--tenant", "nope"], "unknown lab"),
        (["tenant", "shred", "nope", "--yes"], "unknown lab"),
    ],
)
def test_bad_input_one_line_error(home, capsys, args, expect):
    run(capsys, "init")
    run(
        capsys,
        "tenant",
        "add",
        "bio-lyon",
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    code, _, err = run(capsys, *args)
    assert code != 0
    line = one_line_error(err)
    assert expect in line
    assert "180017500000199" not in line  # never repeats a personal value
    code, out, _ = run(capsys, "tenant", "list", "--json")
    assert out.count('"id"') == 1  # nothing half-written


def test_keyring_errors(home, capsys, monkeypatch):
    code, _, err = run(capsys, "tenant", "list")
    assert code != 0 and "labvault init" in one_line_error(err)
    run(capsys, "init")
    monkeypatch.setenv("LABVAULT_PASSPHRASE", "not the passphrase")
    code, _, err = run(capsys, "tenant", "list")
    assert code != 0 and "wrong keyring passphrase" in one_line_error(err)
    monkeypatch.setenv("LABVAULT_PASSPHRASE", PW)
    (home / "keyring.json").write_text("{ corrupt")
    code, _, err = run(capsys, "tenant", "list")
    assert code != 0 and "corrupt" in one_line_error(err)
    (home / "keyring.json").unlink()
    code, _, err = run(capsys, "tenant", "list")
    assert code != 0 and "no keyring" in one_line_error(err)


def test_no_passphrase_without_terminal(home, capsys, monkeypatch):
    monkeypatch.delenv("LABVAULT_PASSPHRASE")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "init")
    assert code != 0 and "LABVAULT_PASSPHRASE" in one_line_error(err)
    assert not (home / "keyring.json").exists()


def test_generate_find_rotate_shred(home, capsys, monkeypatch):
    run(capsys, "init")
    code, out, _ = run(capsys, "generate", "--labs", "2", "--patients", "30", "--seed", "5")
    assert code == 0 and "60 patients" in out
    code, out, _ = run(capsys, "tenant", "list", "--json")
    labs = [json.loads(line)["id"] for line in out.strip().splitlines() if line.startswith("{")]
    assert len(labs) == 2
    p = LabGenerator(labs[0], 5).patient(3).identity
    # The CLI operator is vendor staff: no standing access to lab data.
    code, _, err = run(capsys, "patient", "find", "--tenant", labs[0], "--nir", p.nir)
    assert code != 0 and "grant" in one_line_error(err)
    bio0 = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "bio0@lab.invalid", "biologist", labs[0])
    bio1 = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "bio1@lab.invalid", "biologist", labs[1])
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    code, out, _ = run(capsys, "patient", "find", "--tenant", labs[0], "--nir", p.nir, "--results", "--as", bio0)
    assert code == 0 and p.family_name in out and "results" in out
    code, _, err = run(capsys, "patient", "find", "--tenant", labs[1], "--nir", p.nir, "--as", bio0)
    assert code != 0 and "cannot act on lab" in one_line_error(err)
    code, out, _ = run(capsys, "patient", "find", "--tenant", labs[1], "--nir", p.nir, "--as", bio1)
    assert code == 1 and "no patient" in out
    code, out, _ = run(capsys, "keys", "rotate", "--tenant", labs[0], "--batch-size", "20", "--max-batches", "1")
    assert code == 0 and "interrupted" in out
    code, out, _ = run(capsys, "keys", "rotate", "--tenant", labs[0])
    assert code == 0 and "resumed" in out and "done" in out
    code, out, _ = run(capsys, "tenant", "shred", labs[0], "--yes")
    assert code == 0 and "crypto-shredded" in out and '"signature"' in out
    code, _, err = run(capsys, "patient", "find", "--tenant", labs[0], "--nir", p.nir, "--as", bio0)
    assert code != 0 and "crypto-shredded" in one_line_error(err)
    q = LabGenerator(labs[1], 5).patient(0).identity
    assert run(capsys, "patient", "find", "--tenant", labs[1], "--nir", q.nir, "--as", bio1)[0] == 0


def test_rotation_killed_mid_way_resumes(home, capsys, monkeypatch):
    """A real process killed during rotation: every row stays readable and the next run resumes."""
    run(capsys, "init")
    run(capsys, "generate", "--labs", "1", "--patients", "120", "--seed", "9")
    code, out, _ = run(capsys, "tenant", "list", "--json")
    lab = json.loads(out.strip().splitlines()[0])["id"]
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labvault.cli", "keys", "rotate", "--tenant", lab, "--batch-size", "5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rt = open_runtime(Settings.from_env())
        try:
            with rt.unit(Purpose.ADMINISTRATION) as u:
                rows = u.key_versions(lab)["rows_by_version"]
        finally:
            rt.close()
        if rows.get(2, 0) > 0:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert rows.get(2, 0) > 0
    code, out, _ = run(capsys, "keys", "rotate", "--tenant", lab)
    assert code == 0 and ("resumed" in out or "started" in out) and "done" in out
    code, out, _ = run(capsys, "keys", "status", "--tenant", lab)
    status = json.loads(out)
    assert set(status["rows_by_version"]) == {str(max(k["version"] for k in status["keys"]))}
    p = LabGenerator(lab, 9).patient(7).identity
    bio = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "bio@lab.invalid", "technician", lab)
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    assert run(capsys, "patient", "find", "--tenant", lab, "--nir", p.nir, "--as", bio)[0] == 0


def test_shred_asks_for_confirmation(home, capsys, monkeypatch):
    run(capsys, "init")
    run(
        capsys,
        "tenant",
        "add",
        "bio-x",
        "--name",
        "X",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
        "--synthetic",
    )  # a synthetic lab: no deletion instruction to check, the question is asked
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, err = run(capsys, "tenant", "shred", "bio-x")
    assert code != 0 and "Destroy every key" in out + err
    code, out, _ = run(capsys, "tenant", "list", "--json")
    assert '"active"' in out


def test_console_script_exit_code(home):
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "labvault"), "tenant", "list"], env=env, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.startswith("labvault: error:") and "Traceback" not in proc.stderr


def test_usage_failure_and_refusal_exit_with_distinct_codes(home, capsys):
    """2 is Typer's usage error; a Labvault error exits 1, a refusal 3 (README, "Exit codes")."""
    run(capsys, "init")
    run(
        capsys,
        "tenant",
        "add",
        "bio-lyon",
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    code, _, err = run(capsys, "patient", "find", "--tenant", "bio-lyon", "--no-such-option")
    assert code == 2 and "No such option" in err
    code, _, err = run(capsys, "patient", "find", "--tenant", "nope", "--nir", VALID_NIR)
    assert code == 1 and "unknown lab" in one_line_error(err)
    code, _, err = run(capsys, "patient", "find", "--tenant", "bio-lyon", "--nir", VALID_NIR)  # the vendor's operator
    assert code == 3 and "only through a grant the lab approved" in one_line_error(err)
