"""``labvault migrate`` and ``labvault export`` as a new user would run them: the lab signs, the
operator plans (asking for everything first: refused), two people approve, the run is killed
with ``kill -9`` mid-package and run again, the recipient opens the package with the ``age`` CLI
and acknowledges it, the receipt purges it, the certificate verifies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from pyrage import x25519

from tests.cli.helpers import PASSWORD, deletion_instruction, load_as_lab
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_instruction_cli import instruction, register
from tests.conftest import need, totp_code, totp_real_code

FIELDS = {
    "identity": ["nir", "family_name", "given_names", "birth_date"],
    "request": ["requested_at"],
    "specimen": ["collected_at"],
    "result": ["code", "code_system", "label", "value_num", "unit", "flag"],
}


def _lab(capsys, tmp_path, monkeypatch, *, kind: str = "migration_out", patients: int = 60, **over):
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
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
        "CSP art. R6211-24",
    )
    assert code == 0, err
    load_as_lab("bio-lyon", patients=patients, seed=11)  # a real lab: its own account writes
    key = tmp_path / "signer.key"
    code, out, _ = run(capsys, "signer", "keygen", "--out", str(key))
    register(out.strip().splitlines()[-1])
    ident = x25519.Identity.generate()
    (tmp_path / "newlis.key").write_text(f"# recipient\n{ident}\n")
    body = instruction(
        kind=kind,
        fields=FIELDS,
        expected_volume=over.pop("expected_volume", 100_000),
        destination={"name": "NewLIS SAS", "country": "FR", "recipient_age_key": str(ident.to_public())},
        **over,
    )
    draft = tmp_path / "mig.json"
    draft.write_text(json.dumps(body))
    assert run(capsys, "instruction", "sign", str(draft), "--key", str(key))[0] == 0
    code, _, err = run(capsys, "instruction", "receive", str(tmp_path / "mig.signed.json"), "--tenant", "bio-lyon")
    assert code == 0, err
    return key, operator(monkeypatch)


def operator(monkeypatch) -> str:
    """A named, enrolled vendor operator with MFA; its password and a current TOTP code in the env."""
    from labvault.access import Purpose
    from labvault.accounts import service
    from labvault.config import Settings
    from labvault.crypto.keys import PLATFORM
    from labvault.runtime import open_runtime

    rt = open_runtime(Settings.from_env())
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            service.create_account(
                u, tenant_id=PLATFORM, name="Sami Haddad", email="op@vendor.invalid", roles=["operator"]
            )
        with rt.gateway.auth_unit(source_addr="test", user_agent="test") as u:
            secret = service.enrol_directly(u, "op@vendor.invalid", PASSWORD)
    finally:
        rt.close()
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    assert secret, "vendor accounts enrol with MFA"
    monkeypatch.setenv("LABVAULT_AS_TOTP", totp_code(secret))
    monkeypatch.setattr(sys.modules[__name__], "TOTP", secret)
    return "op@vendor.invalid"


TOTP = None  # the operator's TOTP secret


def lv(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI, with a fresh TOTP code for the operator (a code is accepted once)."""
    if TOTP is not None:
        os.environ["LABVAULT_AS_TOTP"] = totp_code(TOTP)
    return run(capsys, *args)


def _plan(capsys, op: str) -> dict:
    code, out, err = lv(
        capsys, "migrate", "plan", "--tenant", "bio-lyon", "--instruction", "MIG-2026-01", "--as", op, "--json"
    )
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _decrypt(tmp_path: Path, package: Path) -> list[dict]:
    need(shutil.which("age") is not None, "the age CLI is missing: apt-get install age")
    out = subprocess.run(
        ["age", "-d", "-i", str(tmp_path / "newlis.key"), str(package)], capture_output=True, check=True
    ).stdout
    return [json.loads(x) for x in out.splitlines()]


