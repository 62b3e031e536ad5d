"""What goes out of Labvault (FHIR resources and ndjson, HL7 v2 ORU^R01, HPRIM Santé and CSV files):
the INS only with a qualified identity (RNIV), the local identifiers and the identity status always;
values as the sender wrote them (``105600``, ``12.50``, ``<0.5``), units coded as UCUM only when
they are UCUM; every result and request status; every name component."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime

import pytest
from fhir.resources.R4B import get_fhir_model_class

from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.interop import fhir_out, hl7v2, hl7v2_out
from labvault.interop.writers import CSV_FIELDS, CsvWriter, HprimWriter, PatientReport

NIR = "185077512345608"
IPP = ("urn:oid:1.2.250.1.999.1", "IPP-000417")
HPRIM_IPP = ("urn:hprim:patient-id:lab", "HP-5521")
UCUM = "http://unitsofmeasure.org"
AT = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


def identity(status: IdentityStatus, **kw) -> Identity:
    base: dict = dict(
        patient_id="p1",
        nir=NIR,
        identity_status=status,
        family_name="DUPONT",
        given_names="Jean Pierre Marie",
        birth_date=date(1985, 7, 4),
        sex="M",
        birth_name="MARTIN",
        used_given_name="Pierre",
        local_ids=[IPP, HPRIM_IPP],
    )
    base.update(kw)
    return Identity(**base)


def result(rid: str = "r1", **kw) -> Result:
    base: dict = dict(
        result_id=rid,
        request_id="q1",
        code="2823-3",
        label="Potassium",
        specimen_id="s1",
        value_num=4.2,
        value_repr="4.2",
        unit="mmol/L",
        unit_system=UCUM,
        ref_low=3.5,
        ref_high=5.1,
        flag="N",
        validated_at=AT,
    )
    base.update(kw)
    return Result(**base)


REQUEST = Request("q1", "p1", "d1", AT, accession="A-1", reported_at=AT)
SPECIMEN = Specimen("s1", "q1", "SER", AT)
PRESCRIBER = Prescriber("d1", "10001234567", "HOUSE", "Greg")


def field(raw: bytes, segment: str, n: int) -> str:
    """One whole field of the first such segment, as written (components and repetitions)."""
    seg = next(x for x in raw.decode().split("\r") if x.startswith(segment + "|"))
    parts = seg.split("|")
    return parts[n] if n < len(parts) else ""


def valid(resource: dict) -> dict:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return resource


def every_output(ident: Identity, results: list[Result]) -> dict[str, bytes]:
    """The bytes of every writer for one patient."""
    fhir = [
        valid(fhir_out.patient(ident, "lab-a")),
        valid(fhir_out.service_request(REQUEST, result_statuses=[r.status for r in results])),
        *(valid(fhir_out.observation(r, ident.patient_id)) for r in results),
    ]
    nd = io.BytesIO()
    with fhir_out.NdjsonWriter(streams={"Patient": nd, "Observation": nd}) as w:
        w.write(fhir_out.patient(ident, "lab-a"))
        for r in results:
            w.write_observation(r, ident.patient_id)
    report = PatientReport(ident, [REQUEST], [SPECIMEN], results, [PRESCRIBER])
    hprim = io.BytesIO()
    with HprimWriter(hprim, sender="LAB") as hw:
        hw.write_one(report)
    csv = io.BytesIO()
    with CsvWriter(csv, CSV_FIELDS) as cw:
        cw.write_one(report)
    hl7 = hl7v2_out.oru_r01(
        ident, [REQUEST], [SPECIMEN], results, {"d1": PRESCRIBER}, sending_facility="LAB", control_id="C1"
    )
    return {
        "fhir": "\n".join(fhir_out.dumps(x) for x in fhir).encode(),
        "ndjson": nd.getvalue(),
        "hl7": hl7,
        "hprim": hprim.getvalue(),
        "csv": csv.getvalue(),
    }


@pytest.mark.parametrize("status", [IdentityStatus.PROVISIONAL, IdentityStatus.RECOVERED, IdentityStatus.VALIDATED])
def test_an_identity_not_qualified_never_sends_its_ins(status):
    """M2: a provisional, recovered or validated identity holding a NIR: the NIR is in none of
    the bytes written (FHIR, ndjson, HL7 v2, HPRIM, CSV); its local identifiers and its status are."""
    out = every_output(identity(status), [result()])
    for fmt, data in out.items():
        assert NIR.encode() not in data, fmt
        assert NIR[:13].encode() not in data, fmt
        assert b"IPP-000417" in data, fmt
    code = {"provisional": "PROV", "recovered": "RECUP", "validated": "VALI"}[status.value]
    patient = json.loads(out["fhir"].splitlines()[0])
    assert patient["extension"][0]["extension"][0]["valueCoding"]["code"] == code
    assert [i["system"] for i in patient["identifier"]] == [IPP[0], HPRIM_IPP[0]]
    msg = hl7v2.parse(out["hl7"])
    assert msg.get("PID-32") == code
    assert msg.get("PID-3.1") == "IPP-000417" and msg.get("PID-3.4.2") == "1.2.250.1.999.1"
    assert msg.get("PID-3.5") == "PI"


def test_a_qualified_identity_sends_its_ins():
    """M2: a qualified identity: its INS goes out in every format, with its OID, beside the
    local identifiers."""
    out = every_output(identity(IdentityStatus.QUALIFIED), [result()])
    for fmt, data in out.items():
        assert NIR.encode() in data, fmt
    patient = json.loads(out["fhir"].splitlines()[0])
    assert patient["identifier"][0]["system"] == "urn:oid:1.2.250.1.213.1.4.8"
    assert patient["identifier"][0]["value"] == NIR
    assert patient["extension"][0]["extension"][0]["valueCoding"]["code"] == "QUAL"
    msg = hl7v2.parse(out["hl7"])
    assert msg.get("PID-3.1") == NIR and msg.get("PID-3.5") == "INS" and msg.get("PID-32") == "QUAL"


def test_an_identity_without_any_identifier_still_goes_out_on_its_traits():
    """M2: no INS, no local identifier: FHIR and HPRIM carry the traits alone, HL7 PID-3 the
    patient's id in Labvault."""
    ident = identity(IdentityStatus.PROVISIONAL, nir=None, local_ids=[])
    out = every_output(ident, [result()])
    patient = json.loads(out["fhir"].splitlines()[0])
    assert "identifier" not in patient and patient["birthDate"] == "1985-07-04"
    assert field(out["hl7"], "PID", 3) == "p1^^^LABVAULT^PI"


