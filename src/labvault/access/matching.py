"""Known patients and prescribers, found by blind index for the records an ingest is about to
store: a patient already known to the lab (same INS) keeps its id, a prescriber its id (same RPPS).

Nothing is decrypted: the lab's identity key computes the blind indexes of the incoming values,
and only stored ids come back. Each lookup is authorised as the creation it prepares.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Table, select

from labvault.domain.identifiers import normalise_nir
from labvault.domain.models import Identity, Prescriber
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

_CHUNK = 500


def match_patients(u: Unit, tenant_id: str, identities: Sequence[Identity]) -> dict[str, str]:
    """Mapped patient id -> the id to store under: the lab's existing patient with the same INS,
    or the first identity of ``identities`` with it, or the mapped id itself."""
    u._authorise(tenant_id, "patient:identity:create")
    c = u._crypto(tenant_id)
    pi = t.patient_identity
    found = _match(
        u,
        tenant_id,
        pi,
        pi.c.nir_bidx,
        pi.c.patient_id,
        [(c.index.nir(normalise_nir(i.nir)), i.patient_id) for i in identities if i.nir],
    )
    return {i.patient_id: found.get(i.patient_id, i.patient_id) for i in identities}


def match_prescribers(u: Unit, tenant_id: str, prescribers: Sequence[Prescriber]) -> dict[str, str]:
    """The same for prescribers, by RPPS."""
    u._authorise(tenant_id, "prescriber:create")
    c = u._crypto(tenant_id)
    pr = t.prescriber
    return _match(
        u,
        tenant_id,
        pr,
        pr.c.rpps_bidx,
        pr.c.prescriber_id,
        [(c.index.rpps(p.rpps), p.prescriber_id) for p in prescribers],
    )


def _match(
    u: Unit, tenant_id: str, table: Table, bidx_col: Column[Any], id_col: Column[Any], pairs: list[tuple[bytes, str]]
) -> dict[str, str]:
    """(blind index, mapped id) pairs -> {mapped id: stored id}: the stored row with the same blind
    index if there is one, else the first mapped id with it."""
    by_bidx: dict[bytes, list[str]] = {}
    for bidx, i in pairs:
        by_bidx.setdefault(bidx, []).append(i)
    existing: dict[bytes, str] = {}
    bidxs = list(by_bidx)
    for k in range(0, len(bidxs), _CHUNK):
        for bidx, stored in u.conn.execute(
            select(bidx_col, id_col).where(u._tf(table, tenant_id), bidx_col.in_(bidxs[k : k + _CHUNK]))
        ):
            existing.setdefault(bytes(bidx), stored)
    return {i: existing.get(bidx, ids[0]) for bidx, ids in by_bidx.items() for i in ids}
