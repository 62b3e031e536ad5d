"""``labvault ingest`` and ``labvault quarantine`` as a lab uses them, and ``labvault mllp`` refusals."""

from __future__ import annotations

import json

import pytest

from labvault.access import Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.runtime import open_runtime
from tests.cli.helpers import PASSWORD, enrolled_account
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import first_lab_admin
from tests.interop.messages import NIR, oru


@pytest.fixture
def lab(home, capsys, monkeypatch, tmp_path):
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
    tech = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "tech@lab.invalid", "technician", "bio-lyon")
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    good = tmp_path / "good.hl7"
    good.write_bytes(oru("G1") + oru("G2"))
    mixed = tmp_path / "mixed.hl7"
    mixed.write_bytes(oru("M1") + oru("M2", nir=NIR[:-2] + "00"))
    return tech, good, mixed


def test_ingest_then_again(lab, capsys):
    tech, good, _ = lab
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", tech, "--json")
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    assert (s["accepted"], s["rejected"], s["results"], s["format"]) == (2, 0, 4, "hl7v2")
    code, out, _ = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", tech)
    assert code == 0 and "Ingest summary" in out
    assert "│ good.hl7" in out or "good.hl7" in out
    code, out, _ = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", tech, "--json")
    assert json.loads(out.strip())["duplicates"] == 2