def test_every_name_component_goes_out():
    """M2: birth name and every given name at birth in order, the name used and the given name used."""
    ident = identity(IdentityStatus.QUALIFIED)
    patient = valid(fhir_out.patient(ident, "lab-a"))
    names = {n["use"]: n for n in patient["name"]}
    assert names["official"] == {"use": "official", "family": "MARTIN", "given": ["Jean", "Pierre", "Marie"]}
    assert names["usual"] == {"use": "usual", "family": "DUPONT", "given": ["Pierre"]}
    raw = every_output(ident, [result()])["hl7"]
    assert field(raw, "PID", 5) == "MARTIN^Jean^Pierre Marie^^^^L~DUPONT^Pierre^^^^^D"
    plain = identity(IdentityStatus.QUALIFIED, birth_name=None, used_given_name=None)
    assert field(every_output(plain, [result()])["hl7"], "PID", 5) == "DUPONT^Jean^Pierre Marie^^^^D"
    assert [n["given"] for n in fhir_out.patient(plain, "lab-a")["name"]] == [["Jean", "Pierre", "Marie"]]


WRITTEN = [
    # (value_repr, value_num, comparator, JSON text, HL7 OBX-2, OBX-5)
    ("105600", 105600.0, None, '"value":105600,', "NM", "105600"),
    ("12.50", 12.5, None, '"value":12.50,', "NM", "12.50"),
    ("16", 16.0, None, '"value":16,', "NM", "16"),
    ("0.5", 0.5, "<", '"value":0.5,"comparator":"<",', "SN", "<^0.5"),
    ("+.50", 0.5, ">=", '"value":0.50,"comparator":">=",', "SN", ">=^0.50"),
    (None, 16.0, None, '"value":16.0,', "NM", "16.0"),  # stored before the value as written: not guessed
]


@pytest.mark.parametrize(("text", "num", "comparator", "json_text", "vtype", "obx5"), WRITTEN)
def test_values_go_out_as_written(text, num, comparator, json_text, vtype, obx5):
    """the number as the sender wrote it (digits kept), its comparator in
    Quantity.comparator and HL7 SN; the same bytes by the fast ndjson path and by ``dumps``."""
    r = result(value_repr=text, value_num=num, comparator=comparator)
    o = valid(fhir_out.observation(r, "p1"))
    line = fhir_out.dumps(o)
    assert json_text in line
    nd = io.BytesIO()
    with fhir_out.NdjsonWriter(streams={"Observation": nd}) as w:
        w.write_observation(r, "p1")
    assert nd.getvalue().decode() == line + "\n"
    raw = every_output(identity(IdentityStatus.QUALIFIED), [r])["hl7"]
    assert (field(raw, "OBX", 2), field(raw, "OBX", 5)) == (vtype, obx5)