def test_migration_end_to_end_with_a_kill_during_the_run(home, capsys, tmp_path, monkeypatch):
    key, op = _lab(capsys, tmp_path, monkeypatch, patients=2500)

    # The operator asks for everything first: one line naming the excess; exit non-zero.
    code, _, err = lv(
        capsys,
        "migrate",
        "plan",
        "--tenant",
        "bio-lyon",
        "--instruction",
        "MIG-2026-01",
        "--all-fields",
        "--from",
        "2015-01-01",
        "--as",
        op,
    )
    line = one_line_error(err)
    assert code != 0 and "beyond instruction 'MIG-2026-01'" in line and "free_text.result.comment" in line
    # ... and without an instruction there is no export at all.
    code, _, err = lv(capsys, "export", "--tenant", "bio-lyon", "--as", op)
    assert code != 0 and "--instruction" in err

    job = _plan(capsys, op)
    mid, planned = job["migration"], job["plan"]["counts"]["results"]
    assert planned > 20_000 and job["plan"]["fields"]["result"] == FIELDS["result"]
    code, _, err = lv(capsys, "migrate", "run", mid, "--tenant", "bio-lyon", "--as", op)
    assert code != 0 and "needs both approvals" in one_line_error(err)
    assert lv(capsys, "migrate", "approve", mid, "--tenant", "bio-lyon", "--as", op)[0] == 0
    code, out, err = run(capsys, "migrate", "approve", mid, "--tenant", "bio-lyon", "--signer-key", str(key))
    assert code == 0 and "state approved" in out, err

    # kill -9 in the middle of writing the package.
    env = {**os.environ, "LABVAULT_AS_PASSWORD": PASSWORD, "LABVAULT_AS_TOTP": totp_real_code(TOTP)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "labvault.cli", "migrate", "run", mid, "--tenant", "bio-lyon", "--as", op],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    for raw in proc.stderr:
        if b"results written" in raw:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    pkg_dir = home / "packages" / "bio-lyon" / mid
    assert not pkg_dir.exists() or sorted(p.name for p in pkg_dir.iterdir()) == []  # nothing partial, nothing named
    code, out, _ = lv(capsys, "migrate", "status", mid, "--tenant", "bio-lyon", "--as", op, "--json")
    assert json.loads(out)["state"] == "running"

    # Run again: a clean new attempt.
    code, out, err = lv(capsys, "migrate", "run", mid, "--tenant", "bio-lyon", "--as", op)
    assert code == 0, err
    assert lv(capsys, "migrate", "verify", mid, "--tenant", "bio-lyon", "--as", op)[0] == 0
    package = pkg_dir / "package.ndjson.age"
    manifest = json.loads((pkg_dir / "manifest.json").read_text())["manifest"]
    recs = _decrypt(tmp_path, package)[1:]
    results = [r for r in recs if r["record"] == "result"]
    assert len(results) == planned == manifest["counts"]["records"]["result"]
    assert len({r["id"] for r in results}) == planned  # no duplicate after the restart
    assert all(set(r) <= {"record", "id", "request", "specimen", "patient", *FIELDS["result"]} for r in results)

    # The recipient acknowledges; the receipt purges; the certificate verifies.
    receipt = tmp_path / "receipt.json"
    code, out, err = run(
        capsys,
        "migrate",
        "acknowledge",
        str(package),
        "--identity",
        str(tmp_path / "newlis.key"),
        "--out",
        str(receipt),
    )
    assert code == 0, err
    code, out, err = lv(capsys, "migrate", "receipt", mid, str(receipt), "--tenant", "bio-lyon", "--as", op)
    assert code == 0 and "state purged" in out, err
    assert not package.exists()
    assert (
        subprocess.run(["age", "-d", "-i", str(tmp_path / "newlis.key"), str(package)], capture_output=True).returncode
        != 0
    )
    code, out, err = lv(capsys, "migrate", "close", mid, "--tenant", "bio-lyon", "--as", op)
    assert code == 0, err
    code, out, err = run(capsys, "migrate", "check-certificate", str(pkg_dir / "certificate.json"))
    assert code == 0 and "signature valid" in out and "(receipt)" in out, err
    cert = json.loads((pkg_dir / "certificate.json").read_text())
    cert["body"]["purged_at"] = "2030-01-01T00:00:00+00:00"
    (tmp_path / "forged.json").write_text(json.dumps(cert))
    code, _, err = run(capsys, "migrate", "check-certificate", str(tmp_path / "forged.json"))
    assert code != 0 and "signature" in one_line_error(err)


def test_export_under_an_export_instruction(home, capsys, tmp_path, monkeypatch):
    _, op = _lab(capsys, tmp_path, monkeypatch, kind="export", patients=30)
    code, out, err = lv(capsys, "export", "--tenant", "bio-lyon", "--instruction", "MIG-2026-01", "--as", op, "--json")
    assert code == 0, err
    job = json.loads(out.strip().splitlines()[-1])
    assert job["state"] == "verified" and {a["side"] for a in job["approvals"]} == {"lab", "operator"}
    pkg = home / "packages" / "bio-lyon" / job["migration"] / "package.ndjson.age"
    recs = _decrypt(tmp_path, pkg)
    assert sum(r["record"] == "result" for r in recs) == job["plan"]["counts"]["results"]
    # A migration_out instruction is not an export: refused with the reason.
    code, _, err = lv(capsys, "migrate", "plan", "--tenant", "bio-lyon", "--instruction", "MIG-2026-01", "--as", op)
    assert code != 0 and "kind export is not one of migration_out" in one_line_error(err)


