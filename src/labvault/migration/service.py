"""The migration procedure: a state machine kept in the database, each step leaving evidence.

    planned -> approved -> running -> packaged -> verified -> received -> purged -> closed
                                                             (deadline) -> purged -> closed

- **plan** (vendor operator): the lab's instruction, re-checked in force, compiles to a read plan;
  a dry run counts what it selects per record type and field (no personal value is shown). A
  demand wider than the instruction is refused naming the excess, audited and alerted; a
  selection above the expected volume (plus tolerance) stops here, and again before writing.
- **approve**: two distinct people, a vendor operator (logged in) and a lab signer (an Ed25519
  signature of the plan with the key the lab registered). One person cannot give both.
- **run**: streams the selection straight into an age package (``labvault.crypto.packages``)
  encrypted to the recipient's key and to a package key of this run, held by the key provider.
  No clear byte touches the disk; the file gets its name only when complete. A ``kill -9``
  leaves nothing but a ``running`` state; running again starts a new attempt from scratch. The
  manifest (counts per record type, field and link, SHA-256 of the file, fingerprint key id) is
  signed by the platform. A record type is written only when the instruction names some of its
  fields, a link only to a record type written too (a request's prescriber only when prescriber
  fields are named): the package's schema is the instruction's allow-list.
- **verify**: the platform decrypts its package with the package key, in memory, recounts and
  checks every record against the plan and the manifest: fields, links (each names a record of
  the package), counts per record type, field and link.
- **receipt**: the recipient's acknowledgement (``acknowledge`` makes it from the package, the
  manifest and the recipient's age identity) carries a MAC under a key that only the package
  holds: it proves the package was opened. Importing it purges at once.
- **purge**: package file deleted and the package key's scope destroyed in the key provider
  (crypto-shredding: no copy of the file, in any backup, opens again); at receipt or at the
  deadline, whichever comes first (``enforce_deadlines``, run by ``labvault retention run`` and
  the scheduler of ``labvault serve``).
- **close**: a closure certificate signed by the platform: what was extracted, hashes, who
  approved and when, when each copy was destroyed.

Exports and end-of-contract returns (kinds ``export`` and ``return``) run the same steps: the
lab's signed instruction stands for the lab's approval, the operator who runs it for the other.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from labvault.access import instructed, policy, recipes
from labvault.crypto import packages
from labvault.crypto.digest import sha256_hex
from labvault.crypto.keys import atomic_write
from labvault.crypto.packages import PackageKeys
from labvault.crypto.signing import canonical, verify
from labvault.errors import AccessDenied, InvalidInput, SignatureInvalid
from labvault.ids import new_id, stored_utc, utcnow
from labvault.instructions import document
from labvault.migration import jobs
from labvault.migration import select as sel
from labvault.migration.errors import ReceiptInvalid, ReconciliationFailed, StateError, VolumeExceeded
from labvault.monitoring import canaries
from labvault.retention.records import store_signed_record

if TYPE_CHECKING:
    from labvault.access.gateway import Gateway, Unit
    from labvault.access.principal import Principal

FORMAT = "labvault-package/2"  # /2: links only to record types written, and counted
LEGACY_FORMATS = ("labvault-package/1",)  # every link always written, links not counted
PACKAGE = "package.ndjson.age"
MANIFEST = "manifest.json"
CERTIFICATE = "certificate.json"
STATES = ("planned", "approved", "running", "packaged", "verified", "received", "purged", "closed")
OUT_KINDS = ("migration_out",)
ONE_STEP_KINDS = ("export", "return")


@dataclass(frozen=True)
class Job:
    tenant_id: str
    migration_id: str
    instruction_id: str
    kind: str
    state: str
    plan: dict[str, Any]
    deadline: datetime
    approvals: list[dict[str, Any]]
    attempts: int
    manifest: dict[str, Any] | None
    receipt: dict[str, Any] | None
    destroyed: list[dict[str, Any]]
    planned_at: datetime
    purged_at: datetime | None
    closed_at: datetime | None
    package: Path | None = None  # where the package is (or was) written

    def public(self) -> dict[str, Any]:
        """What ``status`` shows: state, figures, approvals, dates; never a personal value."""
        return {
            "migration": self.migration_id,
            "tenant": self.tenant_id,
            "instruction": self.instruction_id,
            "kind": self.kind,
            "state": self.state,
            "attempts": self.attempts,
            "plan": self.plan,
            "approvals": self.approvals,
            "deadline": self.deadline.isoformat(),
            "planned_at": self.planned_at.isoformat(),
            "package": None if self.manifest is None else self.manifest["manifest"]["files"],
            "destroyed": self.destroyed,
            "purged_at": self.purged_at and self.purged_at.isoformat(),
            "closed_at": self.closed_at and self.closed_at.isoformat(),
        }


def _job(row) -> Job:
    return Job(
        row.tenant_id,
        row.migration_id,
        row.instruction_id,
        row.kind,
        row.state,
        json.loads(row.plan),
        stored_utc(row.deadline),
        json.loads(row.approvals),
        row.attempts,
        json.loads(row.manifest) if row.manifest else None,
        json.loads(row.receipt) if row.receipt else None,
        json.loads(row.destroyed) if row.destroyed else [],
        stored_utc(row.planned_at),
        stored_utc(row.purged_at),
        stored_utc(row.closed_at),
        Path(row.package_path) if row.package_path else None,
    )


_row = jobs.get
_set = jobs.set_


def _expect(job: Job, *states: str, hint: str) -> None:
    if job.state not in states:
        raise StateError(f"migration {job.migration_id} is {job.state}; {hint}")


# The state checks below raise (StateError), never assert: they hold under ``python -O`` too.
def _manifest(job: Job) -> dict[str, Any]:
    """The job's signed manifest, which every state after a complete run holds."""
    if job.manifest is None:
        raise StateError(f"migration {job.migration_id} is {job.state} but holds no manifest")
    return job.manifest