def test_units_are_ucum_only_when_they_are():
    """``UI/l`` with the sender's own unit system is not labelled UCUM (FHIR, HL7 OBX-6); a
    unit with no known system goes as text alone; a UCUM unit is coded UCUM."""
    own = valid(fhir_out.observation(result(unit="UI/l", unit_system="urn:hl7v2:units:L"), "p1"))
    assert own["valueQuantity"]["system"] == "urn:hl7v2:units:L" and own["valueQuantity"]["unit"] == "UI/l"
    bare = valid(fhir_out.observation(result(unit="UI/l", unit_system=None), "p1"))
    assert bare["valueQuantity"] == {"value": 4.2, "unit": "UI/l"}
    assert bare["referenceRange"][0]["low"] == {"value": 3.5, "unit": "UI/l"}
    ucum = valid(fhir_out.observation(result(), "p1"))
    assert ucum["valueQuantity"]["system"] == UCUM and ucum["valueQuantity"]["code"] == "mmol/L"
    ident = identity(IdentityStatus.QUALIFIED)
    for r, obx6 in [
        (result(unit="UI/l", unit_system=None), "UI/l"),
        (result(unit="UI/l", unit_system="urn:hl7v2:units:L"), "UI/l^^L"),
        (result(), "mmol/L^^UCUM"),
    ]:
        assert field(every_output(ident, [r])["hl7"], "OBX", 6) == obx6
        nd = io.BytesIO()
        with fhir_out.NdjsonWriter(streams={"Observation": nd}) as w:
            w.write_observation(r, "p1")
        assert nd.getvalue().decode() == fhir_out.dumps(fhir_out.observation(r, "p1")) + "\n"


@pytest.mark.parametrize(
    ("status", "fhir", "obx11"),
    [
        (ResultStatus.PENDING, "registered", "I"),
        (ResultStatus.CANCELLED, "cancelled", "X"),
        (ResultStatus.ENTERED_IN_ERROR, "entered-in-error", "W"),
        (ResultStatus.PRELIMINARY, "preliminary", "P"),
        (ResultStatus.CORRECTED, "corrected", "C"),
    ],
)
def test_every_result_status_goes_out(status, fhir, obx11):
    """every result status in FHIR Observation.status, HL7 OBX-11 and HPRIM OBX-11."""
    pending = status is ResultStatus.PENDING
    r = result(status=status, **({"value_num": None, "value_repr": None, "unit": "umol/L"} if pending else {}))
    o = valid(fhir_out.observation(r, "p1"))
    assert o["status"] == fhir
    if pending:
        assert o["valueQuantity"] == {"unit": "umol/L", "system": UCUM, "code": "umol/L"}
    out = every_output(identity(IdentityStatus.QUALIFIED), [r])
    assert hl7v2.parse(out["hl7"]).get("OBX-11") == obx11
    assert f"|{obx11}|".encode() in out["hprim"]


def test_a_request_holding_only_pending_results_is_not_final():
    """a request whose only result is pending: ServiceRequest active, DiagnosticReport
    registered, OBR-25 I (not completed/final); all cancelled: revoked/cancelled; the stored
    request status wins when there is one."""
    req = Request("q1", "p1", None, AT, reported_at=AT)
    pending = [ResultStatus.PENDING]
    assert valid(fhir_out.service_request(req, result_statuses=pending))["status"] == "active"
    assert valid(fhir_out.diagnostic_report(req, ["r1"], result_statuses=pending))["status"] == "registered"
    both = [ResultStatus.FINAL, ResultStatus.PENDING]
    assert valid(fhir_out.diagnostic_report(req, ["r1", "r2"], result_statuses=both))["status"] == "partial"
    gone = [ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR]
    assert valid(fhir_out.service_request(req, result_statuses=gone))["status"] == "revoked"
    assert valid(fhir_out.diagnostic_report(req, ["r1"], result_statuses=gone))["status"] == "cancelled"
    fixed = [ResultStatus.FINAL, ResultStatus.CORRECTED]
    assert valid(fhir_out.diagnostic_report(req, ["r1"], result_statuses=fixed))["status"] == "corrected"
    stored = Request("q1", "p1", None, AT, status=RequestStatus.AMENDED)
    assert valid(fhir_out.diagnostic_report(stored, [], result_statuses=pending))["status"] == "amended"
    assert valid(fhir_out.service_request(stored, result_statuses=pending))["status"] == "completed"
    r = result(status=ResultStatus.PENDING, value_num=None, value_repr=None)
    msg = hl7v2.parse(
        hl7v2_out.oru_r01(
            identity(IdentityStatus.QUALIFIED), [req], [SPECIMEN], [r], {}, sending_facility="L", control_id="1"
        )
    )
    assert msg.get("OBR-25") == "I"
