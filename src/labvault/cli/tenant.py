"""``labvault tenant``: labs (the data controllers)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import console, runtime

app = typer.Typer(help="Labs (tenants): add, list, crypto-shred.", no_args_is_help=True)


@app.command("add")
def add(
    tenant_id: str = typer.Argument(..., metavar="ID", help="Slug id, e.g. bio-lyon."),
    name: str = typer.Option(..., "--name", help="The lab's name."),
    finess: str = typer.Option(..., "--finess", help="The lab's FINESS number (9 characters)."),
) -> None:
    """Add a lab, with its own keys."""
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        t = u.create_tenant(tenant_id, name, finess)
    console.print(f"lab {t.id} added ({t.name}, FINESS {t.finess}); its keys are in the {rt.gateway.keys.name} key provider")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per lab.")) -> None:
    """List the labs."""
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        tenants = u.list_tenants()
    if as_json:
        for t in tenants:
            print(json.dumps({"id": t.id, "name": t.name, "finess": t.finess, "status": t.status}))
        return
    table = Table("id", "name", "FINESS", "status", "created")
    for t in tenants:
        table.add_row(t.id, t.name, t.finess, t.status, t.created_at.strftime("%Y-%m-%d") if t.created_at else "")
    console.print(table)


@app.command("shred")
def shred(
    tenant_id: str = typer.Argument(..., metavar="ID"),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Destroy a lab's keys: all its data, in backups too, becomes unreadable. Irreversible."""
    with runtime() as rt:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            u.tenant(tenant_id)  # unknown lab: fail before asking
        if not yes:
            typer.confirm(
                f"Destroy every key of lab '{tenant_id}'? Its data becomes unreadable for good", abort=True
            )
        with rt.unit(Purpose.ADMINISTRATION) as u:
            record = u.shred_tenant(tenant_id)
    console.print(f"lab {tenant_id} crypto-shredded; signed record {record['record_id']}:")
    console.print_json(json.dumps(record))
