"""The 2021 story at its real scale: ``labvault bench story``.

In a scratch home (a temporary folder, removed at the end):
- ``setup``: the store, the keyring, the platform's accounts and ``labs`` synthetic labs;
- ``ingest``: ``patients`` generated patients spread over the labs (``LabGenerator``: about 28
  results each) stored through the gateway's bulk path (``add_patients``, ``add_requests``,
  ``add_specimens``, ``add_results``: sealed with each lab's keys, blind-indexed, audited), by
  worker processes that each generate a part and store it in transactions of their own (SQLite
  takes one writer at a time: while one process writes, the other generates);
- ``migrate``: ``migrated`` labs each sign a ``migration_out`` instruction; the vendor's operator
  plans, approves, runs and verifies the package (age, fingerprinted ids);
- ``leak``: the packages, decrypted with the recipient's key, cut into one flat file in the 2021
  file's layout (``synth.leak``; one row per person, as that file: 491,840 rows at full scale),
  with the patients of every other lab taken from the generator's own records: what an
  unsupervised extraction held outside any instruction;
- ``analyse``: the file read and matched through every lab's blind indexes;
- ``incident``: the processor's incident opened from the analysis, its notice sent to each
  affected lab (its own scope only) and each lab's Art. 33(3) draft written by its DPO.

The last line of the command is one JSON object: the seconds of each step and ``total_seconds``.
"""

from __future__ import annotations

import itertools
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from labvault.access import Gateway, Principal, Purpose
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.store.engine import make_engine, migrate
from labvault.synth.load import SYNTHETIC_RETENTION, lab_spec

PASSPHRASE = "story-passphrase"
PART = 1000  # patients per task (one transaction)
CHECKPOINT_EVERY = 4  # tasks between two checkpoints of the SQLite log

ProgressFn = Callable[[str, int, int], None]  # step, done, total


def split(patients: int, labs: int) -> list[int]:
    """Patients per lab: as even as can be, the first labs taking the remainder."""
    base, extra = divmod(patients, labs)
    return [base + (1 if k < extra else 0) for k in range(labs)]


@dataclass
class Home:
    folder: Path
    url: str
    keyring: Path
    admin: Principal
    operator: Principal
    officer: Principal  # the vendor's security officer: analyses, opens the incident, sends the notices
    labs: list[str] = field(default_factory=list)

    def open(self) -> tuple[Gateway, Any, LocalKeyring]:
        engine = make_engine(self.url)
        keys = LocalKeyring(self.keyring, PASSPHRASE)
        return Gateway(engine, keys), engine, keys


@contextmanager
def _gateway(home: Home) -> Iterator[Gateway]:
    gw, engine, keys = home.open()
    try:
        yield gw
    finally:
        gw.close()
        engine.dispose()
        keys.close()


def lab_admin(tid: str) -> Principal:
    return Principal(f"{tid}-admin", "Story lab admin", tid, frozenset({"lab_admin"}))


def lab_dpo(tid: str) -> Principal:
    return Principal(f"{tid}-dpo", "Story lab DPO", tid, frozenset({"lab_dpo"}))


def _setup(folder: Path, labs: int, seed: int) -> Home:
    from labvault.synth import LabGenerator

    url = f"sqlite:///{folder / 'story.db'}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    keyring = folder / "keyring.json"
    LocalKeyring.create(keyring, PASSPHRASE, scrypt_n=2**14).close()
    admin = Principal("story-admin", "Story platform admin", PLATFORM, frozenset({"platform_admin"}))
    operator = Principal("story-op", "Story operator", PLATFORM, frozenset({"operator"}))
    officer = Principal("story-security", "Story security officer", PLATFORM, frozenset({"security_officer"}))
    home = Home(folder, url, keyring, admin, operator, officer)
    with _gateway(home) as gw:
        with gw.bootstrap(admin) as u:
            u.ensure_account(
                PLATFORM, admin.account_id, admin.name, "story-admin@story.invalid", admin.roles, commitment="story"
            )
            u.ensure_platform_keys()
        with gw.unit(admin, Purpose.ADMINISTRATION) as u:
            for p in (operator, officer):
                u.ensure_account(
                    PLATFORM, p.account_id, p.name, f"{p.account_id}@story.invalid", p.roles, commitment="story"
                )
        for k in range(labs):
            tid, name, finess = lab_spec(k)
            with gw.unit(admin, Purpose.ADMINISTRATION) as u:
                u.create_tenant(tid, name, finess, retention=SYNTHETIC_RETENTION, synthetic=True)
            with gw.unit(admin, Purpose.ADMINISTRATION) as u:
                for p in (lab_admin(tid), lab_dpo(tid)):
                    u.ensure_account(
                        tid, p.account_id, p.name, f"{p.account_id}@story.invalid", p.roles, commitment="story"
                    )
            with gw.unit(admin, Purpose.GENERATE) as u:
                u.add_prescribers(tid, LabGenerator(tid, seed).prescribers)
            home.labs.append(tid)
    return home


