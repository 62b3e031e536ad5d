"""``labvault request``, ``labvault specimen``, ``labvault result``: the lab's daily work by hand
(requests entered, specimens received or rejected, results entered and validated)."""

from __future__ import annotations

from datetime import datetime

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.errors import InvalidInput
from labvault.lab import work

request_app = typer.Typer(help="Requests entered by hand.", no_args_is_help=True)
specimen_app = typer.Typer(help="Specimens: received, rejected, their status and timeline.", no_args_is_help=True)
result_app = typer.Typer(help="Results entered by hand and validated.", no_args_is_help=True)

TENANT_HELP = "The lab's id."


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("--collected-at: an ISO 8601 date and time") from None


@request_app.command("enter")
def enter(
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    patient: str = typer.Option(..., "--patient", help="The patient's id ('labvault patient find')."),
    test: str = typer.Option(..., "--test", help="Test codes (LOINC), comma separated."),
    collected_at: str = typer.Option(..., "--collected-at", help="When the specimens were collected (ISO 8601)."),
    collector: str = typer.Option(..., "--collector", help="Who collected them."),
    urgent: bool = typer.Option(False, "--urgent", help="An urgent request."),
    clinical: str = typer.Option(None, "--clinical", help="Clinical information (sealed)."),
    prescriber: str = typer.Option(None, "--prescriber", help="The prescriber's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Enter a request: one specimen per container (its id is the label's barcode), one result per test."""
    tests = work.ordered_tests(test.split(","))
    when = _when(collected_at)
    with acting(as_email, Purpose.CARE) as u:
        done = work.enter_request(
            u,
            tenant,
            patient,
            tests,
            collected_at=when,
            collector=collector,
            prescriber_id=prescriber,
            urgent=urgent,
            clinical=clinical,
        )
    console.print(f"request   {done.request_id}", highlight=False, markup=False)
    for sid, container, kind in done.specimens:
        console.print(f"specimen  {sid}  {kind}  {container}", highlight=False, markup=False)
    for rid, code in done.results:
        console.print(f"result    {rid}  {code}", highlight=False, markup=False)


@specimen_app.command("receive")
def receive(
    specimen_id: str = typer.Argument(..., help="The specimen id, as read from its barcode."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """A specimen received at the lab."""
    with acting(as_email, Purpose.CARE) as u:
        sp = work.receive(u, tenant, specimen_id)
    console.print(f"{sp.specimen_id}  {sp.status}", highlight=False, markup=False)


@specimen_app.command("reject")
def reject(
    specimen_id: str = typer.Argument(..., help="The specimen id, as read from its barcode."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    reason: str = typer.Option(
        ..., "--reason", help="haemolysed, insufficient, unlabelled, wrong-container or delay-exceeded."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """A specimen rejected with its non-conformity: its results are cancelled."""
    with acting(as_email, Purpose.CARE) as u:
        sp = work.reject(u, tenant, specimen_id, reason)
    console.print(f"{sp.specimen_id}  {sp.status}  {sp.nonconformity}", highlight=False, markup=False)


@specimen_app.command("status")
def status(
    specimen_id: str = typer.Argument(..., help="The specimen id, as read from its barcode."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    to: str = typer.Option(None, "--to", help="Move it: in-analysis, stored or discarded."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """A specimen's status and timeline (from the audit trail), or a move with --to."""
    with acting(as_email, Purpose.CARE) as u:
        sp = work.move(u, tenant, specimen_id, to) if to else u.specimen(tenant, work.scanned(specimen_id))
        timeline = u.specimen_timeline(tenant, sp.specimen_id)
    console.print(
        f"{sp.specimen_id}  {sp.status or '-'}" + (f"  {sp.nonconformity}" if sp.nonconformity else ""),
        highlight=False,
        markup=False,
    )
    for e in timeline:
        console.print(
            f"  {e.at:%Y-%m-%d %H:%M:%S}  {e.action:<24} {e.outcome:<8} {e.actor}", highlight=False, markup=False
        )


@result_app.command("enter")
def enter_result(
    result_id: str = typer.Argument(..., help="The result's id ('labvault request enter' lists them)."),
    value: str = typer.Argument(..., help="The value (a number, decimal comma allowed, '<0.5', or a text)."),
    unit: str = typer.Option(None, "--unit", help="Its unit (UCUM); the test's own by default."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Enter a result's value by hand."""
    with acting(as_email, Purpose.CARE) as u:
        res, _ = work.enter_result(u, tenant, result_id, value, unit)
    console.print(f"{res.result_id}  {res.workflow}", highlight=False, markup=False)


@result_app.command("validate")
def validate(
    result_ids: list[str] = typer.Argument(..., help="The results' ids."),
    level: str = typer.Option(..., "--level", help="technical or biological."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Validate results, all or none (biologically: never by the person who entered them)."""
    if level not in ("technical", "biological"):
        raise InvalidInput("--level: technical or biological")
    with acting(as_email, Purpose.CARE) as u:
        done = u.validate(tenant, result_ids, level)
    for r in done:
        console.print(f"{r.result_id}  {r.workflow}", highlight=False, markup=False)
