"""``labvault migrate`` and ``labvault export``: data leaves a lab only under its signed instruction.

migrate plan -> approve (an operator, and a lab signer) -> run -> verify -> receipt -> close;
``status`` at any time. ``acknowledge`` is the recipient's side: it opens the package with the
recipient's age identity, checks it against the manifest and writes the receipt to send back.
``export`` runs an export or a return (kinds ``export``, ``return``) in one go.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, actor, console, err_console, runtime, settings
from labvault.errors import AccessDenied, ConfigError, InvalidInput
from labvault.migration import service

app = typer.Typer(
    help="Migrations out of a lab: plan, approve, run, verify, receipt, close, status.", no_args_is_help=True
)

TENANT = typer.Option(..., "--tenant", help="The lab.")
AS = typer.Option(None, "--as", help=AS_OPTION_HELP)


@contextmanager
def as_operator(as_email: str | None) -> Iterator[None]:
    """Refusals for want of the operator role get a hint: the CLI's own account is an administrator."""
    try:
        yield
    except AccessDenied as exc:
        if as_email is None and "not allowed for roles" in str(exc):
            raise AccessDenied(f"{exc} (migrations are run by a vendor operator: --as EMAIL)") from None
        raise


def store() -> Path:
    """Where packages are kept until their purge: the home's package store."""
    return settings().home / "packages"


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{path}: not {what} (JSON)") from None


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{option}: a date is YYYY-MM-DD") from None


def _ask(
    fields: list[str] | None,
    all_fields: bool,
    since: str | None,
    until: str | None,
    patients: list[str] | None = None,
    codes: list[str] | None = None,
) -> service.Ask:
    asked: dict[str, tuple[str, ...]] | None = None
    if all_fields:
        asked = dict(service.ALL_FIELDS)
    elif fields:
        out: dict[str, list[str]] = {}
        for f in fields:
            cat, sep, name = f.partition(".")
            if not sep or not name:
                raise InvalidInput("--field is CATEGORY.NAME, e.g. result.code or free_text.result.comment")
            out.setdefault(cat, []).append(name)
        asked = {k: tuple(v) for k, v in out.items()}
    pairs = None
    if codes:
        pairs = []
        for c in codes:
            system, sep, code = c.partition("|")
            if not sep or not system or not code:
                raise InvalidInput("--code is SYSTEM|CODE, e.g. 'http://loinc.org|718-7'")
            pairs.append((system, code))
    return service.Ask(
        asked,
        _day(since, "--from"),
        _day(until, "--to"),
        tuple(patients) if patients else None,
        tuple(pairs) if pairs else None,
    )


FIELD = typer.Option(
    None, "--field", help="Ask for this field (CATEGORY.NAME; repeatable). Default: the instruction's."
)
ALL = typer.Option(False, "--all-fields", help="Ask for every field (refused unless the instruction lists them all).")
FROM = typer.Option(None, "--from", help="Ask from this collection day (default: the instruction's).")
TO = typer.Option(None, "--to", help="Ask up to this collection day (default: the instruction's).")
PATIENT = typer.Option(None, "--patient", help="Ask for this patient only (Labvault id; repeatable).")
CODE = typer.Option(None, "--code", help="Ask for this test only (SYSTEM|CODE; repeatable).")


def _show(job: service.Job, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job.public(), sort_keys=True))
        return
    p = job.plan
    console.print(
        f"migration {job.migration_id}  lab {job.tenant_id}  instruction {job.instruction_id}  "
        f"kind {job.kind}  state [bold]{job.state}[/bold]"
    )
    c = p["counts"]
    console.print(
        f"  selection {p['period'][0]} .. {p['period'][1]}: {c['results']} results, {c['requests']} requests, "
        f"{c['specimens']} specimens, {c['patients']} patients, {c['prescribers']} prescribers "
        f"(expected {p['expected_volume']}, at most {p['max_volume']})"
    )
    for rtype, names in p["fields"].items():
        links = (p.get("links") or {}).get(rtype)
        console.print(f"  {rtype:<10} {', '.join(names)}" + (f"; links to {', '.join(links)}" if links else ""))
    for a in job.approvals:
        console.print(f"  approved by {a['name']} ({a['side']}) at {a['at']}")
    if job.manifest:
        for f in job.manifest["manifest"]["files"]:
            console.print(f"  package {f['name']}: {f['bytes']} bytes, sha256 {f['sha256']}")
    for d in job.destroyed:
        console.print(f"  destroyed: {d['copy']} ({d['where']}) at {d['destroyed_at']}")
    console.print(f"  deletion deadline {job.deadline.isoformat()}")


