"""``labvault grant``: break-glass access of vendor support to one lab, approved by that lab."""

from __future__ import annotations

import json

import typer

from labvault.access import Purpose, grants
from labvault.cli.common import AS_OPTION_HELP, actor, console, runtime

app = typer.Typer(help="Support access grants: request, approve, revoke, list.", no_args_is_help=True)


def _show(g: grants.Grant) -> None:
    print(json.dumps({
        "grant_id": g.grant_id, "tenant": g.tenant_id, "account": g.account_id, "ticket": g.ticket,
        "state": g.state, "fields": list(g.fields), "patients": None if g.patients is None else sorted(g.patients),
        "hours": g.hours, "expires_at": g.expires_at.isoformat() if g.expires_at else None,
    }))


@app.command("request")
def request(
    tenant: str = typer.Option(..., "--tenant"),
    ticket: str = typer.Option(..., "--ticket", help="Support ticket reference."),
    reason: str = typer.Option(..., "--reason"),
    hours: int = typer.Option(2, "--hours", help="1 to 8."),
    field: list[str] = typer.Option(["identity", "requests", "results"], "--field", help="identity, requests, results"),
    patient: list[str] = typer.Option(None, "--patient", help="Patient ids; none: the whole lab."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Ask a lab for time-boxed access (support accounts)."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.SUPPORT) as u:
        g = grants.request_grant(u, tenant, ticket=ticket, reason=reason, hours=hours, fields=field,
                                 patients=list(patient) if patient else None)
    _show(g)


@app.command("approve")
def approve(
    grant_id: str = typer.Argument(...),
    tenant: str = typer.Option(..., "--tenant"),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Approve a pending grant (the lab's lab_admin)."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        g = grants.approve_grant(u, tenant, grant_id)
    _show(g)


@app.command("revoke")
def revoke(
    grant_id: str = typer.Argument(...),
    tenant: str = typer.Option(..., "--tenant"),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Revoke a grant: it stops working at once."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        g = grants.revoke_grant(u, tenant, grant_id)
    _show(g)


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant"),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.ADMINISTRATION) as u:
        for g in grants.list_grants(u, tenant):
            _show(g)
    console.print("", end="")
