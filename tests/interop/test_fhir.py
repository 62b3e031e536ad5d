"""FHIR R4 reader and mapper: unit tests, every real file under ../shared/realdata/fhir, and fuzz tests."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, OID_RPPS
from labvault.domain.models import LOINC, IdentityStatus, ResultStatus
from labvault.errors import InvalidInput
from labvault.interop import fhir
from labvault.interop._common import is_ucum
from labvault.interop.fhir import FhirError, detect, map_document, map_ndjson, read, read_ndjson

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "fhir"
IN_CI = os.environ.get("CI") == "true"
CALL_BUDGET = 2_000_000  # Python and C function calls allowed to read and map one real file (twice)


def _real_files() -> list[Path]:
    if not REALDATA.is_dir():
        return []
    return sorted(p for p in REALDATA.rglob("*") if p.is_file() and "schema" not in p.parts)


REAL_FILES = _real_files()
BULK = REALDATA / "bulk-ndjson" / "synthea-10-patients"


def need_realdata() -> None:
    if REALDATA.is_dir():
        return
    reason = f"real FHIR test data absent: {REALDATA}"
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


NIR = "185077512345678"  # made-up, structure only
PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$")


def ins_identifier(oid: str = OID_NIR, value: str = NIR) -> dict:
    return {"use": "official", "system": f"urn:oid:{oid}", "value": value}


def made_up_patient(pid: str) -> dict:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [ins_identifier()],
        "name": [{"use": "usual", "family": "TESTPATIENT", "given": ["Jean"]}],
        "birthDate": "1985-07-04",
        "gender": "male",
    }


def made_up_result(patient_ref: str, n: int = 0) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"added-{n}",
        "status": "final",
        "subject": {"reference": patient_ref},
        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        "issued": "2024-01-01T00:00:00Z",
        "valueQuantity": {"value": 13.5, "unit": "g/dL", "system": fhir.UCUM, "code": "g/dL"},
    }


def _walk(node: object):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def with_ins(doc: dict) -> dict:
    """A real document with an INS on every Patient, and a made-up Patient for each one referenced but absent.

    Real files carry no INS (none is French); this shows what the rest of the mapper does with them.
    A single resource is wrapped in a collection Bundle with the added patients; a Patient alone gets
    one made-up result, so that its identity is mapped.
    """
    doc = copy.deepcopy(doc)
    if doc.get("resourceType") == "Patient" and isinstance(doc.get("id"), str):
        doc["identifier"] = [*doc.get("identifier", []), ins_identifier()]
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": doc}, {"resource": made_up_result(f"Patient/{doc['id']}")}],
        }
    present: set[str] = set()
    for node in _walk(doc):
        if node.get("resourceType") == "Patient":
            node.setdefault("identifier", []).append(ins_identifier())
            if isinstance(node.get("id"), str):
                present.add(node["id"])
    referenced = []
    for node in _walk(doc):
        ref = node.get("reference")
        if isinstance(ref, str) and (m := PATIENT_REF.search(ref)) and m.group(1) not in present:
            present.add(m.group(1))
            referenced.append(m.group(1))
    added = [{"resource": made_up_patient(pid)} for pid in referenced]
    if doc.get("resourceType") == "Bundle":
        doc.setdefault("entry", []).extend(added)
        return doc
    if not added:
        return doc
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": doc}, *added]}


def jbytes(doc: object) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------------------------------ a small lab bundle


def lab_bundle(**over: object) -> dict:
    """A French-style lab report: Patient with INS, prescriber, order, specimen, two results, report."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"source": "urn:example:lis"},
        "extension": [
            {
                "url": fhir.EXT_FR_IDENTITY_RELIABILITY,
                "extension": [
                    {"url": "identityStatus", "valueCoding": {"system": fhir.CS_FR_IDENTITY_STATUS, "code": "QUAL"}}
                ],
            },
            {
                "url": fhir.EXT_BIRTH_PLACE,
                "valueAddress": {
                    "extension": [
                        {
                            "url": fhir.EXT_FR_INSEE_CODE,
                            "valueCoding": {"system": fhir.CS_INSEE_COMMUNE, "code": "01006"},
                        }
                    ]
                },
            },
        ],
        "identifier": [{"system": "http://hopital.fr/ipp", "value": "IPP-1"}, ins_identifier()],
        "name": [
            {"use": "official", "family": "DUPONT", "given": ["Jean", "Pierre"]},
            {"use": "usual", "family": "MARTIN", "given": ["Jean", "Pierre"]},
        ],
        "telecom": [{"system": "phone", "value": "0102030405"}, {"system": "email", "value": "x@example.org"}],
        "gender": "male",
        "birthDate": "1985-07-04",
        "address": [{"line": ["1 rue A"], "postalCode": "75001", "city": "Paris"}],
    }
    practitioner = {
        "resourceType": "Practitioner",
        "id": "dr1",
        "identifier": [{"system": f"urn:oid:{OID_RPPS}", "value": "810001234567"}],
        "name": [{"family": "HOUSE", "given": ["Greg"]}],
    }
    order = {
        "resourceType": "ServiceRequest",
        "id": "o1",
        "status": "completed",
        "intent": "order",
        "identifier": [{"type": {"coding": [{"system": fhir.CS_V2_0203, "code": "ACSN"}]}, "value": "ACC-42"}],
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2024-01-01T08:30:00+01:00",
        "requester": {"reference": "Practitioner/dr1"},
    }
    spec = {
        "resourceType": "Specimen",
        "id": "s1",
        "type": {"coding": [{"system": fhir.CS_V2_0487, "code": "SER"}]},
        "request": [{"reference": "ServiceRequest/o1"}],
        "collection": {"collectedDateTime": "2024-01-01T08:40:00+01:00"},
        "receivedTime": "2024-01-01T09:30:00+01:00",
    }
    k = {
        "resourceType": "Observation",
        "id": "k",
        "status": "final",
        "category": [{"coding": [{"system": fhir.CS_OBS_CATEGORY, "code": "laboratory"}]}],
        "code": {
            "coding": [
                {"system": "http://lab.local/codes", "code": "K"},
                {"system": LOINC, "code": "2823-3", "display": "Potassium"},
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "specimen": {"reference": "Specimen/s1"},
        "issued": "2024-01-01T12:00:00+01:00",
        "performer": [{"reference": "Practitioner/dr1"}],
        "valueQuantity": {"value": 4.2, "unit": "mmol/L", "system": fhir.UCUM, "code": "mmol/L"},
        "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
        "interpretation": [{"coding": [{"system": fhir.CS_INTERPRETATION, "code": "N"}]}],
        "note": [{"text": "first"}, {"text": "second"}],
    }
    crp = {
        "resourceType": "Observation",
        "id": "crp",
        "status": "amended",
        "code": {"coding": [{"system": LOINC, "code": "1988-5"}], "text": "CRP"},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 5, "comparator": "<", "unit": "mg/L"},
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "11502-2"}]},
        "basedOn": [{"reference": "ServiceRequest/o1"}],
        "subject": {"reference": "Patient/p1"},
        "issued": "2024-01-02T10:00:00+01:00",
        "result": [{"reference": "Observation/k"}, {"reference": "Observation/crp"}],
    }
    org = {"resourceType": "Organization", "id": "lab", "name": "Lab"}
    resources = {
        "patient": patient,
        "practitioner": practitioner,
        "order": order,
        "spec": spec,
        "k": k,
        "crp": crp,
        "report": report,
        "org": org,
    }
    for name, value in over.items():
        if value is None:
            resources.pop(name)
        else:
            resources[name] = value
    return {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://x.example/{r['resourceType']}/{r.get('id', n)}", "resource": r}
            for n, r in resources.items()
        ],
    }