def test_an_export_holds_no_field_and_no_link_outside_its_instruction(home, capsys, tmp_path, monkeypatch):
    """A2, A4, B4: ``labvault export --instruction`` under an instruction naming no prescriber field
    (the lab's requests have prescribers): the package, opened with the age CLI, holds no
    prescriber link and no prescriber record, no free text, nothing but the instruction's fields
    and links between the record types it names; the manifest counts those links."""
    _, op = _lab(capsys, tmp_path, monkeypatch, kind="export", patients=30)
    code, out, err = lv(capsys, "export", "--tenant", "bio-lyon", "--instruction", "MIG-2026-01", "--as", op, "--json")
    assert code == 0, err
    job = json.loads(out.strip().splitlines()[-1])
    assert job["plan"]["counts"]["prescribers"] > 0  # the selected requests do have prescribers
    pkg = home / "packages" / "bio-lyon" / job["migration"] / "package.ndjson.age"
    header, *recs = _decrypt(tmp_path, pkg)
    links = {
        "identity": set(),
        "request": {"patient"},
        "specimen": {"request"},
        "result": {"request", "specimen", "patient"},
    }
    assert {r["record"] for r in recs} == set(FIELDS)
    outside = {
        (r["record"], k) for r in recs for k in set(r) - {"record", "id", *FIELDS[r["record"]], *links[r["record"]]}
    }
    assert outside == set()
    manifest = json.loads((pkg.parent / "manifest.json").read_text())["manifest"]
    assert (
        header["links"]
        == manifest["links"]
        == {t: sorted(v, key=["request", "specimen", "patient"].index) for t, v in links.items()}
    )
    n_req = sum(r["record"] == "request" for r in recs)
    assert manifest["counts"]["links"]["request"] == {"patient": n_req}
    assert manifest["counts"]["links"]["result"]["request"] == sum(r["record"] == "result" for r in recs)


def test_end_of_contract_by_return_then_deletion(home, capsys, tmp_path, monkeypatch):
    """D2, A1: a return, then the lab's signed deletion instruction; without it nothing is deleted."""
    key, op = _lab(
        capsys,
        tmp_path,
        monkeypatch,
        kind="return",
        patients=25,
        selection={
            "collected_from": "2010-01-01",
            "collected_to": "2025-12-31",
            "sensitive": ["hiv", "viral_hepatitis", "genetics", "pregnancy", "oncology"],
        },
    )
    code, out, err = lv(capsys, "tenant", "end", "bio-lyon", "--return", "MIG-2026-01", "--as", op)
    assert code == 0, err
    job = json.loads(out.strip().splitlines()[-1])
    assert job["state"] == "verified" and job["results_left_out"] == 0 and job["results_in_lab"] > 0
    pkg = home / "packages" / "bio-lyon" / job["migration"] / "package.ndjson.age"
    assert sum(r["record"] == "result" for r in _decrypt(tmp_path, pkg)) == job["results_in_lab"]
    receipt = tmp_path / "receipt.json"
    assert (
        run(
            capsys,
            "migrate",
            "acknowledge",
            str(pkg),
            "--identity",
            str(tmp_path / "newlis.key"),
            "--out",
            str(receipt),
        )[0]
        == 0
    )
    assert lv(capsys, "migrate", "receipt", job["migration"], str(receipt), "--tenant", "bio-lyon", "--as", op)[0] == 0
    code, _, err = run(capsys, "tenant", "end", "bio-lyon", "--delete", "--yes")  # the return is no deletion
    assert code == 3 and "signed deletion instruction" in one_line_error(err)
    code, _, err = run(capsys, "tenant", "end", "bio-lyon", "--delete", "--instruction", "MIG-2026-01", "--yes")
    assert code == 3 and "kind return" in one_line_error(err)
    deletion = deletion_instruction(lambda *a: run(capsys, *a), tmp_path, key, "bio-lyon")
    code, out, err = run(capsys, "tenant", "end", "bio-lyon", "--delete", "--instruction", deletion, "--yes")
    assert code == 0, err
    cert = json.loads(out.strip().splitlines()[-1])
    assert cert["body"]["kind"] == "tenant-end" and not pkg.exists()
    assert cert["body"]["instruction"]["id"] == deletion and cert["body"]["synthetic"] is False
    code, out, _ = run(capsys, "tenant", "certificate", "bio-lyon")
    assert code == 0


def test_a_return_needs_a_return_instruction(home, capsys, tmp_path, monkeypatch):
    _, op = _lab(capsys, tmp_path, monkeypatch, kind="migration_out", patients=5)
    code, _, err = lv(capsys, "tenant", "end", "bio-lyon", "--return", "MIG-2026-01", "--as", op)
    assert code != 0 and "kind migration_out is not one of return" in one_line_error(err)
