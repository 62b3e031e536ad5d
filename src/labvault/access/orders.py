"""Orders as they live: the same order received again updates its request, results keep every
version.

``store`` is what ingest calls once patients are matched: each incoming request either is new or
is found again by its order keys (``records.order_keys``: the patient and the filler number, or the
patient, the sender and the placer number); each result of a found request either is new or
replaces the current value of the same observation, the earlier value kept as a version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.domain.models import Request, Result, Specimen


def store(
    u: Unit,
    tenant_id: str,
    requests: Sequence[Request],
    specimens: Sequence[Specimen],
    results: Sequence[Result],
    *,
    message_key: str | None = None,
) -> None:
    """Store one group's requests, specimens and results (patients already matched)."""
    u.add_requests(tenant_id, requests)
    if specimens:
        u.add_specimens(tenant_id, specimens)
    if results:
        u.add_results(tenant_id, results)
