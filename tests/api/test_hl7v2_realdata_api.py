"""The NIST LRI CBC message (``../shared/realdata/hl7v2``, no INS) ingested over HTTP with a lab's feed
token and read back by the lab's biologist through ``/fhir/R4``: Patient, Observation (search by
patient) and DiagnosticReport carry the values as written, the units (UCUM system only for a valid UCUM
unit), the flags, the reference ranges as text and the patient's traits; every resource served is
valid FHIR R4 (fhir.resources)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from labvault.interop._common import UCUM, is_ucum
from tests.api.conftest import LAB_A
from tests.api.test_scopes import feed_token

HL7V2 = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "hl7v2"
CBC = HL7V2 / "ms-fhir-converter" / "LRI_2.0-NG_CBC_Typ_Message.hl7"
INGEST = f"/api/v1/tenants/{LAB_A}/ingest"
INS_OIDS = ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9", "urn:oid:1.2.250.1.213.1.4.10")
RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"

# LOINC code -> (value as written in OBX-5, unit OBX-6.1, range OBX-7, flag OBX-8), from the file
NUMERIC = {
    "26453-1": ("4.41", "10*6/uL", "4.3 to 6.2", "N"),
    "718-7": ("12.5", "g/mL", "13 to 18", "L"),
    "20570-8": ("41", "%", "40 to 52", "N"),
    "26464-8": ("105600", "{cells}/uL", "4300 to 10800", "HH"),
    "26515-7": ("210000", "{cells}/uL", "150000 to 350000", "N"),
    "30428-7": ("91", "fL", "80 to 95", "N"),
    "28539-5": ("29", "pg/{cell}", "27 to 31", "N"),
    "28540-3": ("32.4", "g/dL", "32 to 36", "N"),
    "30385-9": ("10.5", "%", "10.2 to 14.5", "N"),
    "26444-0": ("0.1", "10*3/uL", "0 to 0.3", "N"),
    "30180-4": ("0.1", "%", "0 to 2", "N"),
    "26484-6": ("3", "10*3/uL", "0.0 to 13.0", "N"),
    "26485-3": ("3", "%", "0 to 10", "N"),
    "26449-9": ("2.1", "10*3/uL", "0.0 to 0.45", "HH"),
    "26450-7": ("2", "%", "0 to 6", "N"),
    "26474-7": ("41.2", "10*3/uL", "1.0 to 4.8", "HH"),
    "26478-8": ("39", "%", "15.0 to 45.0", "N"),
    "26499-4": ("58", "10*3/uL", "1.5 to 7.0", "HH"),
    "26511-6": ("55", "%", "50 to 73", "N"),
}
TEXT = {
    "38892-6": ("Present ++ out of ++++", "A"),
    "30400-6": ("not detected", "N"),
    "30424-6": ("not detected", "N"),
    "30434-5": ("not detected", "N"),
    "779-9": ("not detected", "N"),
    "10378-8": ("not detected", "N"),
    "6742-1": ("Many spherocytes present.", "A"),
    "11156-7": ("Reactive morphology in lymphoid cells.", "A"),
    "11125-2": ("Platelets show defective granulation.", "A"),
}


def _cbc() -> bytes:
    if not CBC.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real HL7 v2 test data absent: {CBC}")
        pytest.skip(f"real HL7 v2 test data absent: {CBC}")
    return CBC.read_bytes()


def _get(bio, url: str, **params) -> tuple[dict, str]:
    r = bio.get(url, params=params)
    assert r.status_code == 200, (url, r.status_code, r.text[:300])
    return r.json(), r.text


def _valid(body: dict) -> None:
    """The body, and each resource of a Bundle, validated against FHIR R4 by fhir.resources."""
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    if body["resourceType"] == "Bundle":
        Bundle.model_validate(body)
        for e in body.get("entry", []):
            get_fhir_model_class(e["resource"]["resourceType"]).model_validate(e["resource"])


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_nist_lri_cbc_read_back_through_fhir(api, bio_a):
    """M2: the NIST LRI CBC message read back through /fhir/R4 with its values, units, flags
    and patient traits. Accepted without an INS: the Patient is provisional (FR Core PROV) with its
    local identifier PATID1234 and no INS identifier, named Jones William A, male, born 1961-06-15;
    its 28 Observations with each value as written (105600 stays 105600 in the JSON text), unit,
    UCUM system only for a valid UCUM unit, interpretation and reference range text; the
    DiagnosticReport final, pointing at exactly those Observations."""
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    r = feed.post(INGEST, content=_cbc(), headers={"content-type": "x-application/hl7-v2+er7"})
    assert r.status_code == 200, r.text[:300]
    got = r.json()
    assert (got["format"], got["accepted"], got["rejected"], got["results"]) == ("hl7v2", 1, 0, 28), got

    found, _ = _get(bio_a, "/fhir/R4/Patient", family="Jones", given="William", birthdate="1961-06-15")
    _valid(found)
    [entry] = found["entry"]
    pid = entry["resource"]["id"]
    patient, _ = _get(bio_a, f"/fhir/R4/Patient/{pid}")
    _valid(patient)
    assert patient == entry["resource"]
    [name] = patient["name"]
    assert (name["family"], " ".join(name["given"])) == ("Jones", "William A")
    assert (patient["gender"], patient["birthDate"]) == ("male", "1961-06-15")
    [ident] = patient["identifier"]
    assert (ident["system"], ident["value"]) == ("urn:hl7v2:assigner:NIST%20MPI", "PATID1234")
    assert ident["type"]["coding"][0]["code"] == "PI"
    assert not any(i.get("system") in INS_OIDS for i in patient["identifier"])  # no INS: none goes out
    [reliability] = [e for e in patient["extension"] if e["url"] == RELIABILITY]
    assert reliability["extension"][0]["valueCoding"]["code"] == "PROV"

    bundle, text = _get(bio_a, "/fhir/R4/Observation", patient=pid, _count=100)
    _valid(bundle)
    assert bundle["total"] == 28
    obs = {e["resource"]["code"]["coding"][0]["code"]: e["resource"] for e in bundle["entry"]}
    assert set(obs) == set(NUMERIC) | set(TEXT)
    for code, o in obs.items():
        assert o["status"] == "final", code
        assert o["code"]["coding"][0]["system"] == "http://loinc.org", code
        assert o["subject"]["reference"] == f"Patient/{pid}", code
        [interp] = o["interpretation"]
        flag = NUMERIC[code][3] if code in NUMERIC else TEXT[code][1]
        assert interp["coding"][0]["code"] == flag, code
    for code, (written, unit, ref, _) in NUMERIC.items():
        q = obs[code]["valueQuantity"]
        assert q["unit"] == unit, code
        assert json.dumps(q["value"]) == written, code  # the number as the file wrote it
        assert is_ucum(unit) and (q["system"], q["code"]) == (UCUM, unit), code
        assert obs[code]["referenceRange"] == [{"text": ref}], code
    for code, (value, _) in TEXT.items():
        assert obs[code]["valueString"] == value and "valueQuantity" not in obs[code], code
    # in the JSON text as served, not only once parsed: no 105600.0, no 41.0
    assert '"value":105600,' in text.replace(" ", "") and "105600.0" not in text
    assert '"value":41,' in text.replace(" ", "") and "41.0" not in text

    reports, _ = _get(bio_a, "/fhir/R4/DiagnosticReport", patient=pid)
    _valid(reports)
    [rep] = [e["resource"] for e in reports["entry"]]
    assert rep["status"] == "final" and rep["subject"]["reference"] == f"Patient/{pid}"
    assert (rep["effectiveDateTime"], rep["issued"]) == ("2011-01-03T14:34:28-08:00", "2011-01-04T17:00:28-08:00")
    assert sorted(x["reference"] for x in rep["result"]) == sorted(f"Observation/{o['id']}" for o in obs.values())
