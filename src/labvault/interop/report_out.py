"""The patient report out: a ``Report`` (``labvault.domain.report``) as FHIR R4 and as HL7 v2.5.

Pure formats, no database. The report's rows are turned back into the domain's objects
(``domain_rows``) and written by the writers the export already has (``fhir_out`` for the Patient,
Practitioner, ServiceRequest, Specimens and Observations; ``hl7v2_out.oru_r01`` for the message),
so the report says exactly what an export of the same rows says.

- ``diagnostic_report(report, pdf)``: a FHIR R4 ``DiagnosticReport`` (id the report id,
  ``meta.versionId`` its version, identifier the report id), status ``partial``, ``final`` or
  ``corrected``, subject ``Patient/<patient id>``, ``basedOn`` the ServiceRequest, ``specimen``,
  ``result`` references to one Observation per result, ``resultsInterpreter`` the validating
  biologist (display), ``issued`` the report's issue time, ``effectiveDateTime`` the first
  collection, ``presentedForm`` the PDF (base64, ``application/pdf``, French, title, creation).
- ``fhir_bundle(report, pdf, tenant_id=...)``: a ``collection`` Bundle holding the
  DiagnosticReport and every resource it references.
- ``oru_r01(report, sending_facility=..., control_id=...)``: one HL7 v2.5 ORU^R01 (MSH, PID with
  the INS only for a qualified identity, ORC, OBR, one OBX per result: NM/SN/ST, unit, reference
  range, flag, status F/C/P, OBX-16 the validating biologist, OBX-19 the validation time; NTE for
  a comment; SPM per specimen); delimiters in values are escaped. Labvault's own reader
  (``hl7v2.read``) reads it back with the same values. The PDF is not carried in the message.

A pending result is written as such (FHIR ``registered``, OBX-11 ``I``) without a value. Errors
(``ValueError``) name the field, never a value.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime

from labvault.domain.models import (
    Identity,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.domain.report import Report, ReportLine, ReportStatus
from labvault.interop import fhir_out, hl7v2_out
from labvault.interop._common import read_number, unit_system
from labvault.interop.errors import NumberFault

__all__ = ["diagnostic_report", "domain_rows", "fhir_bundle", "oru_r01"]

_REQUEST_STATUS = {
    ReportStatus.PARTIAL: RequestStatus.PARTIAL,
    ReportStatus.FINAL: RequestStatus.FINAL,
    ReportStatus.CORRECTED: RequestStatus.CORRECTED,
}
_NOT_VALIDATED = (ResultStatus.PENDING, ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)
_TITLE = {
    ReportStatus.PARTIAL: "Compte rendu partiel",
    ReportStatus.FINAL: "Compte rendu",
    ReportStatus.CORRECTED: "Compte rendu corrigé",
}


def _result(report: Report, line: ReportLine, n: int) -> Result:
    value_num = value_text = value_repr = comparator = None
    if line.status is not ResultStatus.PENDING and line.value:
        try:
            number = read_number(line.value)
        except NumberFault:
            raise ValueError(f"result {n}: value is a number that cannot be stored") from None
        if number is not None:
            value_num, value_repr, comparator = number.value, number.text, number.comparator
        else:
            value_text = line.value
    validated = line.status not in _NOT_VALIDATED
    return Result(
        result_id=line.result_id,
        request_id=report.request_id,
        code=line.code,
        label=line.label,
        code_system=line.code_system,
        specimen_id=line.specimen_id or (report.specimens[0].specimen_id if report.specimens else None),
        value_num=value_num,
        value_text=value_text,
        unit=line.unit or None,
        ref_low=line.ref_low,
        ref_high=line.ref_high,
        ref_text=line.ref_text or None,
        flag=line.flag or None,
        status=line.status,
        validated_by=report.validated_by if validated else None,
        validated_at=report.validated_at if validated else None,
        comment=line.comment or None,
        value_repr=value_repr,
        comparator=comparator,
        unit_system=line.unit_system or unit_system(line.unit),
    )


def domain_rows(
    report: Report,
) -> tuple[Identity, Request, list[Specimen], list[Result], dict[str, Prescriber]]:
    """The report as the domain's rows: (identity, request, specimens, results, prescribers by id)."""
    p = report.patient
    identity = Identity(
        patient_id=p.patient_id,
        nir=p.ins,
        identity_status=p.identity_status,
        family_name=p.family_name,
        given_names=p.given_names,
        birth_date=p.birth_date,
        sex=p.sex,
        birth_name=p.birth_name,
        ins_oid=p.ins_oid,
        used_given_name=p.used_given_name,
        local_ids=list(p.local_ids),
    )
    prescribers: dict[str, Prescriber] = {}
    if report.prescriber is not None:
        pr = report.prescriber
        prescribers[pr.prescriber_id] = Prescriber(pr.prescriber_id, pr.rpps, pr.family_name, pr.given_name)
    request = Request(
        request_id=report.request_id,
        patient_id=p.patient_id,
        prescriber_id=report.prescriber.prescriber_id if report.prescriber is not None else None,
        requested_at=report.requested_at,
        accession=report.request_number or None,
        reported_at=report.issued_at,
        status=_REQUEST_STATUS[report.status],
    )
    specimens = [
        Specimen(s.specimen_id, report.request_id, s.type, s.collected_at, s.received_at) for s in report.specimens
    ]
    results = [_result(report, line, n) for n, line in enumerate(report.lines, start=1)]
    return identity, request, specimens, results, prescribers