def test_maps_a_lab_bundle():
    out = map_document(jbytes(lab_bundle()), file="t.json")
    [m] = out.mapped
    i = m.identity
    assert (i.nir, i.ins_oid, i.identity_status) == (NIR, OID_NIR, IdentityStatus.QUALIFIED)
    assert (i.family_name, i.birth_name, i.given_names) == ("MARTIN", "DUPONT", "Jean Pierre")
    assert (i.birth_date, i.sex, i.birthplace_code) == (date(1985, 7, 4), "M", "01006")
    assert (i.phone, i.email, i.address) == ("0102030405", "x@example.org", "1 rue A, 75001, Paris")
    assert m.other_identifiers == [("http://hopital.fr/ipp", "IPP-1")]
    [p] = m.prescribers
    assert (p.rpps, p.family_name, p.given_name) == ("10001234567", "HOUSE", "Greg")
    [req] = m.requests
    assert req.prescriber_id == p.prescriber_id and req.accession == "ACC-42" and req.patient_id == i.patient_id
    assert req.requested_at == datetime(2024, 1, 1, 8, 30, tzinfo=timezone(timedelta(hours=1)))
    assert req.reported_at == datetime(2024, 1, 2, 10, tzinfo=timezone(timedelta(hours=1)))
    [sp] = m.specimens
    assert (sp.type, sp.request_id, sp.received_at.hour) == ("SER", req.request_id, 9)
    k, crp = m.results
    assert (k.code, k.code_system, k.label, k.value_num, k.unit) == ("2823-3", LOINC, "Potassium", 4.2, "mmol/L")
    assert (k.ref_low, k.ref_high, k.flag, k.status) == (3.5, 5.1, "N", ResultStatus.FINAL)
    assert (k.comment, k.validated_by, k.specimen_id) == ("first\nsecond", "Greg HOUSE", sp.specimen_id)
    assert k.validated_at.utcoffset() == timedelta(hours=1)
    # the bound kept apart from its number, as written; "mg/L" named without a system is valid UCUM
    assert (crp.value_num, crp.value_repr, crp.comparator, crp.value_text) == (5.0, "5", "<", None)
    assert (crp.unit, crp.unit_system, crp.label) == ("mg/L", fhir.UCUM, "CRP")
    assert (k.value_repr, k.comparator, k.unit_system, k.observation_key) == ("4.2", None, fhir.UCUM, f"{LOINC}|2823-3")
    assert crp.status is ResultStatus.CORRECTED and crp.request_id == req.request_id
    assert m.control_id == "b1" and m.sending_facility == "fhir:"
    assert out.skipped == {"Organization": 1}


