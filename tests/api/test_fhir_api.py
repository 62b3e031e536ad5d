"""The FHIR R4 read API: searches, paging, OperationOutcome errors, isolation, R4 validity, and a
real FHIR client (fhirclient) against a real server."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import uvicorn
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from sqlalchemy import text as sql

from labvault.synth import LabGenerator
from tests.api.conftest import LAB_A, LAB_B, PATIENTS, SEED

INS = "urn:oid:1.2.250.1.213.1.4.8"
MODELS = {
    "Patient": Patient,
    "Observation": Observation,
    "DiagnosticReport": DiagnosticReport,
    "ServiceRequest": ServiceRequest,
}


def records(lab: str = LAB_A):
    return list(LabGenerator(lab, SEED).patients(PATIENTS))


def valid_bundle(body: dict) -> dict:
    Bundle.model_validate(body)
    for e in body.get("entry", []):
        MODELS[e["resource"]["resourceType"]].model_validate(e["resource"])
    return body


def outcome(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/fhir+json")
    OperationOutcome.model_validate(r.json())
    return r.json()["issue"][0]["diagnostics"]


def test_metadata_is_a_capability_statement(api):
    r = api.client().get("/fhir/R4/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    cs = CapabilityStatement.model_validate(r.json())
    assert cs.fhirVersion == "4.0.1"
    assert {res.type for res in cs.rest[0].resource} == {"Patient", "Observation", "DiagnosticReport", "ServiceRequest"}


def test_reads_need_a_lab_account(api):
    c = api.client()
    assert "authentication" in outcome(c.get("/fhir/R4/Patient?identifier=x"), 401)
    op = api.login("operator")
    assert "lab's own accounts" in outcome(op.get(f"/fhir/R4/Patient/{api.patients[LAB_A][0]}"), 403)


def test_patient_by_ins_by_name_and_by_id(api, bio_a):
    rec = records()[0]
    ident = rec.identity
    body = valid_bundle(bio_a.get("/fhir/R4/Patient", params={"identifier": f"{INS}|{ident.nir}"}).json())
    assert body["total"] == 1
    p = body["entry"][0]["resource"]
    assert p["id"] == ident.patient_id and p["birthDate"] == ident.birth_date.isoformat()
    assert {"system": INS, "value": ident.nir}.items() <= p["identifier"][0].items()
    first = ident.given_names.split(" ")[0]
    by_name = bio_a.get(
        "/fhir/R4/Patient",
        params={"family": ident.family_name, "given": first, "birthdate": ident.birth_date.isoformat()},
    ).json()
    assert [e["resource"]["id"] for e in by_name["entry"]] == [ident.patient_id]
    r = bio_a.get(f"/fhir/R4/Patient/{ident.patient_id}")
    assert r.status_code == 200 and Patient.model_validate(r.json()).id == ident.patient_id


def test_observations_with_code_dates_and_paging(api, bio_a):
    rec = max(records(), key=lambda r: len(r.results))
    pid = rec.identity.patient_id
    r = bio_a.get("/fhir/R4/Observation", params={"patient": pid, "_count": 3})
    body = valid_bundle(r.json())
    seen = [e["resource"]["id"] for e in body["entry"]]
    total = body["total"]
    assert total >= 3 and len(seen) == 3
    while nxt := [link["url"] for link in body["link"] if link["relation"] == "next"]:
        parts = urlsplit(nxt[0])
        body = valid_bundle(bio_a.get(f"{parts.path}?{parts.query}").json())
        seen += [e["resource"]["id"] for e in body["entry"]]
    assert len(seen) == len(set(seen)) == total
    readable = {
        r.result_id
        for r in rec.results
        if r.sensitivity in ("other", "hiv", "genetics", "viral_hepatitis", "pregnancy", "oncology")
    }
    assert set(seen) <= readable
    code = rec.results[0].code
    coded = bio_a.get(
        "/fhir/R4/Observation", params={"subject": f"Patient/{pid}", "code": f"http://loinc.org|{code}"}
    ).json()
    assert coded["total"] >= 1 and all(e["resource"]["code"]["coding"][0]["code"] == code for e in coded["entry"])
    day = min(q.requested_at for q in rec.requests).date()
    later = bio_a.get("/fhir/R4/Observation", params=[("patient", pid), ("date", f"gt{day.isoformat()}")]).json()
    same = bio_a.get(
        "/fhir/R4/Observation",
        params=[("patient", pid), ("date", f"ge{day.isoformat()}"), ("date", f"le{day.isoformat()}")],
    ).json()
    assert later["total"] + same["total"] == total


def test_reports_and_service_requests(api, bio_a):
    rec = records()[1]
    pid = rec.identity.patient_id
    srs = valid_bundle(bio_a.get("/fhir/R4/ServiceRequest", params={"patient": pid}).json())
    assert {e["resource"]["id"] for e in srs["entry"]} == {q.request_id for q in rec.requests}
    reports = valid_bundle(bio_a.get("/fhir/R4/DiagnosticReport", params={"patient": pid}).json())
    assert reports["total"] == len(rec.requests)
    linked = {ref["reference"].split("/")[1] for e in reports["entry"] for ref in e["resource"].get("result", [])}
    obs = bio_a.get("/fhir/R4/Observation", params={"patient": pid, "_count": 500}).json()
    assert linked == {e["resource"]["id"] for e in obs["entry"]}


def test_bad_searches_get_an_operation_outcome(api, bio_a):
    assert "unsupported search parameter" in outcome(bio_a.get("/fhir/R4/Observation?patient=x&color=red"), 400)
    assert "exactly one patient" in outcome(bio_a.get("/fhir/R4/Observation"), 400)
    assert "valid calendar date" in outcome(bio_a.get("/fhir/R4/Observation?patient=x&date=2020-13"), 400)
    assert "date must be" in outcome(bio_a.get("/fhir/R4/Observation?patient=x&date=yesterday"), 400)
    assert "INS" in outcome(bio_a.get("/fhir/R4/Patient?identifier=http://example.org|123"), 400)
    assert "invalid NIR" in outcome(bio_a.get(f"/fhir/R4/Patient?identifier={INS}|123"), 400)
    assert "together" in outcome(bio_a.get("/fhir/R4/Patient?family=X"), 400)
    outcome(bio_a.get("/fhir/R4/Patient/does-not-exist"), 404)
    outcome(bio_a.get("/fhir/R4/Medication"), 404)
    assert "_count" in outcome(bio_a.get(f"/fhir/R4/Observation?patient={api.patients[LAB_A][0]}&_count=-1"), 400)


def test_another_labs_patients_are_not_there(api, bio_b):
    pid = api.patients[LAB_A][0]
    outcome(bio_b.get(f"/fhir/R4/Patient/{pid}"), 404)
    assert bio_b.get("/fhir/R4/Observation", params={"patient": pid}).json()["total"] == 0
    nir = api.nirs[LAB_A][0]
    assert bio_b.get("/fhir/R4/Patient", params={"identifier": f"{INS}|{nir}"}).json()["total"] == 0


def test_each_fhir_read_is_audited(api, bio_a):
    def n() -> int:
        with api.gateway.engine.connect() as c:
            if c.dialect.name == "postgresql":
                c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
            return c.execute(
                sql("SELECT count(*) FROM audit_event WHERE tenant_id = 'lab-a' AND action = 'patient:result:read'")
            ).scalar_one()

    before = n()
    bio_a.get("/fhir/R4/Observation", params={"patient": api.patients[LAB_A][0]})
    assert n() == before + 1


# ------------------------------------------------------------------- a real client over real HTTP
@pytest.fixture
def live(api):
    """The app served by uvicorn on a loopback port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    rt = api.app.state.runtime  # the server's public address: its links (paging) point back to it
    api.app.state.runtime = dataclasses.replace(rt, settings=dataclasses.replace(rt.settings, public_base_url=base))
    yield base
    server.should_exit = True
    thread.join(10)