# -- generation and ingest (worker processes) ------------------------------------------------

_W: dict[str, Any] = {}


def _worker_init(home: Home, seed: int) -> None:
    gw, engine, keys = home.open()  # kept open for the process's life (the pool ends it)
    _W.update(home=home, gw=gw, engine=engine, keys=keys, seed=seed, gens={}, prescribers={})


def _extracted(records: list[Any], prescribers: dict[str, Any]) -> list[dict[str, Any]]:
    """What the unsupervised extraction held of these patients, as records of the package format
    (identity, request, result, prescriber): each patient's first result, with its request."""
    out: list[dict[str, Any]] = []
    named: set[str] = set()
    for r in records:
        if not r.requests or not r.results:
            continue
        q = r.requests[0]
        x = next((x for x in r.results if x.request_id == q.request_id), r.results[0])
        i = r.identity
        out.append(
            {
                "record": "identity",
                "id": i.patient_id,
                "nir": i.nir,
                "family_name": i.family_name,
                "given_names": i.given_names,
                "birth_name": i.birth_name,
                "birth_date": i.birth_date.isoformat(),
                "sex": i.sex,
            }
        )
        out.append(
            {
                "record": "request",
                "id": q.request_id,
                "patient": i.patient_id,
                "prescriber": q.prescriber_id,
                "requested_at": q.requested_at.isoformat(),
            }
        )
        out.append(
            {
                "record": "result",
                "id": x.result_id,
                "request": q.request_id,
                "patient": i.patient_id,
                "code": x.code,
                "label": x.label,
                "value_num": x.value_num,
                "value_text": x.value_text,
                "unit": x.unit,
                "comment": x.comment,
            }
        )
        if q.prescriber_id is not None:
            named.add(q.prescriber_id)
    for pid in sorted(named):
        p = prescribers[pid]
        out.append({"record": "prescriber", "id": pid, "family_name": p.family_name, "given_name": p.given_name})
    return out