def test_ids_are_deterministic_and_distinct():
    a, b = read(jbytes(lab_bundle())), read(jbytes(lab_bundle()))
    assert a[0].results[0].result_id == b[0].results[0].result_id and len(a[0].results[0].result_id) == 32
    ids = {
        a[0].identity.patient_id,
        a[0].requests[0].request_id,
        a[0].specimens[0].specimen_id,
        *(r.result_id for r in a[0].results),
    }
    assert len(ids) == 5
    assert fhir.domain_id(a[0], "Patient", "p1") == a[0].identity.patient_id


def test_control_id_is_a_content_hash_without_bundle_id():
    doc = lab_bundle()
    del doc["id"]
    one, two = read(jbytes(doc))[0], read(json.dumps(doc, indent=2).encode())[0]
    assert one.control_id == two.control_id and len(one.control_id) == 32
    doc["entry"][4]["resource"]["valueQuantity"]["value"] = 4.3
    assert read(jbytes(doc))[0].control_id != one.control_id


def test_observations_without_order_get_one_request_per_day():
    obs = [
        {
            "resourceType": "Observation",
            "id": f"o{i}",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": when,
            "valueQuantity": {"value": i},
        }
        for i, when in enumerate(["2024-01-01T08:00:00Z", "2024-01-01T09:00:00Z", "2024-01-02"])
    ]
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": made_up_patient("p1")}, *({"resource": o} for o in obs)],
    }
    [m] = read(jbytes(doc))
    assert len(m.requests) == 2
    assert [r.request_id for r in m.results] == [m.requests[0].request_id] * 2 + [m.requests[1].request_id]
    assert m.requests[0].requested_at == datetime(2024, 1, 1, 8, tzinfo=UTC)
    assert m.requests[1].requested_at == datetime(2024, 1, 2)  # a date alone: naive midnight


def test_report_without_order_becomes_the_request():
    doc = lab_bundle(order=None, spec=None)
    doc["entry"][-2]["resource"]["basedOn"] = []
    doc["entry"][-2]["resource"]["effectiveDateTime"] = "2024-01-01T07:00:00Z"
    doc["entry"][-2]["resource"]["identifier"] = [{"value": "R-9"}]
    for e in doc["entry"]:
        e["resource"].pop("specimen", None)
    [m] = read(jbytes(doc))
    [req] = m.requests
    assert req.accession == "R-9" and req.prescriber_id is None and req.reported_at.day == 2
    assert {r.request_id for r in m.results} == {req.request_id}


def test_components_are_flattened_and_panels_skipped():
    bp = {
        "resourceType": "Observation",
        "id": "panel",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "24331-1"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01",
        "hasMember": [{"reference": "Observation/m1"}],
        "specimen": {"reference": "Specimen/s9"},
    }
    member = {
        "resourceType": "Observation",
        "id": "m1",
        "status": "preliminary",
        "code": {"coding": [{"system": LOINC, "code": "2093-3"}]},
        "valueQuantity": {"value": 5.1},
    }
    comp = {
        "resourceType": "Observation",
        "id": "c",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": LOINC, "code": "X"}]},
        "effectiveDateTime": "2024-01-01",
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "A"}]}, "valueQuantity": {"value": 1}},
            {"code": {"coding": [{"system": LOINC, "code": "B"}]}, "valueString": "two"},
        ],
    }
    spec = {"resourceType": "Specimen", "id": "s9", "subject": {"reference": "Patient/p1"}}
    report = {
        "resourceType": "DiagnosticReport",
        "id": "r",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-01-01",
        "result": [{"reference": "Observation/panel"}],
    }
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": r} for r in (made_up_patient("p1"), report, bp, member, comp, spec)],
    }
    out = map_document(jbytes(doc))
    [m] = out.mapped
    assert [(r.code, r.value_num, r.value_text) for r in m.results] == [
        ("2093-3", 5.1, None),
        ("A", 1.0, None),
        ("B", None, "two"),
    ]
    assert m.results[0].specimen_id == m.specimens[0].specimen_id  # inherited from the panel
    assert out.skipped["Observation (panel)"] == 1


