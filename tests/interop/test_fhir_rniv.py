"""FHIR reader: identities per the identity-vigilance rules (INS optional, local identifiers, FR Core
identity status and names), every Observation status, values as written, order numbers and times,
and the FHIR writer's output read back."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from labvault.domain.identifiers import OID_NIA, OID_NIR
from labvault.domain.models import LOINC, Identity, IdentityStatus, Request, Result, ResultStatus
from labvault.interop import fhir, fhir_out
from labvault.interop.fhir import FhirError, read

NIR = "185077512345678"  # made-up, structure only
IPP_SYSTEM = "http://hopital.fr/namingsystem/ipp"
EXT_BIRTH_LIST = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name"
CS_V2_0445 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"


def reliability(code: str, system: str = fhir.CS_FR_IDENTITY_STATUS) -> dict:
    return {
        "url": fhir.EXT_FR_IDENTITY_RELIABILITY,
        "extension": [{"url": "identityStatus", "valueCoding": {"system": system, "code": code}}],
    }


def patient(**over: object) -> dict:
    """Shaped as FR Core's FRCorePatientINSExampleRNIV: an IPP only, official (birth) name with the
    first given name and every given name at birth in the birth-list-given-name extension."""
    p: dict = {
        "resourceType": "Patient",
        "id": "p1",
        "extension": [reliability("PROV")],
        "identifier": [{"use": "usual", "system": IPP_SYSTEM, "value": "IPP-260-058"}],
        "name": [
            {
                "use": "official",
                "family": "Dark",
                "given": ["Jeanne"],
                "extension": [{"url": EXT_BIRTH_LIST, "valueString": "Jeanne Marie Cécile"}],
            }
        ],
        "gender": "female",
        "birthDate": "1960-05-30",
    }
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


def observation(**over: object) -> dict:
    o: dict = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:00:00+01:00",
        "valueQuantity": {"value": 5.2, "unit": "mmol/L", "system": fhir.UCUM, "code": "mmol/L"},
    }
    o.update(over)
    return {k: v for k, v in o.items() if v is not None}


def bundle(*resources: dict, **over: object) -> bytes:
    doc: dict = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    doc.update(over)
    return json.dumps(doc).encode()


def one(*resources: dict, **over: object):
    [m] = read(bundle(*resources, **over))
    return m


# ------------------------------------------------------------------------------------------ identity


def test_patient_without_ins_is_read_with_its_local_identifier_and_status():
    """M2: no INS (nir None), the IPP kept with its system, the FR Core status PROV, the traits."""
    m = one(patient(), observation())
    i = m.identity
    assert (i.nir, i.identity_status) == (None, IdentityStatus.PROVISIONAL)
    assert i.local_ids == [(IPP_SYSTEM, "IPP-260-058")]
    assert m.other_identifiers == [(IPP_SYSTEM, "IPP-260-058")]
    assert (i.family_name, i.birth_name, i.birth_date, i.sex) == ("Dark", "Dark", date(1960, 5, 30), "F")
    assert (i.given_names, i.first_given_name, i.used_given_name) == ("Jeanne Marie Cécile", "Jeanne", None)


@pytest.mark.parametrize(
    ("code", "with_ins", "expected"),
    [
        ("PROV", True, IdentityStatus.PROVISIONAL),
        ("VALI", True, IdentityStatus.VALIDATED),
        ("RECUP", True, IdentityStatus.RECOVERED),
        ("QUAL", True, IdentityStatus.QUALIFIED),
        ("VALI", False, IdentityStatus.VALIDATED),
        ("QUAL", False, IdentityStatus.VALIDATED),  # no INS: not qualified, a document was seen
        ("RECUP", False, IdentityStatus.PROVISIONAL),  # no INS: nothing was recovered
        ("DOUTE", True, IdentityStatus.PROVISIONAL),
        ("FICTI", True, IdentityStatus.PROVISIONAL),
        ("VIDE", False, IdentityStatus.PROVISIONAL),
        (None, True, IdentityStatus.PROVISIONAL),
    ],
)
def test_identity_status_from_fr_core_reliability(code, with_ins, expected):
    """M2: PROV/RECUP/VALI/QUAL to the four RNIV statuses; other codes and none are provisional;
    qualified or recovered without an INS is downgraded."""
    ids = [{"use": "usual", "system": IPP_SYSTEM, "value": "IPP-1"}]
    if with_ins:
        ids.append({"use": "official", "system": f"urn:oid:{OID_NIR}", "value": NIR})
    ext = [reliability(code)] if code else None
    i = one(patient(identifier=ids, extension=ext), observation()).identity
    assert i.identity_status is expected
    assert i.nir == (NIR if with_ins else None)


def test_status_from_the_v2_0445_system_and_ins_named_by_type():
    """M2: FR Core's own example codes the status in fr-core-cs-v2-0445; an INS slice without a
    system is known by its type (INS-NIA here)."""
    ins = {"type": {"coding": [{"system": fhir.CS_FR_V2_0203, "code": "INS-NIA"}]}, "value": NIR}
    i = one(patient(identifier=[ins], extension=[reliability("QUAL", CS_V2_0445)]), observation()).identity
    assert (i.nir, i.ins_oid, i.identity_status, i.local_ids) == (NIR, OID_NIA, IdentityStatus.QUALIFIED, [])


def test_patient_with_no_identifier_is_accepted_provisional_on_its_traits():
    """M2: name and birth date only: provisional, no INS, no local identifier."""
    i = one(patient(identifier=None, extension=None), observation()).identity
    assert (i.nir, i.local_ids, i.identity_status) == (None, [], IdentityStatus.PROVISIONAL)
    assert (i.family_name, i.birth_date) == ("Dark", date(1960, 5, 30))


def test_local_identifier_oid_system_is_stored_bare():
    i = one(patient(identifier=[{"system": "urn:oid:1.2.250.1.71.4.2.7", "value": "42"}]), observation()).identity
    assert i.local_ids == [("1.2.250.1.71.4.2.7", "42")]


def test_used_and_birth_names():
    """M2 strict traits: official = birth name with every given name at birth; usual = used name
    and used given name."""
    names = [
        {"use": "usual", "family": "MARTIN", "given": ["Marie"]},
        {"use": "official", "family": "DUPONT", "given": ["Anne", "Marie", "Louise"]},
    ]
    i = one(patient(name=names), observation()).identity
    assert (i.family_name, i.birth_name, i.strict_birth_name) == ("MARTIN", "DUPONT", "DUPONT")
    assert (i.given_names, i.first_given_name, i.used_given_name) == ("Anne Marie Louise", "Anne", "Marie")


def test_observation_whose_patient_is_absent_is_refused_without_ins_wording():
    with pytest.raises(FhirError) as info:
        read(bundle(observation()))
    text = str(info.value)
    assert "Observation.subject: patient not in the input" in text and "INS" not in text


# ------------------------------------------------------------------------------------------ statuses


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("registered", ResultStatus.PENDING),
        ("preliminary", ResultStatus.PRELIMINARY),
        ("final", ResultStatus.FINAL),
        ("amended", ResultStatus.CORRECTED),
        ("corrected", ResultStatus.CORRECTED),
        ("cancelled", ResultStatus.CANCELLED),
        ("entered-in-error", ResultStatus.ENTERED_IN_ERROR),
    ],
)
def test_every_observation_status(status, expected):
    [r] = one(patient(), observation(status=status)).results
    assert r.status is expected


def test_registered_without_value_keeps_its_unit():
    obs = observation(status="registered", valueQuantity={"unit": "mmol/L", "system": fhir.UCUM, "code": "mmol/L"})
    [r] = one(patient(), obs).results
    assert (r.status, r.value_num, r.value_repr, r.value_text) == (ResultStatus.PENDING, None, None, None)
    assert (r.unit, r.unit_system) == ("mmol/L", fhir.UCUM)


def test_unknown_status_is_refused():
    with pytest.raises(FhirError, match=r"Observation\.status: status cannot be imported"):
        read(bundle(patient(), observation(status="unknown")))


# ------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("number", "num", "written"),
    [("105600", 105600.0, "105600"), ("12.50", 12.5, "12.50"), ("0.0040", 0.004, "0.0040"), ("-1.0", -1.0, "-1.0")],
)
def test_number_kept_as_written(number, num, written):
    raw = bundle(patient(), observation(valueQuantity={"value": 0, "unit": "g/L"})).replace(
        b'"value": 0,', b'"value": ' + number.encode() + b","
    )
    [m] = read(raw)
    [r] = m.results
    assert (r.value_num, r.value_repr, r.comparator) == (num, written, None)


def test_comparator_kept_apart():
    [r] = one(patient(), observation(valueQuantity={"value": 0.5, "comparator": "<", "unit": "mg/L"})).results
    assert (r.value_num, r.value_repr, r.comparator, r.value_text) == (0.5, "0.5", "<", None)


@pytest.mark.parametrize(
    ("quantity", "unit", "system"),
    [
        ({"unit": "mmol/L", "system": fhir.UCUM, "code": "mmol/L"}, "mmol/L", fhir.UCUM),
        ({"unit": "UI/l", "system": fhir.UCUM, "code": "UI/l"}, "UI/l", None),  # a false claim of UCUM
        ({"unit": "UI/L", "system": fhir.UCUM, "code": "[IU]/L"}, "[IU]/L", fhir.UCUM),
        (
            {"unit": "umol/L", "system": "http://snomed.info/sct", "code": "258814008"},
            "258814008",
            "http://snomed.info/sct",
        ),
        ({"unit": "g/L"}, "g/L", fhir.UCUM),  # no system: UCUM when the unit is UCUM
        ({"unit": "µmol/L"}, "µmol/L", None),
    ],
)
def test_unit_system(quantity, unit, system):
    [r] = one(patient(), observation(valueQuantity={"value": 1} | quantity)).results
    assert (r.unit, r.unit_system) == (unit, system)


def test_non_finite_refused():
    raw = bundle(patient(), observation(valueQuantity={"value": 0})).replace(b'"value": 0', b'"value": 1e400')
    with pytest.raises(FhirError, match=r"valueQuantity.value: number out of range"):
        read(raw)


def test_component_keys_follow_their_observation():
    comps = [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 80}},
    ]
    obs = observation(valueQuantity=None, component=comps, code={"coding": [{"system": LOINC, "code": "85354-9"}]})
    a, b = one(patient(), obs).results
    assert a.observation_key == f"{LOINC}|85354-9/{LOINC}|8480-6" and b.observation_key.endswith("|8462-4")
    assert (a.value_repr, b.value_repr) == ("120", "80")


# ------------------------------------------------------------------------------------------ orders


def test_order_numbers_sender_and_message_time():
    sr = {
        "resourceType": "ServiceRequest",
        "id": "sr1",
        "status": "completed",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2024-03-01T07:30:00+01:00",
        "identifier": [
            {
                "type": {"coding": [{"system": fhir.CS_V2_0203, "code": "PLAC"}]},
                "system": "urn:oid:1.2.3.4",
                "value": "P-77",
            },
            {"type": {"coding": [{"system": fhir.CS_V2_0203, "code": "FILL"}]}, "value": "F-88"},
        ],
    }
    obs = observation(basedOn=[{"reference": "ServiceRequest/sr1"}], meta={"lastUpdated": "2024-03-02T10:00:00Z"})
    m = one(patient(), sr, obs, timestamp="2024-03-02T09:00:00+01:00")
    [req] = m.requests
    assert (req.placer_number, req.filler_number, req.sender) == ("P-77", "F-88", "urn:oid:1.2.3.4")
    assert req.message_at == datetime(2024, 3, 2, 9, tzinfo=timezone(timedelta(hours=1)))
    [r] = m.results
    assert r.message_at == datetime(2024, 3, 2, 10, tzinfo=UTC)  # the Observation's own time first
    assert r.observation_key == f"{LOINC}|2345-7"


def test_report_based_on_a_service_request_by_identifier():
    dr = {
        "resourceType": "DiagnosticReport",
        "id": "dr1",
        "status": "final",
        "code": {"text": "lab"},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2024-03-01T08:00:00+01:00",
        "basedOn": [{"identifier": {"value": "P-9"}}],
        "result": [{"reference": "Observation/o1"}],
    }
    m = one(patient(), dr, observation(), meta={"source": "urn:lis:lab1", "lastUpdated": "2024-03-03T00:00:00Z"})
    [req] = m.requests
    assert (req.placer_number, req.filler_number, req.sender) == ("P-9", None, "urn:lis:lab1")
    assert req.message_at == datetime(2024, 3, 3, tzinfo=UTC)


# ------------------------------------------------------------------------------------------ round trip


def _written_back(identity: Identity, result: Result) -> bytes:
    req = Request("r1", identity.patient_id, None, datetime(2024, 3, 1, 8, tzinfo=UTC), accession="A1")
    result.request_id = req.request_id
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": fhir_out.patient(identity, "lab1")},
            {"resource": fhir_out.service_request(req)},
            {"resource": fhir_out.observation(result, identity.patient_id)},
        ],
    }
    return fhir_out.dumps(doc).encode()


@pytest.mark.parametrize("status", list(IdentityStatus))
def test_writer_output_reads_back(status):
    """M2: what the writer says of an identity (INS only when qualified, IPP, status, names) and of
    a value (as written, comparator, unit system) reads back the same."""
    identity = Identity(
        patient_id="pat1",
        nir=NIR,
        identity_status=status,
        family_name="MARTIN",
        given_names="Anne Marie",
        birth_date=date(1980, 2, 3),
        sex="F",
        birth_name="DUPONT",
        used_given_name="Marie",
        local_ids=[("1.2.250.1.999", "IPP-5")],
    )
    result = Result(
        "res1", "", "2345-7", "Glucose", value_num=105600.0, value_repr="105600", unit="mmol/L", unit_system=fhir.UCUM
    )
    [m] = read(_written_back(identity, result))
    i = m.identity
    qualified = status is IdentityStatus.QUALIFIED
    assert i.nir == (NIR if qualified else None)
    # the INS not written for a recovered identity, it reads back provisional (RNIV: no INS, nothing recovered)
    assert i.identity_status is (IdentityStatus.PROVISIONAL if status is IdentityStatus.RECOVERED else status)
    assert i.local_ids == identity.local_ids
    assert (i.family_name, i.birth_name, i.given_names, i.first_given_name, i.used_given_name) == (
        "MARTIN",
        "DUPONT",
        "Anne Marie",
        "Anne",
        "Marie",
    )
    [r] = m.results
    assert (r.value_num, r.value_repr, r.unit, r.unit_system, r.status) == (
        105600.0,
        "105600",
        "mmol/L",
        fhir.UCUM,
        ResultStatus.FINAL,
    )
