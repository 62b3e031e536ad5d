"""Synthetic HL7 v2 ORU^R01 messages, for demos, benchmarks and MLLP tests.

``messages(tenant_id, seed, n)`` yields ``n`` messages, one per request of the synthetic patients
of ``LabGenerator(tenant_id, seed)`` (patient 0's requests, then patient 1's, ...), each written by
``labvault.interop.hl7v2_out.oru_r01`` with the request's specimens and results. Deterministic from
``(tenant_id, seed, n)``: the first ``k`` messages of a longer run are the same bytes. Control ids
are ``<6 hex digits of (tenant_id, seed)>-<patient index>-<request index>``: unique within a run and,
but for a hash collision, across tenants and seeds. MSH-7 is the request's report time (or, before
any validation, the last reception of its specimens, or its request time).
"""

from __future__ import annotations

from collections.abc import Iterator

from labvault.crypto import derive
from labvault.interop.hl7v2_out import oru_r01
from labvault.synth.generator import LabGenerator

__all__ = ["messages"]


def messages(tenant_id: str, seed: int, n: int, *, facility: str = "LABVAULT-SYNTH") -> Iterator[bytes]:
    """``n`` ORU^R01 messages (bytes, segments ended by CR), one per synthetic request."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if n == 0:
        return
    prefix = format(derive.seed(f"{tenant_id}\x1f{seed}", 3), "06x")
    gen = LabGenerator(tenant_id, seed)
    prescribers = {p.prescriber_id: p for p in gen.prescribers}
    sent = 0
    i = 0
    while True:
        rec = gen.patient(i)
        for k, req in enumerate(rec.requests):
            rid = req.request_id
            specimens = [s for s in rec.specimens if s.request_id == rid]
            when = req.reported_at or max(
                (s.received_at for s in specimens if s.received_at is not None), default=req.requested_at
            )
            yield oru_r01(
                rec.identity,
                [req],
                specimens,
                [r for r in rec.results if r.request_id == rid],
                prescribers,
                sending_facility=facility,
                control_id=f"{prefix}-{i}-{k}",
                when=when,
            )
            sent += 1
            if sent == n:
                return
        i += 1
