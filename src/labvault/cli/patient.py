"""``labvault patient``: look a patient up through the blind indexes; show them decrypted."""

from __future__ import annotations

from datetime import date

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.domain.models import Identity, Result
from labvault.errors import InvalidInput

app = typer.Typer(help="Patients: exact-match lookup by NIR/INS or by name and birth date.", no_args_is_help=True)


def identity_table(p: Identity) -> Table:
    table = Table("field", "value", show_header=False)
    for label, value in [
        ("patient id", p.patient_id),
        ("INS/NIR", f"{p.nir} ({p.identity_status})"),
        ("family name", p.family_name),
        ("birth name", p.birth_name or ""),
        ("given names", p.given_names),
        ("birth date", p.birth_date.isoformat()),
        ("sex", p.sex),
        ("birthplace", p.birthplace_code or ""),
        ("address", p.address or ""),
        ("phone", p.phone or ""),
        ("e-mail", p.email or ""),
    ]:
        table.add_row(label, value)
    return table


def _range(r: Result) -> str:
    if r.ref_text:
        return r.ref_text
    if r.ref_low is not None and r.ref_high is not None:
        return f"{r.ref_low:g}-{r.ref_high:g}"
    if r.ref_high is not None:
        return f"<{r.ref_high:g}"
    if r.ref_low is not None:
        return f">{r.ref_low:g}"
    return ""


def results_table(results: list[Result], limit: int) -> Table:
    table = Table("code", "label", "value", "range", "flag", "category")
    for r in results[:limit]:
        value = r.value_text if r.value_num is None else f"{r.value_num:g}"
        if r.unit:
            value = f"{value} {r.unit}"
        label = r.label if len(r.label) <= 24 else r.label[:23] + "…"
        category = "" if str(r.sensitivity) == "other" else str(r.sensitivity)
        table.add_row(r.code, label, value or "", _range(r), r.flag or "", category)
    return table


@app.command("find")
def find(
    tenant: str = typer.Option(..., "--tenant", help="The lab."),
    nir: str = typer.Option(None, "--nir", help="NIR/INS with its key (15 characters)."),
    family_name: str = typer.Option(
        None, "--family-name", help="Family name (exact match; with --given-name and --birth-date)."
    ),
    given_name: str = typer.Option(
        None, "--given-name", help="Given name (exact match; with --family-name and --birth-date)."
    ),
    birth_date: str = typer.Option(None, "--birth-date", help="YYYY-MM-DD"),
    results: bool = typer.Option(False, "--results", help="Also show the patient's results."),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many results shown."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Find a patient by NIR, or by family name + given name + birth date (exact match)."""
    if nir is None and not (family_name and given_name and birth_date):
        raise InvalidInput("give --nir, or --family-name, --given-name and --birth-date")
    born = None
    if nir is None:
        try:
            born = date.fromisoformat(birth_date)
        except ValueError:
            raise InvalidInput("--birth-date must be YYYY-MM-DD") from None
    with acting(as_email, Purpose.CARE) as u:
        found = (
            u.find_patients_by_nir(tenant, nir)
            if nir is not None
            else u.find_patients_by_name(tenant, family_name, given_name, born)
        )
        shown = [(p, u.results_of(tenant, p.patient_id) if results else []) for p in found]
    if not found:
        console.print(f"no patient matches in lab {tenant}")
        raise typer.Exit(1)
    for p, rs in shown:
        console.print(identity_table(p))
        if results:
            console.print(f"{len(rs)} results")
            console.print(results_table(rs, limit))


def history_table(versions: list[Result]) -> Table:
    table = Table("version", "said at", "status", "value", "range", "flag", "validated by", title=versions[-1].label)
    for r in versions:
        value = r.value_repr or (r.value_text if r.value_num is None else f"{r.value_num:g}") or ""
        if r.comparator and r.value_repr is None:
            value = f"{r.comparator}{value}"
        if r.unit and value:
            value = f"{value} {r.unit}"
        current = " (current)" if r is versions[-1] else ""
        said = r.message_at.isoformat(timespec="minutes") if r.message_at else ""
        table.add_row(
            f"{r.version}{current}", said, str(r.status), value, _range(r), r.flag or "", r.validated_by or ""
        )
    return table


@app.command("history")
def history(
    result_id: str = typer.Argument(..., help="The result's id (as shown by the API or FHIR)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab."),
    json_out: bool = typer.Option(False, "--json", help="One JSON array, oldest version first."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Every version of one result, oldest first: each value, status and when its message said it."""
    with acting(as_email, Purpose.CARE) as u:
        versions = u.result_history(tenant, result_id)
    if json_out:
        import json

        rows = [
            {
                "version": r.version,
                "message_at": r.message_at.isoformat() if r.message_at else None,
                "status": str(r.status),
                "code_system": r.code_system,
                "code": r.code,
                "label": r.label,
                "value_num": r.value_num,
                "value_text": r.value_text,
                "value_repr": r.value_repr,
                "comparator": r.comparator,
                "unit": r.unit,
                "flag": r.flag,
                "validated_by": r.validated_by,
                "validated_at": r.validated_at.isoformat() if r.validated_at else None,
            }
            for r in versions
        ]
        print(json.dumps(rows, ensure_ascii=False))
        return
    console.print(history_table(versions))
