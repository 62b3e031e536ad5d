"""A result's history over HTTP: ``/api/v1/tenants/{lab}/results/{id}/history`` and FHIR
``Observation/{id}/_history``; lab accounts read it, vendor accounts and other labs do not."""

from __future__ import annotations

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from labvault.access import Purpose
from tests.api.conftest import LAB_A
from tests.conftest import lab_user
from tests.ingest.test_result_life import CORRECTION, REPORT, envelope, nir_for, store

NIR = nir_for(9001)


def _corrected(api) -> tuple[str, str]:
    """A potassium of lab A reported then corrected: (patient id, result id)."""
    tech = lab_user(api.gateway, LAB_A, "technician", name="Feed")
    store(api.gateway, tech, [envelope(REPORT, NIR)])
    store(api.gateway, tech, [envelope(CORRECTION, NIR)])
    with api.gateway.unit(tech, Purpose.CARE) as u:
        (p,) = u.find_patients_by_nir(LAB_A, NIR)
        (rid,) = [r.result_id for r in u.results_of(LAB_A, p.patient_id) if r.code == "2823-3"]
    return p.patient_id, rid


def test_history_as_json(api, bio_a):
    """G1: every version, oldest first, with its version number, status and time."""
    _, rid = _corrected(api)
    r = bio_a.get(f"/api/v1/tenants/{LAB_A}/results/{rid}/history")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(v["version"], v["value_num"], v["status"]) for v in body] == [(1, 4.2, "final"), (2, 4.5, "corrected")]
    assert body[0]["message_at"].startswith("2024-03-01T09:00") and body[1]["message_at"].startswith("2024-03-01T10:00")
    assert bio_a.get(f"/api/v1/tenants/{LAB_A}/results/nope/history").status_code == 404


def test_history_as_fhir(api, bio_a):
    """A history Bundle, newest first, each entry an Observation with meta.versionId, valid R4."""
    pid, rid = _corrected(api)
    r = bio_a.get(f"/fhir/R4/Observation/{rid}/_history")
    assert r.status_code == 200, r.text
    body = r.json()
    Bundle.model_validate(body)
    assert body["type"] == "history" and body["total"] == 2
    obs = [e["resource"] for e in body["entry"]]
    for o in obs:
        Observation.model_validate(o)
    assert [(o["meta"]["versionId"], o["status"], o["valueQuantity"]["value"]) for o in obs] == [
        ("2", "corrected", 4.5),
        ("1", "final", 4.2),
    ]
    assert {o["id"] for o in obs} == {rid} and {o["subject"]["reference"] for o in obs} == {f"Patient/{pid}"}


def test_vendor_accounts_and_other_labs_cannot_read_history(api, bio_b):
    """F1, F2: vendor accounts without a grant and another lab's accounts are refused."""
    _, rid = _corrected(api)
    for role in ("support", "operator", "security_officer", "platform_admin"):
        c = api.login(role)
        assert c.get(f"/api/v1/tenants/{LAB_A}/results/{rid}/history").status_code == 403, role
        assert c.get(f"/fhir/R4/Observation/{rid}/_history").status_code == 403, role
    assert bio_b.get(f"/api/v1/tenants/{LAB_A}/results/{rid}/history").status_code == 403
    assert bio_b.get(f"/fhir/R4/Observation/{rid}/_history").status_code == 404  # its own lab has no such result