def test_rejects_exit_1_and_land_in_the_quarantine(lab, capsys):
    tech, _, mixed = lab
    code, out, _ = run(capsys, "ingest", "--tenant", "bio-lyon", str(mixed), "--as", tech, "--json")
    assert code == 1
    s = json.loads(out.strip())
    assert (s["accepted"], s["rejected"]) == (1, 1) and "not a valid NIR" in s["reasons"][0]
    [qid] = s["quarantine_ids"]
    code, out, _ = run(capsys, "quarantine", "list", "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and qid in out and "held" in out
    code, out, _ = run(capsys, "quarantine", "show", qid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "MSH|" in out and "not a valid NIR" in out
    code, out, _ = run(capsys, "quarantine", "show", qid, "--tenant", "bio-lyon", "--raw", "--as", tech)
    assert code == 0 and out.startswith("MSH|")
    code, _, err = run(capsys, "quarantine", "replay", qid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 1 and "still refused" in err
    code, out, _ = run(capsys, "quarantine", "drop", qid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "dropped" in out
    code, out, _ = run(capsys, "quarantine", "list", "--tenant", "bio-lyon", "--as", tech)
    assert qid not in out and "nothing held" in out
    code, out, _ = run(capsys, "quarantine", "list", "--tenant", "bio-lyon", "--all", "--as", tech)
    assert qid in out and "dropped" in out
    code, _, err = run(capsys, "quarantine", "drop", qid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 1 and "already dropped" in one_line_error(err)


def test_replay_succeeds_in_test_mode(lab, capsys, monkeypatch, tmp_path):
    tech, _, _ = lab
    f = tmp_path / "test-ins.hl7"
    f.write_bytes(oru("T1", oid="1.2.250.1.213.1.4.10"))
    code, out, _ = run(capsys, "ingest", "--tenant", "bio-lyon", str(f), "--as", tech, "--json")
    assert code == 1 and "test INS" in out
    qid = json.loads(out.strip())["quarantine_ids"][0]
    monkeypatch.setenv("LABVAULT_TEST_MODE", "1")
    code, out, err = run(capsys, "quarantine", "replay", qid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "1 accepted" in out, err


@pytest.mark.parametrize(
    ("args", "expect", "exit_code"),
    [
        (["ingest", "--tenant", "nope", "{good}"], "cannot act on lab", 3),
        (["ingest", "--tenant", "bio-lyon", "{good}", "--group", "0"], "--group", 2),
        (["quarantine", "show", "nope", "--tenant", "bio-lyon"], "no such quarantined message", 1),
        (["quarantine", "show", "../x", "--tenant", "bio-lyon"], "quarantine id", 1),
    ],
)
def test_bad_input(lab, capsys, args, expect, exit_code):
    tech, good, _ = lab
    code, _, err = run(capsys, *[a.replace("{good}", str(good)) for a in args], "--as", tech)
    assert code == exit_code and expect in err and "Traceback" not in err


def test_vendor_operator_cannot_ingest_or_read_the_quarantine(lab, capsys):
    _, good, _ = lab
    code, _, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good))
    assert code == 3 and "vendor accounts do not write lab data" in one_line_error(err)
    code, _, err = run(capsys, "quarantine", "list", "--tenant", "bio-lyon")
    assert code == 3 and "grant" in one_line_error(err)


def test_service_token_feed(lab, capsys, tmp_path):
    _, good, _ = lab
    rt = open_runtime(Settings.from_env())
    try:
        admin = first_lab_admin(rt.gateway, rt.operator, "bio-lyon")  # the lab adds its feed and mints its tokens
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            service.create_account(
                u,
                tenant_id="bio-lyon",
                name="Analyser feed",
                email="feed@lab.invalid",
                roles=["service"],
                kind="service",
                purpose="ingest",
            )
            _, ingest_token = service.create_token(u, "feed@lab.invalid", scopes=["ingest"], days=1)
            _, read_token = service.create_token(u, "feed@lab.invalid", scopes=["read"], days=1)
    finally:
        rt.close()
    tok = tmp_path / "token"
    tok.write_text(ingest_token + "\n")
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--token-file", str(tok), "--json")
    assert code == 0 and json.loads(out.strip())["accepted"] == 2, err
    tok.write_text(read_token)
    code, _, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--token-file", str(tok))
    assert code == 3 and "'ingest' scope" in one_line_error(err)
    code, _, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--token-file", str(tmp_path / "none"))
    assert code == 1 and "token file" in one_line_error(err)


def test_mllp_refuses_plaintext_off_loopback(lab, capsys):
    """C2: TLS with client certificates, or plain TCP on loopback only, said in one line."""
    code, _, err = run(capsys, "mllp", "--tenant", "bio-lyon", "--host", "0.0.0.0")
    assert code == 1 and "needs TLS with client certificates" in one_line_error(err)
    code, _, err = run(capsys, "mllp", "--tenant", "bio-lyon")  # loopback too: TLS unless said otherwise
    assert code == 1 and "needs TLS with client certificates" in one_line_error(err)
    code, _, err = run(capsys, "mllp", "--tenant", "bio-lyon", "--host", "0.0.0.0", "--insecure-plaintext")
    assert code == 1 and "loopback address only" in one_line_error(err)
    code, _, err = run(capsys, "mllp", "--tenant", "bio-lyon", "--host", "10.1.2.3", "--insecure-plaintext")
    assert code == 1 and "loopback address only" in one_line_error(err)
    code, _, err = run(capsys, "mllp", "--tenant", "bio-lyon", "--tls-cert", "x.pem")
    assert code == 1 and "go together" in one_line_error(err)
    code, _, err = run(
        capsys, "mllp", "--tenant", "bio-lyon", "--tls-cert", "x.pem", "--tls-key", "x.key", "--token-file", "t"
    )
    assert code == 1 and "--insecure-plaintext only" in one_line_error(err)


def _stored(tenant: str = "bio-lyon") -> dict[str, int]:
    """What the lab holds: messages, results and quarantined messages (read by the platform)."""
    from sqlalchemy import func, select

    from labvault.store import schema as t

    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as c:
            return {
                name: c.execute(
                    select(func.count()).select_from(getattr(t, name)).where(getattr(t, name).c.tenant_id == tenant)
                ).scalar_one()
                for name in ("ingest_message", "result", "quarantine")
            }
    finally:
        rt.close()


@pytest.mark.parametrize("bad", ["missing.hl7", "folder", "notes.yaml"])
def test_a_missing_file_a_folder_or_no_lab_message_is_one_error_line_and_nothing_is_stored(lab, capsys, tmp_path, bad):
    """A new user's mistakes: a file that is not there, a folder, a file that is no lab message at
    all (an instruction's YAML): one error line (no table row), exit 1, nothing stored from the
    other files, nothing in the quarantine."""
    tech, good, _ = lab
    (tmp_path / "folder").mkdir()
    code, out, err = run(capsys, "instruction", "new", "--kind", "migration_in", "--tenant", "bio-lyon")
    assert code == 0, err
    (tmp_path / "notes.yaml").write_text(out)
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), str(tmp_path / bad), "--as", tech)
    said = {"missing.hl7": "no such file", "folder": "is a directory", "notes.yaml": "format not recognised"}[bad]
    assert code == 1 and said in one_line_error(err) and str(tmp_path / bad) in err
    assert "Ingest summary" not in out and "rejected" not in out
    assert _stored() == {"ingest_message": 0, "result": 0, "quarantine": 0}


def test_the_counts_printed_are_the_counts_written(lab, capsys, tmp_path):
    """Each count ``labvault ingest`` prints is what the store holds after it: messages accepted,
    results, refused messages (each in the quarantine, under the id printed), duplicates; none for
    an input that was never read."""
    tech, good, mixed = lab
    (tmp_path / "folder").mkdir()
    runs = [[good, mixed], [good, mixed, tmp_path / "folder"], [mixed, tmp_path / "missing.hl7"]]
    for files in runs:
        before = _stored()
        code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", *map(str, files), "--as", tech, "--json")
        printed = [json.loads(line) for line in out.splitlines() if line.strip()]
        after = _stored()
        assert sum(s["accepted"] for s in printed) == after["ingest_message"] - before["ingest_message"], (files, out)
        assert sum(s["results"] for s in printed) == after["result"] - before["result"], (files, out)
        assert sum(s["rejected"] for s in printed) == after["quarantine"] - before["quarantine"], (files, out)
        assert sum(len(s["quarantine_ids"]) for s in printed) == after["quarantine"] - before["quarantine"]
    assert printed == [] and code == 1 and "no such file" in one_line_error(err)
