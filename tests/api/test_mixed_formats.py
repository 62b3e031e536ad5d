"""One patient whose requests came in several formats (HL7 v2 with zoned times, HPRIM with lab local
times, CSV without a prescriber), read back over ``/api/v1`` and ``/fhir/R4``: every read answers,
and every FHIR resource served is valid R4 (fhir.resources)."""

from __future__ import annotations

import io
from datetime import date, datetime

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from labvault.domain.models import Identity, IdentityStatus, Request, Result, ResultStatus, Specimen
from labvault.interop.writers import CSV_FIELDS, CsvWriter, HprimWriter, PatientReport
from tests.api.conftest import LAB_A
from tests.api.test_scopes import feed_token

INGEST = f"/api/v1/tenants/{LAB_A}/ingest"
NIR = "185077512345608"
FAMILY, GIVEN, BORN = "DUPONT", "Jean", "19850704"


def _hl7(control: str = "MIX1") -> bytes:
    """An ORU^R01 with zoned times (OBR-7, OBX-19) and a prescriber (ORC-12)."""
    lines = [
        f"MSH|^~\\&|LIS|LAB1^1.2.3^ISO|GW|HOSP|20240101120000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||{FAMILY}^{GIVEN}^^^^^L||{BORN}|M",
        "ORC|RE|||||||||||10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
        f"OBR|1|P-{control}|F-{control}|24326-1^Electrolytes^LN|||20240101083000+0100",
        "OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^^UCUM|3.5-5.1|N|||F|||||||||20240101110000+0100",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|135-145|N|||F|||||||||20240101110000+0100",
    ]
    return ("\r".join(lines) + "\r").encode()


def _identity() -> Identity:
    return Identity(
        patient_id="p-mix",
        nir=NIR,
        identity_status=IdentityStatus.QUALIFIED,  # its INS written in every file
        family_name=FAMILY,
        given_names=GIVEN,
        birth_date=date(1985, 7, 4),
        sex="M",
    )


def _report(request_id: str, at: datetime, accession: str, code: str, label: str, value: float) -> PatientReport:
    req = Request(request_id, "p-mix", None, at, accession=accession)
    spec = Specimen(f"s-{request_id}", request_id, "SER", at)
    res = Result(
        f"r-{request_id}",
        request_id,
        code,
        label,
        specimen_id=spec.specimen_id,
        value_num=value,
        unit="mg/dL",
        status=ResultStatus.FINAL,
        validated_at=at,
    )
    return PatientReport(_identity(), [req], [spec], [res])


def _hprim() -> bytes:
    """An HPRIM file (lab local times, no zone) for the same patient."""
    out = io.BytesIO()
    with HprimWriter(out, sender="LAB2") as w:
        w.write_one(_report("q-hprim", datetime(2024, 2, 3, 9, 15), "H-0001", "2345-7", "Glucose", 95))
    return out.getvalue()


def _csv() -> bytes:
    """A CSV file for the same patient, its request without a prescriber."""
    out = io.BytesIO()
    with CsvWriter(out, CSV_FIELDS) as w:
        w.write_one(_report("q-csv", datetime(2024, 3, 5, 7, 45), "C-0001", "2160-0", "Creatinine", 0.9))
    return out.getvalue()


def _ingest(api, *bodies: tuple[str, bytes]) -> None:
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    for ctype, body in bodies:
        r = feed.post(INGEST, content=body, headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text[:300])
        assert r.json()["accepted"] >= 1, r.text[:300]


def _patient_id(bio) -> str:
    found = bio.get(f"/api/v1/tenants/{LAB_A}/patients", params={"nir": NIR})
    assert found.status_code == 200, found.text
    [p] = found.json()
    return p["patient_id"]


