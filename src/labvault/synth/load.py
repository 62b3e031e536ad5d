"""Loading generated labs through the access gateway (so nothing lands in clear)."""

from __future__ import annotations

from collections.abc import Callable

from labvault.access import Gateway, Principal, Purpose
from labvault.counts import Counts
from labvault.errors import TenantExists, TenantShredded

# Fictional labs: (id, name, department) — FINESS numbers are made from the department.
LABS = [
    ("bio-rhone", "Laboratoire Bio Rhône", "69"),
    ("bio-loire", "Biologie Médicale Val de Loire", "44"),
    ("bio-nord", "Laboratoire des Flandres", "59"),
    ("bio-garonne", "Bio Analyses Garonne", "31"),
    ("bio-provence", "Laboratoire Provence Biologie", "13"),
    ("bio-alsace", "Biologie Alsace Centre", "67"),
    ("bio-bretagne", "Laboratoire Armor Analyses", "35"),
    ("bio-auvergne", "Bio Volcans", "63"),
]


def lab_spec(k: int) -> tuple[str, str, str]:
    """(id, name, FINESS) of the k-th generated lab (0-based), deterministic."""
    if k < len(LABS):
        tid, name, dept = LABS[k]
    else:
        tid, name, dept = f"bio-{k + 1:03d}", f"Laboratoire de biologie n°{k + 1}", f"{(k % 95) + 1:02d}"
    return tid, name, f"{dept}0{(k * 7919 + 104729) % 1_000_000:06d}"


LoadCounts = Counts  # what a load stored: patients, prescribers, requests, specimens, results


def load_lab(
    gateway: Gateway,
    principal: Principal,
    tenant_id: str,
    *,
    patients: int,
    seed: int,
    batch: int = 250,
    on_batch: Callable[[int], None] | None = None,
) -> LoadCounts:
    """Generate ``patients`` patients for a lab and store them, one transaction per batch."""
    from labvault.synth import LabGenerator

    gen = LabGenerator(tenant_id, seed)
    counts = LoadCounts()
    with gateway.unit(principal, Purpose.GENERATE) as u:
        counts.prescribers = u.add_prescribers(tenant_id, gen.prescribers)
    for start in range(0, patients, batch):
        records = list(gen.patients(min(batch, patients - start), start=start))
        with gateway.unit(principal, Purpose.GENERATE) as u:
            counts.patients += u.add_patients(tenant_id, [r.identity for r in records])
            requests = [q for r in records for q in r.requests]
            counts.requests += u.add_requests(tenant_id, requests)
            counts.specimens += u.add_specimens(tenant_id, [s for r in records for s in r.specimens])
            # The requests' pseudonyms are read back by add_results, in batches.
            counts.results += u.add_results(tenant_id, [x for r in records for x in r.results])
        if on_batch:
            on_batch(len(records))
    return counts


# The retention rule the fictional labs chose (a real lab gives its own: 'labvault tenant add
# --retention ... --retention-ref ...'); not a default for anyone else.
SYNTHETIC_RETENTION: dict[str, tuple[int, str]] = {
    "results": (3650, "fictional lab's records policy (synthetic data)"),
}


def ensure_labs(
    gateway: Gateway, principal: Principal, count: int, *, retention: dict[str, tuple[int, str]]
) -> list[str]:
    """Create the first ``count`` generated labs where they do not exist yet, with ``retention``,
    as synthetic labs. A lab of the same id that exists already must be synthetic too: generated
    data never goes into a real lab (``InvalidInput`` naming it, before anything is written)."""
    ids = []
    for k in range(count):
        tid, name, finess = lab_spec(k)
        try:
            with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
                u.create_tenant(tid, name, finess, retention=retention, synthetic=True)
        except TenantExists:
            check_synthetic(gateway, principal, tid)
        ids.append(tid)
    return ids


def check_synthetic(gateway: Gateway, principal: Principal, tenant_id: str) -> None:
    """Refuse (audited) to generate into ``tenant_id`` unless it was created synthetic."""
    with gateway.unit(principal, Purpose.GENERATE) as u:
        tenant = u.tenant(tenant_id)
        if tenant.status == "shredded":
            raise TenantShredded(f"lab '{tenant_id}' was crypto-shredded: nothing can be generated into it")
        if not u.is_synthetic(tenant_id):
            u.refuse(
                tenant_id,
                "tenant:generate",
                f"lab '{tenant_id}' is not a synthetic lab: generated data goes only into "
                "labs created with 'labvault tenant add --synthetic'",
            )
