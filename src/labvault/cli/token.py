"""``labvault token``: bearer tokens for the API (stored hashed, scoped, expiring, revocable)."""

from __future__ import annotations

import typer

from labvault.access import Purpose
from labvault.accounts import service
from labvault.cli.common import AS_OPTION_HELP, acting, console

app = typer.Typer(help="API tokens: create, revoke.", no_args_is_help=True)


@app.command("create")
def create(
    email: str = typer.Option(None, "--email", help="A service account of your lab (lab_admin); default: yourself."),
    scope: list[str] = typer.Option(["read"], "--scope", help="read, ingest"),
    days: int = typer.Option(30, "--days", help="Days the token is valid (at most 365)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Create a token, printed once and stored only as a hash: your own, after logging in (--as),
    or, as a lab_admin, one for a service account of your lab. Never one for another person."""
    import os

    logged_in = bool(as_email or os.environ.get("LABVAULT_AS"))
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        token_id, token = service.create_token(u, email, scopes=scope, days=days, authenticated=logged_in)
        who = email or u.principal.name
    console.print(f"token {token_id} for {who}, scopes {', '.join(scope)}, valid {days} days (shown once):")
    print(token)


@app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., help="The token's id ('token create' prints it)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Revoke an API token at once (your own, or one of your lab's service accounts as lab_admin)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        service.revoke_token(u, token_id)
    console.print(f"token {token_id} revoked")
