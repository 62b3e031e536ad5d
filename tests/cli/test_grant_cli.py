"""``labvault grant`` as support and the lab's admin run it: the scope is named (never the whole
lab), and the admin sees who asks, the ticket, the reason, the scope and the duration."""

from __future__ import annotations

import json

from tests.cli.helpers import PASSWORD, load_as_lab
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import totp_code

LAB = "bio-lyon"


def account(tenant: str, name: str, email: str, role: str) -> str:
    """The one place this module makes accounts: created, enrolled with MFA; returns a TOTP secret."""
    from labvault.access import Purpose
    from labvault.accounts import service
    from labvault.config import Settings
    from labvault.runtime import open_runtime

    rt = open_runtime(Settings.from_env())
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id=tenant, name=name, email=email, roles=[role])
        with rt.gateway.auth_unit(source_addr="test", user_agent="test") as u:
            secret = service.enrol_directly(u, email, PASSWORD)
    finally:
        rt.close()
    assert secret
    return secret


def as_(monkeypatch, secret: str) -> None:
    """The --as password and a fresh TOTP code (a code logs in once): call it before each call."""
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    monkeypatch.setenv("LABVAULT_AS_TOTP", totp_code(secret))


def test_grant_scope_named_and_shown_to_the_lab_admin(home, capsys, monkeypatch):
    """F2: `grant request` without patients or a period is refused with the reason; `grant show`
    gives the lab's admin the requester's name and e-mail, ticket, reason, scope and hours."""
    run(capsys, "init")
    assert (
        run(
            capsys,
            "tenant",
            "add",
            LAB,
            "--name",
            "Bio Lyon",
            "--finess",
            "690000123",
            "--retention",
            "results=10y",
            "--retention-ref",
            "CSP art. R.1112-7",
        )[0]
        == 0
    )
    load_as_lab(LAB, patients=2, seed=4)
    from labvault.synth import LabGenerator

    pid = LabGenerator(LAB, 4).patient(0).identity.patient_id
    sup = account("platform", "Nadia Benali", "nadia@vendor.invalid", "support")
    adm = account(LAB, "Paul Lefebvre", "paul@bio-lyon.invalid", "lab_admin")
    ask = [
        "grant",
        "request",
        "--tenant",
        LAB,
        "--ticket",
        "SUP-42",
        "--reason",
        "wrong unit shown",
        "--hours",
        "3",
        "--field",
        "identity",
        "--as",
        "nadia@vendor.invalid",
    ]
    as_(monkeypatch, sup)
    code, _, err = run(capsys, *ask)
    assert code == 1 and "never the whole lab" in one_line_error(err)
    as_(monkeypatch, sup)
    code, _, err = run(capsys, *ask[:-2], "--from", "2024-01-01", "--as", "nadia@vendor.invalid")
    assert code == 1 and "both ends" in one_line_error(err)
    as_(monkeypatch, sup)
    code, out, err = run(capsys, *ask, "--patient", pid, "--from", "2024-01-01", "--to", "2024-03-31")
    assert code == 0, err
    gid = json.loads(out)["grant_id"]
    as_(monkeypatch, adm)
    code, out, err = run(capsys, "grant", "show", gid, "--tenant", LAB, "--as", "paul@bio-lyon.invalid")
    assert code == 0, err
    g = json.loads(out)
    assert g["requested_by"]["name"] == "Nadia Benali" and g["requested_by"]["email"] == "nadia@vendor.invalid"
    assert (g["ticket"], g["reason"], g["hours"], g["state"]) == ("SUP-42", "wrong unit shown", 3, "pending")
    assert g["scope"]["patients"] == [pid] and g["scope"]["fields"] == ["identity"]
    assert g["scope"]["period"] == {"from": "2024-01-01", "to": "2024-03-31"}
    assert g["scope"]["sensitive_categories"] is False
