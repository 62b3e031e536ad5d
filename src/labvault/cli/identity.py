"""``labvault identity``: identity vigilance (RNIV): the queue of messages whose identity conflicts,
their resolution, an identity's status, merges and unmerges."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, actor, console, runtime
from labvault.domain.models import IdentityStatus
from labvault.identity import service

app = typer.Typer(
    help="Identity vigilance: messages whose identity conflicts, their resolution, statuses, merges.",
    no_args_is_help=True,
)

TENANT_HELP = "The lab's id."
PATIENT_HELP = "A patient id of the lab ('labvault patient find')."


@app.command("queue")
def queue(
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    all_: bool = typer.Option(False, "--all", help="Every queued message, resolved ones too (with the decision)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line, for scripts."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Messages waiting because their INS or local identifier points to an identity with other traits."""
    with acting(as_email, Purpose.CARE) as u:
        items = service.queue(u, tenant, status=None if all_ else service.HELD)
    if as_json:
        for i in items:
            print(
                json.dumps(
                    {
                        "id": i.queue_id,
                        "received_at": i.received_at.isoformat(),
                        "format": i.format,
                        "feed": i.feed,
                        "reason": i.reason,
                        "candidate": i.candidate_id,
                        "status": i.status,
                        "resolved_to": i.resolved_to,
                    }
                )
            )
        return
    for i in items:
        console.print(
            f"{i.queue_id}  {i.received_at:%Y-%m-%d %H:%M:%S}  {i.format:<11} {i.feed:<6} {i.reason:<17} "
            f"candidate {i.candidate_id or '-'}  {i.status}" + (f" -> {i.resolved_to}" if i.resolved_to else ""),
            highlight=False,
            markup=False,
        )
    if not items:
        console.print("nothing waiting")


@app.command("resolve")
def resolve(
    queue_id: str = typer.Argument(..., help="The queued message's id ('labvault identity queue')."),
    action: str = typer.Option(
        ...,
        "--action",
        help="attach (to the candidate, or --patient), create (a new identity, without the conflicting INS), reject.",
    ),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    patient: str = typer.Option(
        None, "--patient", help="With attach: the patient to attach to instead of the candidate."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Decide on a queued message: store it under the right identity, or reject it."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.CARE) as u:
        done = service.resolve(u, tenant, queue_id, action, patient_id=patient, test_mode=rt.settings.test_mode)
    item = done.item
    to = f" to {item.resolved_to}" if item.resolved_to else ""
    console.print(f"{item.queue_id} {item.status}{to}: {done.results} results stored", highlight=False)


@app.command("show")
def show(
    patient_id: str = typer.Argument(..., help=PATIENT_HELP),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """An identity: status (who changed it, when, on what evidence), traits, local ids, merges."""
    with acting(as_email, Purpose.CARE) as u:
        view = service.show(u, tenant, patient_id)
    p = view.identity
    table = Table("field", "value", show_header=False)
    rows = [
        ("patient id", p.patient_id),
        ("status", str(p.identity_status)),
        ("status changed", _changed(view)),
        ("INS", f"{p.nir} ({p.ins_oid})" if p.nir else ""),
        ("birth name", p.strict_birth_name),
        ("name used", p.family_name),
        ("given names", p.given_names),
        ("first given name", p.first_given),
        ("given name used", p.used_given_name or ""),
        ("birth date", p.birth_date.isoformat()),
        ("sex", p.sex),
        ("birthplace", p.birthplace_code or ""),
    ]
    rows += [("local id", f"{value} ({system})") for system, value in p.local_ids]
    if p.merged_into:
        rows.append(("merged into", p.merged_into))
    rows += [("merged from", m) for m in view.merged_from]
    for m in view.merges:
        undone = f", undone {m.undone_at:%Y-%m-%d %H:%M} by {m.undone_by}" if m.undone_at else ""
        rows.append(
            ("merge", f"{m.merged_id} into {m.kept_id}: {m.requests} request(s), {m.source}, by {m.merged_by}{undone}")
        )
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def _changed(view: service.IdentityView) -> str:
    if view.status_changed_at is None:
        return "as received"
    return f"{view.status_changed_at:%Y-%m-%d %H:%M} by {view.status_changed_by} on {view.status_evidence}"


@app.command("status")
def status(
    patient_id: str = typer.Argument(..., help=PATIENT_HELP),
    to: IdentityStatus = typer.Option(..., "--to", help="The new status."),
    evidence: str = typer.Option(..., "--evidence", help=f"What it rests on: one of {', '.join(service.EVIDENCE)}."),
    ins: str = typer.Option(None, "--ins", help="The INS-NIR found (recovered, qualified) when none is stored yet."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Change an identity's status (recorded with who, when and the evidence's code)."""
    with acting(as_email, Purpose.CARE) as u:
        service.change_status(u, tenant, patient_id, to, evidence=evidence, ins=ins)
    console.print(f"{patient_id} is {to.value}", highlight=False)


@app.command("merge")
def merge(
    kept: str = typer.Argument(..., help="The identity kept."),
    merged: str = typer.Argument(..., help="The identity merged into it (its requests move; undone by unmerge)."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Merge two identities of the same patient: the second one's requests move to the first."""
    with acting(as_email, Purpose.CARE) as u:
        m = service.merge(u, tenant, kept, merged, source="cli")
    console.print(f"merged {m.merged_id} into {m.kept_id}: {m.requests} request(s) moved ({m.merge_id})")


@app.command("unmerge")
def unmerge(
    merged: str = typer.Argument(..., help="The identity that was merged into another."),
    tenant: str = typer.Option(..., "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Undo a merge: exactly the requests it moved go back."""
    with acting(as_email, Purpose.CARE) as u:
        m = service.unmerge(u, tenant, merged)
    console.print(f"unmerged {m.merged_id} from {m.kept_id}: {m.requests} request(s) moved back")
