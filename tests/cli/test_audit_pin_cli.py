"""G4, G6: the audit forgery of an administrator holding the database file, played on a real
home with the CLI: `labvault audit verify` reports it alone; a truncated tail with every
checkpoint deleted is reported with the checkpoints the lab pulled (`audit checkpoints`)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from hashlib import sha256

import pytest

from labvault.audit import chain, merkle
from labvault.crypto.signing import Signer
from tests.cli.helpers import PASSWORD, enrolled_account, fresh_code
from tests.cli.test_audit_cli import home, run  # noqa: F401  (the same home fixture and runner)

LAB = "bio-pin"


def add_lab(capsys, lab: str = LAB) -> str:
    """`labvault tenant add` (one place to adapt how a test lab is made); returns its output."""
    code, out, err = run(
        capsys,
        "tenant",
        "add",
        lab,
        "--name",
        "Bio Pin",
        "--finess",
        "690000017",
        "--retention",
        "results=10y",
        "--retention-ref",
        "CSP R.1112-7 (test)",
    )
    assert code == 0, err
    return out


@pytest.fixture
def lab(home, capsys, tmp_path, monkeypatch):
    """A lab with a pinned platform key, events, two checkpoints, and its DPO's pulled file."""
    code, out, _ = run(capsys, "init")
    assert code == 0
    signing = re.search(r"ed25519:([0-9a-f]{64})", out).group(1)
    fp = sha256(bytes.fromhex(signing)).hexdigest()
    assert fp in out.replace("\n", "")  # printed at init...
    assert fp in add_lab(capsys).replace("\n", "")  # ...and given to the lab
    for _ in range(5):
        assert run(capsys, "audit", "verify", "--tenant", LAB)[0] == 0
    backup = tmp_path / "pin-backup.json"  # a copy of the home's pin taken before any checkpoint
    shutil.copy(home / "platform-pin.json", backup)
    assert run(capsys, "audit", "checkpoint", "--tenant", LAB)[0] == 0
    for _ in range(4):
        assert run(capsys, "audit", "verify", "--tenant", LAB)[0] == 0
    assert run(capsys, "audit", "checkpoint", "--tenant", LAB)[0] == 0
    dpo = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "dpo@bio-pin.invalid", "lab_dpo", LAB)
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    pulled = tmp_path / "lab-checkpoints.jsonl"
    code, out, err = run(
        capsys, "audit", "checkpoints", "--tenant", LAB, "--output", str(pulled), "--as", fresh_code(monkeypatch, dpo)
    )
    assert code == 0 and "2 new signed checkpoints" in out, err
    monkeypatch.delenv("LABVAULT_AS_PASSWORD")
    return {"pulled": pulled, "dpo": dpo, "fingerprint": fp, "pin_backup": backup}


def db(home):
    conn = sqlite3.connect(home / "labvault.db")
    for table in ("audit_event", "audit_checkpoint"):
        for verb in ("update", "delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    return conn


def test_forgery_resigned_with_another_key_reported_by_verify_alone(home, lab, capsys):
    """G4: triggers dropped, an event deleted, the chain re-hashed, the checkpoints re-signed with
    a key of the administrator's own, stored in the row."""
    with db(home) as conn:
        cols = ", ".join(chain.FIELDS)
        rows = conn.execute(f"SELECT {cols}, hash FROM audit_event WHERE tenant_id = ? ORDER BY seq", (LAB,)).fetchall()
        sizes = [
            r[0] for r in conn.execute("SELECT size FROM audit_checkpoint WHERE tenant_id = ? ORDER BY size", (LAB,))
        ]
        conn.execute("DELETE FROM audit_event WHERE tenant_id = ? AND seq = 3", (LAB,))
        hashes = [r[-1] for r in rows[:2]]
        for r in rows[3:]:
            ev = dict(zip(chain.FIELDS, r[:-1], strict=True))
            ev["seq"] -= 1
            digest = chain.event_hash(hashes[-1], ev)
            conn.execute(
                "UPDATE audit_event SET seq = ?, prev_hash = ?, hash = ? WHERE tenant_id = ? AND seq = ?",
                (ev["seq"], hashes[-1], digest, LAB, ev["seq"] + 1),
            )
            hashes.append(digest)
        conn.execute("DELETE FROM audit_checkpoint WHERE tenant_id = ?", (LAB,))
        priv, pub = Signer.generate()
        prev = None
        for i, size in enumerate(sizes, 1):
            root = merkle.root([merkle.leaf_hash(h) for h in hashes[: size - 1]]).hex()
            body = {
                "log": "labvault-audit/v1",
                "tenant": LAB,
                "index": i,
                "size": size - 1,
                "root": root,
                "head": hashes[size - 2].hex(),
                "at": "2026-01-01T00:00:00+00:00",
                "key": sha256(pub).hexdigest(),
                "prev": prev,
            }
            prev = {"index": i, "size": size - 1, "root": root}
            conn.execute(
                "INSERT INTO audit_checkpoint VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    LAB,
                    size - 1,
                    bytes.fromhex(root),
                    hashes[size - 2],
                    "2026-01-01 00:00:00.000000",
                    json.dumps(body, sort_keys=True),
                    Signer(priv).sign(body),
                    pub.hex(),
                ),
            )
    code, out, _ = run(capsys, "audit", "verify", "--tenant", LAB)
    assert code == 1 and f"{LAB}: TAMPERED at sequence number" in out
    assert "not signed by the platform's pinned key" in out and "pinned outside the database" in out


