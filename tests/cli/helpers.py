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