def _package(job: Job) -> Path:
    """Where the job's package is written, which every state from a run on holds."""
    if job.package is None:
        raise StateError(f"migration {job.migration_id} is {job.state} but names no package file")
    return job.package


def _outbound(instr: document.Instruction) -> tuple[datetime, document.Destination]:
    """The deletion deadline and the destination every outbound instruction names (its parsing
    requires both)."""
    if instr.deletion_deadline is None or instr.destination is None:
        raise document.InstructionInvalid(
            f"instruction '{instr.id}': an outbound instruction names a destination and a deletion deadline"
        )
    return instr.deletion_deadline, instr.destination


def _sealed(row: Any) -> packages.SealedKeys:
    """The package keys of a job's current attempt, as its row keeps them (wrapped)."""
    return packages.SealedKeys(
        row.package_scope,
        row.package_key_wrapped,
        row.receipt_key_wrapped,
        row.fingerprint_key_wrapped,
        row.fingerprint_key_id,
    )


def get(u: Unit, tenant_id: str, migration_id: str) -> Job:
    u.authorise(tenant_id, "migration:read")
    return _job(_row(u, tenant_id, migration_id))


def status(u: Unit, tenant_id: str) -> list[Job]:
    u.authorise(tenant_id, "migration:read")
    return [_job(r) for r in jobs.all_of(u, tenant_id)]


def _ev(u: Unit, tenant_id: str, action: str, count: int, job_id: str, instruction_id: str) -> None:
    u.audit(tenant_id, action, "migration", count, refs=[job_id, instruction_id])


# --- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """What an operator explicitly asks for (None: as instructed). Anything beyond the instruction
    is refused (``instructed.demand``); what is within narrows the plan, and the run keeps to it."""

    fields: dict[str, tuple[str, ...]] | None = None
    collected_from: date | None = None
    collected_to: date | None = None
    patients: tuple[str, ...] | None = None  # Labvault patient ids
    codes: tuple[tuple[str, str], ...] | None = None  # (system, code)

    @property
    def explicit(self) -> bool:
        return any(
            v is not None for v in (self.fields, self.collected_from, self.collected_to, self.patients, self.codes)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fields": self.fields and {k: list(v) for k, v in self.fields.items()},
            "collected_from": self.collected_from and self.collected_from.isoformat(),
            "collected_to": self.collected_to and self.collected_to.isoformat(),
            "patients": self.patients and list(self.patients),
            "codes": self.codes and [list(c) for c in self.codes],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ask:
        return cls(
            fields=d["fields"] and {k: tuple(v) for k, v in d["fields"].items()},
            collected_from=d["collected_from"] and date.fromisoformat(d["collected_from"]),
            collected_to=d["collected_to"] and date.fromisoformat(d["collected_to"]),
            patients=d["patients"] and tuple(d["patients"]),
            codes=d["codes"] and tuple((s, c) for s, c in d["codes"]),
        )


ALL_FIELDS = {c: tuple(n) for c, n in document.FIELDS.items()}


def _within(u: Unit, instr: document.Instruction, ask: Ask | None) -> document.Instruction:
    """The instruction narrowed to what is asked, once ``demand`` has found nothing beyond it
    (refused, audited and alerted otherwise)."""
    if ask is None or not ask.explicit:
        return instr
    instructed.demand(
        u,
        instr,
        fields=ask.fields if ask.fields is not None else instr.fields,
        collected_from=ask.collected_from or instr.collected_from,
        collected_to=ask.collected_to or instr.collected_to,
        patients=ask.patients if ask.patients is not None else instr.patients,
        codes=ask.codes if ask.codes is not None else instr.codes,
        sensitive=instr.sensitive,
    )
    return dataclasses.replace(
        instr,
        fields=instr.fields if ask.fields is None else {k: tuple(v) for k, v in ask.fields.items() if v},
        collected_from=ask.collected_from or instr.collected_from,
        collected_to=ask.collected_to or instr.collected_to,
        patients=instr.patients if ask.patients is None else ask.patients,
        codes=instr.codes if ask.codes is None else ask.codes,
    )


def _volume(
    u: Unit, instr: document.Instruction, results: int, job_id: str | None, *, during_run: bool = False
) -> None:
    if instr.max_volume is None or results <= instr.max_volume:
        return
    u.audit(
        instr.tenant,
        "instruction:volume",
        "instruction",
        results,
        outcome="alert",
        refs=[instr.id] + ([job_id] if job_id else []),
    )
    u.audit(
        instr.tenant,
        "migration:run" if during_run else "migration:plan",
        "migration",
        0,
        outcome="denied",
        refs=[instr.id],
    )
    seen = f"at least {results}" if during_run else str(results)
    raise VolumeExceeded(
        f"instruction '{instr.id}': {seen} results selected, above the expected volume "
        f"{instr.expected_volume} (+{instr.tolerance:.0%} allows {instr.max_volume}); nothing was written"
    )


def _tally(u: Unit, plan: sel.Plan) -> dict[str, Any]:
    tally = sel.count(u, plan)
    return {
        "results": tally.results,
        "requests": tally.requests,
        "specimens": tally.specimens,
        "patients": tally.patients,
        "prescribers": tally.prescribers,
    }


def plan(
    u: Unit,
    tenant_id: str,
    instruction_id: str,
    *,
    ask: Ask | None = None,
    kinds: Iterable[str] = OUT_KINDS,
    now: datetime | None = None,
) -> Job:
    """Dry run: the instruction's read plan and its figures, kept as a new ``planned`` job."""
    kinds = tuple(kinds)
    u.authorise(tenant_id, "migration:plan")
    instr = _within(u, instructed.enter(u, tenant_id, instruction_id, kinds=kinds, now=now), ask)
    read_plan = sel.compile_plan(instr)
    job_id = new_id()
    canaries.plant_for_package(u, tenant_id, job_id, read_plan.read)  # its own canary, if the lab seeded some
    counts = _tally(u, read_plan)
    _volume(u, instr, counts["results"], None)
    figures = {
        "fields": read_plan.describe(),
        "links": read_plan.describe_links(),
        "counts": counts,
        "expected_volume": instr.expected_volume,
        "max_volume": instr.max_volume,
        "period": [instr.collected_from.isoformat(), instr.collected_to.isoformat()],
        "destination": {"name": instr.destination.name, "country": instr.destination.country}
        if instr.destination
        else None,
        "ask": ask.to_json() if ask is not None and ask.explicit else None,
    }
    deadline, _ = _outbound(instr)
    jobs.put(
        u,
        tenant_id=tenant_id,
        migration_id=job_id,
        instruction_id=instr.id,
        kind=instr.kind,
        state="planned",
        plan=json.dumps(figures, sort_keys=True),
        planned_by=u.principal.account_id,
        planned_at=now or utcnow(),
        deadline=deadline,
        approvals="[]",
        attempts=0,
    )
    _ev(u, tenant_id, "migration:plan", counts["results"], job_id, instr.id)
    return _job(_row(u, tenant_id, job_id))


