"""Creating a named, enrolled lab account through the CLI, as a lab would."""

from __future__ import annotations

from collections.abc import Callable

PASSWORD = "a Long enough test passw0rd"


def enrolled_account(run: Callable[..., tuple[int, str, str]], monkeypatch, email: str, role: str, tenant: str) -> str:
    """``labvault user add`` then ``labvault user enrol``; returns the e-mail. ``run`` is the CLI."""
    code, out, err = run("user", "add", "--name", "Camille Durand", "--email", email, "--role", role,
                         "--tenant", tenant)
    assert code == 0, err
    lines = out.splitlines()
    token = lines[lines.index(next(x for x in lines if x.startswith("one-time enrolment token"))) + 1].strip()
    monkeypatch.setenv("LABVAULT_ENROL_PASSWORD", PASSWORD)
    code, out, err = run("user", "enrol", "--token", token, "--accept-commitment")
    assert code == 0, err
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
            u.ensure_account(tenant, account_id, "Lab Loader", f"loader@{tenant}.invalid", ["technician"],
                             commitment="test: the lab's own technician")
        who = Principal(account_id, "Lab Loader", tenant, frozenset({"technician"}))
        load_lab(rt.gateway, who, tenant, patients=patients, seed=seed)
    finally:
        rt.close()


def deletion_instruction(run: Callable[..., tuple[int, str, str]], tmp_path, key, tenant: str, *,
                         instruction_id: str = "DEL-1", receive: bool = True, **over) -> str:
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
    data.update({"id": instruction_id, "purpose": "End of contract: delete every record of the lab",
                 "deletion_deadline": ts(now + timedelta(days=30)), "valid_from": ts(now - timedelta(hours=1)),
                 "valid_until": ts(now + timedelta(days=7))})
    data.update(over)
    draft = tmp_path / f"{instruction_id}.json"
    draft.write_text(json.dumps(data))
    code, out, err = run("instruction", "sign", str(draft), "--key", str(key))
    assert code == 0, err
    if receive:
        code, out, err = run("instruction", "receive", str(tmp_path / f"{instruction_id}.signed.json"),
                             "--tenant", tenant)
        assert code == 0, err
    return instruction_id
