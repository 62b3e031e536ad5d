"""``labvault bench``: measured figures; the last line of output is one JSON object."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import TaskID

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


@app.command("api")
def api(
    seconds: float = typer.Option(15.0, "--seconds", min=0.1, max=3600, help="Length of each load phase."),
    connections: int = typer.Option(8, "--connections", min=1, max=256, help="Concurrent keep-alive connections."),
    patients: int = typer.Option(200, "--patients", min=1, help="Generated patients in the scratch lab."),
) -> None:
    """Serve a scratch home on loopback and read patients' results through the API from a second process."""
    from labvault.bench.api import run_api

    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: str, done: float, total: float, note: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(note, total=total)
            bar.update(tasks[phase], completed=done, description=note)

        out = run_api(seconds, connections=connections, patients=patients, on_progress=on_progress)
    print(json.dumps(out))


@app.command("web")
def web(
    seconds: float = typer.Option(15.0, "--seconds", min=0.1, max=3600, help="Length of each load phase."),
    connections: int = typer.Option(8, "--connections", min=1, max=256, help="Concurrent keep-alive connections."),
    patients: int = typer.Option(200, "--patients", min=1, help="Generated patients in the scratch lab."),
) -> None:
    """Serve a scratch home on loopback and load the signed-in patient page, beside the API's read."""
    from labvault.bench.web import run_web

    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: str, done: float, total: float, note: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(note, total=total)
            bar.update(tasks[phase], completed=done, description=note)

        out = run_web(seconds, connections=connections, patients=patients, on_progress=on_progress)
    print(json.dumps(out))


@app.command("audit")
def audit(
    events: int = typer.Option(100_000, "--events", min=1, help="How many audit events to append."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
    ingest_results: int = typer.Option(
        100_000,
        "--ingest-results",
        min=5000,
        help="Results ingested with and without the audit trail, to measure its cost.",
    ),
) -> None:
    """Append N audit events, verify them, and measure the audit trail's cost on encrypted ingest."""
    from labvault.bench.audit import run_audit

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=events) for k in ("append", "verify")}
        out = run_audit(
            events,
            database_url=database_url,
            ingest_results=ingest_results,
            on_progress=lambda k, n: bar.advance(tasks[k], n),
        )
    print(json.dumps(out))


@app.command("mllp")
def mllp(
    messages: int = typer.Option(20_000, "--messages", min=1, help="How many ORU^R01 messages to send."),
    connections: int = typer.Option(4, "--connections", min=1, max=64, help="Client connections (one process each)."),
    window: int = typer.Option(100, "--window", min=1, max=10_000, help="Un-ACKed messages in flight per connection."),
    group: int = typer.Option(500, "--group", min=1, max=10_000, help="Most messages stored per commit."),
    parsers: int = typer.Option(1, "--parsers", min=0, max=16, help="Parser processes beside the committer."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
) -> None:
    """Send N messages over loopback MLLP; each ACK follows the durable commit of its group."""
    from labvault.bench.mllp import run_mllp

    with progress() as bar:
        task = bar.add_task("mllp", total=None)
        out = run_mllp(
            messages,
            connections=connections,
            window=window,
            group=group,
            parsers=parsers,
            database_url=database_url,
            on_progress=lambda phase: bar.update(task, description=phase),
        )
    print(json.dumps(out))


@app.command("export")
def export(
    results: int = typer.Option(100_000, "--results", min=1, help="How many results the lab holds."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
) -> None:
    """Export a lab of N results from the encrypted store as FHIR R4 Bulk Data ndjson."""
    from labvault.bench.export import run_export

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=results) for k in ("load", "baseline", "export")}
        out = run_export(results, database_url=database_url, on_progress=lambda k, n: bar.advance(tasks[k], n))
    print(json.dumps(out))


@app.command("migrate")
def migrate(
    results: int = typer.Option(100_000, "--results", min=1, help="How many results the lab holds."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
) -> None:
    """Plan + run + verify an instructed migration of a lab of N results (age package)."""
    from labvault.bench.migrate import run_migrate

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=results) for k in ("load", "migrate")}
        out = run_migrate(results, database_url=database_url, on_progress=lambda k, n: bar.advance(tasks[k], n))
    print(json.dumps(out))


