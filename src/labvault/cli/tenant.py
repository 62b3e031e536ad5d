"""``labvault tenant``: labs (the data controllers)."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, actor, console, runtime

app = typer.Typer(help="Labs (tenants): add, list, crypto-shred, end a contract.", no_args_is_help=True)


@app.command("add")
def add(
    tenant_id: str = typer.Argument(..., metavar="ID", help="Slug id, e.g. bio-lyon."),
    name: str = typer.Option(..., "--name", help="The lab's name."),
    finess: str = typer.Option(..., "--finess", help="The lab's FINESS number (9 characters)."),
    retention: list[str] = typer.Option(
        None,
        "--retention",
        metavar="CATEGORY=DURATION",
        help="How long the lab keeps a category (results=10y, hiv=30y, quarantine=90d; y = 365 days); "
        "repeatable; results is required.",
    ),
    retention_ref: str = typer.Option(None, "--retention-ref", help="The legal reference of these periods (required)."),
    synthetic: bool = typer.Option(
        False,
        "--synthetic",
        help="A lab for generated data only ('labvault generate --tenant ID'); it may be "
        "deleted without a signed deletion instruction. Marked for good.",
    ),
    timezone: str = typer.Option(
        "Europe/Paris",
        "--timezone",
        metavar="ZONE",
        help="The lab's IANA time zone (Europe/Paris, America/Cayenne, Indian/Reunion): a local time "
        "received without a zone (HPRIM, CSV, HL7 v2 without an offset) is read in it.",
    ),
) -> None:
    """Add a lab, with its own keys and its retention rules."""
    from labvault.retention import parse_rules

    rules = parse_rules(retention or [], retention_ref or "")
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        t = u.create_tenant(tenant_id, name, finess, retention=rules, synthetic=synthetic, timezone=timezone)
        from labvault.audit.pin import fingerprint

        platform_key = fingerprint(u.platform_keys()[-1])
    kind = "synthetic lab" if t.synthetic else "lab"
    console.print(
        f"{kind} {t.id} added ({t.name}, FINESS {t.finess}, time zone {t.timezone}); "
        f"its keys are in the {rt.gateway.keys.name} key provider"
    )
    # G4: the lab pins this key; its pulled checkpoints ('audit checkpoints') are signed by it or by
    # a key its rotation records lead to.
    console.print(f"platform key fingerprint (SHA-256), for the lab to pin:\n  {platform_key}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON object per lab.")) -> None:
    """List the labs."""
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        tenants = u.list_tenants()
    if as_json:
        for t in tenants:
            print(
                json.dumps(
                    {
                        "id": t.id,
                        "name": t.name,
                        "finess": t.finess,
                        "status": t.status,
                        "synthetic": t.synthetic,
                        "timezone": t.timezone,
                        "address": t.address,
                        "working_hours": t.working_hours,
                    }
                )
            )
        return
    table = Table("id", "name", "FINESS", "status", "data", "created")
    for t in tenants:
        table.add_row(
            t.id,
            t.name,
            t.finess,
            t.status,
            "synthetic" if t.synthetic else "real",
            t.created_at.strftime("%Y-%m-%d") if t.created_at else "",
        )
    console.print(table)


@app.command("details")
def details(
    tenant_id: str = typer.Argument(..., metavar="ID", help="The lab's id."),
    address: str = typer.Option(None, "--address", help="The lab's postal address, printed on its reports."),
    hours: str = typer.Option(
        None, "--hours", help="Opening hours, e.g. 'mon-fri 07:00-19:00; sat 08:00-12:00' (off-hours monitoring)."
    ),
    as_email: str = typer.Option(None, "--as", help="The lab's lab_admin. " + AS_OPTION_HELP),
) -> None:
    """Show the lab's details, or set them (its lab_admin): address and opening hours."""
    from labvault.cli.common import acting
    from labvault.domain.hours import DEFAULT_HOURS

    with acting(as_email, Purpose.ADMINISTRATION) as u:
        if address is None and hours is None:
            lab = u.tenant(tenant_id)
        else:
            lab = u.set_lab_details(tenant_id, address=address, working_hours=hours)
    console.print(f"lab       {lab.id}  {lab.name}", highlight=False, markup=False)
    console.print(f"address   {lab.address or '(not given)'}", highlight=False, markup=False)
    console.print(f"hours     {lab.working_hours or DEFAULT_HOURS + ' (default)'}", highlight=False, markup=False)


INSTRUCTION_HELP = (
    "The lab's signed deletion instruction (kind deletion, scope lab), received for it: "
    "re-checked now. Needed for every lab not created --synthetic."
)


