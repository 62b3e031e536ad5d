"""A real FHIR R4 example (Observation-f001 with its Patient-f001, no INS) ingested over HTTP and read
back through ``/fhir/R4``: the patient found on its strict traits, provisional, its local identifier
served and no INS; the glucose with its value, unit, range, flag and status as the file says."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.api.conftest import LAB_A
from tests.api.test_scopes import feed_token

R4 = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "fhir" / "r4-official"
INGEST = f"/api/v1/tenants/{LAB_A}/ingest"


def _bundle() -> bytes:
    if not R4.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real FHIR test data absent: {R4}")
        pytest.skip(f"real FHIR test data absent: {R4}")
    entries = [json.loads((R4 / name).read_bytes()) for name in ("Observation-f001.json", "Patient-f001.json")]
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": e} for e in entries]}
    ).encode()


def test_real_observation_without_ins_is_served_as_received(api, bio_a):
    """M2, F1: accepted without an INS; the Patient served provisional (FR Core PROV), with its
    local identifier and no INS identifier; the Observation with 6.3 mmol/L (UCUM), 3.1-6.2, H, final."""
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    r = feed.post(INGEST, content=_bundle(), headers={"content-type": "application/fhir+json"})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["accepted"] == 1, r.text[:300]
    found = bio_a.get(
        "/fhir/R4/Patient", params={"family": "van de Heuvel", "given": "Pieter", "birthdate": "1944-11-17"}
    )
    assert found.status_code == 200, found.text[:300]
    [entry] = found.json()["entry"]
    patient = entry["resource"]
    systems = {i.get("system") for i in patient.get("identifier", [])}
    assert "urn:oid:2.16.840.1.113883.2.4.6.3" in systems
    assert not any(s and s.startswith("urn:oid:1.2.250.1.213.1.4.") for s in systems)
    [reliability] = [e for e in patient["extension"] if e["url"].endswith("fr-core-identity-reliability")]
    assert reliability["extension"][0]["valueCoding"]["code"] == "PROV"
    assert (patient["gender"], patient["birthDate"]) == ("male", "1944-11-17")
    obs = bio_a.get("/fhir/R4/Observation", params={"patient": patient["id"]})
    assert obs.status_code == 200, obs.text[:300]
    [o] = [e["resource"] for e in obs.json()["entry"]]
    assert o["status"] == "final"
    assert o["code"]["coding"][0]["code"] == "15074-8"
    q = o["valueQuantity"]
    assert (q["value"], q["unit"], q.get("system"), q.get("code")) == (
        6.3,
        "mmol/L",
        "http://unitsofmeasure.org",
        "mmol/L",
    )
    [rr] = o["referenceRange"]
    assert (rr["low"]["value"], rr["high"]["value"]) == (3.1, 6.2)
    assert o["interpretation"][0]["coding"][0]["code"] == "H"
