"""`labvault audit` as an operator and a lab would use it, on a real home."""

from __future__ import annotations

import json
import sqlite3

import pytest

from labvault.cli import main
from tests.cli.helpers import PASSWORD, enrolled_account, fresh_code


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("LABVAULT_HOME", str(h))
    monkeypatch.setenv("LABVAULT_PASSPHRASE", "audit cli passphrase")
    for var in ("LABVAULT_DATABASE_URL", "LABVAULT_KEY_PROVIDER", "LABVAULT_AS"):
        monkeypatch.delenv(var, raising=False)
    return h


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_checkpoint_verify_export_prove_and_tamper(home, capsys, tmp_path, monkeypatch):
    assert run(capsys, "init")[0] == 0
    assert run(capsys, "generate", "--labs", "1", "--patients", "10", "--seed", "2")[0] == 0
    lab = json.loads(run(capsys, "tenant", "list", "--json")[1].splitlines()[0])["id"]
    code, out, _ = run(capsys, "audit", "checkpoint")
    assert code == 0 and f"{lab}: checkpoint of" in out
    kept = tmp_path / "kept.jsonl"
    code, _, err = run(capsys, "audit", "export", "--tenant", lab, "--output", str(kept))
    assert code == 3 and "not allowed" in err  # the vendor's operator does not read a lab's trail
    dpo = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "dpo@lab.invalid", "lab_dpo", lab)
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    assert (
        run(capsys, "audit", "export", "--tenant", lab, "--output", str(kept), "--as", fresh_code(monkeypatch, dpo))[0]
        == 0
    )
    lines = [json.loads(x) for x in kept.read_text().splitlines()]
    assert lines[0]["type"] == "header" and any(x["type"] == "checkpoint" for x in lines)
    code, out, _ = run(capsys, "audit", "verify", "--tenant", lab, "--checkpoint", str(kept))
    assert code == 0 and "OK" in out
    run(capsys, "generate", "--labs", "1", "--patients", "12", "--seed", "3")  # fails (same lab ids), but is audited
    code, out, _ = run(capsys, "audit", "prove", "--checkpoint", str(kept))
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["verified"] is True
    # An administrator of the database file edits event 4 of the lab.
    with sqlite3.connect(home / "labvault.db") as db:
        db.execute("DROP TRIGGER audit_event_no_update")
        db.execute("UPDATE audit_event SET actor = 'nobody' WHERE tenant_id = ? AND seq = 4", (lab,))
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 1 and f"{lab}: TAMPERED at sequence number 4" in out and "platform: OK" in out
    code, out, _ = run(capsys, "audit", "prove", "--checkpoint", str(kept))
    assert code == 1 and "NOT an extension" in out


def test_audit_bad_input(home, capsys, tmp_path):
    run(capsys, "init")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    code, _, err = run(capsys, "audit", "verify", "--checkpoint", str(bad))
    assert code == 1 and "not a Labvault audit export" in err and "Traceback" not in err
    code, _, err = run(capsys, "audit", "verify", "--checkpoint", str(tmp_path / "missing.jsonl"))
    assert code == 1 and "cannot read" in err
    code, _, err = run(capsys, "audit", "search", "--tenant", "nope")
    assert code == 1 and "unknown lab" in err