@app.command("plan")
def plan(
    tenant: str = TENANT,
    instruction: str = typer.Option(..., "--instruction", help="The received instruction's id."),
    field: list[str] = FIELD,
    all_fields: bool = ALL,
    since: str = FROM,
    until: str = TO,
    patient: list[str] = PATIENT,
    code: list[str] = CODE,
    as_email: str = AS,
    as_json: bool = typer.Option(False, "--json", help="The plan as one JSON object."),
) -> None:
    """Dry run: counts per record type and the exact field list, no personal data. Anything asked
    beyond the instruction is refused, naming the excess (and raises a security alert)."""
    ask = _ask(field, all_fields, since, until, patient, code)
    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        job = service.plan(u, tenant, instruction, ask=ask)
    _show(job, as_json)


@app.command("approve")
def approve(
    migration: str = typer.Argument(..., metavar="MIGRATION", help="The migration's id ('migrate plan' prints it)."),
    tenant: str = TENANT,
    signer_key: Path = typer.Option(
        None,
        "--signer-key",
        help="A lab signer approves: their private key file "
        "(the plan is signed locally; the key never leaves this machine).",
    ),
    as_email: str = AS,
) -> None:
    """Approve a plan: once by a vendor operator (--as), once by a lab signer (--signer-key)."""
    from labvault.crypto.signing import Signer

    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        if signer_key is None:
            job = service.approve_operator(u, tenant, migration)
        else:
            try:
                signer = Signer(bytes.fromhex(signer_key.read_text().strip()))
            except OSError as exc:
                raise ConfigError(f"{signer_key}: cannot read ({exc.strerror})") from None
            except ValueError:
                raise ConfigError(f"{signer_key}: not a signer's private key (64 hexadecimal characters)") from None
            record = service.approval_record(service.get(u, tenant, migration))
            job = service.approve_lab(
                u, tenant, migration, public_key=signer.public_key.hex(), signature=signer.sign(record)
            )
    sides = ", ".join(sorted(a["side"] for a in job.approvals))
    console.print(f"migration {migration}: approved by {sides}; state {job.state}")


@app.command("run")
def run(
    migration: str = typer.Argument(..., metavar="MIGRATION", help="The migration's id."),
    tenant: str = TENANT,
    as_email: str = AS,
) -> None:
    """Write the age package (encrypted as it is produced; no clear file) and the signed manifest.
    After an interruption, run again: a new attempt replaces whatever the last one left."""
    with as_operator(as_email), runtime() as rt:
        who = actor(rt, as_email)
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            err_console.print(f"  {done[0]} results written", highlight=False)

        job = service.run(rt.gateway, who, tenant, migration, store(), on_progress=progress)
    d = service.package_dir(store(), job)
    m = job.manifest["manifest"] if job.manifest else {}
    console.print(f"migration {migration}: packaged, {m['counts']['records']['result']} results")
    console.print(f"  package  {d / service.PACKAGE}  sha256 {m['files'][0]['sha256']}")
    console.print(f"  manifest {d / service.MANIFEST}  (signed by the platform)")


@app.command("verify")
def verify(
    migration: str = typer.Argument(..., metavar="MIGRATION", help="The migration's id."),
    tenant: str = TENANT,
    as_email: str = AS,
) -> None:
    """Reconcile the package with its manifest and plan (decrypted in memory with the package key)."""
    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        job = service.verify_package(u, tenant, migration)
    m = job.manifest["manifest"] if job.manifest else {}
    console.print(
        f"migration {migration}: verified; counts per record type, field and link match the manifest: "
        f"{json.dumps(m['counts']['records'])}; links {json.dumps(m['counts'].get('links', {}))}"
    )


@app.command("receipt")
def receipt(
    migration: str = typer.Argument(..., metavar="MIGRATION", help="The migration's id."),
    file: Path = typer.Argument(
        ..., metavar="RECEIPT", help="The recipient's receipt ('labvault migrate acknowledge')."
    ),
    tenant: str = TENANT,
    as_email: str = AS,
) -> None:
    """Import the recipient's receipt; the package and its key are destroyed at once."""
    doc = _read_json(file, "a receipt")
    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        job = service.import_receipt(u, tenant, migration, doc)
    console.print(f"migration {migration}: receipt accepted; state {job.state}")
    for d in job.destroyed:
        console.print(f"  destroyed: {d['copy']} ({d['where']}) at {d['destroyed_at']}")


@app.command("close")
def close(
    migration: str = typer.Argument(..., metavar="MIGRATION", help="The migration's id."),
    tenant: str = TENANT,
    as_email: str = AS,
) -> None:
    """Write the signed closure certificate of a purged migration."""
    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        record = service.close(u, tenant, migration)
    console.print(
        f"migration {migration}: closed; certificate "
        f"{service.package_dir(store(), (tenant, migration)) / service.CERTIFICATE}"
    )
    console.print_json(json.dumps(record))


