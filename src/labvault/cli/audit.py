"""``labvault audit``: checkpoints, verification, export, search and a patient's access history."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import typer

from labvault.access import Purpose, Unit
from labvault.audit import service
from labvault.cli.common import AS_OPTION_HELP, acting, actor, console, runtime
from labvault.errors import InvalidInput, NotFound

app = typer.Typer(
    help="The tamper-evident audit trail: checkpoint, verify, export, search, history.", no_args_is_help=True
)


def _labs(u, tenant: str | None) -> list[str]:
    if tenant:
        return [u.tenant(tenant).id]
    from labvault.crypto.keys import PLATFORM

    return [PLATFORM] + [t.id for t in u.list_tenants()]


def _per_lab(tenant: str | None, as_email: str | None, step):
    """Run ``step(unit, lab)`` for one lab or for every lab and the platform, one unit each."""
    with runtime() as rt:
        who = actor(rt, as_email)
        with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            labs = _labs(u, tenant)
        for lab in labs:
            with rt.gateway.unit(who, Purpose.ADMINISTRATION) as u:
                yield lab, step(u, lab)


@app.command("checkpoint")
def checkpoint(
    tenant: str | None = typer.Option(None, "--tenant", help="One lab; every lab and the platform when absent."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Sign a Merkle root over each lab's events so far."""

    def step(u, lab):
        try:
            return service.checkpoint(u, lab)
        except InvalidInput as exc:  # a lab with no event yet
            return str(exc)

    for lab, cp in _per_lab(tenant, as_email, step):
        if isinstance(cp, str):
            console.print(f"{lab}: {cp}")
        else:
            console.print(f"{lab}: checkpoint of {cp['body']['size']} events, root {cp['body']['root']}")


def _read_kept(path: Path) -> list[dict]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        lines = [json.loads(x) for x in text.splitlines() if x.strip()]
    except json.JSONDecodeError:
        raise InvalidInput(f"{path} is not a Labvault audit export (JSON lines)") from None
    if not lines or not all(isinstance(x, dict) for x in lines):
        raise InvalidInput(f"{path} is not a Labvault audit export (JSON lines)")
    if lines[0].get("type") != "header":  # a bare checkpoint, as printed by 'audit checkpoint'
        lines = [dict(x, type=x.get("type", "checkpoint")) for x in lines]
    return lines


