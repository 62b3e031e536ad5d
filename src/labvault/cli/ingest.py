"""``labvault ingest`` and ``labvault quarantine``: results in, refused messages kept for the lab."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.progress import TaskID
from rich.table import Table

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, actor, console, err_console, progress, runtime
from labvault.errors import EXIT_FAILURE, AccessDenied, ConfigError, InvalidInput
from labvault.ingest import intake
from labvault.ingest.service import Ingestor, Summary, instruction_for_ingest

TOKEN_HELP = "A file holding a bearer token (scope 'ingest') of the lab's service account; or LABVAULT_TOKEN."
INSTRUCTION_HELP = (
    "A received migration_in instruction of the lab, in force: only the results and fields it "
    "names are stored; refused messages are reported, not quarantined."
)


def feed_actor(rt, as_email: str | None, token_file: Path | None):
    """Who ingests: a service account by token, or a named lab account (``--as``)."""
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
    elif os.environ.get("LABVAULT_TOKEN") and not as_email:
        token = os.environ["LABVAULT_TOKEN"].strip()
    if token is None:
        return actor(rt, as_email)
    from labvault.accounts import service

    with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
        principal, scopes = service.principal_for_token(u, token, addr="cli", user_agent="labvault-cli")
    if "ingest" not in scopes:
        raise AccessDenied("this token lacks the 'ingest' scope")
    return principal


def _table(summaries: list[Summary], title: str = "Ingest summary") -> Table:
    table = Table(title=title)
    for col in ("file", "format", "accepted", "duplicates", "queued", "rejected", "results"):
        table.add_column(
            col,
            justify="left" if col in ("file", "format") else "right",
            overflow="fold" if col == "file" else "ellipsis",
        )
    for s in summaries:
        table.add_row(
            ", ".join(Path(f).name for f in s.file.split(", ")),
            s.format,
            str(s.accepted),
            str(s.duplicates),
            str(s.queued),
            str(s.rejected),
            str(s.results),
        )
    return table


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"


def ingest(
    files: list[Path] = typer.Argument(..., help="HL7 v2, HPRIM Santé, FHIR JSON, Bulk Data ndjson or CSV files."),
    tenant: str = typer.Option(..., "--tenant", help="The lab the results belong to."),
    group: int = typer.Option(
        1, "--group", min=1, max=10000, help="Messages per transaction (1: one transaction per message)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
    token_file: Path = typer.Option(None, "--token-file", help=TOKEN_HELP),
    instruction: str = typer.Option(None, "--instruction", help=INSTRUCTION_HELP),
) -> None:
    """Read result files, store each message whole, quarantine the refused ones (exit 1 if any)."""
    stopped: BaseException | None = None
    with runtime() as rt:
        principal = feed_actor(rt, as_email, token_file)
        instr = None if instruction is None else instruction_for_ingest(rt.gateway, rt.operator, tenant, instruction)
        ing = Ingestor(
            rt.gateway, principal, tenant, feed="file", group=group, test_mode=rt.settings.test_mode, instruction=instr
        )
        ing.preflight()
        with progress() as bar:
            tasks: dict[str, TaskID] = {}

            def step(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(Path(name.split(", ")[0]).name[:40], total=total)
                bar.update(tasks[name], completed=done)

            try:
                summaries = ing.ingest_files(files, progress=step)
            except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - what was stored before it is said, then the error is raised again
                summaries, stopped = ing.summaries, exc
    if stopped is not None and not any(s.accepted or s.duplicates or s.queued or s.rejected for s in summaries):
        raise stopped
    if as_json:
        for s in summaries:
            extra = (
                {}
                if instr is None
                else {
                    "instruction": instr.id,
                    "outside_instruction": s.outside,
                    "results_dropped": s.results_dropped,
                    "dropped_by": s.dropped,
                    "cleared": s.cleared,
                }
            )
            print(
                json.dumps(
                    {
                        "file": s.file,
                        "format": s.format,
                        "accepted": s.accepted,
                        "duplicates": s.duplicates,
                        "queued": s.queued,
                        "rejected": s.rejected,
                        "results": s.results,
                        "reasons": s.reasons,
                        "quarantine_ids": s.quarantine_ids,
                        **extra,
                    },
                    ensure_ascii=False,
                )
            )
    else:
        console.print(
            _table(
                summaries,
                "Ingest summary"
                if stopped is None
                else "Ingest summary: stopped by an error; what was stored before it",
            )
        )
        for s in summaries:
            if instr is not None:
                console.print(
                    f"instruction {instr.id}: {Path(s.file.split(', ')[0]).name}: {s.outside} message(s) "
                    f"outside it, {s.results_dropped} result(s) left out ({_counts(s.dropped)}); "
                    f"cleared: {_counts(s.cleared)}",
                    highlight=False,
                    markup=False,
                )
            if s.queued:
                console.print(
                    f"queued: {s.queued} message(s) whose identity conflicts with a known one wait for the "
                    "lab's decision (labvault identity queue)",
                    highlight=False,
                    markup=False,
                )
            for reason, qid in zip(s.reasons, s.quarantine_ids + [None] * len(s.reasons), strict=False):
                where = f" (quarantine {qid})" if qid else ""
                console.print(f"rejected: {reason}{where}", highlight=False, markup=False)
    if stopped is not None:
        raise stopped
    if any(s.rejected for s in summaries):
        raise typer.Exit(EXIT_FAILURE)


app = typer.Typer(help="Refused messages, kept encrypted: list, show, replay, drop.", no_args_is_help=True)


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    all_: bool = typer.Option(False, "--all", help="Also replayed and dropped ones."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's quarantined messages: id, when, format, feed, size, status, reason."""
    with acting(as_email, Purpose.CARE) as u:
        items = intake.listing(u, tenant, status=None if all_ else intake.HELD)
    if as_json:
        for i in items:
            print(
                json.dumps(
                    {
                        "id": i.quarantine_id,
                        "received_at": i.received_at.isoformat(),
                        "format": i.format,
                        "feed": i.feed,
                        "bytes": i.size,
                        "status": i.status,
                        "reason": i.reason,
                    },
                    ensure_ascii=False,
                )
            )
        return
    for i in items:
        console.print(
            f"{i.quarantine_id}  {i.received_at:%Y-%m-%d %H:%M:%S}  {i.format:<11} {i.feed:<6} "
            f"{i.size:>9} B  {i.status:<8}  {i.reason or ''}",
            highlight=False,
            markup=False,
        )
    if not items:
        console.print("nothing held")