@app.command("shred")
def shred(
    tenant_id: str = typer.Argument(..., metavar="ID", help="The lab's id."),
    instruction: str = typer.Option(None, "--instruction", metavar="ID", help=INSTRUCTION_HELP),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Destroy a lab's keys: all its data, in backups too, becomes unreadable. Irreversible."""
    from labvault.access.instructed import authorise_deletion

    with runtime() as rt:
        who = actor(rt, as_email)
        with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            # Unknown lab, no instruction, or one not in force: refused (audited) before asking.
            authorise_deletion(u, tenant_id, instruction, action="tenant:shred", use=False)
        if not yes:
            typer.confirm(f"Destroy every key of lab '{tenant_id}'? Its data becomes unreadable for good", abort=True)
        with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            record = u.shred_tenant(tenant_id, instruction_id=instruction)
    console.print(f"lab {tenant_id} crypto-shredded; signed record {record['record_id']}:")
    console.print_json(json.dumps(record))


@app.command("end")
def end(
    tenant_id: str = typer.Argument(..., metavar="ID", help="The lab's id."),
    return_to: str = typer.Option(
        None,
        "--return",
        metavar="INSTRUCTION",
        help="Return the data as the lab's signed instruction says (migration).",
    ),
    delete: bool = typer.Option(False, "--delete", help="Delete the lab's data, shred its keys, sign a certificate."),
    instruction: str = typer.Option(None, "--instruction", metavar="ID", help="With --delete: " + INSTRUCTION_HELP),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    as_email: str = typer.Option(None, "--as", help="The vendor account running it. " + AS_OPTION_HELP),
) -> None:
    """End a lab's contract: return its data (--return) or delete it for good (--delete, under the
    lab's signed deletion instruction unless the lab is synthetic)."""
    from labvault.errors import InvalidInput

    if (return_to is None) == (not delete):
        raise InvalidInput("tenant end needs exactly one of --return INSTRUCTION or --delete")
    if return_to is not None:
        if instruction is not None:
            raise InvalidInput("--instruction goes with --delete (the deletion instruction); --return names its own")
        _end_return(tenant_id, return_to, as_email)
        return
    from labvault.access.instructed import authorise_deletion
    from labvault.retention import end_delete

    with runtime() as rt:
        who = actor(rt, as_email)
        with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            # Unknown lab, no instruction, or one not in force: refused (audited) before asking.
            authorise_deletion(u, tenant_id, instruction, action="tenant:end", use=False)
        if not yes:
            typer.confirm(f"Delete every row of lab '{tenant_id}' and destroy its keys? Irreversible", abort=True)
        with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            record = end_delete(u, tenant_id, instruction_id=instruction)
    console.print(f"lab {tenant_id}: data deleted, keys crypto-shredded; signed certificate {record['record_id']}:")
    print(json.dumps(record, sort_keys=True))


def _end_return(tenant_id: str, instruction_id: str, as_email: str | None) -> None:
    from labvault.cli.migrate import store
    from labvault.migration import service

    with runtime() as rt:
        out = service.tenant_return(rt.gateway, actor(rt, as_email), tenant_id, instruction_id, store())
    console.print(
        f"lab {tenant_id}: returned under instruction {instruction_id}: "
        f"{out['plan']['counts']['results']:,} results in {out['package'][0]['name']} "
        f"({out['results_left_out']:,} of the lab's results left out by the instruction)"
    )
    console.print(
        f"  next: the recipient acknowledges ('labvault migrate acknowledge'), 'labvault migrate receipt "
        f"{out['migration']} RECEIPT --tenant {tenant_id}', then, under the lab's signed deletion instruction, "
        f"'labvault tenant end {tenant_id} --delete --instruction DELETION-ID'"
    )
    print(json.dumps(out, sort_keys=True))


@app.command("certificate")
def certificate(tenant_id: str = typer.Argument(..., metavar="ID", help="The lab's id.")) -> None:
    """Show a lab's end-of-contract certificates and check their platform signatures (exit 1 if one fails)."""
    from labvault.errors import NotFound, SignatureInvalid
    from labvault.retention.purge import certificates, verify_certificate

    bad = 0
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        records = certificates(u, tenant_id)
        if not records:
            raise NotFound(f"lab '{tenant_id}' has no end-of-contract certificate")
        for record in records:
            try:
                verify_certificate(u, record)
                state = "valid"
            except SignatureInvalid:
                state, bad = "INVALID", bad + 1
            print(json.dumps({**record, "signature_check": state}, sort_keys=True))
    if bad:
        raise typer.Exit(1)
