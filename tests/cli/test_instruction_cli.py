"""``labvault instruction``: a lab writes, signs (its own key), the platform verifies and receives;
each refusal says why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.instructions import signers
from labvault.runtime import open_runtime
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import first_lab_admin

AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"  # the age README's example recipient


def instruction(tenant: str = "bio-lyon", **over) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    body = {
        "id": "MIG-2026-01",
        "tenant": tenant,
        "kind": "migration_out",
        "purpose": "Move the 2019-2020 results to the lab's new LIS",
        "fields": {
            "identity": ["nir", "family_name", "given_names", "birth_date"],
            "result": ["code", "value_num", "unit"],
        },
        "selection": {"collected_from": "2019-01-01", "collected_to": "2020-12-31"},
        "destination": {"name": "NewLIS SAS", "country": "FR", "recipient_age_key": AGE},
        "expected_volume": 5000,
        "deletion_deadline": (now + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
        "valid_from": (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
        "valid_until": (now + timedelta(days=7)).isoformat().replace("+00:00", "Z"),
    }
    body.update(over)
    return body


def register(public_hex: str) -> str:
    """A lab admin of bio-lyon registers signer@bio-lyon (in process: MFA login is tested elsewhere)."""
    rt = open_runtime(Settings.from_env())
    try:
        admin = first_lab_admin(rt.gateway, rt.operator, "bio-lyon")  # invited by the platform
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:  # who adds the lab's biologist
            service.create_account(
                u, tenant_id="bio-lyon", name="Claire Moreau", email="signer@bio-lyon.invalid", roles=["biologist"]
            )
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            return signers.add_signer(u, "bio-lyon", email="signer@bio-lyon.invalid", public_key=public_hex).signer_id
    finally:
        rt.close()


def revoke(signer_id: str) -> None:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            [adm] = [a for a in service.list_accounts(u, "bio-lyon") if "lab_admin" in a["roles"]]
        admin = Principal(adm["account_id"], adm["name"], "bio-lyon", frozenset({"lab_admin"}))
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.revoke_signer(u, "bio-lyon", signer_id)
    finally:
        rt.close()


def test_write_sign_verify_receive_then_refusals(home, capsys, tmp_path):
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
    run(
        capsys,
        "tenant",
        "add",
        "bio-nord",
        "--name",
        "Bio Nord",
        "--finess",
        "590000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    code, out, _ = run(capsys, "instruction", "new", "--kind", "migration_out", "--tenant", "bio-lyon")
    assert code == 0 and "recipient_age_key" in out and "free_text" in out
    key = tmp_path / "signer.key"
    code, out, _ = run(capsys, "signer", "keygen", "--out", str(key))
    signer_id = register(out.strip().splitlines()[-1])

    draft = tmp_path / "mig.json"
    draft.write_text(json.dumps(instruction()))
    code, out, err = run(capsys, "instruction", "sign", str(draft), "--key", str(key))
    assert code == 0, err
    signed = tmp_path / "mig.signed.json"
    code, out, err = run(capsys, "instruction", "verify", str(signed), "--tenant", "bio-lyon")
    assert code == 0 and "valid: instruction MIG-2026-01" in out and signer_id in out, err
    assert run(capsys, "instruction", "receive", str(signed), "--tenant", "bio-lyon")[0] == 0
    code, out, _ = run(capsys, "instruction", "list", "--tenant", "bio-lyon")
    assert json.loads(out.strip())["id"] == "MIG-2026-01"
    code, out, _ = run(capsys, "instruction", "show", "MIG-2026-01", "--tenant", "bio-lyon")
    assert json.loads(out)["instruction"]["destination"]["name"] == "NewLIS SAS"
    code, _, err = run(capsys, "instruction", "receive", str(signed), "--tenant", "bio-lyon")
    assert code == 1 and "already received" in one_line_error(err)

    code, _, err = run(capsys, "instruction", "verify", str(signed), "--tenant", "bio-nord")
    assert code == 3 and "another lab" in one_line_error(err)
    doc = json.loads(signed.read_text())
    doc["instruction"]["expected_volume"] = 10_000_000  # asks for more after signing
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc))
    code, _, err = run(capsys, "instruction", "verify", str(tampered), "--tenant", "bio-lyon")
    assert code == 1 and "signature" in one_line_error(err)
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps({"instruction": doc["instruction"]}))
    code, _, err = run(capsys, "instruction", "verify", str(unsigned), "--tenant", "bio-lyon")
    assert code == 1 and "sign" in one_line_error(err)
    old = tmp_path / "old.json"
    old.write_text(
        json.dumps(
            instruction(
                id="OLD-1",
                valid_from="2020-01-01T00:00:00Z",
                valid_until="2020-02-01T00:00:00Z",
                deletion_deadline="2020-03-01T00:00:00Z",
            )
        )
    )
    assert run(capsys, "instruction", "sign", str(old), "--key", str(key))[0] == 0
    code, _, err = run(capsys, "instruction", "verify", str(tmp_path / "old.signed.json"), "--tenant", "bio-lyon")
    assert code == 3 and "expired" in one_line_error(err)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(instruction(destination={"name": "X", "country": "US", "recipient_age_key": AGE})))
    code, _, err = run(capsys, "instruction", "sign", str(bad), "--key", str(key))
    assert code == 1 and "transfer" in one_line_error(err)

    revoke(signer_id)
    code, _, err = run(capsys, "instruction", "verify", str(signed), "--tenant", "bio-lyon")
    assert code == 1 and "revoked" in one_line_error(err)
