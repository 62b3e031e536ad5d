"""``labvault canary``: a lab's planted synthetic patients (seeded and listed by its lab_admin or
lab_dpo only). Touching one raises a critical alert; see docs/design/monitoring-canaries.md."""

from __future__ import annotations

import json

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.monitoring import canaries

app = typer.Typer(help="Canaries: synthetic patients no legitimate work reads.", no_args_is_help=True)

TENANT_HELP = "The lab's id."


@app.command("seed")
def seed(
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    count: int = typer.Option(3, "--count", min=1, max=50, help="How many canaries to plant."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Plant generated patients (identity, a request, a few results) that searches, worklists and
    exports leave out; reading one is recorded and alerted on at once."""
    with acting(as_email, Purpose.MONITORING) as u:
        planted = canaries.seed(u, tenant, count)
    for c in planted:
        console.print(f"{c.marker}  patient {c.patient_id}", highlight=False, markup=False)
    console.print(f"{len(planted)} canaries planted in {tenant}", highlight=False, markup=False)


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, for scripts."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's canaries: marker, patient id, the package a package's own canary was planted in."""
    with acting(as_email, Purpose.MONITORING) as u:
        found = u.canaries(tenant)
    for c in found:
        row = {
            "marker": c.marker,
            "patient": c.patient_id,
            "package": c.package_id,
            "created_at": c.created_at.isoformat(),
            "created_by": c.created_by,
        }
        if as_json:
            print(json.dumps(row))
        else:
            console.print(
                f"{c.marker}  patient {c.patient_id or '-'}  package {c.package_id or '-'}  "
                f"{c.created_at:%Y-%m-%d %H:%M}  by {c.created_by}",
                highlight=False,
                markup=False,
            )
    if not found and not as_json:
        console.print("no canary")
