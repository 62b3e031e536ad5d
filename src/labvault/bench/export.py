"""Export benchmark: N results in a lab's encrypted store, exported as FHIR R4 Bulk Data ndjson.

Measured in the same run:
- ``observations_per_s``: the whole export (Patient, Practitioner, ServiceRequest, Specimen,
  Observation, DiagnosticReport files) read and decrypted through the gateway, per Observation;
- ``baseline_per_s``: the same Observations written by the same writer from results already in
  memory in clear (no store, no decryption): the writer's own ceiling;
- ``json_dumps_per_s``: the library way, ``json.dumps`` of each Observation dict.
Memory: RSS sampled during the export, reported as growth over the RSS before it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import IO, cast

import psutil

from labvault.access import Purpose
from labvault.bench.ingest import peak_rss_mb
from labvault.bench.scratch import load_results, scratch
from labvault.interop import fhir_out
from labvault.migration.export import export_fhir


def run_export(
    n: int, *, database_url: str | None = None, seed: int = 7, on_progress: Callable[[str, int], None] | None = None
) -> dict[str, object]:
    from labvault.synth import results_stream

    proc = psutil.Process()
    with scratch("export", roles=("biologist",), database_url=database_url) as sc:
        gw, bio, lab = sc.gateway, sc.user, sc.lab
        loaded = load_results(sc, n, seed, on_progress)

        # Baselines: the same Observations from memory, in clear.
        sink = _Null()  # the bytes are made and dropped: the library's cost, not memory's
        t0 = time.perf_counter()
        null = cast("IO[bytes]", _Null())  # a raw stream: the writer only writes and flushes
        with fhir_out.NdjsonWriter(streams={"Observation": null}) as w:
            for r in results_stream(lab, seed, n):
                w.write_observation(r, "p")
        base_s = time.perf_counter() - t0
        sample = min(n, 100_000)
        t0 = time.perf_counter()
        for r in results_stream(lab, seed, sample):
            sink.write(json.dumps(fhir_out.observation(r, "p"), separators=(",", ":")).encode())
        dumps_s = time.perf_counter() - t0
        if on_progress:
            on_progress("baseline", n)

        out = sc.folder / "export"
        out.mkdir()
        rss0 = proc.memory_info().rss
        rss_max = rss0

        def sample_rss(_rtype: str, done: int) -> None:
            nonlocal rss_max
            rss_max = max(rss_max, proc.memory_info().rss)
            if on_progress and done:
                on_progress("export", done)

        t0 = time.perf_counter()
        with gw.unit(bio, Purpose.CARE) as u, fhir_out.NdjsonWriter(out) as w:
            counts = export_fhir(u, lab, w, on_progress=sample_rss)
        export_s = time.perf_counter() - t0
        sample_rss("done", 0)
        size = sum(f.stat().st_size for f in out.iterdir())
        dialect = sc.dialect
    return {
        "bench": "export",
        "database": dialect,
        "results": n,
        "loaded": loaded,
        "counts": counts,
        "bytes": size,
        "seconds": round(export_s, 3),
        "observations_per_s": round(counts.get("Observation", 0) / export_s) if export_s else 0,
        "baseline_per_s": round(n / base_s) if base_s else 0,
        "json_dumps_per_s": round(sample / dumps_s) if dumps_s else 0,
        "export_rss_growth_mb": round((rss_max - rss0) / 2**20, 1),
        "peak_rss_mb": peak_rss_mb(),
    }


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return len(b)
