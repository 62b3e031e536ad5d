"""``labvault user``: named accounts (one natural person each), roles, enrolment, deactivation."""

from __future__ import annotations

import getpass
import json
import os
import sys

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.accounts import service
from labvault.cli.common import AS_OPTION_HELP, actor, console, runtime
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput

app = typer.Typer(help="Accounts: add, enrol, list, roles, deactivate.", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Option(..., "--name", help="The person's full name."),
    email: str = typer.Option(..., "--email"),
    role: list[str] = typer.Option(..., "--role", help="Repeat for several roles."),
    tenant: str = typer.Option(None, "--tenant", help="The lab, for lab roles."),
    service_purpose: str = typer.Option(None, "--service", help="Make a token-only service account for this purpose."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Add an account; prints a one-time enrolment token (never a password)."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u, tenant_id=tenant or PLATFORM, name=name, email=email, roles=role,
            kind="service" if service_purpose else "person", purpose=service_purpose,
        )
    console.print(f"account {new.account_id} ({new.email}) added to {new.tenant_id}")
    if new.enrolment_token:
        console.print("one-time enrolment token, valid 72 hours, shown once:")
        print(new.enrolment_token)
        console.print("the person completes it with 'labvault user enrol --token TOKEN' or POST /api/v1/auth/enrol")
    else:
        console.print("service account: create its token with 'labvault token create --email ...'")


@app.command("enrol")
def enrol(
    token: str = typer.Option(..., "--token", help="The enrolment token."),
    accept_commitment: bool = typer.Option(False, "--accept-commitment", help="Accept the confidentiality commitment."),
) -> None:
    """Set your password, accept the confidentiality commitment, enrol your authenticator.

    The password comes from LABVAULT_ENROL_PASSWORD or a prompt; a TOTP code, where the role
    requires MFA, from LABVAULT_ENROL_TOTP or a prompt.
    """
    tty = sys.stdin.isatty()
    console.print("You commit to keep confidential all personal data you may access (GDPR Art. 28(3)(b)).")
    if not accept_commitment:
        if not tty or not typer.confirm("Do you accept this commitment?"):
            raise InvalidInput("the confidentiality commitment must be accepted (--accept-commitment)")
    password = os.environ.get("LABVAULT_ENROL_PASSWORD")
    if password is None:
        if not tty:
            raise InvalidInput("no password: set LABVAULT_ENROL_PASSWORD or run on a terminal")
        password = getpass.getpass("New password (12+ characters): ")
        if getpass.getpass("Repeat it: ") != password:
            raise InvalidInput("the two passwords differ")
    with runtime() as rt:
        with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
            e = service.enrol(u, token, password, accept_commitment=True)
        if e.mfa_required:
            console.print("Add this account to your authenticator app (otpauth URI below), then give its code:")
            print(e.totp_uri)
            code = os.environ.get("LABVAULT_ENROL_TOTP")
            if code is None:
                if not tty:
                    raise InvalidInput("MFA enrolment needs a code: set LABVAULT_ENROL_TOTP or run on a terminal")
                code = input("6-digit code: ")
            with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
                service.confirm_enrolment(u, token, code)
    console.print("enrolment complete")


@app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant"),
    as_json: bool = typer.Option(False, "--json"),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """List accounts (of one lab, or all that you may see)."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        accounts = service.list_accounts(u, tenant)
    if as_json:
        for a in accounts:
            print(json.dumps(a))
        return
    table = Table("tenant", "name", "e-mail", "roles", "active", "MFA", "commitment")
    for a in accounts:
        table.add_row(a["tenant"], a["name"], a["email"], a["roles"], "yes" if a["active"] else "no",
                      "yes" if a["mfa"] else "no", "yes" if a["commitment"] else "no")
    console.print(table)


@app.command("roles")
def roles(
    email: str = typer.Argument(...),
    role: list[str] = typer.Option(..., "--role"),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Replace an account's roles (audited)."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        service.set_roles(u, email, role)
    console.print(f"roles of {email}: {', '.join(sorted(role))}")


@app.command("deactivate")
def deactivate(
    email: str = typer.Argument(...),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Deactivate an account: all its sessions and tokens stop working at once."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        service.deactivate(u, email)
    console.print(f"{email} deactivated; its sessions and tokens are revoked")
