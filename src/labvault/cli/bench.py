"""``labvault bench``: measured figures; the last line of output is one JSON object."""

from __future__ import annotations

import json

import typer

from labvault.cli.common import progress

app = typer.Typer(help="Benchmarks (one JSON object as the last line).", no_args_is_help=True)


@app.command("ingest")
def ingest(
    results: int = typer.Option(100_000, "--results", min=1, help="How many results to store."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
    batch: int = typer.Option(5000, "--batch", min=1, help="Results per transaction."),
) -> None:
    """Store N generated results encrypted through the gateway, and the same rows in clear."""
    from labvault.bench.ingest import run_ingest

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=results) for k in ("encrypted", "clear")}
        out = run_ingest(
            results, database_url=database_url, batch=batch, on_progress=lambda k, n: bar.advance(tasks[k], n)
        )
    print(json.dumps(out))
