"""``labvault keys``: data key rotation and status."""

from __future__ import annotations

import json

import typer
from rich.progress import TaskID

from labvault.access import Purpose
from labvault.cli.common import console, progress, runtime

app = typer.Typer(help="Data keys: rotate, status.", no_args_is_help=True)


@app.command("rotate")
def rotate(
    tenant: str = typer.Option(None, "--tenant", help="One lab; all active labs when absent."),
    batch_size: int = typer.Option(2000, "--batch-size", min=1, help="Rows re-encrypted per transaction."),
    max_batches: int = typer.Option(None, "--max-batches", min=1, help="Stop after this many batches (resume later)."),
) -> None:
    """New data key version, and re-encryption of every row in resumable batches."""
    with runtime() as rt:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            tenants = [u.tenant(tenant).id] if tenant else [t.id for t in u.list_tenants() if t.status == "active"]
        with progress() as bar:
            for tid in tenants:
                task = bar.add_task(f"rotating {tid}", total=None)

                def report(done: int, total: int, task: TaskID = task) -> None:
                    bar.update(task, completed=done, total=total)

                out = rt.gateway.rotate_keys(
                    rt.operator,
                    tid,
                    batch_size=batch_size,
                    max_batches=max_batches,
                    progress=report,
                )
                bar.update(task, total=out["rows"] or 1, completed=out["rows"] or 1)
                state = "done" if out["finished"] else "interrupted: run 'labvault keys rotate' again to resume"
                verb = "resumed" if out["resumed"] else "started"
                console.print(f"lab {tid}: version {out['version']} {verb}, {out['rows']} rows re-encrypted, {state}")


@app.command("status")
def status(tenant: str = typer.Option(..., "--tenant", help="The lab's id.")) -> None:
    """Key versions of a lab and how many rows each still seals."""
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        print(json.dumps(u.key_versions(tenant)))


@app.command("rotate-platform")
def rotate_platform() -> None:
    """G4: a new platform signing key; the rotation record is signed by the key it replaces, so a
    lab that pinned the old fingerprint can follow it (its pulled checkpoints carry the record)."""
    from labvault.audit.pin import show

    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        out = u.rotate_platform_key()
    console.print(f"platform signing key version {out['version']}, signed over by {show(out['previous'])}")
    console.print(f"platform key fingerprint (SHA-256), for the labs:\n  {out['fingerprint']}")