@contextmanager
def _writer_turn(home: Home) -> Iterator[None]:
    """The workers' turns at SQLite's one writer, queued on a file lock: a worker waiting in
    SQLite's busy handler sleeps in steps of up to 100 ms and finds the database free only at
    its next try, while a worker waiting on the lock wakes as soon as the other commits."""
    import fcntl

    with (home.folder / "writer.lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _part(task: tuple[str, int, int, str | None]) -> tuple[str, dict[str, int]]:
    """Generate and store patients ``start .. start + count - 1`` of a lab, in one transaction;
    with ``extract`` (a folder), also write what the unsupervised extraction held of them to a file
    of its own there (``_extracted``)."""
    from labvault.synth import LabGenerator

    tid, start, count, extract = task
    gw: Gateway = _W["gw"]
    home: Home = _W["home"]
    gen = _W["gens"].get(tid)
    if gen is None:
        gen = _W["gens"][tid] = LabGenerator(tid, _W["seed"])
        _W["prescribers"][tid] = {p.prescriber_id: p for p in gen.prescribers}
    records = list(gen.patients(count, start=start))
    identities = [r.identity for r in records]
    requests = [q for r in records for q in r.requests]
    specimens = [s for r in records for s in r.specimens]
    results = [x for r in records for x in r.results]
    with _writer_turn(home), gw.unit(home.admin, Purpose.GENERATE) as u:
        n_pat = u.add_patients(tid, identities)
        n_req = u.add_requests(tid, requests)
        n_spec = u.add_specimens(tid, specimens)
        n_res = u.add_results(tid, results)  # the requests' pseudonyms read back in batches
    if extract:
        rows = _extracted(records, _W["prescribers"][tid])
        (Path(extract) / f"{tid}-{start:08d}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return tid, {"patients": n_pat, "requests": n_req, "specimens": n_spec, "results": n_res}


def _ingest(
    home: Home,
    patients: int,
    seed: int,
    workers: int,
    extract: Path,
    skip: set[str],
    on_progress: ProgressFn | None,
) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {
        t: {"patients": 0, "requests": 0, "specimens": 0, "results": 0} for t in home.labs
    }
    tasks = []
    per_lab = split(patients, len(home.labs))
    # Interleave the labs so that both workers always have work and no lab is last alone.
    for start in range(0, max(per_lab, default=0), PART):
        for tid, n in zip(home.labs, per_lab, strict=True):
            if start < n:
                tasks.append((tid, start, min(PART, n - start), None if tid in skip else str(extract)))
    ctx = multiprocessing.get_context("spawn")
    done = 0
    engine = make_engine(home.url)
    try:
        with ctx.Pool(workers, initializer=_worker_init, initargs=(home, seed)) as pool:
            for n, (tid, c) in enumerate(pool.imap_unordered(_part, tasks), start=1):
                for k, v in c.items():
                    counts[tid][k] += v
                done += c["patients"]
                if on_progress:
                    on_progress("ingest", done, patients)
                if n % CHECKPOINT_EVERY == 0 and engine.dialect.name == "sqlite":
                    _checkpoint(engine)
    finally:
        engine.dispose()
    return counts


def _checkpoint(engine: Any) -> None:
    """Copy SQLite's write-ahead log into the database and empty it. With two processes writing in
    turn there is never a moment without a transaction, and the automatic (passive) checkpoints
    never get to restart the log: it would grow with every write (17 GB at half the story)."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


# -- the migrations under signed instruction -------------------------------------------------


def _migrate(home: Home, tid: str, store: Path, recipient: str, volume: int) -> Any:
    """The lab's admin registers a signer, who signs a ``migration_out`` instruction for every
    field; the vendor's operator plans, approves, runs and verifies; the lab's signer approves."""
    from labvault.crypto.signing import Signer
    from labvault.instructions import document, signers
    from labvault.migration import service

    admin = lab_admin(tid)
    with _gateway(home) as gw:
        private, public = Signer.generate()
        signer = Signer(private)
        with gw.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.add_signer(u, tid, email=f"{admin.account_id}@story.invalid", public_key=public.hex())
        now = datetime.now(UTC).replace(microsecond=0)
        z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
        record = {
            "id": f"MIG-{tid}",
            "tenant": tid,
            "kind": "migration_out",
            "purpose": "migration to the lab's new information system",
            "fields": {c: list(f) for c, f in document.FIELDS.items()},
            "selection": {
                "collected_from": "2000-01-01",
                "collected_to": "2039-12-31",
                "sensitive": list(document.SENSITIVE),
            },
            "destination": {"name": "New LIS vendor", "country": "FR", "recipient_age_key": recipient},
            "expected_volume": volume,
            "deletion_deadline": z(now + timedelta(days=30)),
            "valid_from": z(now - timedelta(hours=1)),
            "valid_until": z(now + timedelta(days=2)),
        }
        with gw.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.receive(u, tid, document.sign(document.from_record(record), signer), now)
        with gw.unit(home.operator, Purpose.EXPORT) as u:
            job = service.plan(u, tid, record["id"])
            service.approve_operator(u, tid, job.migration_id)
            service.approve_lab(
                u,
                tid,
                job.migration_id,
                public_key=signer.public_key.hex(),
                signature=signer.sign(service.approval_record(job)),
            )
        job = service.run(gw, home.operator, tid, job.migration_id, store)
        with gw.unit(home.operator, Purpose.EXPORT) as u:
            return service.verify_package(u, tid, job.migration_id)


# -- the leak ----------------------------------------------------------------------------------


def _package_records(package: Path, identity: Any) -> list[dict[str, Any]]:
    """The package's records, decrypted in memory with the recipient's key (header first)."""
    import pyrage

    data = pyrage.decrypt(package.read_bytes(), [identity])
    return [orjson.loads(line) for line in data.splitlines() if line]


def _one_per_patient(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with each patient's first result only (the 2021 file held one row per person)."""
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec.get("record") == "result":
            who = rec.get("patient") or ""
            if who in seen:
                continue
            seen.add(who)
        out.append(rec)
    return out


def _write_leak(path: Path, packages: list[list[dict[str, Any]]], extraction: Path) -> int:
    """One flat file in the 2021 file's layout (``synth.leak``), one row per person: each package's
    patients with their first result, then the extraction's. Returns the number of rows."""
    from labvault.synth import leak

    n = 0
    with path.open("wb") as f:
        first = True
        extracted = ([orjson.loads(x) for x in p.read_bytes().splitlines()] for p in sorted(extraction.iterdir()))
        for records in itertools.chain((_one_per_patient(p) for p in packages), extracted):
            data, _, rows = leak.cut(records, "csv")
            f.write(data if first else data.split(b"\r\n", 1)[1])
            first = False
            n += len(rows)
    return n


# -- the analysis and the incident -------------------------------------------------------------


def _analyse(home: Home, leak: Path) -> tuple[Any, list[Any]]:
    """The vendor's security officer analyses the file against every lab."""
    from labvault.breach import analyze

    with _gateway(home) as gw:
        return analyze.analyze(gw, home.officer, analyze.open_files([leak]))


def _incident(home: Home, analysis_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """The processor's incident opened from the analysis, its notice sent to each lab (its own
    scope), and each lab's DPO drafting its Art. 33(3) notification (HTML). Returns, per lab, the
    people its notice names and the size of its draft's HTML."""
    from labvault.breach import incidents

    with _gateway(home) as gw:
        with gw.unit(home.officer, Purpose.BREACH) as u:
            inc = incidents.open_incident(
                u, title="Fichier de résultats publié en ligne", aware_at=datetime.now(UTC), analysis_id=analysis_id
            )
        with gw.unit(home.officer, Purpose.BREACH) as u:
            sent = incidents.send_notices(u, inc.incident_id)
        notices = {v.tenant_id: int(v.body["people"]) for v in sent}
        drafts: dict[str, int] = {}
        for tid in sorted(notices):
            with gw.unit(lab_dpo(tid), Purpose.BREACH) as u:
                version = incidents.draft(u, inc.incident_id, tid)
            drafts[tid] = len(incidents.render(version, "html"))
    return notices, drafts


# -- the story -------------------------------------------------------------------------------


def run_story(
    *,
    labs: int = 28,
    patients: int = 491_840,
    migrated: int = 2,
    workers: int = 2,
    seed: int = 7,
    scratch: Path | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The story in a scratch home made under ``scratch`` (default: the system's temporary
    folder), removed at the end."""
    from pyrage import x25519

    if not 1 <= migrated <= labs:
        raise ValueError("migrated must be between 1 and labs")
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {
        "bench": "story",
        "labs": labs,
        "patients": patients,
        "migrated": migrated,
        "workers": workers,
        "scratch": str(scratch or tempfile.gettempdir()),
    }
    t_all = time.perf_counter()

    @contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - t0, 3)
        if on_progress and name != "ingest":  # the ingest reports its patients as they are stored
            on_progress(name, 1, 1)

    with tempfile.TemporaryDirectory(prefix="labvault-story-", dir=scratch) as tmp:
        folder = Path(tmp)
        with step("setup"):
            home = _setup(folder, labs, seed)
        chosen = home.labs[:migrated]
        extraction = folder / "extraction"
        extraction.mkdir()
        with step("ingest"):
            counts = _ingest(home, patients, seed, workers, extraction, set(chosen), on_progress)
        out["stored"] = {
            k: sum(c[k] for c in counts.values()) for k in ("patients", "requests", "specimens", "results")
        }
        recipient = x25519.Identity.generate()
        with step("migrate"):
            tasks = [(home, t, folder / "packages", str(recipient.to_public()), counts[t]["results"]) for t in chosen]
            if workers > 1 and len(tasks) > 1:  # the migrations read concurrently (WAL), one per process
                with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
                    jobs = pool.starmap(_migrate, tasks)
            else:
                jobs = [_migrate(*task) for task in tasks]
        out["packages"] = [
            {
                "tenant": j.tenant_id,
                "migration": j.migration_id,
                "results": j.manifest["manifest"]["counts"]["records"]["result"],
            }
            for j in jobs
        ]
        leak = folder / "leak" / "resultats.csv"
        leak.parent.mkdir()
        with step("leak"):
            rows = _write_leak(leak, [_package_records(j.package, recipient) for j in jobs], extraction)
        out["leaked_rows"] = rows
        out["leaked_bytes"] = leak.stat().st_size
        with step("analyse"):
            analysis, matches = _analyse(home, leak)
        out["analysis"] = {
            "rows": analysis.rows_total,
            "matched": analysis.rows_matched,
            "ambiguous": analysis.rows_ambiguous,
            "unmatched": analysis.rows_unmatched,
            "labs": len(analysis.labs),
            "seconds": analysis.seconds,
        }
        sources = {m.tenant_id: m.source for m in matches}
        packaged = {j.migration_id for j in jobs}
        out["sources"] = {
            "named": sorted(t for t, src in sources.items() if src is not None and src.package_id in packaged),
            "unexplained": sum(1 for src in sources.values() if src is None),
        }
        with step("incident"):
            notices, drafts = _incident(home, analysis.analysis_id)
        out["affected"] = {m.tenant_id: m.patients for m in matches}
        out["expected"] = dict(zip(home.labs, split(patients, labs), strict=True))
        out["notices"] = notices
        out["drafts"] = drafts
    out["steps"] = seconds
    out["total_seconds"] = round(time.perf_counter() - t_all, 3)
    return out
