"""Ingest benchmark: N generated results through the encrypted gateway path, and in clear.

Both paths do the same work but for encryption: the same batches, the same value packing, the
same bulk insert (executemany on SQLite, COPY on PostgreSQL), one transaction per batch. The clear
rows go to a scratch table that is dropped afterwards. Generation time is not counted.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from itertools import islice

from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table

from labvault.access import Purpose, codec
from labvault.bench.scratch import scratch
from labvault.store.engine import bulk_insert

_clear_md = MetaData()
clear_result = Table(
    "bench_clear_result",
    _clear_md,
    Column("tenant_id", String(64), primary_key=True),
    Column("result_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("specimen_id", String(64)),
    Column("pseudonym", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("observation_enc", LargeBinary, nullable=False),
    Index("ix_bench_clear_result_request", "tenant_id", "request_id"),  # as on the real table
    sqlite_with_rowid=False,
)
CLEAR_COLUMNS = tuple(c.name for c in clear_result.columns)


def _batches(it: Iterator, size: int) -> Iterator[list]:
    while chunk := list(islice(it, size)):
        yield chunk


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ingest(
    n: int,
    *,
    database_url: str | None = None,
    batch: int = 5000,
    seed: int = 7,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    from labvault.synth import results_stream

    with scratch("ingest", roles=("biologist",), database_url=database_url) as sc:
        gw, who, tenant, engine = sc.gateway, sc.admin, sc.lab, sc.gateway.engine
        try:
            with gw.unit(who, Purpose.BENCHMARK) as u:
                pseudo = {f"p{k}": u.pseudonym_of(tenant, f"p{k}") for k in range(1000)}
            _clear_md.create_all(engine)

            # Encrypted path, through the gateway.
            enc_s = 0.0
            done = 0
            for chunk in _batches(results_stream(tenant, seed, n), batch):
                names = {r.request_id: pseudo[f"p{hash(r.request_id) % 1000}"] for r in chunk}
                t0 = time.perf_counter()
                with gw.unit(who, Purpose.BENCHMARK) as u:
                    u.add_results(tenant, chunk, pseudonyms=names)
                enc_s += time.perf_counter() - t0
                done += len(chunk)
                if on_progress:
                    on_progress("encrypted", len(chunk))

            # Clear path: same rows, same packing, no encryption.
            clear_s = 0.0
            pack_result = codec.result_packer()
            for chunk in _batches(results_stream(tenant, seed, n), batch):
                names = {r.request_id: pseudo[f"p{hash(r.request_id) % 1000}"] for r in chunk}
                t0 = time.perf_counter()
                rows = [
                    (
                        tenant,
                        r.result_id,
                        r.request_id,
                        r.specimen_id,
                        names[r.request_id],
                        str(r.status),
                        1,
                        pack_result(r),
                    )
                    for r in chunk
                ]
                with engine.begin() as conn:
                    bulk_insert(conn, clear_result, CLEAR_COLUMNS, rows)
                clear_s += time.perf_counter() - t0
                if on_progress:
                    on_progress("clear", len(chunk))
        finally:
            _clear_md.drop_all(engine)
    enc_rate = done / enc_s if enc_s else 0.0
    clear_rate = done / clear_s if clear_s else 0.0
    return {
        "bench": "ingest",
        "database": engine.dialect.name,
        "results": done,
        "batch": batch,
        "encrypted_s": round(enc_s, 3),
        "clear_s": round(clear_s, 3),
        "encrypted_per_s": round(enc_rate),
        "clear_per_s": round(clear_rate),
        "ratio": round(enc_rate / clear_rate, 3) if clear_rate else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