def test_fhirclient_reads_patients_and_observations(api, bio_a, live):
    from fhirclient import client
    from fhirclient.models.observation import Observation as FcObservation
    from fhirclient.models.patient import Patient as FcPatient

    _, token = api.token(bio_a, ["read"])
    smart = client.FHIRClient(settings={"app_id": "labvault-test", "api_base": f"{live}/fhir/R4"})
    smart.server.session.headers["Authorization"] = f"Bearer {token}"
    rec = max(records(), key=lambda r: len(r.results))
    ident = rec.identity
    found = list(FcPatient.where(struct={"identifier": f"{INS}|{ident.nir}"}).perform_resources_iter(smart.server))
    assert [p.id for p in found] == [ident.patient_id]
    patient = FcPatient.read(ident.patient_id, smart.server)
    assert patient.birthDate.isostring == ident.birth_date.isoformat()
    assert patient.name[0].family == ident.family_name
    observations = list(
        FcObservation.where(struct={"patient": ident.patient_id, "_count": "4"}).perform_resources_iter(smart.server)
    )
    assert len(observations) == len(list(rec.results)) and all(
        o.subject.reference == f"Patient/{ident.patient_id}" for o in observations
    )
    expected = {r.result_id: r for r in rec.results}
    for o in observations:
        r = expected[o.id]
        assert o.code.coding[0].code == r.code
        if r.value_num is not None:
            assert o.valueQuantity.value == pytest.approx(r.value_num)
    other = api.login(f"biologist@{LAB_B}")
    _, token_b = api.token(other, ["read"])
    smart.server.session.headers["Authorization"] = f"Bearer {token_b}"
    assert list(FcPatient.where(struct={"identifier": f"{INS}|{ident.nir}"}).perform_resources_iter(smart.server)) == []