def test_skips_non_lab_and_counts():
    vital = {
        "resourceType": "Observation",
        "id": "w",
        "status": "final",
        "category": [{"coding": [{"system": fhir.CS_OBS_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"code": "x"}]},
        "subject": {"reference": "Patient/p1"},
    }
    out = map_document(jbytes(lab_bundle(vital=vital, loc={"resourceType": "Location", "id": "l"})))
    assert out.skipped["Observation (not laboratory)"] == 1 and out.skipped["Location"] == 1
    assert len(out.mapped[0].results) == 2


def test_two_patients_two_mapped():
    doc = lab_bundle()
    p2 = made_up_patient("p2")
    o2 = {
        "resourceType": "Observation",
        "id": "o2",
        "status": "final",
        "subject": {"reference": "Patient/p2"},
        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        "issued": "2024-01-01T00:00:00Z",
    }
    doc["entry"] += [{"resource": p2}, {"resource": o2}]
    ms = read(jbytes(doc))
    assert [len(m.results) for m in ms] == [2, 1]
    assert ms[0].identity.patient_id != ms[1].identity.patient_id


def test_single_resource_and_contained_specimen():
    sr = {
        "resourceType": "ServiceRequest",
        "id": "x",
        "status": "active",
        "intent": "order",
        "contained": [
            made_up_patient("pt"),
            {
                "resourceType": "Specimen",
                "id": "sp",
                "type": {"text": "blood"},
                "collection": {"collectedDateTime": "2024-02-01T10:00:00Z"},
            },
        ],
        "subject": {"reference": "#pt"},
        "occurrenceDateTime": "2024-02-01",
        "specimen": [{"reference": "#sp"}],
        "requisition": {"value": "G-1"},
    }
    [m] = read(jbytes(sr))
    assert m.identity.nir == NIR and m.requests[0].accession == "G-1"
    assert (m.specimens[0].type, m.specimens[0].request_id) == ("blood", m.requests[0].request_id)


def test_transaction_with_uuid_references():
    pat = made_up_patient("p1")
    del pat["id"]
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "urn:uuid:aaa"},
        "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        "issued": "2024-01-01T00:00:00Z",
        "specimen": {"reference": "urn:uuid:ccc"},
    }
    spec = {"resourceType": "Specimen", "subject": {"reference": "urn:uuid:aaa"}}
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:aaa", "resource": pat, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:bbb", "resource": obs, "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": "urn:uuid:ccc", "resource": spec, "request": {"method": "POST", "url": "Specimen"}},
            {"request": {"method": "DELETE", "url": "Patient/9"}},
        ],
    }
    out = map_document(jbytes(doc))
    [m] = out.mapped
    assert m.identity.nir == NIR and m.results[0].specimen_id == m.specimens[0].specimen_id
    assert m.specimens[0].request_id == m.results[0].request_id
    assert out.skipped == {"entry without resource": 1}


def test_specimen_of_another_patient_is_refused():
    doc = lab_bundle()
    doc["entry"] += [
        {"resource": made_up_patient("p2")},
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o2",
                "status": "final",
                "subject": {"reference": "Patient/p2"},
                "issued": "2024-01-01T00:00:00Z",
                "code": {"coding": [{"code": "x"}]},
                "specimen": {"reference": "Specimen/s1"},
            }
        },
    ]
    with pytest.raises(FhirError, match=r"Observation, Observation.specimen: the specimen belongs to another"):
        read(jbytes(doc))


def test_unzoned_marker_gives_a_naive_datetime():
    doc = lab_bundle()
    k = doc["entry"][4]["resource"]
    k["_issued"] = {"extension": [{"url": fhir.EXT_UNZONED, "valueBoolean": True}]}
    [m] = read(jbytes(doc))
    assert m.results[0].validated_at == datetime(2024, 1, 1, 12)