def test_deleting_every_checkpoint_reported_by_verify_alone(home, lab, capsys):
    """G4."""
    with db(home) as conn:
        conn.execute("DELETE FROM audit_checkpoint WHERE tenant_id = ?", (LAB,))
    code, out, _ = run(capsys, "audit", "verify", "--tenant", LAB)
    assert code == 1 and f"{LAB}: TAMPERED at sequence number 1: signed checkpoint 2" in out and "missing" in out


def test_truncated_tail_reported_with_the_labs_pulled_file(home, lab, capsys):
    """G4, G6: the tail deleted, every checkpoint deleted, the pin put back from a copy taken
    before (no key needed): verify alone sees a consistent log; the lab's pulled file does not."""
    pulled = lab["pulled"]
    last = [json.loads(x) for x in pulled.read_text().splitlines()][-1]["body"]
    with db(home) as conn:
        conn.execute("DELETE FROM audit_checkpoint WHERE tenant_id = ?", (LAB,))
        conn.execute("DELETE FROM audit_event WHERE tenant_id = ? AND seq > ?", (LAB, last["size"] - 3))
    shutil.copy(lab["pin_backup"], home / "platform-pin.json")
    code, out, _ = run(capsys, "audit", "verify", "--tenant", LAB, "--checkpoint", str(pulled))
    assert code == 1 and f"{LAB}: TAMPERED at sequence number {last['size'] - 2}" in out and "truncated" in out
    assert run(capsys, "audit", "verify", "--tenant", LAB)[0] == 0  # what the vendor holds looks intact


def test_pulled_file_appends_and_vendor_is_refused(home, lab, capsys, monkeypatch):
    """G4, G6: the lab's cron pulls again: only new checkpoints are appended; the vendor's own
    operator cannot pull (refused, audited, the file untouched)."""
    pulled = lab["pulled"]
    before = pulled.read_bytes()
    code, _, err = run(capsys, "audit", "checkpoints", "--tenant", LAB, "--output", str(pulled))
    assert code == 3 and "not allowed" in err and pulled.read_bytes() == before
    assert run(capsys, "audit", "checkpoint", "--tenant", LAB)[0] == 0
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    code, out, _ = run(
        capsys,
        "audit",
        "checkpoints",
        "--tenant",
        LAB,
        "--output",
        str(pulled),
        "--as",
        fresh_code(monkeypatch, lab["dpo"]),
    )
    assert code == 0 and "1 new signed checkpoints" in out
    lines = [json.loads(x) for x in pulled.read_text().splitlines()]
    assert [x["body"]["index"] for x in lines if x["type"] == "checkpoint"] == [1, 2, 3]
    assert all(x["body"]["key"] == lab["fingerprint"] for x in lines if x["type"] == "checkpoint")
    code, out, _ = run(capsys, "audit", "verify", "--tenant", LAB, "--checkpoint", str(pulled))
    assert code == 0 and "OK" in out
    (pulled.parent / "junk.jsonl").write_text("[1]\n")
    code, _, err = run(
        capsys,
        "audit",
        "checkpoints",
        "--tenant",
        LAB,
        "--as",
        fresh_code(monkeypatch, lab["dpo"]),
        "--output",
        str(pulled.parent / "junk.jsonl"),
    )
    assert code == 1 and err.startswith("labvault: error:") and "Traceback" not in err
