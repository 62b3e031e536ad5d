"""The vendor never acts on a lab's people without the lab, at the command line: per vendor role
(the platform admin is the CLI operator; the others act with ``--as``), every ``user`` and
``token`` command that touches a lab's accounts, roles or tokens is refused with its reason (one
line, exit 2), leaves a ``denied`` event in the lab's trail and changes nothing; the lab's own
lab_admin does each. TOTP codes are single-use across processes; enrolment runs from a script."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from tests.api.conftest import cheap_argon2  # noqa: F401  (autouse: argon2 at minimal cost, in process)
from tests.cli.helpers import PASSWORD, _enrol, _token, as_admin, enrolled_account, lab_admin
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import totp_code

LAB = "bio-lyon"
VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")


class World:
    def __init__(self, capsys, monkeypatch, home) -> None:
        self.capsys, self.home = capsys, home
        self.run = lambda *a: run(capsys, *a)
        assert self.run("init")[0] == 0
        code, _, err = self.run(
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
            "test rule",
        )
        assert code == 0, err
        self.admin = lab_admin(self.run, LAB)
        self.bio = enrolled_account(self.run, monkeypatch, "bio@bio-lyon.invalid", "biologist", LAB)
        code, _, err = as_admin(
            self.run,
            self.admin,
            "user",
            "add",
            "--name",
            "Analyser feed",
            "--email",
            "feed@bio-lyon.invalid",
            "--role",
            "service",
            "--tenant",
            LAB,
            "--service",
            "ingest",
        )
        assert code == 0, err
        self.vendor: dict[str, tuple[str, str]] = {}  # role -> (e-mail, TOTP secret)

    def as_vendor(self, role: str, *args: str) -> tuple[int, str, str]:
        """A vendor role runs a command: the platform admin as the CLI operator, the others logged in."""
        if role == "platform_admin":
            return self.run(*args)
        if role not in self.vendor:
            email = f"{role.replace('_', '-')}@vendor.invalid"
            code, out, err = self.run("user", "add", "--name", "Sami Haddad", "--email", email, "--role", role)
            assert code == 0, err
            self.vendor[role] = (email, _enrol(self.run, _token(out)))
        email, secret = self.vendor[role]
        os.environ["LABVAULT_AS_PASSWORD"] = PASSWORD
        os.environ["LABVAULT_AS_TOTP"] = totp_code(secret)
        try:
            return self.run(*args, "--as", email)
        finally:
            os.environ.pop("LABVAULT_AS_PASSWORD", None)
            os.environ.pop("LABVAULT_AS_TOTP", None)

    def db(self):
        return sqlite3.connect(self.home / "labvault.db")

    def state(self) -> tuple:
        """The lab's accounts and tokens (a vendor's own login changes its own row only)."""
        with self.db() as c:
            return (
                sorted(c.execute("SELECT * FROM account WHERE tenant_id = ?", (LAB,)).fetchall()),
                sorted(c.execute("SELECT * FROM api_token WHERE tenant_id = ?", (LAB,)).fetchall()),
            )

    def denied(self) -> int:
        with self.db() as c:
            return c.execute(
                "SELECT count(*) FROM audit_event WHERE tenant_id = ? AND outcome = 'denied'", (LAB,)
            ).fetchone()[0]

    def roles(self, email: str) -> str:
        with self.db() as c:
            return c.execute("SELECT roles FROM account WHERE email = ?", (email,)).fetchone()[0]


@pytest.fixture
def world(home, capsys, monkeypatch):
    monkeypatch.delenv("LABVAULT_AS", raising=False)
    return World(capsys, monkeypatch, home)


def _commands(w: World) -> list[tuple[str, list[str], str]]:
    """(what, command, reason) for every command touching the lab's accounts, roles and tokens."""
    return [
        (
            "vendor adds its own account to the lab",
            [
                "user",
                "add",
                "--name",
                "Vendor Mole",
                "--email",
                "mole@vendor.invalid",
                "--role",
                "biologist",
                "--tenant",
                LAB,
            ],
            "only the lab's own lab_admin adds its accounts",
        ),
        (
            "vendor adds a second lab_admin",
            [
                "user",
                "add",
                "--name",
                "Vendor Mole",
                "--email",
                "mole2@vendor.invalid",
                "--role",
                "lab_admin",
                "--tenant",
                LAB,
            ],
            "",
        ),
        (
            "vendor adds a service account",
            [
                "user",
                "add",
                "--name",
                "Feed",
                "--email",
                "feed2@vendor.invalid",
                "--role",
                "service",
                "--tenant",
                LAB,
                "--service",
                "ingest",
            ],
            "only the lab's own lab_admin adds its accounts",
        ),
        (
            "vendor demotes the lab's admin",
            ["user", "roles", w.admin.email, "--role", "biologist"],
            "only the lab's own lab_admin changes the roles",
        ),
        (
            "vendor promotes a biologist",
            ["user", "roles", w.bio, "--role", "lab_admin"],
            "only the lab's own lab_admin changes the roles",
        ),
        ("vendor deactivates", ["user", "deactivate", w.bio], "only the lab's own lab_admin deactivates"),
        (
            "vendor mints a token for a biologist",
            ["token", "create", "--email", w.bio, "--scope", "read"],
            "vendor accounts mint tokens for themselves only",
        ),
        (
            "vendor mints a token for the lab's feed",
            ["token", "create", "--email", "feed@bio-lyon.invalid", "--scope", "ingest"],
            "vendor accounts mint tokens for themselves only",
        ),
    ]


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_refused_on_every_lab_account_command(world, role):
    """F1, F2, E1, G1: the attack (token minted for a biologist, the vendor's own account added to
    the lab, the lab's admin demoted) and every other command on the lab's accounts: refused, one
    line with the reason, a denied event in the lab's trail, nothing changed."""
    w = world
    for what, args, reason in _commands(w):
        before, denied = w.state(), w.denied()
        code, _, err = w.as_vendor(role, *args)
        line = one_line_error(err)
        assert code == 3, what
        assert reason in line, (what, line)
        assert w.state() == before, what
        assert w.denied() == denied + 1, what
    assert w.roles(w.admin.email) == "lab_admin" and w.roles(w.bio) == "biologist"
    # re-enabling a lab account is the lab's too
    assert as_admin(w.run, w.admin, "user", "deactivate", w.bio)[0] == 0
    before, denied = w.state(), w.denied()
    code, _, err = w.as_vendor(role, "user", "enable", w.bio)
    assert code == 3 and "only the lab's own lab_admin re-enables" in one_line_error(err)
    assert w.state() == before and w.denied() == denied + 1


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_suspends_for_security_only(world, role):
    """E4, G1: `user suspend` with a reason: security officer and platform admin only; the lab's
    admin sees it in `user list` and in the lab's trail, and alone re-enables the account."""
    w = world
    before, denied = w.state(), w.denied()
    code, out, err = w.as_vendor(role, "user", "suspend", w.bio, "--reason", "token seen on a paste site, SEC-42")
    if role in ("operator", "support"):
        assert code == 3 and "not allowed" in one_line_error(err)
        assert w.state() == before and w.denied() == denied + 1
        return
    assert code == 0 and "suspended" in out, err
    with w.db() as c:
        (n,) = c.execute(
            "SELECT count(*) FROM audit_event WHERE tenant_id = ? AND action = 'account:suspend'", (LAB,)
        ).fetchone()
    assert n == 1
    code, out, err = as_admin(w.run, w.admin, "user", "list", "--tenant", LAB)
    assert code == 0 and "SEC-42" in out, err
    code, _, err = w.as_vendor(role, "user", "enable", w.bio)
    assert code == 3 and "re-enables" in one_line_error(err)
    assert as_admin(w.run, w.admin, "user", "enable", w.bio)[0] == 0


