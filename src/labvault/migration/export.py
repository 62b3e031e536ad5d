"""Whole-lab exports as FHIR R4 Bulk Data ndjson, streamed from the encrypted store.

Reachable from tests and benchmarks only: no command exports data without a lab's signed
instruction (the instructed export builds on these functions). Patients are named by their
per-lab pseudonym (see ``labvault.access.scan``); ``id_map`` can derive export-specific ids.

Memory stays flat in the size of the lab: every table is streamed in batches, and a request's
DiagnosticReport is written once its results have gone by (requests and results are both read in
request id order and merged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from labvault.access import scan
from labvault.domain.models import Result
from labvault.interop import fhir_out

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

RESOURCE_TYPES = ("Patient", "Practitioner", "ServiceRequest", "Specimen", "Observation", "DiagnosticReport")


def export_fhir(
    u: Unit,
    tenant_id: str,
    writer: fhir_out.NdjsonWriter,
    *,
    id_map: fhir_out.IdMap | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Write every readable resource of the lab to ``writer``; returns the counts per type."""

    def step(rtype: str, n: int) -> None:
        if on_progress is not None:
            on_progress(rtype, n)

    for ident in scan.patients(u, tenant_id):
        writer.write(fhir_out.patient(ident, tenant_id, id_map=id_map))
    step("Patient", 0)
    for p in scan.prescribers(u, tenant_id):
        writer.write(fhir_out.practitioner(p, id_map=id_map))
    step("Practitioner", 0)
    for s in scan.specimens(u, tenant_id):
        writer.write(fhir_out.specimen(s, id_map=id_map))
    step("Specimen", 0)

    # Requests and results, both in request id order, merged: each request's ServiceRequest, its
    # Observations, then its DiagnosticReport listing them.
    results = scan.results(u, tenant_id, by_request=True)
    pending = next(results, None)
    n = 0
    for request in scan.requests(u, tenant_id, by_id=True):
        rid = request.request_id
        while pending is not None and pending[1].request_id < rid:  # a result without its request
            pending = next(results, None)
        mine: list[tuple[str, Result]] = []  # one request's results: its statuses make the request's
        while pending is not None and pending[1].request_id == rid:
            mine.append(pending)
            pending = next(results, None)
        statuses = [res.status for _, res in mine]
        writer.write(fhir_out.service_request(request, id_map=id_map, result_statuses=statuses))
        for pseudonym, res in mine:
            writer.write_observation(res, pseudonym)
            n += 1
            if n % 50_000 == 0:
                step("Observation", 50_000)
        writer.write(
            fhir_out.diagnostic_report(
                request, [res.result_id for _, res in mine], id_map=id_map, result_statuses=statuses
            )
        )
    for _ in results:  # read to the end, so that the scan is audited with its count
        pass
    step("Observation", n % 50_000)
    writer.flush()
    return writer.counts()