@pytest.mark.parametrize(
    ("doc", "where", "reason"),
    [
        (lab_bundle(patient=None), "ServiceRequest.subject", "patient not in the input: no Patient resource"),
        (
            lab_bundle(patient=made_up_patient("p1") | {"identifier": [ins_identifier(OID_INS_TEST)]}),
            "Patient.identifier[0].system",
            "test INS",
        ),
        (lab_bundle(patient=made_up_patient("p1") | {"birthDate": "1985-13-01"}), "Patient.birthDate", "out of range"),
        (
            lab_bundle(patient=made_up_patient("p1") | {"birthDate": "04/07/1985"}),
            "Patient.birthDate",
            "not a FHIR date",
        ),
        (
            lab_bundle(patient=made_up_patient("p1") | {"name": [{"given": ["A"]}]}),
            "Patient.name[0].family",
            "family name missing",
        ),
        (lab_bundle(patient=made_up_patient("p1") | {"birthDate": None}), "Patient.birthDate", "birth date missing"),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "Patient/p1"},
                }
            ),
            "Observation.code.coding",
            "code missing",
        ),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k",
                    "status": "unknown",
                    "code": {"coding": [{"code": "x"}]},
                }
            ),
            "Observation.status",
            "cannot be imported",
        ),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k",
                    "status": "final",
                    "code": {"coding": [{"code": "x"}]},
                    "valueQuantity": {"value": "4.2"},
                }
            ),
            "Observation.valueQuantity.value",
            "expected a number",
        ),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k",
                    "status": "final",
                    "code": {"coding": [{"code": "x"}]},
                    "valueRange": {"low": {"value": 1}},
                }
            ),
            "Observation.valueRange",
            "not supported",
        ),
        (
            lab_bundle(k={"resourceType": "Observation", "id": "k", "status": "final", "code": {"coding": "x"}}),
            "Observation.code.coding",
            "expected an array",
        ),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k",
                    "status": "final",
                    "code": {"coding": [{"code": "x"}]},
                    "subject": {"reference": "Patient/zz"},
                    "basedOn": [{"reference": "ServiceRequest/o1"}],
                }
            ),
            "Observation.subject",
            "differs from the subject",
        ),
        (
            lab_bundle(
                k={
                    "resourceType": "Observation",
                    "id": "k2",
                    "status": "final",
                    "code": {"coding": [{"code": "x"}]},
                    "subject": {"reference": "Patient/p1"},
                }
            ),
            "Observation.effective[x]",
            "effective date",
        ),
        (
            lab_bundle(order=lab_bundle()["entry"][2]["resource"] | {"authoredOn": None}, report=None, crp=None),
            "ServiceRequest.authoredOn",
            "order date missing",
        ),
        (
            lab_bundle(org={"resourceType": "Observation", "id": "k"}),
            None,
            "duplicate resource: the same type and id as the one at entry",
        ),
        ({"resourceType": "Bundle", "type": "history", "entry": []}, "Bundle.type", "refused"),
        (
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient"}}]},
            None,
            "nothing to map",
        ),
        (
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"id": "x"}}]},
            "entry 1",
            "resourceType missing",
        ),
        ({"resourceType": "Observation", "id": "bad id!"}, "Observation.id", "not a valid FHIR id"),
        ([1, 2], None, "not an object"),
    ],
)
def test_precise_rejections(doc, where, reason):
    with pytest.raises(FhirError) as info:
        read(jbytes(doc), file="in.json")
    text = str(info.value)
    assert reason in text and "\n" not in text and text.startswith("in.json")
    assert isinstance(info.value, InvalidInput)
    if where:
        assert where in text


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty input"),
        (b"<Patient xmlns='http://hl7.org/fhir'/>", "XML"),
        (b"Instance: X\nInstanceOf: Patient\n", "FSH source"),
        (b"hello", "does not start with"),
        (b'{"resourceType": "Patient",', "not valid JSON"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"resourceType":"Patient"}\n{"resourceType":"Patient"}\n', "read_ndjson"),
        (b'{"resourceType": "Patient", "name": "\xff"}', "not UTF-8"),
        ("é".encode("latin-1"), "not UTF-8 text"),
        (b"{}" + b" " * fhir.MAX_INPUT_BYTES, "exceeds the limit"),
    ],
)
def test_not_fhir_json(raw, reason):
    with pytest.raises(FhirError, match=re.escape(reason)):
        read(raw)


def test_error_messages_carry_no_personal_value():
    secret = "SECRET42é"  # codes and ids of up to 64 plain characters may be shown; this one may not
    cases = [
        lab_bundle(patient=made_up_patient("p1") | {"birthDate": secret}),
        lab_bundle(patient=made_up_patient("p1") | {"gender": 42, "name": [{"family": secret, "given": secret}]}),
        lab_bundle(
            patient=made_up_patient("p1") | {"identifier": [{"system": "urn:x", "value": secret}], "birthDate": None}
        ),
        lab_bundle(k={"resourceType": "Observation", "id": "k", "status": secret, "code": {"coding": [{"code": "x"}]}}),
        lab_bundle(
            k={
                "resourceType": "Observation",
                "id": "k",
                "status": "final",
                "code": {"coding": [{"code": "x"}]},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": secret},
            }
        ),
        lab_bundle(
            k={
                "resourceType": "Observation",
                "id": "k",
                "status": "final",
                "code": {"coding": [{"code": "x"}]},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": 1, "comparator": secret},
            }
        ),
        {"resourceType": "Bundle", "type": secret, "entry": []},
        {"resourceType": secret + " x"},
    ]
    for doc in cases:
        with pytest.raises(FhirError) as info:
            read(jbytes(doc))
        assert secret not in str(info.value), str(info.value)
    with pytest.raises(FhirError) as info:
        read(b'{"resourceType": "Patient", "name": "' + secret.encode() + b'"')
    assert secret not in str(info.value)


