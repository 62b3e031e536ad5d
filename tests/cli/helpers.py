"""Creating named, enrolled lab accounts through the CLI, as a lab would: the platform invites the
lab's first lab_admin, who enrols (password, then TOTP in a second call, as a script would) and
adds the lab's other accounts with ``--as``."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

from tests.conftest import totp_code

PASSWORD = "a Long enough test passw0rd"


@dataclass(frozen=True)
class LabAdmin:
    email: str
    password: str
    totp: str  # the TOTP secret (lab_admin enrols MFA)


_ADMINS: dict[tuple[str, str], LabAdmin] = {}  # (LABVAULT_HOME, lab) -> its lab_admin
SECRETS: dict[str, str] = {}  # e-mail -> the TOTP secret of an account whose role needs one (lab_dpo)


def _token(out: str) -> str:
    lines = out.splitlines()
    return lines[lines.index(next(x for x in lines if x.startswith("one-time enrolment token"))) + 1].strip()


def _enrol(run: Callable[..., tuple[int, str, str]], token: str) -> str | None:
    """``labvault user enrol`` without a terminal: one call, or two when a TOTP is needed (the
    second with --totp). Returns the TOTP secret, if any."""
    saved = os.environ.get("LABVAULT_ENROL_PASSWORD")
    os.environ["LABVAULT_ENROL_PASSWORD"] = PASSWORD
    try:
        code, out, err = run("user", "enrol", "--token", token, "--accept-commitment")
    finally:
        if saved is None:
            os.environ.pop("LABVAULT_ENROL_PASSWORD", None)
        else:
            os.environ["LABVAULT_ENROL_PASSWORD"] = saved
    assert code == 0, err
    uri = next((x for x in out.splitlines() if x.startswith("otpauth://")), None)
    if uri is None:
        return None
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    code, out, err = run("user", "enrol", "--token", token, "--totp", totp_code(secret))
    assert code == 0 and "enrolment complete" in out, err
    return secret


def as_admin(run: Callable[..., tuple[int, str, str]], admin: LabAdmin, *args: str) -> tuple[int, str, str]:
    """Run a command as the lab's lab_admin: ``--as`` with its password and a fresh TOTP code."""
    keep = {k: os.environ.get(k) for k in ("LABVAULT_AS_PASSWORD", "LABVAULT_AS_TOTP")}
    os.environ["LABVAULT_AS_PASSWORD"] = admin.password
    os.environ["LABVAULT_AS_TOTP"] = totp_code(admin.totp)
    try:
        return run(*args, "--as", admin.email)
    finally:
        for k, v in keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lab_admin(run: Callable[..., tuple[int, str, str]], tenant: str, email: str | None = None) -> LabAdmin:
    """The lab's lab_admin: invited by the platform (the CLI operator) the first time, enrolled."""
    key = (os.environ.get("LABVAULT_HOME", ""), tenant)
    if key not in _ADMINS:
        email = email or f"admin@{tenant}.invalid"
        code, out, err = run(
            "user", "add", "--name", "Paul Lefebvre", "--email", email, "--role", "lab_admin", "--tenant", tenant
        )
        assert code == 0, err
        secret = _enrol(run, _token(out))
        assert secret is not None
        _ADMINS[key] = LabAdmin(email, PASSWORD, secret)
    return _ADMINS[key]


def enrolled_account(run: Callable[..., tuple[int, str, str]], monkeypatch, email: str, role: str, tenant: str) -> str:
    """The lab's lab_admin adds the account (``labvault user add --as``), the person enrols
    (``labvault user enrol``); returns the e-mail. ``run`` is the CLI."""
    admin = lab_admin(run, tenant)
    code, out, err = as_admin(
        run, admin, "user", "add", "--name", "Camille Durand", "--email", email, "--role", role, "--tenant", tenant
    )
    assert code == 0, err
    secret = _enrol(run, _token(out))
    if secret is not None:
        SECRETS[email] = secret
    monkeypatch.setenv("LABVAULT_ENROL_PASSWORD", PASSWORD)
    return email


def fresh_code(monkeypatch, email: str) -> str:
    """Before a ``--as`` of an account with a second factor (lab_dpo): a TOTP code of a step it has
    not used, in LABVAULT_AS_TOTP (codes are single-use). Returns the e-mail."""
    if email in SECRETS:
        monkeypatch.setenv("LABVAULT_AS_TOTP", totp_code(SECRETS[email]))
    return email


def load_as_lab(tenant: str, *, patients: int, seed: int) -> None:
    """Fill a real lab with generated patients as one of the lab's own accounts (vendor accounts
    write generated data into synthetic labs only). In process, on the home of the environment."""
    from labvault.access import Principal, Purpose
    from labvault.config import Settings
    from labvault.runtime import open_runtime
    from labvault.synth.load import load_lab

    rt = open_runtime(Settings.from_env())
    try:
        account_id = f"loader-{tenant}"[:64]
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.ensure_account(
                tenant,
                account_id,
                "Lab Loader",
                f"loader@{tenant}.invalid",
                ["technician"],
                commitment="test: the lab's own technician",
            )
        who = Principal(account_id, "Lab Loader", tenant, frozenset({"technician"}))
        load_lab(rt.gateway, who, tenant, patients=patients, seed=seed)
    finally:
        rt.close()


def deletion_instruction(
    run: Callable[..., tuple[int, str, str]],
    tmp_path,
    key,
    tenant: str,
    *,
    instruction_id: str = "DEL-1",
    receive: bool = True,
    **over,
) -> str:
    """The lab's signed instruction to delete the whole lab (kind deletion, scope lab), written from
    ``labvault instruction new --kind deletion``, signed with ``key`` ('labvault signer keygen', a
    registered signer of the lab) and received for the lab. Returns its id."""
    import json
    from datetime import UTC, datetime, timedelta

    import yaml

    code, out, err = run("instruction", "new", "--kind", "deletion", "--tenant", tenant)
    assert code == 0, err
    data = yaml.safe_load(out)
    now = datetime.now(UTC).replace(microsecond=0)
    ts = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    data.update(
        {
            "id": instruction_id,
            "purpose": "End of contract: delete every record of the lab",
            "deletion_deadline": ts(now + timedelta(days=30)),
            "valid_from": ts(now - timedelta(hours=1)),
            "valid_until": ts(now + timedelta(days=7)),
        }
    )
    data.update(over)
    draft = tmp_path / f"{instruction_id}.json"
    draft.write_text(json.dumps(data))
    code, out, err = run("instruction", "sign", str(draft), "--key", str(key))
    assert code == 0, err
    if receive:
        code, out, err = run(
            "instruction", "receive", str(tmp_path / f"{instruction_id}.signed.json"), "--tenant", tenant
        )
        assert code == 0, err
    return instruction_id
