"""``labvault breach``: a leaked file analysed against the labs' blind indexes (the vendor's security
officer: every lab; a lab's DPO: its own lab with ``--tenant``). Each lab's patients, records,
ambiguous rows, the categories exposed and the probable source package; unmatched rows counted.
Nothing of the file is printed or stored: counts, kinds and references only."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, actor, console, runtime

app = typer.Typer(help="Breach response: a leaked file traced to its patients and its source.", no_args_is_help=True)


@app.command("analyze")
def analyze_(
    files: list[Path] = typer.Argument(..., help="The leaked file(s): CSV/TSV, XLSX, ndjson, an SQL dump's text."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object (counts and references), for scripts."),
    tenant: str = typer.Option(None, "--tenant", help="A lab's DPO: analyse against this lab (its own) only."),
    incident: str = typer.Option(None, "--incident", help="The incident this analysis is run for."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Match a leaked file's rows through every lab's blind indexes (nothing decrypted): each lab's
    affected patients (kept sealed for the lab), records, categories and probable source."""
    from labvault.breach.analyze import analyze, open_files

    leaks = open_files(files)
    with runtime() as rt:
        who = actor(rt, as_email)
        analysis, parts = analyze(rt.gateway, who, leaks, tenant_id=tenant, incident_id=incident)
    if as_json:
        print(json.dumps({**analysis.to_json(), "matches": [p.to_json() for p in parts]}, sort_keys=True))
        return
    table = Table(title=f"leak analysis {analysis.analysis_id}")
    for col in ("lab", "patients", "records", "ambiguous", "categories", "source"):
        table.add_column(col, justify="right" if col in ("patients", "records", "ambiguous") else "left")
    for p in parts:
        cats = ", ".join(f"{k} {v}" for k, v in sorted(p.categories.items())) or "-"
        src = f"{p.source.package_id} ({p.source.method}, {p.source.score:.0%})" if p.source is not None else "unknown"
        table.add_row(p.tenant_id, str(p.patients), str(p.records), str(p.ambiguous), cats, src)
    console.print(table)
    console.print(
        f"{analysis.rows_total} rows in {len(analysis.files)} file(s): {analysis.rows_matched} matched, "
        f"{analysis.rows_ambiguous} ambiguous, {analysis.rows_unmatched} unmatched; "
        f"{analysis.summary.get('labs_searched', 0)} lab(s) searched in {analysis.seconds or 0:.2f} s",
        highlight=False,
        markup=False,
    )


@app.command("show")
def show(
    analysis_id: str = typer.Argument(..., help="The analysis id."),
    tenant: str = typer.Option(None, "--tenant", help="A lab's part of the analysis (its counts and source)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """An analysis (counts, labs, files' layouts) or one lab's part of it, as JSON."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), Purpose.BREACH) as u:
        out = u.leak_match(tenant, analysis_id).to_json() if tenant else u.leak_analysis(analysis_id).to_json()
    print(json.dumps(out, sort_keys=True))