# --- approvals --------------------------------------------------------------------------------


def approval_record(job: Job) -> dict[str, Any]:
    """What a lab signer signs to approve: the job, its instruction and the plan's digest."""
    return {
        "approve": "migration",
        "migration": job.migration_id,
        "tenant": job.tenant_id,
        "instruction": job.instruction_id,
        "plan_sha256": sha256_hex(canonical(job.plan)),
    }


def _same_person(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """One human behind both approvals: the same account, e-mail, or full name (a vendor employee
    who also holds a lab account under another address is still one person)."""

    def norm(name: object) -> str:
        return " ".join(str(name or "").casefold().split())

    return (
        a["account"] == b["account"]
        or (a.get("email") or "") == (b.get("email") or "-")
        or (norm(a.get("name")) != "" and norm(a.get("name")) == norm(b.get("name")))
    )


def _add_approval(u: Unit, job: Job, approval: dict[str, Any]) -> Job:
    others = [a for a in job.approvals if a["side"] != approval["side"]]
    if any(a["side"] == approval["side"] for a in job.approvals):
        raise StateError(f"migration {job.migration_id} already has its {approval['side']} approval")
    for a in others:
        if _same_person(a, approval):
            u.audit(
                job.tenant_id,
                "migration:approve",
                "migration",
                0,
                outcome="denied",
                refs=[job.migration_id, job.instruction_id],
            )
            raise AccessDenied("the two approvals must come from two different people")
    approvals = [*job.approvals, approval]
    state = "approved" if {a["side"] for a in approvals} == {"operator", "lab"} else job.state
    _set(u, job.tenant_id, job.migration_id, approvals=json.dumps(approvals), state=state)
    _ev(u, job.tenant_id, "migration:approve", 1, job.migration_id, job.instruction_id)
    return _job(_row(u, job.tenant_id, job.migration_id))


def approve_operator(u: Unit, tenant_id: str, migration_id: str) -> Job:
    """The vendor side's approval: a logged-in person with the operator role."""
    u.authorise(tenant_id, "migration:approve")
    p = u.principal
    if not p.is_platform or policy.Role.OPERATOR not in p.roles:
        u.refuse(tenant_id, "migration:approve", "the vendor's approval is given by an operator")
    job = _job(_row(u, tenant_id, migration_id))
    _expect(job, "planned", hint="only a planned migration is approved")
    return _add_approval(
        u,
        job,
        {
            "side": "operator",
            "account": p.account_id,
            "name": p.name,
            "email": jobs.account_email(u, p.tenant_id, p.account_id),
            "at": utcnow().isoformat(),
        },
    )


def approve_lab(u: Unit, tenant_id: str, migration_id: str, *, public_key: str, signature: str) -> Job:
    """The lab side's approval: a current signer's signature of ``approval_record``."""
    from labvault.instructions import signers

    u.authorise(tenant_id, "instruction:receive")
    job = _job(_row(u, tenant_id, migration_id))
    _expect(job, "planned", hint="only a planned migration is approved")
    key = public_key.strip().lower()
    signer = next((s for s in signers.list_signers(u, tenant_id) if s.public_key == key and s.active), None)
    if signer is None:
        u.audit(tenant_id, "migration:approve", "migration", 0, outcome="denied", refs=[migration_id])
        raise document.UnknownSigner("approval: the key is not a current signer of this lab (unknown or revoked)")
    try:
        verify(approval_record(job), signature, bytes.fromhex(key))
    except SignatureInvalid:
        u.audit(tenant_id, "migration:approve", "migration", 0, outcome="denied", refs=[migration_id])
        raise document.InstructionSignatureInvalid("approval: the signature does not match this plan") from None
    account = jobs.account_of_email(u, tenant_id, signer.email)
    return _add_approval(
        u,
        job,
        {
            "side": "lab",
            "account": account or signer.signer_id,
            "signer": signer.signer_id,
            "name": signer.name,
            "email": signer.email.lower(),
            "signature": signature,
            "at": utcnow().isoformat(),
        },
    )


# --- run --------------------------------------------------------------------------------------


def package_dir(store: Path, job: Job | tuple[str, str]) -> Path:
    tenant, mid = (job.tenant_id, job.migration_id) if isinstance(job, Job) else job
    return store / tenant / mid


def _destroy_attempt(keys: PackageKeys, job: Job) -> None:
    if job.package is not None:
        packages.shred(job.package)
        packages.discard_partial(job.package)
    keys.destroy(PackageKeys.scope(job.migration_id))  # none before the first attempt


def _start(
    gw: Gateway, principal: Principal, tenant_id: str, migration_id: str, store: Path, now: datetime | None
) -> None:
    from labvault.access import Purpose

    with gw.unit(principal, Purpose.EXPORT) as u:
        u.authorise(tenant_id, "migration:run")
        job = _job(_row(u, tenant_id, migration_id))
        _expect(job, "approved", "running", hint="a run needs both approvals (see 'labvault migrate approve')")
        if (now or utcnow()) >= job.deadline:
            raise StateError(f"migration {migration_id}: its deletion deadline has passed; nothing is run")
        # A new attempt: whatever an interrupted one left is destroyed first (file and key).
        keys = recipes.package_keys(u, tenant_id, "migration:run")
        _destroy_attempt(keys, job)
        sealed = keys.start(migration_id)
        _set(
            u,
            tenant_id,
            migration_id,
            state="running",
            attempts=job.attempts + 1,
            started_at=utcnow(),
            package_path=str(package_dir(store, job).resolve() / PACKAGE),
            package_scope=sealed.scope,
            package_key_wrapped=sealed.package_key,
            receipt_key_wrapped=sealed.receipt_key,
            fingerprint_key_wrapped=sealed.fingerprint_key,
            fingerprint_key_id=sealed.fingerprint_key_id,
        )


def _records(records: Iterator[dict[str, Any]], counts: sel.Counts) -> Iterator[bytes]:
    """One JSON line per record (orjson: the encoding is a tenth of the standard library's cost);
    the header line comes first, written with the package keys (``PackageKeys.write``)."""
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    for rec in records:
        counts.add(rec["record"], rec, built=True)
        yield dumps(rec, option=newline)


def run(
    gw: Gateway,
    principal: Principal,
    tenant_id: str,
    migration_id: str,
    store: Path,
    *,
    now: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Job:
    """Write the package (a new attempt each call), then the signed manifest."""
    from labvault.access import Purpose

    _start(gw, principal, tenant_id, migration_id, store, now)
    with gw.unit(principal, Purpose.EXPORT) as u:
        u.authorise(tenant_id, "migration:run")
        row = _row(u, tenant_id, migration_id)
        job = _job(row)
        instr = instructed.enter(u, tenant_id, job.instruction_id, kinds=(job.kind,), now=now)
        asked = job.plan.get("ask")
        instr = _within(u, instr, Ask.from_json(asked) if asked else None)  # what was planned and approved
        read_plan = sel.compile_plan(instr)
        seen = [0]

        def guard(k: int) -> None:
            # The plan counted; should the lab's data have grown since, the run stops as soon as it
            # selects more than the instruction allows, before the package is ever linked.
            seen[0] += k
            _volume(u, instr, seen[0], migration_id, during_run=True)
            if on_progress is not None:
                on_progress(k)

        keys, sealed = recipes.package_keys(u, tenant_id, "migration:run"), _sealed(row)
        _, destination = _outbound(instr)
        # The header's last field, the receipt key, is added by the package keys (PackageKeys.write).
        header = {
            "record": "header",
            "format": FORMAT,
            "migration": migration_id,
            "tenant": tenant_id,
            "instruction": instr.id,
            "fields": read_plan.describe(),
            "links": read_plan.describe_links(),
        }
        counts = sel.Counts(read_plan.links)
        u.use_package_canary(tenant_id, migration_id)  # the package's own canary goes into it
        records = sel.run(u, read_plan, keys.ids(migration_id, sealed), on_result=guard)
        package = _package(job)
        d = package.parent
        written = keys.write(sealed, package, header, _records(records, counts), destination.recipient_age_key)
    with gw.unit(principal, Purpose.EXPORT) as u:
        u.authorise(tenant_id, "migration:run")
        row = _row(u, tenant_id, migration_id)
        job = _job(row)
        received = _instruction_sha(u, tenant_id, job.instruction_id)
        body = {
            "format": FORMAT,
            "migration": migration_id,
            "tenant": tenant_id,
            "kind": job.kind,
            "instruction": job.instruction_id,
            "instruction_sha256": received,
            "created_at": utcnow().isoformat(),
            "recipient": destination.recipient_age_key,
            "destination": {"name": destination.name, "country": destination.country},
            "fields": read_plan.describe(),
            "links": read_plan.describe_links(),
            "counts": counts.as_dict(),
            "files": [{"name": PACKAGE, "sha256": written.sha256, "bytes": written.size}],
            "fingerprint_key_id": row.fingerprint_key_id,
            "deletion_deadline": job.deadline.isoformat(),
            "approvals": [{k: a[k] for k in ("side", "name", "at")} for a in job.approvals],
        }
        signature, public = u.sign_as_platform(body)
        manifest = {"manifest": body, "signature": signature, "public_key": public.hex()}
        atomic_write(d / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode(), mode=0o600)
        _set(
            u,
            tenant_id,
            migration_id,
            state="packaged",
            manifest=json.dumps(manifest, sort_keys=True),
            manifest_signature=manifest["signature"],
        )
        _ev(u, tenant_id, "migration:run", counts.records["result"], migration_id, job.instruction_id)
        return _job(_row(u, tenant_id, migration_id))


def _instruction_sha(u: Unit, tenant_id: str, instruction_id: str) -> str:
    body, signature = jobs.instruction_as_signed(u, tenant_id, instruction_id)
    return sha256_hex(body.encode() + b"\n" + signature.encode())


# --- reading a package back -------------------------------------------------------------------


class _Reader:
    """Clear lines pushed by ``packages.read``, parsed one by one (memory: one chunk)."""

    def __init__(self, on_record: Callable[[dict[str, Any]], None]) -> None:
        self._tail = b""
        self._on = on_record

    def push(self, data: bytes) -> None:
        data = self._tail + data
        *whole, self._tail = data.split(b"\n")
        for line in whole:
            if line:
                self._on(orjson.loads(line))

    def end(self) -> None:
        if self._tail:
            raise ReconciliationFailed("the package ends in the middle of a record")


class _LinkCheck:
    """Every link of a package names a record of that package (requirement B4).

    Records come as ``select.run`` writes them: each request, then its specimens, then its
    results; identities and prescribers last. A specimen's or result's request is the request
    just written; a result's specimen is one of its group's. Patients and prescribers named by
    links are kept (a few thousand ids, as the run keeps them) and looked up at the end: memory
    stays flat in the number of results."""

    def __init__(self) -> None:
        self.request: str | None = None
        self.specimens: set[str] = set()
        self.after_result = False
        self.named: dict[str, set[str]] = {"identity": set(), "prescriber": set()}
        self.seen: dict[str, set[str]] = {"identity": set(), "prescriber": set()}

    def on(self, rtype: str, rec: dict[str, Any]) -> None:
        if rtype in self.seen:
            self.seen[rtype].add(rec["id"])
            return
        if rtype == "request":
            self.request, self.specimens, self.after_result = rec["id"], set(), False
        elif rtype == "specimen":
            if self.after_result:  # requests not written: a new request's specimens begin
                self.specimens, self.after_result = set(), False
            self.specimens.add(rec["id"])
        elif rtype == "result":
            self.after_result = True
            spec = rec.get("specimen")
            if spec is not None and spec not in self.specimens:
                raise ReconciliationFailed("a result's specimen link names no specimen of its request in the package")
        if "request" in rec and (rec["request"] is None or rec["request"] != self.request):
            raise ReconciliationFailed(f"a {rtype} record's request link names no request record before it")
        for link, target in (("patient", "identity"), ("prescriber", "prescriber")):
            v = rec.get(link)
            if v is not None:
                self.named[target].add(v)

    def end(self) -> None:
        for target, named in self.named.items():
            missing = len(named - self.seen[target])
            if missing:
                raise ReconciliationFailed(f"{missing} {target} id(s) linked to are not records of the package")


def reconcile(
    path: Path, read: Callable[[Path, Callable[[bytes], None]], None], manifest: dict[str, Any]
) -> dict[str, Any]:
    """Decrypt a package in memory (``read``: the recipient's identity or the platform's package
    key, through ``labvault.crypto.packages``) and check it against its manifest: the SHA-256 of the file,
    the header, every record's type, fields and links within the manifest's (a link only to a
    record type the manifest lists, and naming a record of the package), and the counts per record
    type, field and link (A2, B4). Returns the package's header; raises ``ReconciliationFailed``
    naming the first mismatch (names and counts, never a value)."""
    body = manifest["manifest"]
    (entry,) = body["files"]
    if packages.sha256_of(path) != entry["sha256"]:
        raise ReconciliationFailed(f"{entry['name']}: SHA-256 differs from the manifest's")
    legacy = body.get("format") in LEGACY_FORMATS
    links = {t: sel.LINKS[t] for t in body["fields"]} if legacy else body.get("links")
    if not isinstance(links, dict) or set(links) != set(body["fields"]):
        raise ReconciliationFailed("the manifest does not name the links of each record type")
    for rtype, names in links.items():
        bad = [k for k in names if k not in sel.LINKS.get(rtype, ()) or sel.TARGET[k] not in body["fields"]]
        if bad and not legacy:
            raise ReconciliationFailed(
                f"the manifest's links of {sel_name(rtype)} records name record types "
                f"it does not list: {', '.join(map(sel_name, bad))}"
            )
    allowed: dict[str, set[str]] = {
        rtype: {"record", "id", *links[rtype], *fields} for rtype, fields in body["fields"].items()
    }
    counts = sel.Counts(None if legacy else links)
    check = None if legacy else _LinkCheck()
    header: dict[str, Any] = {}

    def on(rec: dict[str, Any]) -> None:
        rtype = rec.get("record")
        if rtype == "header" and not header and not any(counts.records.values()):
            header.update(rec)
            return
        if rtype not in allowed:
            raise ReconciliationFailed(f"a record of type {sel_name(rtype)} is not in the manifest")
        extra = set(rec) - allowed[rtype]
        if extra:
            raise ReconciliationFailed(
                f"{rtype} records hold fields outside the manifest: {', '.join(sorted(map(sel_name, extra)))}"
            )
        if check is not None:
            check.on(rtype, rec)
        try:
            counts.add(rtype, rec)
        except ValueError:
            raise ReconciliationFailed(f"{rtype} records differ in their fields") from None

    reader = _Reader(on)
    read(path, reader.push)
    reader.end()
    if check is not None:
        check.end()
    if header.get("migration") != body["migration"]:
        raise ReconciliationFailed("the package's header does not name this migration")
    if not legacy and (header.get("fields") != body["fields"] or header.get("links") != body["links"]):
        raise ReconciliationFailed("the package's header does not name the manifest's fields and links")
    got = counts.as_dict()
    if legacy:
        got.pop("links")
    want = body["counts"]
    if got != want:
        diffs = [
            f"{k}: {got['records'].get(k, 0)} in the package, {want['records'].get(k, 0)} in the manifest"
            for k in sorted(set(got["records"]) | set(want["records"]))
            if got["records"].get(k, 0) != want["records"].get(k, 0)
        ]
        if not diffs and got.get("links") != want.get("links"):
            diffs = [
                f"{t} links: {json.dumps(got['links'].get(t, {}), sort_keys=True)} in the package, "
                f"{json.dumps((want.get('links') or {}).get(t, {}), sort_keys=True)} in the manifest"
                for t in sorted(set(got["links"]) | set(want.get("links") or {}))
                if got["links"].get(t) != (want.get("links") or {}).get(t)
            ]
        raise ReconciliationFailed("counts differ from the manifest: " + ("; ".join(diffs) or "per field"))
    return header


def sel_name(v: object) -> str:
    return v if isinstance(v, str) and v.isidentifier() else "(unnamed)"


def verify_package(u: Unit, tenant_id: str, migration_id: str) -> Job:
    """The platform's reconciliation of its own package (with the package key), then ``verified``:
    the manifest's fields and links are the approved plan's, and the package is the manifest's
    (``reconcile``: record types, fields, links and their counts; A2, B4)."""
    u.authorise(tenant_id, "migration:verify")
    row = _row(u, tenant_id, migration_id)
    job = _job(row)
    _expect(job, "packaged", "verified", hint="verify follows a complete run")
    manifest = _manifest(job)
    _check_manifest_signature(u, manifest)
    m = manifest["manifest"]
    if m["fields"] != job.plan["fields"] or ("links" in job.plan and m.get("links") != job.plan["links"]):
        what = "fields" if m["fields"] != job.plan["fields"] else "links"
        raise ReconciliationFailed(f"the manifest's {what} are not the approved plan's")
    keys, sealed = recipes.package_keys(u, tenant_id, "migration:verify"), _sealed(row)
    reconcile(_package(job), lambda path, push: keys.read(sealed, path, push), manifest)
    if (
        "result" in m["fields"]
        and m["counts"]["records"]["result"] != job.plan["counts"]["results"]
        and job.plan["counts"]["results"] is not None
    ):
        u.audit(tenant_id, "migration:verify", "migration", 0, outcome="alert", refs=[migration_id])
    _set(u, tenant_id, migration_id, state="verified", verified_at=utcnow())
    _ev(u, tenant_id, "migration:verify", m["counts"]["records"]["result"], migration_id, job.instruction_id)
    return _job(_row(u, tenant_id, migration_id))


def _check_manifest_signature(u: Unit, manifest: dict[str, Any]) -> None:
    public = u.platform_public_key()
    if manifest.get("public_key") != public.hex():
        raise ReconciliationFailed("the manifest is not signed by this platform")
    try:
        verify(manifest["manifest"], manifest["signature"], public)
    except SignatureInvalid:
        raise ReconciliationFailed("the manifest's signature does not verify") from None


# --- receipt, purge, close --------------------------------------------------------------------


def acknowledge(
    package: Path, manifest: dict[str, Any], identity_text: str, *, signing_key: bytes | None = None
) -> dict[str, Any]:
    """The recipient's side (no store needed): open the package with its age identity, check it
    against the manifest, and write the receipt: MACed with the key found inside the package
    (proof that it was opened) and, with ``signing_key`` (the recipient's Ed25519 private key),
    signed (required when the instruction names the recipient's ``receipt_key``)."""
    from labvault.crypto.signing import Signer

    header = reconcile(package, lambda path, push: packages.read(path, identity_text, push), manifest)
    body = manifest["manifest"]
    receipt = {
        "receipt": "migration",
        "migration": body["migration"],
        "tenant": body["tenant"],
        "package_sha256": body["files"][0]["sha256"],
        "records": body["counts"]["records"],
        "received_at": utcnow().isoformat(),
    }
    doc: dict[str, Any] = {"receipt": receipt, "mac": packages.receipt_mac(header, receipt)}
    if signing_key is not None:
        signer = Signer(signing_key)
        doc["signature"] = signer.sign(receipt)
        doc["public_key"] = signer.public_key.hex()
    return doc


def _receipt_key(u: Unit, tenant_id: str, instruction_id: str) -> str | None:
    """The recipient's Ed25519 key named by the instruction, if any (read as signed, even expired)."""
    body, _ = jobs.instruction_as_signed(u, tenant_id, instruction_id)
    return (json.loads(body).get("destination") or {}).get("receipt_key")


def import_receipt(u: Unit, tenant_id: str, migration_id: str, doc: object) -> Job:
    """Check the recipient's receipt and record it; the package is purged at once."""
    u.authorise(tenant_id, "migration:receipt")
    row = _row(u, tenant_id, migration_id)
    job = _job(row)
    _expect(job, "packaged", "verified", hint="a receipt follows a run")
    manifest = _manifest(job)
    if (
        not isinstance(doc, dict)
        or not {"receipt", "mac"} <= set(doc)
        or not set(doc) <= {"receipt", "mac", "signature", "public_key"}
        or not isinstance(doc["receipt"], dict)
        or not isinstance(doc["mac"], str)
    ):
        raise ReceiptInvalid("receipt: must hold receipt and mac (and, when signed, signature and public_key)")
    body = doc["receipt"]
    m = manifest["manifest"]
    if body.get("migration") != migration_id or body.get("tenant") != tenant_id:
        raise ReceiptInvalid("receipt: it is for another migration")
    if body.get("package_sha256") != m["files"][0]["sha256"]:
        raise ReceiptInvalid("receipt: its SHA-256 is not the package's")
    if body.get("records") != m["counts"]["records"]:
        raise ReceiptInvalid("receipt: its counts are not the manifest's")

    def refuse(reason: str) -> ReceiptInvalid:
        u.audit(tenant_id, "migration:receipt", "migration", 0, outcome="denied", refs=[migration_id])
        return ReceiptInvalid(f"receipt: {reason}")

    keys = recipes.package_keys(u, tenant_id, "migration:receipt")
    if not keys.receipt_valid(_sealed(row), body, doc["mac"]):
        raise refuse("its MAC does not verify (not made from this package)")
    expected = _receipt_key(u, tenant_id, job.instruction_id)
    if expected is not None:
        if doc.get("public_key") != expected or not isinstance(doc.get("signature"), str):
            raise refuse("it is not signed with the recipient's receipt key named in the instruction")
        try:
            verify(body, doc["signature"], bytes.fromhex(expected))
        except SignatureInvalid:
            raise refuse("its signature does not verify with the recipient's receipt key") from None
    _set(u, tenant_id, migration_id, state="received", receipt=json.dumps(doc, sort_keys=True), received_at=utcnow())
    _ev(u, tenant_id, "migration:receipt", 1, migration_id, job.instruction_id)
    return purge(u, tenant_id, migration_id, reason="receipt")


def purge(u: Unit, tenant_id: str, migration_id: str, *, reason: str) -> Job:
    """Destroy every copy: the package file, any partial attempt, and the package key's scope."""
    u.authorise(tenant_id, "migration:purge")
    row = _row(u, tenant_id, migration_id)
    job = _job(row)
    if job.state in ("purged", "closed"):
        return job
    now = utcnow()
    destroyed = list(job.destroyed)
    had_file = job.package is not None and packages.shred(job.package)
    if job.package is not None:
        packages.discard_partial(job.package)
    if had_file:
        destroyed.append(
            {
                "copy": f"package file {PACKAGE}",
                "where": "package store",
                "sha256": job.manifest["manifest"]["files"][0]["sha256"] if job.manifest else None,
                "destroyed_at": now.isoformat(),
            }
        )
    if row.package_scope:
        destroyed.append(
            {"copy": "package key", "where": f"key provider scope {row.package_scope}", "destroyed_at": now.isoformat()}
        )
    _set(
        u,
        tenant_id,
        migration_id,
        state="purged",
        purged_at=now,
        purge_reason=reason,
        destroyed=json.dumps(destroyed),
        package_key_wrapped=None,
        receipt_key_wrapped=None,
    )
    _ev(u, tenant_id, "migration:purge", len(destroyed), migration_id, job.instruction_id)
    # Last, once the database says so: the key itself (gone already if an earlier purge destroyed
    # it and then failed to commit).
    if row.package_scope:
        recipes.package_keys(u, tenant_id, "migration:purge").destroy(row.package_scope)
    return _job(_row(u, tenant_id, migration_id))


def close(u: Unit, tenant_id: str, migration_id: str) -> dict[str, Any]:
    """The signed closure certificate of a purged migration (stored, and written beside the manifest)."""
    u.authorise(tenant_id, "migration:close")
    row = _row(u, tenant_id, migration_id)
    job = _job(row)
    _expect(job, "purged", hint="close follows the purge (at receipt or at the deadline)")
    now = utcnow()
    m = job.manifest["manifest"] if job.manifest else None
    body = {
        "kind": "migration-closure",
        "migration": migration_id,
        "tenant": tenant_id,
        "type": job.kind,
        "instruction": job.instruction_id,
        "instruction_sha256": _instruction_sha(u, tenant_id, job.instruction_id),
        "extracted": None if m is None else {"fields": m["fields"], "counts": m["counts"], "files": m["files"]},
        "manifest_sha256": None if job.manifest is None else sha256_hex(canonical(job.manifest)),
        "fingerprint_key_id": row.fingerprint_key_id,
        "approvals": [{k: a.get(k) for k in ("side", "account", "name", "signer", "at")} for a in job.approvals],
        "received_at": row.received_at and stored_utc(row.received_at).isoformat(),
        "purged_at": job.purged_at and job.purged_at.isoformat(),
        "purge_reason": row.purge_reason,
        "destroyed": job.destroyed,
        "staging": "none: packages are written unnamed (O_TMPFILE) and encrypted as they are produced",
        "deletion_deadline": job.deadline.isoformat(),
        "closed_at": now.isoformat(),
    }
    record = store_signed_record(u, tenant_id, "migration-closure", body)
    _set(u, tenant_id, migration_id, state="closed", closed_at=now)
    _ev(u, tenant_id, "migration:close", 1, migration_id, job.instruction_id)
    if job.package is not None and job.package.parent.is_dir():
        atomic_write(
            job.package.parent / CERTIFICATE, json.dumps(record, indent=1, sort_keys=True).encode(), mode=0o600
        )
    return record


def check_certificate(record: object, public_keys: Iterable[bytes]) -> dict[str, Any]:
    """The certificate's body if its signature verifies with one of the platform's keys."""
    if not isinstance(record, dict) or not {"body", "signature", "public_key"} <= set(record):
        raise InvalidInput("certificate: must hold body, signature and public_key")
    key = record["public_key"]
    if not isinstance(key, str) or key not in {k.hex() for k in public_keys}:
        raise SignatureInvalid("certificate: not signed by this platform's key")
    verify(record["body"], record["signature"], bytes.fromhex(key))
    return record["body"]


def enforce_deadlines(u: Unit, tenant_id: str, now: datetime) -> dict[str, int]:
    """Purge every package of the lab whose deletion deadline has come (a retention hook)."""
    u.authorise(tenant_id, "migration:purge")
    due = jobs.holding(u, tenant_id, due_at=now)
    for mid in due:
        purge(u, tenant_id, mid, reason="deadline")
    return {"packages_purged": len(due)}


def destroy_all(u: Unit, tenant_id: str) -> dict[str, Any]:
    """End of contract: purge every package of the lab still held (a tenant-end hook); says which
    copies were destroyed (migration, file and its SHA-256, key scope), for the certificate."""
    u.authorise(tenant_id, "migration:purge")
    held = jobs.holding(u, tenant_id)
    copies = []
    for mid in held:
        job = purge(u, tenant_id, mid, reason="end-of-contract")
        copies += [
            {
                "migration": mid,
                **{k: d[k] for k in ("copy", "where", "destroyed_at") if k in d},
                **({"sha256": d["sha256"]} if d.get("sha256") else {}),
            }
            for d in job.destroyed
        ]
    return {"packages_destroyed": len(held), "copies": copies}


# --- one-step exports (kinds export and return) -----------------------------------------------


def export(
    gw: Gateway,
    principal: Principal,
    tenant_id: str,
    instruction_id: str,
    store: Path,
    *,
    ask: Ask | None = None,
    now: datetime | None = None,
    kinds: tuple[str, ...] = ONE_STEP_KINDS,
    on_progress: Callable[[int], None] | None = None,
) -> Job:
    """Plan, approve, run and verify an export or a return in one go. The lab's approval is the
    signature on its instruction; the operator who runs it gives the other (a different person)."""
    from labvault.access import Purpose
    from labvault.instructions import signers

    with gw.unit(principal, Purpose.EXPORT) as u:
        job = plan(u, tenant_id, instruction_id, ask=ask, kinds=kinds, now=now)
        received = signers.get_instruction(u, tenant_id, instruction_id)
        signer = next(s for s in signers.list_signers(u, tenant_id) if s.signer_id == received.signer_id)
        job = _add_approval(
            u,
            job,
            {
                "side": "lab",
                "account": signer.signer_id,
                "signer": signer.signer_id,
                "name": signer.name,
                "email": signer.email.lower(),
                "signature": received.signature,
                "at": stored_utc(received.received_at).isoformat(),
            },
        )
        job = approve_operator(u, tenant_id, job.migration_id)
    run(gw, principal, tenant_id, job.migration_id, store, now=now, on_progress=on_progress)
    with gw.unit(principal, Purpose.EXPORT) as u:
        return verify_package(u, tenant_id, job.migration_id)


def tenant_return(
    gw: Gateway, principal: Principal, tenant_id: str, instruction_id: str, store: Path, *, now: datetime | None = None
) -> dict[str, Any]:
    """End of contract by return: the lab's data exported under its ``return`` instruction.
    Says how many of the lab's results the instruction leaves out (a full return leaves none)."""
    from labvault.access import Purpose

    job = export(gw, principal, tenant_id, instruction_id, store, now=now, kinds=("return",))
    with gw.unit(principal, Purpose.EXPORT) as u:
        held = u.counts(tenant_id).get("result", 0)
    out = job.public()
    out["results_in_lab"] = held
    out["results_left_out"] = held - job.plan["counts"]["results"]
    return out


def deadline_hook(u: Unit, tenant_id: str, now: datetime) -> dict[str, int]:
    """For ``labvault.retention.purge.HOOKS``: packages die at their deadline in every retention run."""
    return enforce_deadlines(u, tenant_id, now)


def end_hook(u: Unit, tenant_id: str, now: datetime) -> dict[str, Any]:
    """For ``labvault.retention.purge.END_HOOKS``: packages die with the lab at the end of a contract."""
    return destroy_all(u, tenant_id)