_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")


def _id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what} is not a FHIR id (1 to 64 of A-Za-z0-9-.)")
    return value


def _instant(value: datetime) -> str:
    """A FHIR dateTime with its offset (a naive time is lab time, Europe/Paris)."""
    if value.utcoffset() is None:
        value = value.replace(tzinfo=fhir_out.LAB_TIME)
    return value.isoformat()


def diagnostic_report(report: Report, pdf: bytes) -> dict:
    """The report as a FHIR R4 DiagnosticReport with the PDF in ``presentedForm``."""
    _, request, specimens, results, _ = domain_rows(report)
    dr = fhir_out.diagnostic_report(request, [r.result_id for r in results])
    dr["id"] = _id(report.report_id, "report id")
    dr["meta"] = {"versionId": str(report.version)}
    dr["identifier"] = [{"system": "urn:labvault:report", "value": report.report_id}]
    dr["status"] = report.status.value
    if specimens:
        dr["specimen"] = [{"reference": "Specimen/" + _id(s.specimen_id, "specimen id")} for s in specimens]
        dr["effectiveDateTime"] = _instant(min(s.collected_at for s in specimens))
    dr.pop("_effectiveDateTime", None)
    if report.validated_by:
        dr["resultsInterpreter"] = [{"display": report.validated_by}]
    dr["presentedForm"] = [
        {
            "contentType": "application/pdf",
            "language": "fr-FR",
            "data": base64.b64encode(pdf).decode("ascii"),
            "title": f"{_TITLE[report.status]} {report.request_number} (version {report.version})",
            "creation": _instant(report.issued_at),
        }
    ]
    return dr


def fhir_bundle(report: Report, pdf: bytes, *, tenant_id: str) -> dict:
    """A ``collection`` Bundle: the DiagnosticReport, the Patient, the Practitioner, the
    ServiceRequest, the Specimens and the Observations."""
    identity, request, specimens, results, prescribers = domain_rows(report)
    resources = [diagnostic_report(report, pdf), fhir_out.patient(identity, tenant_id)]
    resources += [fhir_out.practitioner(p) for p in prescribers.values()]
    resources.append(fhir_out.service_request(request))
    resources += [fhir_out.specimen(s, patient_id=identity.patient_id) for s in specimens]
    resources += [fhir_out.observation(r, identity.patient_id) for r in results]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _instant(report.issued_at),
        "entry": [{"fullUrl": f"urn:labvault:{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
    }


def oru_r01(
    report: Report,
    *,
    sending_facility: str,
    control_id: str,
    when: datetime | None = None,
    version: str = "2.5",
) -> bytes:
    """The report as one HL7 v2 ORU^R01 message (bytes, UTF-8, segments ended by CR)."""
    identity, request, specimens, results, prescribers = domain_rows(report)
    return hl7v2_out.oru_r01(
        identity,
        [request],
        specimens,
        results,
        prescribers,
        sending_facility=sending_facility,
        control_id=control_id,
        when=when if when is not None else report.issued_at,
        version=version,
    )
