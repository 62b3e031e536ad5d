"""``labvault patient``: look a patient up through the blind indexes; show them decrypted, with
their results as a biologist reads them (newest first, each beside the previous values of the
same test)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from datetime import date

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.domain.models import Identity, Result
from labvault.errors import InvalidInput
from labvault.interop.view import Line, result_lines
from labvault.interop.view import range_text as _range
from labvault.interop.view import value_text as _value

app = typer.Typer(help="Patients: exact-match lookup by NIR/INS or by name and birth date.", no_args_is_help=True)


def identity_table(p: Identity) -> Table:
    table = Table("field", "value", show_header=False)
    for label, value in [
        ("patient id", p.patient_id),
        ("INS/NIR", f"{p.nir or '-'} ({p.identity_status})"),
        ("local ids", ", ".join(f"{v} ({s})" for s, v in p.local_ids)),
        ("family name", p.family_name),
        ("birth name", p.birth_name or ""),
        ("given names", p.given_names),
        ("given name used", p.used_given_name or ""),
        ("birth date", p.birth_date.isoformat()),
        ("sex", p.sex),
        ("birthplace", p.birthplace_code or ""),
        ("address", p.address or ""),
        ("phone", p.phone or ""),
        ("e-mail", p.email or ""),
    ]:
        table.add_row(label, value)
    return table


def _previous_text(line: Line) -> str:
    return "\n".join(
        f"{_value(p)}{' ' + p.unit if p.unit else ''}{' ' + p.flag if p.flag else ''} ({at.date().isoformat()})"
        for at, p in line.previous
    )


def results_table(lines: Sequence[Line], limit: int) -> Table:
    """The results as a table whose cells wrap (labels whole, never cut)."""
    # Rules between rows, columns a space apart: ten columns fit a 100-column terminal.
    table = Table(show_lines=True, box=box.HORIZONTALS, padding=(0, 0), show_edge=False)
    # Short cells never wrap; the test's label, the validator and the previous values wrap on
    # words (a word longer than its column is folded, never cut).
    for name, kw in [
        ("date", {"no_wrap": True}),
        ("request", {"max_width": 13}),
        ("test", {}),
        ("status", {"max_width": 10}),
        ("value", {"justify": "right", "max_width": 12}),
        ("unit", {"max_width": 10}),
        ("flag", {"max_width": 4}),
        ("range", {"max_width": 11}),
        ("validated by", {"max_width": 10}),
        ("previous", {}),
    ]:
        table.add_column(name, overflow="fold", **kw)  # type: ignore[arg-type]
    for line in lines[:limit]:
        r = line.result
        category = "" if str(r.sensitivity) == "other" else f" [{r.sensitivity}]"
        table.add_row(
            line.at.strftime("%Y-%m-%d\n%H:%M"),
            line.request,
            f"{r.label} ({r.code}){category}",
            str(r.status),
            _value(r),
            r.unit or "",
            r.flag or "",
            _range(r),
            r.validated_by or "",
            _previous_text(line),
        )
    return table


@app.command("find")
def find(
    tenant: str = typer.Option(..., "--tenant", help="The lab."),
    nir: str = typer.Option(None, "--nir", help="NIR/INS with its key (15 characters)."),
    family_name: str = typer.Option(
        None, "--family-name", help="Family name (exact, with --given-name and --birth-date; its start with --prefix)."
    ),
    given_name: str = typer.Option(None, "--given-name", help="Given name (exact match; its start with --prefix)."),
    birth_date: str = typer.Option(None, "--birth-date", help="YYYY-MM-DD"),
    prefix: bool = typer.Option(
        False,
        "--prefix",
        help="The names given are their start (family name: birth or used name, 2 letters at least; "
        "--given-name optional); --birth-date required.",
    ),
    results: bool = typer.Option(
        False, "--results", help="Also show the patient's results, newest first, with the previous values of each test."
    ),
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many results shown."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per patient (stable keys), for scripts."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Find a patient by NIR, or by family name + given name + birth date (exact match, or the
    start of the names with --prefix)."""
    if nir is None and prefix and not (family_name and birth_date):
        raise InvalidInput("with --prefix, give --family-name and --birth-date (--given-name optional)")
    if nir is None and not prefix and not (family_name and given_name and birth_date):
        raise InvalidInput("give --nir, or --family-name, --given-name and --birth-date")
    born = None
    if nir is None:
        try:
            born = date.fromisoformat(birth_date)
        except ValueError:
            raise InvalidInput("--birth-date must be YYYY-MM-DD") from None
    with acting(as_email, Purpose.CARE) as u:
        if nir is not None:
            found = u.find_patients_by_nir(tenant, nir)
        elif prefix:
            found = u.find_patients_by_prefix(tenant, family_name, given_name, born)
        else:
            found = u.find_patients_by_name(tenant, family_name, given_name, born)
        shown = [
            (
                p,
                result_lines(u.results_of(tenant, p.patient_id), u.requests_of(tenant, p.patient_id))
                if results
                else [],
            )
            for p in found
        ]
    if not found:
        if as_json:
            typer.echo(json.dumps({"tenant": tenant, "patients": []}))
        else:
            console.print(f"no patient matches in lab {tenant}")
        raise typer.Exit(1)
    for p, lines in shown:
        if as_json:
            typer.echo(json.dumps(_patient_json(p, lines[:limit] if results else None), ensure_ascii=False))
            continue
        console.print(identity_table(p))
        if results:
            console.print(f"{len(lines)} results" + (f" ({limit} newest shown)" if len(lines) > limit else ""))
            # fitted to the terminal as it is now (COLUMNS, else the terminal's size), cells wrapped
            width = shutil.get_terminal_size((console.width, 24)).columns
            Console(file=console.file, width=width).print(results_table(lines, limit), soft_wrap=False)


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


def _patient_json(p: Identity, lines: Sequence[Line] | None) -> dict:
    out: dict = {
        "patient_id": p.patient_id,
        "nir": p.nir,
        "ins_oid": p.ins_oid if p.nir else None,
        "identity_status": str(p.identity_status),
        "local_ids": [{"system": s, "value": v} for s, v in p.local_ids],
        "family_name": p.family_name,
        "birth_name": p.birth_name,
        "given_names": p.given_names,
        "used_given_name": p.used_given_name,
        "birth_date": p.birth_date.isoformat(),
        "sex": p.sex,
    }
    if lines is not None:
        out["results"] = [line.as_json() for line in lines]
    return out