def _valid(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def _reads(bio, pid: str) -> dict[str, dict | list]:
    """Every read of the patient over /api/v1 and /fhir/R4 (each must answer 200)."""
    urls = {
        "requests": f"/api/v1/tenants/{LAB_A}/patients/{pid}/requests",
        "results": f"/api/v1/tenants/{LAB_A}/patients/{pid}/results",
        "Patient": f"/fhir/R4/Patient/{pid}",
        "Patient?_id": f"/fhir/R4/Patient?_id={pid}",
        "Patient?name": f"/fhir/R4/Patient?family={FAMILY}&given={GIVEN}&birthdate=1985-07-04",
        "ServiceRequest": f"/fhir/R4/ServiceRequest?patient={pid}",
        "DiagnosticReport": f"/fhir/R4/DiagnosticReport?subject=Patient/{pid}",
        "Observation": f"/fhir/R4/Observation?patient={pid}",
        "Observation?code": f"/fhir/R4/Observation?patient={pid}&code=http://loinc.org|2823-3",
        "Observation?date": f"/fhir/R4/Observation?patient={pid}&date=ge2024-01-01",
    }
    out = {}
    for name, url in urls.items():
        r = bio.get(url)
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        out[name] = r.json()
    return out


def _check_fhir(reads: dict) -> None:
    for name, body in reads.items():
        if not name[0].isupper():
            continue
        _valid(body)
        if body["resourceType"] == "Bundle":
            Bundle.model_validate(body)
            for e in body["entry"]:
                _valid(e["resource"])


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_hl7_and_hprim_requests_of_one_patient_are_served(api, bio_a):
    """F1, M5: a patient with an HL7 request (zoned times) and an HPRIM request (lab local times):
    /api/v1 requests, FHIR ServiceRequest and DiagnosticReport answer (times were compared naive
    with aware: HTTP 500), every FHIR resource valid R4; requests come oldest first."""
    _ingest(api, ("x-application/hl7-v2+er7", _hl7()), ("application/x-hprim", _hprim()))
    pid = _patient_id(bio_a)
    reads = _reads(bio_a, pid)
    assert len(reads["requests"]) == 2
    times = [datetime.fromisoformat(q["requested_at"]) for q in reads["requests"]]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    assert reads["ServiceRequest"]["total"] == 2 and reads["DiagnosticReport"]["total"] == 2
    assert reads["Observation"]["total"] == 3
    _check_fhir(reads)


def test_hl7_and_csv_request_without_prescriber_are_served(api, bio_a):
    """F1, M5: a patient with an HL7 request (a prescriber) and a CSV request without one: every
    read answers and validates."""
    _ingest(api, ("x-application/hl7-v2+er7", _hl7()), ("text/csv; charset=utf-8", _csv()))
    pid = _patient_id(bio_a)
    reads = _reads(bio_a, pid)
    assert len(reads["requests"]) == 2
    assert sorted(q["prescriber_id"] is None for q in reads["requests"]) == [False, True]
    assert reads["ServiceRequest"]["total"] == 2
    _check_fhir(reads)


def test_all_three_formats_for_one_patient(api, bio_a):
    """F1, M5: HL7, HPRIM and CSV requests of one patient: every read answers and validates."""
    _ingest(
        api,
        ("x-application/hl7-v2+er7", _hl7()),
        ("application/x-hprim", _hprim()),
        ("text/csv; charset=utf-8", _csv()),
    )
    pid = _patient_id(bio_a)
    reads = _reads(bio_a, pid)
    assert len(reads["requests"]) == 3 and reads["DiagnosticReport"]["total"] == 3
    _check_fhir(reads)


def test_vendor_accounts_read_none_of_it(api, bio_a, support, operator):
    """A1, C1: the same reads by vendor accounts (support, operator) are refused: FHIR serves a
    lab's own accounts only, /api/v1 needs a grant; no personal value in the refusals."""
    _ingest(api, ("x-application/hl7-v2+er7", _hl7()), ("application/x-hprim", _hprim()))
    pid = _patient_id(bio_a)
    for client in (support, operator):
        for url in (
            f"/fhir/R4/ServiceRequest?patient={pid}",
            f"/fhir/R4/DiagnosticReport?patient={pid}",
            f"/fhir/R4/Observation?patient={pid}",
            f"/fhir/R4/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{NIR}",
            f"/api/v1/tenants/{LAB_A}/patients/{pid}/requests",
        ):
            r = client.get(url)
            assert r.status_code == 403, (url, r.status_code, r.text[:200])
            assert NIR not in r.text and FAMILY not in r.text


@pytest.mark.parametrize(
    "oid", ["1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"]
)
def test_patient_search_by_ins_with_each_ins_oid(api, bio_a, oid):
    """B1, F1: ``Patient?identifier=urn:oid:<OID>|<NIR>`` for the INS-NIR, the NIA and their test
    OIDs (.10, .11): answered (it was 400 for the test OID), the patient found; another system is 400."""
    _ingest(api, ("x-application/hl7-v2+er7", _hl7()))
    r = bio_a.get("/fhir/R4/Patient", params={"identifier": f"urn:oid:{oid}|{NIR}"})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    Bundle.model_validate(body)
    assert body["total"] == 1
    bad = bio_a.get("/fhir/R4/Patient", params={"identifier": f"urn:oid:1.2.3|{NIR}"})
    assert bad.status_code == 400 and NIR not in bad.text