def test_lab_admin_does_each(world):
    """F2: the lab's own lab_admin adds, changes roles, deactivates, re-enables, and mints a token
    for its feed; not one for a person; a biologist mints its own only after logging in."""
    w = world
    assert (
        as_admin(
            w.run,
            w.admin,
            "user",
            "add",
            "--name",
            "Ines Roussel",
            "--email",
            "tech@bio-lyon.invalid",
            "--role",
            "technician",
            "--tenant",
            LAB,
        )[0]
        == 0
    )
    assert as_admin(w.run, w.admin, "user", "roles", "tech@bio-lyon.invalid", "--role", "biologist")[0] == 0
    assert w.roles("tech@bio-lyon.invalid") == "biologist"
    assert as_admin(w.run, w.admin, "user", "deactivate", "tech@bio-lyon.invalid")[0] == 0
    assert as_admin(w.run, w.admin, "user", "enable", "tech@bio-lyon.invalid")[0] == 0
    code, out, err = as_admin(
        w.run, w.admin, "token", "create", "--email", "feed@bio-lyon.invalid", "--scope", "ingest"
    )
    assert code == 0 and "lvt_" in out, err
    denied = w.denied()
    code, _, err = as_admin(w.run, w.admin, "token", "create", "--email", w.bio)
    assert code == 3 and "nobody mints a token for another person" in one_line_error(err)
    assert w.denied() == denied + 1
    # one's own token: from one's own login (password), not from the CLI operator's seat
    code, _, err = w.run("token", "create")
    assert code == 3 and "logged-in session" in one_line_error(err)
    os.environ["LABVAULT_AS_PASSWORD"] = PASSWORD
    try:
        code, out, err = w.run("token", "create", "--as", w.bio)
    finally:
        os.environ.pop("LABVAULT_AS_PASSWORD", None)
    assert code == 0 and "lvt_" in out, err