@app.command("show")
def show(
    quarantine_id: str = typer.Argument(..., help="The quarantined message's id ('labvault quarantine list')."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    raw: bool = typer.Option(False, "--raw", help="Write the message's bytes to stdout, nothing else."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One quarantined message: its reason and content (the read is audited)."""
    with acting(as_email, Purpose.CARE) as u:
        item, data = intake.get(u, tenant, quarantine_id)
    if raw:
        if data is None:
            raise InvalidInput(f"this message was {item.status}: its content is erased")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    console.print(f"id {item.quarantine_id}  {item.format}  {item.size} bytes  {item.status}", highlight=False)
    if item.reason:
        console.print(f"reason: {item.reason}", highlight=False, markup=False)
    if data is None:
        console.print(f"content erased ({item.status})")
        return
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    console.print(text, highlight=False, markup=False)


@app.command("replay")
def replay(
    quarantine_id: str = typer.Argument(..., help="The quarantined message's id ('labvault quarantine list')."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Read a quarantined message again (e.g. after a fix); store it if it now passes (exit 1 if not)."""
    with runtime() as rt:
        ing = Ingestor(rt.gateway, actor(rt, as_email), tenant, feed="replay", test_mode=rt.settings.test_mode)
        s = ing.replay(quarantine_id)
    if s.rejected:
        for reason in s.reasons:
            err_console.print(f"still refused: {reason}", highlight=False, markup=False)
        raise typer.Exit(1)
    console.print(f"replayed {quarantine_id}: {s.accepted} accepted, {s.duplicates} duplicate(s), {s.results} results")


@app.command("drop")
def drop(
    quarantine_id: str = typer.Argument(..., help="The quarantined message's id ('labvault quarantine list')."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Erase a quarantined message's content (the record that it was refused and dropped stays)."""
    with acting(as_email, Purpose.CARE) as u:
        intake.resolve(u, tenant, quarantine_id, intake.DROPPED)
    console.print(f"dropped {quarantine_id}")
