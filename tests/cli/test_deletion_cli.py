"""``labvault tenant shred``, ``tenant end --delete``, ``generate`` and ``tenant add --synthetic`` as
the vendor's operator runs them: a real lab is deleted only under its signed deletion instruction
(written from ``instruction new --kind deletion``), re-checked when used; generated data goes only
into synthetic labs, which are marked as such in every listing."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from labvault.config import Settings
from labvault.runtime import open_runtime
from labvault.store import schema as t
from tests.cli.helpers import deletion_instruction, load_as_lab
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_instruction_cli import register, revoke

LAB = "bio-lyon"  # the lab test_instruction_cli.register makes signers for
RULE = ["--retention", "results=10y", "--retention-ref", "CSP art. R.1112-7"]


def add_lab(capsys, lab: str, finess: str, *, synthetic: bool = False, patients: int = 0) -> None:
    """The one place these tests make labs: real unless ``synthetic``; real ones filled by their own account."""
    code, out, err = run(
        capsys,
        "tenant",
        "add",
        lab,
        "--name",
        f"Lab {lab}",
        "--finess",
        finess,
        *RULE,
        *(["--synthetic"] if synthetic else []),
    )
    assert code == 0, err
    assert out.startswith("synthetic lab" if synthetic else "lab ")
    if patients:
        if synthetic:
            assert run(capsys, "generate", "--tenant", lab, "--patients", str(patients), "--seed", "5")[0] == 0
        else:
            load_as_lab(lab, patients=patients, seed=5)


def snapshot(lab: str) -> dict:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as conn:
            out = {
                name: conn.execute(
                    select(func.count())
                    .select_from(t.metadata.tables[name])
                    .where(t.metadata.tables[name].c.tenant_id == lab)
                ).scalar_one()
                for name in ("patient_identity", "result", "tenant_key")
            }
            out["status"] = conn.execute(select(t.tenant.c.status).where(t.tenant.c.tenant_id == lab)).scalar_one()
            out["denied"] = (
                conn.execute(
                    select(t.audit_event.c.action)
                    .where(t.audit_event.c.tenant_id == lab, t.audit_event.c.outcome == "denied")
                    .order_by(t.audit_event.c.seq)
                )
                .scalars()
                .all()
            )
        out["keys"] = rt.gateway.keys.has_scope(lab)
    finally:
        rt.close()
    return out


def signer_key(capsys, tmp_path) -> tuple[str, str]:
    key = tmp_path / "signer.key"
    code, out, _ = run(capsys, "signer", "keygen", "--out", str(key))
    assert code == 0
    return str(key), register(out.strip().splitlines()[-1])


def test_a_real_lab_is_not_deleted_without_its_instruction(home, capsys):
    """D2, A1, C3, G1: `tenant end --delete` and `tenant shred` on a real lab, no instruction:
    one-line refusal with the reason, a denied audit event, rows and keys still there."""
    run(capsys, "init")
    add_lab(capsys, LAB, "690000123", patients=5)
    before = snapshot(LAB)
    assert before["patient_identity"] == 5 and before["tenant_key"] == 2 and before["keys"]
    for args in (
        ["tenant", "end", LAB, "--delete", "--yes"],
        ["tenant", "shred", LAB, "--yes"],
        ["tenant", "shred", LAB],
        ["tenant", "end", LAB, "--delete"],
    ):
        code, _, err = run(capsys, *args)
        line = one_line_error(err)
        assert code == 3 and "not a synthetic lab" in line and "signed deletion instruction" in line
        assert "--instruction ID" in line
    after = snapshot(LAB)
    assert after["denied"] == ["tenant:end", "tenant:shred", "tenant:shred", "tenant:end"]
    assert {k: v for k, v in after.items() if k != "denied"} == {k: v for k, v in before.items() if k != "denied"}
    code, _, err = run(capsys, "tenant", "shred", LAB, "--instruction", "NOPE-1", "--yes")
    assert code == 1 and "no such instruction" in one_line_error(err)
    code, _, err = run(capsys, "tenant", "end", LAB, "--return", "R-1", "--instruction", "DEL-1")
    assert code == 1 and "--instruction goes with --delete" in one_line_error(err)
    assert snapshot(LAB)["patient_identity"] == 5


def test_deletion_under_the_labs_signed_instruction(home, capsys, tmp_path):
    """D2, A1: the lab fills `instruction new --kind deletion`, signs it, the platform receives it;
    `tenant end --delete --instruction` deletes the lab and its certificate names the instruction
    (id, SHA-256) and checks; a second lab is untouched."""
    run(capsys, "init")
    add_lab(capsys, LAB, "690000123", patients=4)
    add_lab(capsys, "bio-nord", "590000123", patients=3)
    key, signer_id = signer_key(capsys, tmp_path)
    iid = deletion_instruction(lambda *a: run(capsys, *a), tmp_path, key, LAB)
    code, out, err = run(capsys, "tenant", "end", LAB, "--delete", "--instruction", iid, "--yes")
    assert code == 0, err
    cert = json.loads(out.strip().splitlines()[-1])
    named = cert["body"]["instruction"]
    assert named["id"] == iid and named["signer_id"] == signer_id and len(named["sha256"]) == 64
    signed = json.loads((tmp_path / f"{iid}.signed.json").read_text())
    import hashlib

    from labvault.crypto.signing import canonical

    assert named["sha256"] == hashlib.sha256(canonical(signed["instruction"])).hexdigest()
    assert named["signature"] == signed["signature"] and cert["body"]["synthetic"] is False
    gone = snapshot(LAB)
    assert (gone["patient_identity"], gone["tenant_key"], gone["keys"], gone["status"]) == (0, 0, False, "shredded")
    assert snapshot("bio-nord")["patient_identity"] == 3 and snapshot("bio-nord")["keys"]
    code, out, err = run(capsys, "tenant", "certificate", LAB)
    shown = json.loads(out)
    assert code == 0 and shown["signature_check"] == "valid" and shown["body"]["instruction"]["id"] == iid, err


def test_shred_under_the_instruction_refused_when_its_signer_is_revoked(home, capsys, tmp_path):
    """A1, C3: re-checked at use: the signer revoked after the instruction was received: refused,
    nothing changed; a new instruction from a current signer then shreds the lab."""
    run(capsys, "init")
    add_lab(capsys, LAB, "690000123", patients=3)
    key, signer_id = signer_key(capsys, tmp_path)
    first = deletion_instruction(lambda *a: run(capsys, *a), tmp_path, key, LAB, instruction_id="DEL-OLD")
    revoke(signer_id)
    before = snapshot(LAB)
    for args in (
        ["tenant", "shred", LAB, "--instruction", first, "--yes"],
        ["tenant", "end", LAB, "--delete", "--instruction", first, "--yes"],
    ):
        code, _, err = run(capsys, *args)
        assert code == 1 and "revoked" in one_line_error(err)
    after = snapshot(LAB)
    assert after["denied"][-2:] == ["tenant:shred", "tenant:end"]
    assert {k: v for k, v in after.items() if k != "denied"} == {k: v for k, v in before.items() if k != "denied"}
    key2 = tmp_path / "signer2.key"
    code, out, _ = run(capsys, "signer", "keygen", "--out", str(key2))
    from labvault.access import Principal, Purpose
    from labvault.accounts import service
    from labvault.instructions import signers

    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            [adm] = [a for a in service.list_accounts(u, LAB) if "lab_admin" in a["roles"]]
        admin = Principal(adm["account_id"], adm["name"], LAB, frozenset({"lab_admin"}))
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.add_signer(u, LAB, email="admin@bio-lyon.invalid", public_key=out.strip().splitlines()[-1])
    finally:
        rt.close()
    second = deletion_instruction(lambda *a: run(capsys, *a), tmp_path, key2, LAB, instruction_id="DEL-NEW")
    code, out, err = run(capsys, "tenant", "shred", LAB, "--instruction", second, "--yes")
    assert code == 0, err
    record = json.loads(out[out.index("{") :])
    assert record["body"]["instruction"]["id"] == "DEL-NEW" and not snapshot(LAB)["keys"]


def test_generate_only_into_synthetic_labs_marked_everywhere(home, capsys):
    """A8, D2: `generate --tenant` fills a lab made with `tenant add --synthetic` and is refused on a
    real one (audited, nothing written); `generate` makes synthetic labs; `tenant list` (table and
    JSON) marks them; a synthetic lab is deleted without an instruction, its certificate says so."""
    run(capsys, "init")
    add_lab(capsys, LAB, "690000123")
    add_lab(capsys, "bio-test", "690000131", synthetic=True)
    code, _, err = run(capsys, "generate", "--tenant", LAB, "--patients", "3")
    assert code == 3 and "not a synthetic lab" in one_line_error(err)
    assert snapshot(LAB)["patient_identity"] == 0 and snapshot(LAB)["denied"] == ["tenant:generate"]
    code, out, err = run(capsys, "generate", "--tenant", "bio-test", "--patients", "3", "--seed", "2")
    assert code == 0 and "1 synthetic lab (bio-test)" in out, err
    assert snapshot("bio-test")["patient_identity"] == 3
    code, _, err = run(capsys, "generate", "--tenant", "nope", "--patients", "3")
    assert code == 1 and "unknown lab" in one_line_error(err)
    assert run(capsys, "generate", "--labs", "1", "--patients", "2")[0] == 0  # creates bio-rhone, synthetic
    code, out, _ = run(capsys, "tenant", "list", "--json")
    marks = {json.loads(x)["id"]: json.loads(x)["synthetic"] for x in out.splitlines() if x.strip()}
    assert marks == {LAB: False, "bio-test": True, "bio-rhone": True}
    code, out, _ = run(capsys, "tenant", "list")
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "synthetic" in rows["bio-test"] and "real" in rows[LAB] and "synthetic" not in rows[LAB]
    # generate's own lab ids: an existing real lab of that id is refused, not filled
    run(capsys, "tenant", "shred", "bio-rhone", "--yes")
    code, out, err = run(capsys, "tenant", "end", "bio-test", "--delete", "--yes")
    assert code == 0, err
    cert = json.loads(out.strip().splitlines()[-1])
    assert cert["body"]["synthetic"] is True and cert["body"]["instruction"] is None
    assert not snapshot("bio-test")["keys"] and snapshot(LAB)["keys"]


def test_generate_refuses_a_real_lab_with_one_of_its_ids(home, capsys):
    """A8: a real lab an operator named like a generated one (bio-rhone) is not filled by `generate`."""
    run(capsys, "init")
    add_lab(capsys, "bio-rhone", "690000123")
    code, _, err = run(capsys, "generate", "--labs", "2", "--patients", "2")
    assert code == 3 and "not a synthetic lab" in one_line_error(err)
    assert snapshot("bio-rhone")["patient_identity"] == 0
    code, out, _ = run(capsys, "tenant", "list", "--json")
    assert [json.loads(x)["id"] for x in out.splitlines() if x.strip()] == ["bio-rhone"]
