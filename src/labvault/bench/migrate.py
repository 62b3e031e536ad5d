"""Migration benchmark: plan + run + verify of an instructed migration of a lab of N results.

The lab is loaded through the gateway (requests, one specimen per synthetic specimen id, results),
its lab signer signs a ``migration_out`` instruction for every field but free text, a vendor
operator and the signer approve, and the timed part is the procedure itself:
- ``plan``: the dry run (every row read and decrypted, the selection counted);
- ``run``: the selection streamed into the age package (the volume checked as it goes);
- ``verify``: the package decrypted in memory with the package key and reconciled.
``results_per_s`` is N over the three. Same-run baselines: ``pyrage_per_s``, the same number of
record lines (of the same size) encrypted by pyrage from memory, in clear: the library's own
ceiling; ``json_per_s``: encoding the same records with the standard library's JSON encoder,
and ``orjson_per_s`` with orjson, which the package writer uses. Memory: ``peak_rss_mb`` is the
process's peak (load included); ``migrate_rss_growth_mb`` the growth of RSS during the procedure over the RSS before it.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import psutil
import pyrage
from pyrage import x25519

from labvault.access import Purpose
from labvault.bench.ingest import peak_rss_mb
from labvault.bench.scratch import load_results, scratch
from labvault.crypto import packages
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.instructions import document, signers
from labvault.migration import service


def _instruction(sc, n: int, recipient: str):
    """A lab admin registers a signer; the signer signs; the platform receives. Returns the signer."""
    gw, lab = sc.gateway, sc.lab
    admin_id = f"{lab}-labadmin"
    with gw.unit(sc.admin, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            lab, admin_id, "Bench Lab Admin", f"{admin_id}@bench.invalid", ("lab_admin",), commitment="benchmark"
        )
        u.ensure_account(
            PLATFORM, f"{lab}-op", "Bench Operator", f"{lab}-op@bench.invalid", ("operator",), commitment="benchmark"
        )
    from labvault.access import Principal

    admin = Principal(admin_id, "Bench Lab Admin", lab, frozenset({"lab_admin"}))
    operator = Principal(f"{lab}-op", "Bench Operator", PLATFORM, frozenset({"operator"}))
    private, public = Signer.generate()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, lab, email=f"{admin_id}@bench.invalid", public_key=public.hex())
    now = datetime.now(UTC).replace(microsecond=0)
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    fields = {c: list(f) for c, f in document.FIELDS.items() if c != document.FREE_TEXT}
    record = {
        "id": "BENCH-MIG",
        "tenant": lab,
        "kind": "migration_out",
        "purpose": "benchmark",
        "fields": fields,
        "selection": {
            "collected_from": "2000-01-01",
            "collected_to": "2039-12-31",
            "sensitive": list(document.SENSITIVE),
        },
        "destination": {"name": "Bench", "country": "FR", "recipient_age_key": recipient},
        "expected_volume": n,
        "deletion_deadline": z(now + timedelta(days=1)),
        "valid_from": z(now - timedelta(hours=1)),
        "valid_until": z(now + timedelta(hours=12)),
    }
    signer = Signer(private)
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.receive(u, lab, document.sign(document.from_record(record), signer), now)
    return operator, signer


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)


def _baselines(line: bytes, n: int, record: dict) -> tuple[float, float, float]:
    recipient = x25519.Identity.generate().to_public()
    chunk = line * max(1, (1 << 16) // len(line))
    per = (1 << 16) // len(line)
    blocks = n // per + 1
    t0 = time.perf_counter()
    pyrage.encrypt_io(io.BufferedReader(packages._Pull(iter([chunk] * blocks)), 1 << 16), _Null(), [recipient])
    age_s = time.perf_counter() - t0
    enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
    sample = min(n, 200_000)
    t0 = time.perf_counter()
    for _ in range(sample):
        enc(record)
    json_s = time.perf_counter() - t0
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    t0 = time.perf_counter()
    for _ in range(sample):
        dumps(record, option=newline)
    orjson_s = time.perf_counter() - t0
    return blocks * per / age_s, sample / json_s, sample / orjson_s


def run_migrate(
    n: int, *, database_url: str | None = None, seed: int = 7, on_progress: Callable[[str, int], None] | None = None
) -> dict[str, object]:
    proc = psutil.Process()
    with scratch("migrate", roles=("biologist",), database_url=database_url) as sc:
        loaded = load_results(sc, n, seed, on_progress, specimens=True)
        gw, lab = sc.gateway, sc.lab
        recipient = x25519.Identity.generate()
        operator, signer = _instruction(sc, n, str(recipient.to_public()))
        store = sc.folder / "packages"
        rss0 = proc.memory_info().rss
        rss_max = [rss0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.05):
                rss_max[0] = max(rss_max[0], proc.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            t0 = time.perf_counter()
            with gw.unit(operator, Purpose.EXPORT) as u:
                job = service.plan(u, lab, "BENCH-MIG")
            plan_s = time.perf_counter() - t0
            with gw.unit(operator, Purpose.EXPORT) as u:
                service.approve_operator(u, lab, job.migration_id)
                service.approve_lab(
                    u,
                    lab,
                    job.migration_id,
                    public_key=signer.public_key.hex(),
                    signature=signer.sign(service.approval_record(job)),
                )
            t0 = time.perf_counter()
            job = service.run(
                gw,
                operator,
                lab,
                job.migration_id,
                store,
                on_progress=(lambda k: on_progress("migrate", k)) if on_progress else None,
            )
            run_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with gw.unit(operator, Purpose.EXPORT) as u:
                job = service.verify_package(u, lab, job.migration_id)
            verify_s = time.perf_counter() - t0
        finally:
            stop.set()
            sampler.join()
        m = job.manifest["manifest"] if job.manifest else {}
        selected = m["counts"]["records"]["result"]
        size = m["files"][0]["bytes"]
        # A record line of the package's average size, for the library baselines.
        record = {
            "record": "result",
            "id": "0" * 32,
            "request": "0" * 32,
            "specimen": "0" * 32,
            "patient": "0" * 32,
            "code": "718-7",
            "code_system": "http://loinc.org",
            "label": "Hemoglobin",
            "value_num": 13.2,
            "unit": "g/dL",
            "ref_low": 12.0,
            "ref_high": 16.0,
            "flag": "N",
            "status": "final",
            "validated_by": "Dr X",
            "validated_at": "2020-01-01T08:00:00",
        }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        pyrage_per_s, json_per_s, orjson_per_s = _baselines(line, n, record)
        with gw.unit(operator, Purpose.EXPORT) as u:  # the scratch lab's package goes with it
            service.purge(u, lab, job.migration_id, reason="benchmark")
        dialect = sc.dialect
    total = plan_s + run_s + verify_s
    return {
        "bench": "migrate",
        "database": dialect,
        "results": n,
        "loaded": loaded,
        "selected": selected,
        "package_bytes": size,
        "plan_s": round(plan_s, 3),
        "run_s": round(run_s, 3),
        "verify_s": round(verify_s, 3),
        "results_per_s": round(selected / total) if total else 0,
        "plan_per_s": round(selected / plan_s) if plan_s else 0,
        "run_per_s": round(selected / run_s) if run_s else 0,
        "verify_per_s": round(selected / verify_s) if verify_s else 0,
        "pyrage_per_s": round(pyrage_per_s),
        "json_per_s": round(json_per_s),
        "orjson_per_s": round(orjson_per_s),
        "migrate_rss_growth_mb": round((rss_max[0] - rss0) / 2**20, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
