"""Audit benchmark: append N events (batched by unit, as ingest does), verify them, and measure
what the audit trail costs encrypted ingest (audit on vs off, same run)."""

from __future__ import annotations

import time
from collections.abc import Callable

from labvault.access import Purpose
from labvault.access.trail import benchmark_without_events
from labvault.audit import service
from labvault.bench.ingest import peak_rss_mb
from labvault.bench.scratch import scratch
from labvault.synth.load import SYNTHETIC_RETENTION


def run_audit(
    events: int,
    *,
    database_url: str | None = None,
    batch: int = 5000,
    ingest_results: int = 100_000,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    from labvault.synth import results_stream

    with scratch("audit", roles=("biologist",), database_url=database_url) as sc:
        gw, who, lab = sc.gateway, sc.admin, sc.lab

        t0 = time.perf_counter()
        done = 0
        while done < events:
            n = min(batch, events - done)
            with gw.unit(who, Purpose.BENCHMARK) as u:
                for _ in range(n):
                    u.audit(lab, "patient:result:read", "result", 1, refs=["0123456789abcdef0123456789abcdef"])
            done += n
            if on_progress:
                on_progress("append", n)
        append_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        with gw.unit(who, Purpose.BENCHMARK) as u:
            report = service.verify_log(u, lab)
        verify_s = time.perf_counter() - t0
        if on_progress:
            on_progress("verify", events)

        # Encrypted ingest with the audit trail on, then off (one event per 5,000-result batch).
        def ingest(tenant: str) -> float:
            with gw.unit(who, Purpose.BENCHMARK) as u:
                u.create_tenant(tenant, "Benchmark lab", "690000000", retention=SYNTHETIC_RETENTION, synthetic=True)
                names = {f"p{k}": u.pseudonym_of(tenant, f"p{k}") for k in range(100)}
            spent = 0.0
            stream = results_stream(tenant, 7, ingest_results)
            while chunk := [r for _, r in zip(range(5000), stream, strict=False)]:
                pseudo = {r.request_id: names[f"p{len(r.request_id) % 100}"] for r in chunk}
                start = time.perf_counter()
                with gw.unit(who, Purpose.BENCHMARK) as u:
                    u.add_results(tenant, chunk, pseudonyms=pseudo)
                spent += time.perf_counter() - start
            return spent

        on_s = ingest("bench-audit-on")
        with benchmark_without_events():  # the same ingest, no event written
            off_s = ingest("bench-audit-off")
        dialect = sc.dialect
    return {
        "bench": "audit",
        "database": "sqlite" if dialect == "sqlite" else "postgresql",
        "events": events,
        "append_s": round(append_s, 3),
        "append_per_s": round(events / append_s),
        "verify_s": round(verify_s, 3),
        "verify_per_s": round(report.events / verify_s),
        "verified_ok": report.ok,
        "ingest_results": ingest_results,
        "ingest_audit_on_per_s": round(ingest_results / on_s),
        "ingest_audit_off_per_s": round(ingest_results / off_s),
        "ingest_overhead": round(on_s / off_s - 1, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
