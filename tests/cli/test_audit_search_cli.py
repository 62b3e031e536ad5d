"""`labvault audit search --actor EMAIL`: the person is named by e-mail (resolved to the account
through the lab's accounts), each line names its actor; an unknown e-mail is a one-line error."""

from __future__ import annotations

import json

import pytest

from labvault.cli import main
from tests.cli.helpers import PASSWORD, as_admin, enrolled_account, fresh_code, lab_admin


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("LABVAULT_HOME", str(h))
    monkeypatch.setenv("LABVAULT_PASSPHRASE", "audit search cli passphrase")
    for var in ("LABVAULT_DATABASE_URL", "LABVAULT_KEY_PROVIDER", "LABVAULT_AS"):
        monkeypatch.delenv(var, raising=False)
    return h


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_by_actor_email_prints_names(home, capsys, monkeypatch):
    """G3, G5: the lab's DPO searches the trail by a person's e-mail: only that person's events,
    each line with the actor's name and e-mail; an unknown e-mail fails in one line (exit 1)."""
    cli = lambda *a: run(capsys, *a)  # noqa: E731
    assert cli("init")[0] == 0
    assert cli("generate", "--labs", "1", "--patients", "3", "--seed", "2")[0] == 0
    lab = json.loads(cli("tenant", "list", "--json")[1].splitlines()[0])["id"]
    admin = lab_admin(cli, lab, email="admin@search.invalid")
    dpo = enrolled_account(cli, monkeypatch, "dpo@search.invalid", "lab_dpo", lab)
    assert as_admin(cli, admin, "user", "list", "--tenant", lab)[0] == 0  # an event of the admin
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)

    code, out, err = cli(
        "audit", "search", "--tenant", lab, "--actor", admin.email, "--as", fresh_code(monkeypatch, dpo)
    )
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines and {x["actor_email"] for x in lines} == {admin.email}
    assert {x["actor_name"] for x in lines} == {"Paul Lefebvre"}
    assert len({x["actor"] for x in lines}) == 1

    code, out, err = cli("audit", "search", "--tenant", lab, "--as", fresh_code(monkeypatch, dpo))
    assert code == 0, err
    everyone = [json.loads(x) for x in out.splitlines()]
    assert {"Paul Lefebvre", "Camille Durand"} <= {x["actor_name"] for x in everyone}
    assert len(everyone) > len(lines)

    code, out, err = cli(
        "audit", "search", "--tenant", lab, "--actor", "nobody@search.invalid", "--as", fresh_code(monkeypatch, dpo)
    )
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and "e-mail" in err and "nobody@" not in err