def _cli(env: dict, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labvault.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        timeout=120,
    )


def test_enrolment_scripted_end_to_end_and_codes_single_use_across_processes(world):
    """E2: a provisioning script enrols a lab_admin without a terminal, in two calls (the first
    shows the otpauth URI and a QR code, the second takes the code, against the same secret); the
    code that confirmed it does not log in, in another process; a fresh code does, once."""
    w = world
    code, out, err = as_admin(
        w.run,
        w.admin,
        "user",
        "add",
        "--name",
        "Lea Garnier",
        "--email",
        "admin2@bio-lyon.invalid",
        "--role",
        "lab_admin",
        "--tenant",
        LAB,
    )
    assert code == 0, err
    token = _token(out)
    env = {**os.environ, "LABVAULT_ENROL_PASSWORD": PASSWORD}
    env.pop("LABVAULT_ENROL_TOTP", None)
    first = _cli(env, "user", "enrol", "--token", token, "--accept-commitment")
    assert first.returncode == 0, first.stderr
    [uri] = [x for x in first.stdout.splitlines() if x.startswith("otpauth://")]
    assert "▀" in first.stdout or "▄" in first.stdout or "█" in first.stdout  # the QR code, drawn
    assert "--totp" in first.stdout and "enrolment complete" not in first.stdout
    again = _cli(env, "user", "enrol", "--token", token, "--accept-commitment")  # the same secret again
    assert [x for x in again.stdout.splitlines() if x.startswith("otpauth://")] == [uri]
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    code_now = pyotp.TOTP(secret).now()
    second = _cli({**os.environ, "LABVAULT_ENROL_TOTP": code_now}, "user", "enrol", "--token", token)
    assert second.returncode == 0 and "enrolment complete" in second.stdout, second.stderr
    # the same code, another process: refused
    login_env = {**os.environ, "LABVAULT_AS_PASSWORD": PASSWORD, "LABVAULT_AS_TOTP": code_now}
    replay = _cli(login_env, "user", "list", "--tenant", LAB, "--as", "admin2@bio-lyon.invalid")
    assert replay.returncode == 3 and "already used" in replay.stderr, replay.stderr
    # a code of the next step logs in once; sent again by another process, refused
    nxt = pyotp.TOTP(secret).at(int(__import__("time").time()) + 30)
    login_env["LABVAULT_AS_TOTP"] = nxt
    ok = _cli(login_env, "user", "list", "--tenant", LAB, "--as", "admin2@bio-lyon.invalid")
    assert ok.returncode == 0, ok.stderr
    replay = _cli(login_env, "user", "list", "--tenant", LAB, "--as", "admin2@bio-lyon.invalid")
    assert replay.returncode == 3 and "already used" in replay.stderr, replay.stderr
