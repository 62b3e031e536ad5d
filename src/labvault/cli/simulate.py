"""``labvault simulate``: a generated normal working week of synthetic labs, watched by the shipped
rules (issue 16's check: no alert, at least 95 % of the accesses explained). See
``labvault.cli.week`` and docs/design/monitoring-simulate.md."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from labvault.cli.common import console, err_console

MIN_EXPLAINED_PCT = 95.0


def simulate(
    days: int = typer.Option(7, "--days", min=1, max=31, help="Days to simulate, from a Monday."),
    labs: int = typer.Option(3, "--labs", min=1, max=8, help="Synthetic labs."),
    seed: int = typer.Option(1, "--seed", help="Seed of the generated patients and of the day's events."),
    requests_per_day: int = typer.Option(
        None, "--requests-per-day", min=1, max=1000, help="Requests per lab and weekday (default: 40 to 120, drawn)."
    ),
    start: datetime = typer.Option(
        None, "--start", formats=["%Y-%m-%d"], help="The first day, a Monday (default: last week's)."
    ),
    home: Path = typer.Option(
        None, "--home", help="A NEW directory for the simulation's home (it must not exist; default: a temporary one)."
    ),
    intrusion: bool = typer.Option(
        False,
        "--intrusion",
        help="Add, on the last night at 3 am, a support account reading the first lab's patients under a grant "
        "(the check must then fail).",
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object on the last line."),
) -> None:
    """Simulate a normal working week of synthetic labs and check that the monitoring stays quiet.

    Everything happens in a NEW home created for the run (a temporary directory, or --home, which
    must not exist yet): synthetic labs and staff created by the command itself, in simulated time.
    It never opens or writes the home of LABVAULT_HOME or the current directory. Exits non-zero,
    with the reason, when a rule raised an alert or fewer than 95 % of the accesses are explained.
    """
    from labvault.cli.week import simulate as run

    result = run(
        days=days,
        labs=labs,
        seed=seed,
        home=home,
        requests_per_day=requests_per_day,
        start=start.date() if start else None,
        intrusion=intrusion,
        progress=lambda text: err_console.print(f"  {text}", highlight=False, markup=False),
    )
    out = console.print
    out(
        f"simulated {result.days} days from {result.start.isoformat()} in {result.home} "
        f"({result.wall_s:.1f} s); setup findings apart: {dict(sorted(result.setup_findings.items())) or 'none'}",
        highlight=False,
        markup=False,
    )
    for lab in result.labs:
        rules = ", ".join(f"{r} {n}" for r, n in sorted(lab.alerts_by_rule.items())) or "none"
        reasons = ", ".join(f"{r} {n}" for r, n in lab.unexplained_by_reason.most_common()) or "-"
        out(
            f"{lab.tenant:<12} requests {lab.requests:>5}  results validated {lab.results:>6}  "
            f"reports {lab.reports:>5}  "
            f"call-backs {lab.callbacks:>3}  events {lab.events:>7}  accesses {lab.accesses:>6}  "
            f"explained {lab.explained_pct:6.2f} %  alerts: {rules}  unexplained: {reasons}",
            highlight=False,
            markup=False,
        )
    out(
        f"all labs: events {result.events}, accesses {result.accesses}, explained {result.explained_pct:.2f} %, "
        f"alerts {result.alerts}",
        highlight=False,
        markup=False,
    )
    reason = None
    if result.alerts:
        reason = f"{result.alerts} alerts raised on the simulated week ({', '.join(sorted(result.alerts_by_rule))})"
    elif result.explained_pct < MIN_EXPLAINED_PCT:
        reason = f"only {result.explained_pct:.2f} % of the accesses are explained (at least {MIN_EXPLAINED_PCT:g} %)"
    if as_json:
        print(json.dumps(result.as_json()))
    if reason is not None:
        err_console.print(f"check failed: {reason}", highlight=False, markup=False)
        raise typer.Exit(1)
