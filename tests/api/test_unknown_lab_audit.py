"""A lab account naming in a route's path a lab that does not exist (a NIR, say) gets the same
refusal as for another lab, and the refusal is recorded in its own lab's trail: never an audit
chain opened under whatever the caller wrote."""

from __future__ import annotations

from sqlalchemy import func, select

from labvault.store import schema as t
from tests.api.conftest import LAB_A, LAB_B


def audit_rows(gw, tenant: str) -> int:
    with gw.engine.begin() as conn:
        return conn.execute(
            select(func.count()).select_from(t.audit_event).where(t.audit_event.c.tenant_id == tenant)
        ).scalar_one()


def test_a_nir_as_lab_id_opens_no_audit_chain(api, bio_a):
    """G2, F1: POST /api/v1/tenants/<a patient's NIR>/ingest and GET .../patients by a lab's
    biologist: 403 with the reason, the denial in the biologist's own lab's trail, and no audit
    event stored under the NIR; an existing other lab still gets the denial in its own trail."""
    nir = api.nirs[LAB_B][0]
    own_before, other_before = audit_rows(api.gateway, LAB_A), audit_rows(api.gateway, LAB_B)
    r = bio_a.post(f"/api/v1/tenants/{nir}/ingest", content=b"MSH|", headers={"content-type": "text/plain"})
    assert r.status_code == 403 and "cannot act on lab" in r.json()["error"]
    r = bio_a.get(f"/api/v1/tenants/{nir}/patients", params={"nir": nir})
    assert r.status_code in (403, 404)
    assert audit_rows(api.gateway, nir) == 0
    assert audit_rows(api.gateway, LAB_A) > own_before
    r = bio_a.post(f"/api/v1/tenants/{LAB_B}/ingest", content=b"MSH|", headers={"content-type": "text/plain"})
    assert r.status_code == 403
    assert audit_rows(api.gateway, LAB_B) > other_before