@app.command("hl7")
def hl7(
    messages: int = typer.Option(20_000, "--messages", min=1, max=1_000_000, help="How many ORU^R01 messages."),
    seed: int = typer.Option(7, "--seed", help="Seed of the generated messages."),
) -> None:
    """Parse + map N generated HL7 v2.5 ORU^R01 messages, against python-hl7's parser on the same bytes."""
    from labvault.bench.hl7 import run_hl7

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=messages) for k in ("generate", "labvault", "python-hl7")}
        out = run_hl7(messages, seed=seed, on_progress=lambda k, n: bar.advance(tasks[k], n))
    print(json.dumps(out))


@app.command("report")
def report(
    reports: int = typer.Option(40, "--reports", min=1, max=10_000, help="How many single-page reports per round."),
    rounds: int = typer.Option(2, "--rounds", min=1, max=100, help="Alternating rounds of both phases."),
    seed: int = typer.Option(7, "--seed", help="Seed of the generated patients."),
) -> None:
    """Single-page patient reports per second through report_pdf, against WeasyPrint alone on the same HTML."""
    from labvault.bench.report import run_report

    with progress() as bar:
        tasks = {k: bar.add_task(k, total=reports * rounds) for k in ("report_pdf", "weasyprint")}
        out = run_report(reports, rounds=rounds, seed=seed, on_progress=lambda k, n: bar.advance(tasks[k], n))
    print(json.dumps(out))


@app.command("validate")
def validate(
    results: int = typer.Option(100_000, "--results", min=1, help="How many generated results to judge."),
    patients: int = typer.Option(200, "--patients", min=1, help="Generated patients in the scratch lab."),
) -> None:
    """Judge N generated results against the lab's catalogue and activated rules (ranges, delta
    checks against previous results read through the gateway, calculated tests, auto-validation)."""
    from labvault.bench.validate import run_validate

    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        out = run_validate(results, patients=patients, on_progress=on_progress)
    print(json.dumps(out))


@app.command("monitor")
def monitor(
    events: int = typer.Option(200_000, "--events", min=1, help="How many generated audit events to evaluate."),
    latency: bool = typer.Option(True, "--latency/--no-latency", help="Also time commit -> finding in a scratch home."),
    samples: int = typer.Option(20, "--samples", min=1, max=1000, help="Events timed for the detection latency."),
) -> None:
    """Rule evaluation over N audit events on one core (events_per_s), and the detection latency."""
    from labvault.bench.monitor import run_monitor

    print(json.dumps(run_monitor(events, with_latency=latency, samples=samples)))


@app.command("breach")
def breach(
    leaked: int = typer.Option(500_000, "--leaked", min=1, help="Rows of the leaked file."),
    patients: int = typer.Option(5_000_000, "--patients", min=1, help="Patients of the lab matched against."),
    database_url: str = typer.Option(None, "--database-url", help="Default: a scratch SQLite file."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also time the clear-text set lookups."),
    workers: int = typer.Option(2, "--workers", min=1, max=16, help="Processes sealing the lab's identities."),
) -> None:
    """Match a leaked file of N rows against a lab of M patients through its blind indexes, per
    identifier column (NIR; name + birth date; both), against a clear-text set lookup."""
    from labvault.bench.breach import run_breach

    with progress() as bar:
        tasks = {"patients": bar.add_task("patients", total=patients), "analyses": bar.add_task("analyses", total=3)}
        out = run_breach(
            leaked,
            patients,
            database_url=database_url,
            baseline=baseline,
            workers=workers,
            on_progress=lambda k, n: bar.advance(tasks[k], n),
        )
    print(json.dumps(out))


@app.command("story")
def story(
    labs: int = typer.Option(28, "--labs", min=1, max=999, help="Generated labs."),
    patients: int = typer.Option(491_840, "--patients", min=1, help="Generated patients, spread over the labs."),
    migrated: int = typer.Option(2, "--migrated", min=1, help="Labs migrated under signed instruction, then leaked."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Processes generating and storing."),
    seed: int = typer.Option(7, "--seed", help="Seed of the generated labs."),
    scratch: Path = typer.Option(
        None, "--scratch", help="Folder of the scratch home (default: the system's temporary folder)."
    ),
) -> None:
    """The 2021 story in a scratch home: generate and ingest, migrate, leak, analyse, notify."""
    from labvault.bench.story import run_story

    with progress() as bar:
        tasks: dict[str, TaskID] = {}

        def on_progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done)

        out = run_story(
            labs=labs,
            patients=patients,
            migrated=migrated,
            workers=workers,
            seed=seed,
            scratch=scratch,
            on_progress=on_progress,
        )
    print(json.dumps(out))
