"""``labvault grant``: break-glass access of vendor support to one lab, approved by that lab."""

from __future__ import annotations

import json
from datetime import date, datetime

import typer

from labvault.access import Purpose, grants
from labvault.cli.common import AS_OPTION_HELP, acting, console

app = typer.Typer(help="Support access grants: request, show, approve, revoke, list.", no_args_is_help=True)


def grant_record(g: grants.Grant) -> dict:
    """What a lab's admin reviews before approving: who asks (name, e-mail), the ticket, the reason,
    the exact scope and the duration."""
    return {
        "grant_id": g.grant_id,
        "tenant": g.tenant_id,
        "state": g.state,
        "requested_by": {"name": g.requester_name, "email": g.requester_email, "account": g.account_id},
        "ticket": g.ticket,
        "reason": g.reason,
        "scope": {
            "patients": None if g.patients is None else sorted(g.patients),
            "period": None
            if not g.has_period
            else {
                "from": g.period_from.isoformat() if g.period_from else None,
                "to": g.period_to.isoformat() if g.period_to else None,
            },
            "fields": list(g.fields),
            "sensitive_categories": False,
            "summary": g.scope_text(),
        },
        "hours": g.hours,
        "requested_at": g.requested_at.isoformat() if g.requested_at else None,
        "expires_at": g.expires_at.isoformat() if g.expires_at else None,
        "approved_by": g.approved_by,
    }


def _show(g: grants.Grant) -> None:
    print(json.dumps(grant_record(g), ensure_ascii=False))


def _date(value: datetime | None) -> date | None:
    return None if value is None else value.date()


@app.command("request")
def request(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    ticket: str = typer.Option(..., "--ticket", help="Support ticket reference."),
    reason: str = typer.Option(
        ..., "--reason", help="Why the vendor needs the lab's data (shown to the lab, audited)."
    ),
    hours: int = typer.Option(2, "--hours", help="1 to 8."),
    field: list[str] = typer.Option(
        ..., "--field", help="identity, requests or results; repeat for more (named, no default)."
    ),
    patient: list[str] = typer.Option(None, "--patient", help="Patient ids the ticket is about."),
    period_from: datetime = typer.Option(
        None, "--from", formats=["%Y-%m-%d"], help="With --to: requests dated in this period (inclusive)."
    ),
    period_to: datetime = typer.Option(
        None, "--to", formats=["%Y-%m-%d"], help="With --from: the end of the period (inclusive)."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Ask a lab for time-boxed access (support accounts). The scope is named: --patient, or a
    period (--from/--to), or both, and --field; never the whole lab."""
    with acting(as_email, Purpose.SUPPORT) as u:
        g = grants.request_grant(
            u,
            tenant,
            ticket=ticket,
            reason=reason,
            hours=hours,
            fields=field,
            patients=list(patient) if patient else None,
            period_from=_date(period_from),
            period_to=_date(period_to),
        )
    _show(g)


@app.command("show")
def show(
    grant_id: str = typer.Argument(..., help="The grant's id."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One grant as the lab's admin reviews it: who asks, ticket, reason, exact scope, duration."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        g = grants.show_grant(u, tenant, grant_id)
    print(json.dumps(grant_record(g), ensure_ascii=False, indent=2))


@app.command("approve")
def approve(
    grant_id: str = typer.Argument(..., help="The grant's id."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Approve a pending grant (the lab's lab_admin)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        g = grants.approve_grant(u, tenant, grant_id)
    _show(g)


@app.command("revoke")
def revoke(
    grant_id: str = typer.Argument(..., help="The grant's id."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Revoke a grant: it stops working at once."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        g = grants.revoke_grant(u, tenant, grant_id)
    _show(g)


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's support grants: id, state, who asked, ticket, fields, period."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        for g in grants.list_grants(u, tenant):
            _show(g)
    console.print("", end="")
