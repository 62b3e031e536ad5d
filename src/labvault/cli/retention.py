"""``labvault retention``: how long each lab keeps each category of its data, legal holds, purges."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console, runtime
from labvault.errors import ConfigError, InvalidInput
from labvault.retention import policy, purge

app = typer.Typer(help="Retention rules, legal holds and purge runs, per lab.", no_args_is_help=True)


@app.command("set")
def set_(
    tenant: str = typer.Argument(..., metavar="TENANT", help="The lab's id."),
    category: str = typer.Argument(..., help=f"One of {', '.join(policy.CATEGORIES)}."),
    duration: str = typer.Argument(..., help="e.g. 3650d or 10y (a year is 365 days)."),
    ref: str = typer.Option(None, "--ref", help="The legal reference of this period (required)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Set how long the lab keeps a category (the lab's lab_admin)."""
    days = policy.parse_duration(duration)
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        rule = policy.set_rule(u, tenant, category, days, ref or "")
    console.print(f"{tenant}: {rule.category} kept {rule.days} days ({rule.legal_reference})")


@app.command("list")
def list_(
    tenant: str = typer.Argument(..., metavar="TENANT", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's rules and legal holds, one JSON object per line."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        rules = policy.list_rules(u, tenant)
        holds = policy.list_holds(u, tenant)
    for r in rules:
        print(
            json.dumps(
                {
                    "rule": r.category,
                    "days": r.days,
                    "legal_reference": r.legal_reference,
                    "set_by": r.set_by,
                    "set_at": r.set_at.isoformat(),
                },
                ensure_ascii=False,
            )
        )
    for h in holds:
        print(
            json.dumps(
                {
                    "hold": h.hold_id,
                    "scope": h.scope,
                    "basis": h.basis,
                    "active": h.active,
                    "set_by": h.set_by,
                    "set_at": h.set_at.isoformat(),
                    "released_at": h.released_at.isoformat() if h.released_at else None,
                },
                ensure_ascii=False,
            )
        )


@app.command("hold")
def hold(
    tenant: str = typer.Argument(..., metavar="TENANT", help="The lab's id."),
    basis: str = typer.Option(None, "--basis", help="What requires the data to be kept (required, recorded)."),
    category: str = typer.Option(
        policy.EVERYTHING, "--category", help="A retention category; '*' (default): everything."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Place a legal hold: retention deletes nothing in its scope until it is released."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        h = policy.place_hold(u, tenant, basis=basis or "", category=category)
    console.print(f"legal hold {h.hold_id} placed on {tenant} ({h.scope})")


@app.command("release")
def release(
    tenant: str = typer.Argument(..., metavar="TENANT", help="The lab's id."),
    hold_id: str = typer.Argument(..., metavar="HOLD_ID", help="The hold's id ('retention list' shows it)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Release a legal hold."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        policy.release_hold(u, tenant, hold_id)
    console.print(f"legal hold {hold_id} released")


def _now(text: str | None, test_mode: bool) -> datetime:
    if text is None:
        return datetime.now(UTC)
    if not test_mode:
        raise ConfigError("--now is accepted only with LABVAULT_TEST_MODE=1")
    try:
        now = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("--now takes an ISO 8601 time, e.g. 2040-01-01T00:00:00+00:00") from None
    return now if now.tzinfo else now.replace(tzinfo=UTC)


@app.command("run")
def run(
    tenant: str = typer.Argument(None, metavar="TENANT", help="One lab; every lab when omitted."),
    now: str = typer.Option(None, "--now", help="Pretend it is this time (LABVAULT_TEST_MODE=1 only)."),
    as_json: bool = typer.Option(False, "--json", help="Also print one JSON object as the last line."),
) -> None:
    """Delete what each lab's rules say is due, and audit it."""
    with runtime() as rt:
        at = _now(now, rt.settings.test_mode)
        reports, failures = purge.run_all(rt.gateway, rt.operator, now=at, tenant_id=tenant)
    failed = sorted(failures)
    for lab in failed:
        console.print(f"{lab}: not purged: {failures[lab]}")
    for r in reports:
        console.print(f"{r.tenant_id} at {r.now.isoformat()}")
        for category, n in r.categories.items():
            console.print(f"  {category:<16} {n:>9,} deleted")
        for category in r.held:
            console.print(f"  {category:<16} {'held':>9} (legal hold)")
        console.print(
            f"  requests {r.requests:,}, specimens {r.specimens:,}, identities {r.identities:,} deleted"
            + "".join(f", {k} {v:,}" for k, v in r.hooks.items())
        )
    if as_json:
        print(json.dumps({"labs": [r.as_dict() for r in reports], "failed": failed}, sort_keys=True))
    if failed:
        raise InvalidInput(f"no purge for {len(failed)} lab(s): {', '.join(failed)}")