@app.command("verify")
def verify(
    tenant: str | None = typer.Option(None, "--tenant", help="One lab; every lab and the platform when absent."),
    checkpoint_file: Path = typer.Option(
        None,
        "--checkpoint",
        help="The lab's pulled checkpoints ('audit checkpoints'), export or checkpoint "
        "(JSON lines): the log must be consistent with every one.",
    ),
    max_unsigned_age: int = typer.Option(
        int(service.UNSIGNED_AGE.total_seconds()),
        "--max-unsigned-age",
        min=0,
        help="Seconds events may wait for a signed checkpoint before it is reported (0: not checked).",
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Re-derive the chains and the signed roots, against the platform key pinned at init; exit 1
    naming the first bad sequence number."""
    from datetime import timedelta

    kept = _read_kept(checkpoint_file) if checkpoint_file else None
    if kept:
        named = {
            x.get("tenant") or (x.get("body") or {}).get("tenant") for x in kept if x.get("type") != "platform-key"
        }
        named.discard(None)
        if len(named) > 1 or (tenant and named and tenant not in named):
            raise InvalidInput(f"{checkpoint_file} holds another lab's checkpoints")
        tenant = tenant or next(iter(named), None)
    age = timedelta(seconds=max_unsigned_age) if max_unsigned_age else None
    bad = 0

    def step(u: Unit, lab: str) -> service.Report:
        return service.verify_log(u, lab, kept if kept and lab == tenant else None, max_unsigned_age=age)

    for lab, report in _per_lab(tenant, as_email, step):
        if report.ok:
            console.print(f"{lab}: OK, {report.events} events, {report.checkpoints} checkpoints verified")
        else:
            bad += 1
            console.print(f"{lab}: TAMPERED at sequence number {report.first_bad_seq}: {report.problem}")
            for line in report.details[:20]:
                if not line.endswith(report.problem):
                    console.print(f"  also at {line}")
    if bad:
        raise typer.Exit(1)


@app.command("checkpoints")
def checkpoints(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    since: int = typer.Option(
        None, "--since", min=0, help="Checkpoint number to start after; by default the last one in --output."
    ),
    output: Path = typer.Option(
        None, "--output", help="File the lab keeps (JSON lines, appended); stdout when absent."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """G4, G6: pull the lab's signed checkpoints for the lab to keep (its admin or DPO; a cron job)."""
    old: list[str] = []
    if output is not None and output.exists():
        old = [x for x in _read_text(output).splitlines() if x.strip()]
        parsed = [_json_line(x, output) for x in old]
        if since is None:
            try:
                since = max(
                    (int((x.get("body") or {}).get("index", 0) or 0) for x in parsed if x.get("type") == "checkpoint"),
                    default=0,
                )
            except (TypeError, ValueError, AttributeError):
                raise InvalidInput(f"{output} is not a file of Labvault checkpoints (JSON lines)") from None
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        lines = service.pull_checkpoints(u, tenant, since or 0)
    new = [json.dumps(x, sort_keys=True) for x in lines]
    fresh = [x for x in new if x not in set(old)]
    if output is None:
        print("".join(x + "\n" for x in new), end="")
        return
    from labvault.crypto.keys import atomic_write

    atomic_write(output, "".join(x + "\n" for x in old + fresh).encode(), mode=0o600)
    count = sum(1 for x in fresh if '"type": "checkpoint"' in x)
    console.print(f"{tenant}: {count} new signed checkpoints written to {output}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        raise InvalidInput(f"cannot read {path}") from None


def _json_line(text: str, path: Path) -> dict:
    try:
        line = json.loads(text)
    except json.JSONDecodeError:
        line = None
    if not isinstance(line, dict):
        raise InvalidInput(f"{path} is not a file of Labvault checkpoints (JSON lines)")
    return line


@app.command("prove")
def prove(
    checkpoint_file: Path = typer.Option(..., "--checkpoint", help="An older checkpoint the lab kept."),
    tenant: str = typer.Option(None, "--tenant", help="The lab's id (default: the lab the checkpoint names)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Prove that today's log only grew since a kept checkpoint (RFC 6962 consistency proof)."""
    from labvault.audit import merkle

    kept = [x for x in _read_kept(checkpoint_file) if x.get("type") == "checkpoint"]
    if not kept:
        raise InvalidInput(f"{checkpoint_file} holds no checkpoint")
    old = kept[-1]
    if not isinstance(old.get("body"), dict) or not isinstance(old.get("signature"), str):
        raise InvalidInput(f"{checkpoint_file} holds no signed checkpoint")
    tenant = tenant or old["body"].get("tenant")
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        # G4: the kept checkpoint is checked against the platform's pinned keys, not the key it names
        if not service.signed_by(old["body"], old["signature"], u.platform_keys()):
            raise InvalidInput("the kept checkpoint is not signed by the platform's pinned key")
        proof = service.consistency(u, tenant, int(old["body"]["size"]))
    ok = merkle.verify_consistency(
        proof["old_size"],
        proof["new_size"],
        bytes.fromhex(old["body"]["root"]),
        bytes.fromhex(proof["new_root"]),
        [bytes.fromhex(p) for p in proof["proof"]],
    )
    print(json.dumps({**proof, "verified": ok}))
    if not ok:
        console.print(f"the log of {tenant} is NOT an extension of the kept checkpoint of {proof['old_size']} events")
        raise typer.Exit(1)


@app.command("retention")
def retention(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    days: int = typer.Option(..., "--days", help="30 to 3,650; past 365 only with --reason."),
    reason: str = typer.Option(None, "--reason", help="The recorded justification for keeping longer."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Set how long the lab's audit trail is kept (the lab's admin or DPO)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        out = service.set_retention(u, tenant, days, reason)
    console.print(f"{tenant}: audit events kept {out['days']} days")


@app.command("purge")
def purge(
    tenant: str | None = typer.Option(None, "--tenant", help="One lab; every lab and the platform when absent."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Delete events past each lab's retention, cut at a signed checkpoint; verification goes on."""
    for lab, out in _per_lab(tenant, as_email, service.purge):
        console.print(
            f"{lab}: {out['deleted']} events purged (cut at {out['cut']}, retention {out['retention_days']} days)"
        )


@app.command("export")
def export(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    output: Path = typer.Option(None, "--output", help="File to write (JSON lines); stdout when absent."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's events and signed checkpoints, for the lab to keep (JSON lines)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        lines = [json.dumps(x, sort_keys=True) for x in service.export(u, tenant)]
    text = "\n".join(lines) + "\n"
    if output:
        from labvault.crypto.keys import atomic_write

        atomic_write(output, text.encode(), mode=0o640)
        console.print(f"{len(lines) - 1} lines written to {output}")
    else:
        print(text, end="")


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an ISO date or date-time") from None


@app.command("search")
def search(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    actor_email: str = typer.Option(
        None,
        "--actor",
        help="The person's e-mail address (an account of the lab, or a vendor account its grants name).",
    ),
    action: str = typer.Option(None, "--action", help="Action or prefix, e.g. patient:result"),
    since: str = typer.Option(None, "--since", help="From this ISO date or date-time (UTC when no offset)."),
    until: str = typer.Option(None, "--until", help="Up to this ISO date or date-time (UTC when no offset)."),
    patient_nir: str = typer.Option(
        None,
        "--patient-nir",
        help="A patient's NIR (INS matricule), through the blind index: the lab's admin and DPO only.",
    ),
    ref: str = typer.Option(None, "--ref", help="A pseudonymous reference (patient or object id) the events name."),
    limit: int = typer.Option(1000, "--limit", min=1, max=100_000, help="At most this many events."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Search a lab's events (security officer, the lab's DPO or admin); the search is audited.
    By identity (--patient-nir) only the lab's admin and DPO, or a vendor account under a grant the
    lab approved (G5); vendor staff search by pseudonymous reference (--ref). Each line names the
    actor (``actor_name``, ``actor_email``) when the lab knows the account."""
    if ref is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", ref):
        raise InvalidInput("--ref is a pseudonymous id (letters, digits, '_.:-', at most 64)")
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        people, _ = service.people(u, tenant)
        actor_id = service.account_for_email(u, tenant, actor_email) if actor_email else None
        patient_id: str | None = ref
        if patient_nir:
            patient_id = u.patient_id_for_nir(tenant, patient_nir)
            if patient_id is None:
                raise NotFound("no patient with this NIR in this lab")
        events = service.search(
            u,
            tenant,
            actor=actor_id,
            action=action,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            patient_id=patient_id,
            limit=limit,
        )
    for e in events:
        who = people.get(e["actor"])
        named = {"actor_name": who.name, "actor_email": who.email} if who else {"actor_name": None, "actor_email": None}
        print(json.dumps({**e, **named}, sort_keys=True, ensure_ascii=False))