def test_test_ins_refused_outside_test_mode_and_accepted_in_it():
    doc = lab_bundle(patient=made_up_patient("p1") | {"identifier": [ins_identifier(OID_INS_TEST)]})
    with pytest.raises(FhirError, match="test INS"):
        read(jbytes(doc))
    [m] = read(jbytes(doc), test_mode=True)
    assert m.identity.ins_oid == OID_INS_TEST


def test_nir_preferred_over_nia_and_status_provisional_by_default():
    p = made_up_patient("p1") | {"identifier": [ins_identifier(OID_NIA, "NIA1"), ins_identifier(OID_NIR, NIR)]}
    [m] = read(jbytes(lab_bundle(patient=p)))
    assert (m.identity.nir, m.identity.ins_oid) == (NIR, OID_NIR)
    assert m.identity.identity_status is IdentityStatus.PROVISIONAL and m.identity.birth_name is None


def test_detect():
    assert detect(jbytes(lab_bundle())) == "fhir-json"
    assert detect(json.dumps(lab_bundle(), indent=1).encode()) == "fhir-json"
    assert detect(b'{"resourceType":"Patient"}\n{"resourceType":"Patient"}\n') == "fhir-ndjson"
    assert detect(b'\xef\xbb\xbf  {"resourceType":"Patient"}\n') == "fhir-json"
    assert detect(b"MSH|^~\\&|") is None
    assert detect(b'{"exportId": 1}\n{"exportId": 2}\n') is None
    assert detect(b"Instance: X") is None
    long_first = b'{"resourceType":"Patient","x":"' + b"a" * 100_000 + b'"}\n{"resourceType":"Patient"}\n'
    assert detect(long_first) == "fhir-ndjson"


# ------------------------------------------------------------------------------------------ ndjson


def _ndjson(*resources: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


def test_read_ndjson_groups_by_patient_across_files():
    b = lab_bundle()
    by_type: dict[str, list[dict]] = {}
    for e in b["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    p2 = made_up_patient("p2")
    by_type["Patient"].append(p2)
    by_type["Observation"].append(
        {
            "resourceType": "Observation",
            "id": "z",
            "status": "final",
            "subject": {"reference": "Patient/p2"},
            "issued": "2024-03-01T00:00:00Z",
            "code": {"coding": [{"system": LOINC, "code": "718-7"}]},
        }
    )
    files = {f"{t}.000.ndjson": _ndjson(*rs) for t, rs in by_type.items()}
    out = map_ndjson(files)
    one, two = out.mapped
    assert one.identity.nir == NIR and len(one.results) == 2 and one.prescribers[0].rpps == "10001234567"
    assert one.sending_facility == "fhir:urn:example:lis" and len(two.results) == 1
    assert one.control_id != two.control_id
    again = read_ndjson(dict(reversed(list(files.items()))))
    assert [m.results[0].result_id for m in again] == [m.results[0].result_id for m in out.mapped]
    # a change to the other patient leaves this patient's ids alone
    by_type["Observation"][-1]["valueQuantity"] = {"value": 1}
    changed = read_ndjson({f"{t}.000.ndjson": _ndjson(*rs) for t, rs in by_type.items()})
    assert changed[0].control_id == one.control_id and changed[1].control_id != two.control_id


def test_ndjson_errors_name_file_and_line():
    good = _ndjson(made_up_patient("p1"))
    with pytest.raises(FhirError) as info:
        read_ndjson({"Patient.ndjson": good, "Observation.ndjson": b'\n{"resourceType": "Observation",\n'})
    assert str(info.value).startswith("Observation.ndjson, line 2: not valid JSON")
    bad_obs = {
        "resourceType": "Observation",
        "id": "o",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"code": "x"}]},
        "issued": "2024-01-01T00:00:00Z",
        "valueInteger": 1.5,
    }
    with pytest.raises(FhirError) as info:
        read_ndjson({"Patient.ndjson": good, "Observation.ndjson": _ndjson(bad_obs, bad_obs | {"id": "p"})})
    assert str(info.value) == ("Observation.ndjson, line 1, Observation, Observation.valueInteger: expected an integer")
    with pytest.raises(FhirError, match="no resourceType"):
        read_ndjson({"log.ndjson": b'{"exportId": "x"}\n'})


# ------------------------------------------------------------------------------------------ real files


def _name(p: Path) -> str:
    return p.relative_to(REALDATA).as_posix()


