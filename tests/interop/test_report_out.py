"""The patient report as FHIR R4 (DiagnosticReport with the PDF) and HL7 v2.5 ORU^R01, read back."""

from __future__ import annotations

import base64
import dataclasses
import json

from fhir.resources.bundle import Bundle
from fhir.resources.diagnosticreport import DiagnosticReport

from labvault.domain.models import IdentityStatus, ResultStatus
from labvault.domain.report import ReportLine, ReportStatus
from labvault.interop import hl7v2, report_out
from labvault.interop.fhir_out import dumps
from tests.lab.fixtures import PATIENT, report

PDF = b"%PDF-1.7\n% a report\n"


def test_diagnostic_report_is_valid_fhir_with_the_pdf():
    dr = report_out.diagnostic_report(report(), PDF)
    DiagnosticReport.model_validate(json.loads(dumps(dr)))
    assert dr["status"] == "corrected"
    assert dr["subject"] == {"reference": "Patient/p1"}
    assert [r["reference"] for r in dr["result"]] == [f"Observation/r{i}" for i in range(1, 7)]
    form = dr["presentedForm"][0]
    assert form["contentType"] == "application/pdf"
    assert base64.b64decode(form["data"]) == PDF
    assert form["title"] == "Compte rendu corrigé 2612070042 (version 2)"
    assert form["creation"] == "2026-12-07T13:35:00+00:00"
    assert dr["resultsInterpreter"] == [{"display": "Dr Anne Petit"}]
    assert dr["meta"] == {"versionId": "2"}
    for status in ("final", "partial"):
        assert report_out.diagnostic_report(report(ReportStatus(status)), PDF)["status"] == status


def test_bundle_validates_and_holds_each_referenced_resource():
    """M2: the Patient carries the INS only for a qualified identity."""
    bundle = report_out.fhir_bundle(report(), PDF, tenant_id="lab1")
    Bundle.model_validate(json.loads(dumps(bundle)))
    by_type: dict[str, list[dict]] = {}
    for e in bundle["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(e["resource"])
    assert sorted(by_type) == [
        "DiagnosticReport",
        "Observation",
        "Patient",
        "Practitioner",
        "ServiceRequest",
        "Specimen",
    ]
    obs = {o["id"]: o for o in by_type["Observation"]}
    assert obs["r1"]["valueQuantity"]["value"] == 6.8 and obs["r1"]["status"] == "corrected"
    assert obs["r3"]["valueQuantity"] == {
        "value": 0.5,
        "comparator": "<",
        "unit": "mg/L",
        "system": "http://unitsofmeasure.org",
        "code": "mg/L",
    }
    assert obs["r4"]["valueQuantity"]["value"] == 12.50
    assert obs["r6"]["valueString"] == "Négatif"
    assert obs["r5"]["interpretation"][0]["coding"][0]["code"] == "L"
    assert "261037511200342" in json.dumps(by_type["Patient"])
    unqualified = dataclasses.replace(PATIENT, identity_status=IdentityStatus.VALIDATED)
    assert "261037511200342" not in dumps(report_out.fhir_bundle(report(patient=unqualified), PDF, tenant_id="lab1"))


def test_oru_r01_reads_back_with_the_same_values():
    """The ORU^R01 written for a report is read back by Labvault's own reader with each value,
    unit, range, flag, status, comment, observer and time; delimiters in values are escaped."""
    odd = ReportLine(
        "r7", "Biochimie", "X1", "Note | ^ & ~ \\", "voir ^ commentaire | ~ & \\", status=ResultStatus.FINAL
    )
    rep = report(lines=(*report().lines, odd))
    message = report_out.oru_r01(rep, sending_facility="LAB^1", control_id="CR-1-2")
    segments = message.decode().split("\r")
    assert segments[0].startswith("MSH|^~\\&|LABVAULT|LAB\\S\\1|")
    assert [s[:3] for s in segments if s] == ["MSH", "PID", "ORC", "OBR", "OBX", "NTE", *["OBX"] * 6, "SPM"]
    obx1 = next(s for s in segments if s.startswith("OBX|1|")).split("|")
    assert obx1[2] == "NM" and obx1[5] == "6.8" and obx1[7] == "3.5-5.1" and obx1[8] == "HH" and obx1[11] == "C"
    assert obx1[16] == "^Dr Anne Petit" and obx1[19] == "20261207123500+0000"

    (mapped,) = hl7v2.read(message)
    got = {r.code: r for r in mapped.results}
    assert set(got) == {line.code for line in rep.lines}
    k = got["2823-3"]
    assert (k.value_repr, k.unit, k.ref_low, k.ref_high, k.flag, k.status) == (
        "6.8",
        "mmol/L",
        3.5,
        5.1,
        "HH",
        ResultStatus.CORRECTED,
    )
    assert k.comment == "Contrôlé sur un second prélèvement | appel au service"
    assert k.validated_by == "Dr Anne Petit" and k.validated_at == rep.validated_at
    crp = got["1988-5"]
    assert (crp.value_repr, crp.comparator, crp.ref_high, crp.ref_text) == ("0.5", "<", 5.0, "<5")
    assert got["718-7"].value_repr == "12.50"
    assert got["5196-1"].value_text == "Négatif"
    assert got["X1"].value_text == "voir ^ commentaire | ~ & \\" and got["X1"].label == "Note | ^ & ~ \\"
    assert mapped.identity.nir == "261037511200342"
    assert mapped.identity.identity_status is IdentityStatus.QUALIFIED
    (request,) = mapped.requests
    assert request.accession == "2612070042"
    assert mapped.specimens[0].collected_at == rep.specimens[0].collected_at


def test_oru_r01_sends_no_ins_for_an_identity_not_qualified():
    """M2: only a qualified INS is transmitted."""
    unqualified = dataclasses.replace(PATIENT, identity_status=IdentityStatus.PROVISIONAL)
    message = report_out.oru_r01(report(patient=unqualified), sending_facility="LAB", control_id="1")
    assert b"261037511200342" not in message
    assert hl7v2.read(message)[0].identity.nir is None
