"""``labvault user``: named accounts (one natural person each), roles, enrolment, deactivation."""

from __future__ import annotations

import getpass
import json
import os
import sys
from typing import cast

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.accounts import service, totp
from labvault.cli.common import AS_OPTION_HELP, acting, console, runtime
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput

app = typer.Typer(help="Accounts: add, enrol, list, roles, deactivate, enable, suspend.", no_args_is_help=True)


@app.command("add")
def add(
    name: str = typer.Option(..., "--name", help="The person's full name."),
    email: str = typer.Option(..., "--email", help="Their e-mail address (the login)."),
    role: list[str] = typer.Option(..., "--role", help="Repeat for several roles."),
    tenant: str = typer.Option(None, "--tenant", help="The lab, for lab roles."),
    service_purpose: str = typer.Option(None, "--service", help="Make a token-only service account for this purpose."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Add an account; prints a one-time enrolment token (never a password).

    A lab's accounts are added by the lab's own lab_admin (--as); the platform invites a new lab's
    first lab_admin only."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u,
            tenant_id=tenant or PLATFORM,
            name=name,
            email=email,
            roles=role,
            kind="service" if service_purpose else "person",
            purpose=service_purpose,
        )
    console.print(f"account {new.account_id} ({new.email}) added to {new.tenant_id}")
    if new.enrolment_token:
        console.print("one-time enrolment token, valid 72 hours, shown once:")
        print(new.enrolment_token)
        console.print(
            "the person completes it with 'labvault user enrol --token TOKEN', POST /api/v1/auth/enrol, "
            "or the web page <server>/enrol#token=TOKEN (after '#': never sent to the server)"
        )
    else:
        console.print(
            "service account: its lab_admin creates its token with 'labvault token create --email ... --as LAB_ADMIN'"
        )


@app.command("enrol")
def enrol(
    token: str = typer.Option(..., "--token", help="The enrolment token."),
    accept_commitment: bool = typer.Option(False, "--accept-commitment", help="Accept the confidentiality commitment."),
    code: str | None = typer.Option(None, "--totp", help="The authenticator's code (or LABVAULT_ENROL_TOTP)."),
) -> None:
    """Set your password, accept the confidentiality commitment, enrol your authenticator.

    The password comes from LABVAULT_ENROL_PASSWORD or a prompt. Where the role requires MFA, the
    otpauth URI and a QR code are shown, and the first code is taken from --totp,
    LABVAULT_ENROL_TOTP or a prompt; without a terminal, a second call
    'labvault user enrol --token TOKEN --totp CODE' confirms it (the same secret until then).
    """
    tty = sys.stdin.isatty()
    code = code or os.environ.get("LABVAULT_ENROL_TOTP")
    with runtime() as rt:
        pending = None
        if code is not None:
            with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
                pending = service.pending_enrolment(u, token)
        if pending is None:
            console.print("You commit to keep confidential all personal data you may access (GDPR Art. 28(3)(b)).")
            if not accept_commitment and (not tty or not typer.confirm("Do you accept this commitment?")):
                raise InvalidInput("the confidentiality commitment must be accepted (--accept-commitment)")
            password = os.environ.get("LABVAULT_ENROL_PASSWORD")
            if password is None:
                if not tty:
                    raise InvalidInput("no password: set LABVAULT_ENROL_PASSWORD or run on a terminal")
                password = getpass.getpass("New password (12+ characters): ")
                if getpass.getpass("Repeat it: ") != password:
                    raise InvalidInput("the two passwords differ")
            with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
                e = service.enrol(u, token, password, accept_commitment=True)
            if not e.mfa_required:
                console.print("enrolment complete")
                return
            console.print("Add this account to your authenticator app (scan the QR code or use the otpauth URI):")
            uri = cast(str, e.totp_uri)  # an enrolment that requires MFA always has one
            print(totp.qr_terminal(uri))
            print(uri)
            if code is None:
                if not tty:
                    console.print(
                        "then confirm with: labvault user enrol --token TOKEN --totp CODE (or LABVAULT_ENROL_TOTP)"
                    )
                    return
                code = input("6-digit code: ")
        if code is None:  # not reached: every path above sets it or returns
            raise InvalidInput("no authenticator code: --totp or LABVAULT_ENROL_TOTP")
        with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
            service.confirm_enrolment(u, token, code)
    console.print("enrolment complete")


@app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant", help="The lab's id (default: every account you may see)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per account."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """List accounts (of one lab, or all that you may see)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        accounts = service.list_accounts(u, tenant)
    if as_json:
        for a in accounts:
            print(json.dumps(a))
        return
    table = Table("tenant", "name", "e-mail", "roles", "active", "MFA", "commitment", "suspended")
    for a in accounts:
        s = a["suspended"]
        table.add_row(
            a["tenant"],
            a["name"],
            a["email"],
            a["roles"],
            "yes" if a["active"] else "no",
            "yes" if a["mfa"] else "no",
            "yes" if a["commitment"] else "no",
            "" if s is None else f"{s['at']} by {s['by']}: {s['reason']}",
        )
    console.print(table)


@app.command("roles")
def roles(
    email: str = typer.Argument(..., help="The account's e-mail address."),
    role: list[str] = typer.Option(
        ..., "--role", help="The new roles; repeat for several (they replace the old ones)."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Replace an account's roles (audited)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        service.set_roles(u, email, role)
    console.print(f"roles of {email}: {', '.join(sorted(role))}")


@app.command("deactivate")
def deactivate(
    email: str = typer.Argument(..., help="The account's e-mail address."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Deactivate an account: all its sessions and tokens stop working at once."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        service.deactivate(u, email)
    console.print(f"{email} deactivated; its sessions and tokens are revoked")


@app.command("enable")
def enable(
    email: str = typer.Argument(..., help="The account's e-mail address."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Re-enable a deactivated or suspended account (a lab's: by its own lab_admin only)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        service.reactivate(u, email)
    console.print(f"{email} enabled")


@app.command("suspend")
def suspend(
    email: str = typer.Argument(..., help="The account's e-mail address."),
    reason: str = typer.Option(..., "--reason", help="Why (kept on the account; the lab's admins see it)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Suspend an account for security (vendor security officer, platform admin): its sessions and
    tokens stop at once; the lab's audit trail records it; only the lab's lab_admin re-enables it."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        service.suspend(u, email, reason)
    console.print(f"{email} suspended; its sessions and tokens are revoked; the lab's admins see the reason")