def run_real(path: Path, *, add_ins: bool) -> object:
    """The Outcome, or the FhirError, of reading one real file (as received, or with INS added)."""
    raw = path.read_bytes()
    name = _name(path)
    try:
        if path.suffix == ".ndjson":
            if add_ins:  # an INS on each Patient, and one made-up result for each
                lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
                patients = [x for x in lines if x.get("resourceType") == "Patient"]
                for x in patients:
                    x.setdefault("identifier", []).append(ins_identifier())
                raw = _ndjson(*lines, *(made_up_result(f"Patient/{x['id']}", i) for i, x in enumerate(patients)))
            return map_ndjson({name: raw})
        if add_ins and path.suffix == ".json":
            raw = jbytes(with_ins(json.loads(raw)))
        return map_document(raw, file=name)
    except FhirError as exc:
        return exc


@pytest.mark.parametrize("path", REAL_FILES or [None], ids=[_name(p) for p in REAL_FILES] or ["absent"])
def test_real_file_maps_or_is_rejected_precisely(path):
    need_realdata()
    calls = 0
    is_ucum("mg/dL")  # the UCUM grammar is built once per process, outside the budget of any one file

    def counter(frame, event, arg):
        nonlocal calls
        calls += 1
        if calls > CALL_BUDGET:
            raise AssertionError("call budget exceeded")

    old = sys.getprofile()
    sys.setprofile(counter)
    try:
        outcomes = [run_real(path, add_ins=False), run_real(path, add_ins=True)]
    finally:
        sys.setprofile(old)
    assert calls <= CALL_BUDGET
    for o in outcomes:
        if isinstance(o, FhirError):
            text = str(o)
            assert "\n" not in text and text.startswith(_name(path))
            assert "unmappable input" not in text  # a mapper bug, not a precise rejection
        else:
            assert isinstance(o, fhir.Outcome) and o.mapped
            for m in o.mapped:
                assert m.identity.nir == NIR
                for r in m.results:
                    assert r.request_id in {q.request_id for q in m.requests}
    if path.suffix == ".fsh":
        assert "FSH source" in str(outcomes[0])


