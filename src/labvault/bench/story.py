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
- ``leak``: the packages, decrypted with the recipient's key, cut into one flat file (one row per
  result, as the 2021 file), with one row per patient of every other lab taken from the
  generator's own records: what an unsupervised extraction held outside any instruction;
- ``analyse``: the file read and matched through every lab's blind indexes;
- ``incident``: the processor's incident opened from the analysis and the notice drafted for each
  affected lab.

The last line of the command is one JSON object: the seconds of each step and ``total_seconds``.
"""

from __future__ import annotations

import csv
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from labvault.access import Gateway, Principal, Purpose
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.store.engine import make_engine, migrate
from labvault.synth.load import SYNTHETIC_RETENTION, lab_spec

PASSPHRASE = "story-passphrase"
PART = 1000  # patients per task (one transaction)
# The flat file's columns, as in the 2021 file.
HEADER = (
    "nom",
    "prenom",
    "nir",
    "date_naissance",
    "sexe",
    "date_examen",
    "code",
    "libelle",
    "resultat",
    "unite",
    "commentaire",
    "prescripteur",
)

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
    home = Home(folder, url, keyring, admin, operator)
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
            with gw.unit(admin, Purpose.GENERATE) as u:
                u.add_prescribers(tid, LabGenerator(tid, seed).prescribers)
            home.labs.append(tid)
    return home


# -- generation and ingest (worker processes) ------------------------------------------------

_W: dict[str, Any] = {}


def _worker_init(home: Home, seed: int) -> None:
    gw, engine, keys = home.open()  # kept open for the process's life (the pool ends it)
    _W.update(home=home, gw=gw, engine=engine, keys=keys, seed=seed, gens={}, prescribers={})


def _flat(ident: Any, req: Any, res: Any, prescriber: str) -> tuple[str, ...]:
    value = "" if res.value_num is None and res.value_text is None else res.value_text or f"{res.value_num:g}"
    return (
        ident.family_name,
        ident.given_names,
        ident.nir or "",
        ident.birth_date.strftime("%d/%m/%Y"),
        ident.sex,
        req.requested_at.strftime("%d/%m/%Y"),
        res.code,
        res.label,
        value,
        res.unit or "",
        res.comment or "",
        prescriber,
    )


def _part(task: tuple[str, int, int, str | None]) -> tuple[str, dict[str, int]]:
    """Generate and store patients ``start .. start + count - 1`` of a lab, in one transaction;
    with ``extract`` (a folder), also write one flat row per patient to a file of its own there
    (the unsupervised extraction's rows)."""
    from labvault.synth import LabGenerator

    tid, start, count, extract = task
    gw: Gateway = _W["gw"]
    home: Home = _W["home"]
    gen = _W["gens"].get(tid)
    if gen is None:
        gen = _W["gens"][tid] = LabGenerator(tid, _W["seed"])
        _W["prescribers"][tid] = {p.prescriber_id: f"Dr {p.given_name} {p.family_name}" for p in gen.prescribers}
    records = list(gen.patients(count, start=start))
    identities = [r.identity for r in records]
    requests = [q for r in records for q in r.requests]
    specimens = [s for r in records for s in r.specimens]
    results = [x for r in records for x in r.results]
    with gw.unit(home.admin, Purpose.GENERATE) as u:
        n_pat = u.add_patients(tid, identities)
        n_req = u.add_requests(tid, requests)
        n_spec = u.add_specimens(tid, specimens)
        n_res = u.add_results(tid, results)  # the requests' pseudonyms read back in batches
    if extract:
        names = _W["prescribers"][tid]
        with open(Path(extract) / f"{tid}-{start:08d}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, delimiter=";")
            for r in records:
                if r.requests and r.results:
                    q = r.requests[0]
                    first = next((x for x in r.results if x.request_id == q.request_id), r.results[0])
                    w.writerow(_flat(r.identity, q, first, names.get(q.prescriber_id or "", "")))
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
    with ctx.Pool(workers, initializer=_worker_init, initargs=(home, seed)) as pool:
        for tid, c in pool.imap_unordered(_part, tasks):
            for k, v in c.items():
                counts[tid][k] += v
            done += c["patients"]
            if on_progress:
                on_progress("ingest", done, patients)
    return counts


# -- the migrations under signed instruction -------------------------------------------------


def _migrate(home: Home, tid: str, store: Path, recipient: str, volume: int) -> Any:
    """The lab's admin registers a signer, who signs a ``migration_out`` instruction for every
    field; the vendor's operator plans, approves, runs and verifies; the lab's signer approves."""
    from labvault.crypto.signing import Signer
    from labvault.instructions import document, signers
    from labvault.migration import service

    admin = Principal(f"{tid}-admin", "Story lab admin", tid, frozenset({"lab_admin"}))
    dpo = Principal(f"{tid}-dpo", "Story lab DPO", tid, frozenset({"lab_dpo"}))
    with _gateway(home) as gw:
        with gw.unit(home.admin, Purpose.ADMINISTRATION) as u:
            for p in (admin, dpo):
                u.ensure_account(
                    tid, p.account_id, p.name, f"{p.account_id}@story.invalid", p.roles, commitment="story"
                )
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
    import orjson
    import pyrage

    data = pyrage.decrypt(package.read_bytes(), [identity])
    return [orjson.loads(line) for line in data.splitlines() if line]


def _package_rows(records: list[dict[str, Any]]) -> Iterator[tuple[str, ...]]:
    """One flat row per result of a package, joined with its request, identity and prescriber,
    as the 2021 file was; the patient's export id last (the package's own reference)."""
    by: dict[str, dict[str, dict[str, Any]]] = {"identity": {}, "request": {}, "prescriber": {}}
    for rec in records:
        kind = rec.get("record")
        if kind in by:
            by[kind][rec["id"]] = rec
    idents, reqs, pres = by["identity"], by["request"], by["prescriber"]

    def day(text: str | None) -> str:
        return "" if not text else f"{text[8:10]}/{text[5:7]}/{text[0:4]}"

    for rec in records:
        if rec.get("record") != "result":
            continue
        q = reqs.get(rec.get("request") or "", {})
        who = idents.get(rec.get("patient") or q.get("patient") or "", {})
        doc = pres.get(q.get("prescriber") or "", {})
        value = rec.get("value_text") or ("" if rec.get("value_num") is None else f"{rec['value_num']:g}")
        yield (
            who.get("family_name") or "",
            who.get("given_names") or "",
            who.get("nir") or "",
            day(who.get("birth_date")),
            who.get("sex") or "",
            day(q.get("requested_at")),
            rec.get("code") or "",
            rec.get("label") or "",
            value,
            rec.get("unit") or "",
            rec.get("comment") or "",
            f"Dr {doc.get('given_name', '')} {doc.get('family_name', '')}".strip() if doc else "",
            rec.get("patient") or q.get("patient") or "",
        )


def _write_leak(path: Path, packages: list[list[dict[str, Any]]], extraction: Path) -> int:
    """One flat file: every package's rows, then the extraction's rows (no reference)."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=";")
        w.writerow((*HEADER, "ref"))
        for records in packages:
            for row in _package_rows(records):
                w.writerow(row)
                n += 1
        for part in sorted(extraction.iterdir()):
            with part.open(encoding="utf-8", newline="") as g:
                for cells in csv.reader(g, delimiter=";"):
                    w.writerow((*cells, ""))
                    n += 1
    return n


# -- the story -------------------------------------------------------------------------------


def run_story(
    *,
    labs: int = 28,
    patients: int = 491_840,
    migrated: int = 2,
    workers: int = 2,
    seed: int = 7,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    from pyrage import x25519

    if not 1 <= migrated <= labs:
        raise ValueError("migrated must be between 1 and labs")
    seconds: dict[str, float] = {}
    out: dict[str, Any] = {"bench": "story", "labs": labs, "patients": patients, "migrated": migrated}
    t_all = time.perf_counter()

    @contextmanager
    def step(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - t0, 3)
        if on_progress and name != "ingest":  # the ingest reports its patients as they are stored
            on_progress(name, 1, 1)

    with tempfile.TemporaryDirectory(prefix="labvault-story-") as tmp:
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
        jobs = []
        with step("migrate"):
            for tid in chosen:
                jobs.append(
                    _migrate(home, tid, folder / "packages", str(recipient.to_public()), counts[tid]["results"])
                )
        out["packages"] = [
            {
                "tenant": j.tenant_id,
                "migration": j.migration_id,
                "results": j.manifest["manifest"]["counts"]["records"]["result"],
            }
            for j in jobs
        ]
        leak = folder / "leak" / "fichier.csv"
        leak.parent.mkdir()
        with step("leak"):
            rows = _write_leak(leak, [_package_records(j.package, recipient) for j in jobs], extraction)
        out["leaked_rows"] = rows
        out["leaked_bytes"] = leak.stat().st_size
    out["steps"] = seconds
    out["total_seconds"] = round(time.perf_counter() - t_all, 3)
    return out