@app.command("status")
def status(
    migration: str = typer.Argument(
        None, metavar="[MIGRATION]", help="One migration's id (default: every migration of the lab)."
    ),
    tenant: str = TENANT,
    as_email: str = AS,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per migration."),
) -> None:
    """One migration, or every migration of the lab."""
    with as_operator(as_email), acting(as_email, Purpose.EXPORT) as u:
        jobs = [service.get(u, tenant, migration)] if migration else service.status(u, tenant)
    for job in jobs:
        _show(job, as_json)
    if not jobs and not as_json:
        console.print(f"no migration for lab {tenant}")


@app.command("acknowledge")
def acknowledge(
    package: Path = typer.Argument(..., metavar="PACKAGE", help="The age package received (package.ndjson.age)."),
    identity: Path = typer.Option(..., "--identity", help="The recipient's age identity file (AGE-SECRET-KEY-1...)."),
    manifest: Path = typer.Option(None, "--manifest", help="Default: manifest.json beside the package."),
    out: Path = typer.Option(..., "--out", help="Where to write the receipt (JSON)."),
    signing_key: Path = typer.Option(
        None,
        "--signing-key",
        help="The recipient's Ed25519 private key file "
        "('labvault signer keygen'): signs the receipt (needed when the "
        "instruction names a receipt_key).",
    ),
) -> None:
    """The recipient's side: open the package, check it against the manifest, write the receipt."""
    if not package.is_file():
        raise ConfigError(f"{package}: no such package file")
    m = _read_json(manifest or package.with_name(service.MANIFEST), "a manifest")
    if not isinstance(m, dict) or "manifest" not in m:
        raise InvalidInput("the manifest is not one written by 'labvault migrate run'")
    try:
        key_text = next(line for line in identity.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    except OSError as exc:
        raise ConfigError(f"{identity}: cannot read ({exc.strerror})") from None
    except StopIteration:
        raise ConfigError(f"{identity}: no age identity (AGE-SECRET-KEY-1...) in it") from None
    private = None
    if signing_key is not None:
        try:
            private = bytes.fromhex(signing_key.read_text().strip())
        except OSError as exc:
            raise ConfigError(f"{signing_key}: cannot read ({exc.strerror})") from None
        except ValueError:
            raise ConfigError(f"{signing_key}: not an Ed25519 private key (64 hexadecimal characters)") from None
        if len(private) != 32:
            raise ConfigError(f"{signing_key}: not an Ed25519 private key (64 hexadecimal characters)")
    doc = service.acknowledge(package, m, key_text, signing_key=private)
    if out.exists():
        raise ConfigError(f"{out} exists; not overwritten")
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    console.print(
        f"package {package.name} opened and checked: {json.dumps(doc['receipt']['records'])}; receipt written to {out}"
    )


@app.command("check-certificate")
def check_certificate(
    file: Path = typer.Argument(..., metavar="CERTIFICATE", help="The closure certificate (JSON) to check."),
) -> None:
    """Verify a closure certificate with this platform's signing key."""
    record = _read_json(file, "a certificate")
    with runtime() as rt, rt.unit(Purpose.ADMINISTRATION) as u:
        public = u.platform_public_key()
    body = service.check_certificate(record, [public])
    console.print(
        f"certificate of migration {body['migration']} (lab {body['tenant']}): signature valid; "
        f"purged {body['purged_at']} ({body['purge_reason']}), closed {body['closed_at']}"
    )


def export(
    tenant: str = TENANT,
    instruction: str = typer.Option(
        ..., "--instruction", help="The lab's received instruction (kind export or return)."
    ),
    field: list[str] = FIELD,
    all_fields: bool = ALL,
    since: str = FROM,
    until: str = TO,
    patient: list[str] = PATIENT,
    code: list[str] = CODE,
    as_email: str = AS,
    as_json: bool = typer.Option(False, "--json", help="The result as one JSON object."),
) -> None:
    """Export under a lab's signed instruction: exactly its fields and records, into an age package
    for its recipient (plan, run and verification in one go; then receipt and close as for migrations)."""
    ask = _ask(field, all_fields, since, until, patient, code)
    with as_operator(as_email), runtime() as rt:
        who = actor(rt, as_email)
        job = service.export(rt.gateway, who, tenant, instruction, store(), ask=ask)
    _show(job, as_json)
    if not as_json:
        console.print(f"  package in {service.package_dir(store(), job)}")