KNOWN = {
    # file: [(code, value, unit)] that must come out of the file once a patient with an INS is added
    "r4-official/Observation-f001.json": [("15074-8", 6.3, "mmol/L")],
    "r4-official/Bundle-lipids.json": [
        ("35200-5", 6.3, "mmol/L"),
        ("35217-9", 1.3, "mmol/L"),
        ("2085-9", 1.3, "mmol/L"),
        ("13457-7", 4.6, "mmol/L"),
    ],
    "r4-official/Bundle-ghp.json": [("718-7", 176.0, "g/L")],
    # a unit coded in SNOMED CT (not UCUM): its code is kept with its system
    "r4-official/Observation-f204.json": [("20005", 122.0, "258814008")],
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_files_preserve_values(name):
    need_realdata()
    path = REALDATA / name
    doc = json.loads(path.read_bytes())
    with pytest.raises(FhirError, match="patient not in the input"):
        read(path.read_bytes())
    [m] = read(jbytes(with_ins(doc)))
    got = {(r.code, r.value_num, r.unit) for r in m.results}
    assert set(KNOWN[name]) <= got
    text = path.read_text()
    for r in m.results:
        assert f'"{r.code}"' in text
        if r.unit:
            assert f'"{r.unit}"' in text
        if r.value_repr is not None:  # the number's text as written in the file
            assert re.search(rf'"value"\s*:\s*{re.escape(r.value_repr)}[,\s}}]', text), r.value_repr


def test_lipids_report_links_results_to_one_request():
    need_realdata()
    [m] = read(jbytes(with_ins(json.loads((REALDATA / "r4-official/Bundle-lipids.json").read_bytes()))))
    [req] = m.requests
    assert req.requested_at == datetime(2011, 3, 4, 8, 30, tzinfo=timezone(timedelta(hours=11)))
    assert req.reported_at == datetime(2013, 1, 27, 11, 45, 33, tzinfo=timezone(timedelta(hours=11)))
    assert req.accession == "5234342" and len(m.results) == 4
    chol = next(r for r in m.results if r.code == "35200-5")
    assert (chol.ref_low, chol.ref_high, chol.code_system) == (None, 4.5, LOINC)


def test_observation_f001_keeps_flag_range_and_performer():
    need_realdata()
    [m] = read(jbytes(with_ins(json.loads((REALDATA / "r4-official/Observation-f001.json").read_bytes()))))
    [r] = m.results
    assert (r.flag, r.ref_low, r.ref_high, r.validated_by) == ("H", 3.1, 6.2, "A. Langeveld")
    assert r.validated_at == datetime(2013, 4, 3, 15, 30, 10, tzinfo=timezone(timedelta(hours=1)))
    assert m.requests[0].requested_at == datetime(2013, 4, 2, 9, 30, 10, tzinfo=timezone(timedelta(hours=1)))


def test_patient_example_identity():
    need_realdata()
    doc = json.loads((REALDATA / "r4-official/Patient-example.json").read_bytes())
    [m] = read(jbytes(with_ins(doc)))
    i = m.identity
    official = next(n for n in doc["name"] if n.get("use") == "official")
    usual = next(n for n in doc["name"] if n.get("use") == "usual")
    assert "family" not in usual  # a nickname only: the used name falls back to the official name
    assert (i.family_name, i.given_names, i.birth_name) == (
        official["family"],
        " ".join(official["given"]),
        official["family"],
    )
    assert i.birth_date.isoformat() == doc["birthDate"] and i.sex == "M" and i.nir == NIR
    assert i.phone == next(t["value"] for t in doc["telecom"] if t.get("system") == "phone")
    assert i.address == doc["address"][0]["text"]
    assert ("urn:oid:1.2.36.146.595.217.0.1", doc["identifier"][0]["value"]) in m.other_identifiers


def test_ghp_panels_members_and_specimens():
    need_realdata()
    out = map_document(jbytes(with_ins(json.loads((REALDATA / "r4-official/Bundle-ghp.json").read_bytes()))))
    [m] = out.mapped
    assert len(m.requests) == 1 and len(m.specimens) == 3 and out.skipped["Observation (panel)"] == 3
    assert m.requests[0].accession == "ghp-example"
    hb = next(r for r in m.results if r.code == "718-7")
    ltt = next(s for s in m.specimens if hb.specimen_id == s.specimen_id)
    assert ltt.type == "BLD"  # SNOMED 445295009 "Blood specimen with EDTA"


def test_bulk_export_as_a_whole():
    need_realdata()
    files = {p.name: p.read_bytes() for p in sorted(BULK.glob("*.ndjson")) if p.name != "log.ndjson"}
    with pytest.raises(FhirError, match="nothing to map"):
        read_ndjson(files)
    patients = [json.loads(x) for x in files["Patient.000.ndjson"].splitlines() if x.strip()]
    for p in patients:
        p["identifier"].append(ins_identifier())
    files["Patient.000.ndjson"] = _ndjson(*patients)
    files["Observation.000.ndjson"] = _ndjson(
        *(made_up_result(f"Patient/{p['id']}", i) for i, p in enumerate(patients))
    )
    out = map_ndjson(files)
    assert len(out.mapped) == len(patients)
    first = out.mapped[0]
    official = next(n for n in patients[0]["name"] if n.get("use") == "official")
    assert (
        first.identity.family_name == official["family"]
        and first.identity.birth_date.isoformat() == patients[0]["birthDate"]
    )
    assert ("http://hl7.org/fhir/sid/us-ssn", patients[0]["identifier"][2]["value"]) in first.other_identifiers
    assert out.skipped["Organization"] == 43 and out.skipped["Practitioner (not a requester)"] == 43


# ------------------------------------------------------------------------------------------ fuzz


def _seeds() -> list[bytes]:
    seeds = [jbytes(lab_bundle())]
    for p in REAL_FILES:
        if p.suffix == ".json" and p.stat().st_size < 20_000:
            seeds.append(jbytes(with_ins(json.loads(p.read_bytes()))))
    return seeds


SEEDS = _seeds()


def _must_not_crash(data: bytes, **kw: object) -> None:
    try:
        read(data, **kw)
    except FhirError:
        pass
    try:
        read_ndjson({"x.ndjson": data}, **kw)
    except FhirError:
        pass


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    _must_not_crash(data)
    _must_not_crash(b'{"resourceType":"Bundle","type":"collection","entry":[' + data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "2024-01-01",
            "Patient/p1",
            "final",
            "#x",
            "urn:uuid:1",
            "QUAL",
            f"urn:oid:{OID_NIR}",
            "laboratory",
            "1e400",
            "valueQuantity",
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceType",
                    "id",
                    "reference",
                    "value",
                    "code",
                    "coding",
                    "system",
                    "status",
                    "subject",
                    "valueQuantity",
                    "entry",
                    "resource",
                    "extension",
                    "url",
                    "component",
                    "contained",
                    "basedOn",
                    "result",
                    "hasMember",
                    "identifier",
                    "name",
                    "family",
                ]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 10_000), JSON_VALUES), min_size=1, max_size=4))
def test_fuzz_mutated_json(seed, edits):
    doc = json.loads(seed)
    for pos, value in edits:
        paths = _paths(doc)
        path = paths[pos % len(paths)]
        if not path:
            doc = value
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = value
    data = json.dumps(doc).encode()
    _must_not_crash(data)
    _must_not_crash(data, test_mode=True)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 20), st.binary(max_size=8)), max_size=6),
)
def test_fuzz_mutated_bytes(seed, edits):
    data = bytearray(seed)
    for pos, cut, insert in edits:
        at = pos % (len(data) + 1)
        data[at : at + cut] = insert
    _must_not_crash(bytes(data))
