"""The patient report (compte rendu) in French, as a PDF, and the cumulative report of a patient.

``report_pdf(report)`` renders one ``Report`` (``labvault.domain.report``): the lab (name, FINESS,
address), the patient (the RNIV traits; the INS only for a qualified identity), the prescriber
(RPPS), the request (number, dates), the specimens (type, collection and receipt times), each
result by section with its value as written (decimal comma, comparator kept), unit, reference
interval, flag (abnormal values in bold and marked), previous result and comment, the validating
biologist and time, the status (partial, final, corrected: "Ce compte rendu remplace le compte
rendu du ..."), the report's id and version, and on every page the patient and the page number.

``cumulative_pdf(reports)`` puts one patient's results of several reports side by side: one row
per test, one column per collection day, oldest first.

``report_from_domain(...)`` builds a ``Report`` from the domain's rows (identity, request,
specimens, results, prescriber).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from labvault.domain.models import (
    Identity,
    Prescriber,
    Request,
    Result,
    ResultStatus,
    Specimen,
    Tenant,
)
from labvault.domain.report import (
    PreviousResult,
    Report,
    ReportLab,
    ReportLine,
    ReportPatient,
    ReportPrescriber,
    ReportSpecimen,
    ReportStatus,
)
from labvault.interop._common import read_number
from labvault.interop.fhir_out import number_text
from labvault.lab.render import (
    LAB_ZONE,
    SEX_LABEL,
    SPECIMEN_LABEL,
    fr_date,
    fr_float,
    fr_moment,
    fr_number,
    html_to_pdf,
    render_html,
)

__all__ = [
    "PreviousResult",
    "Report",
    "ReportLab",
    "ReportLine",
    "ReportPatient",
    "ReportPrescriber",
    "ReportSpecimen",
    "ReportStatus",
    "cumulative_html",
    "cumulative_pdf",
    "display_value",
    "is_abnormal",
    "report_from_domain",
    "report_html",
    "report_pdf",
]

DEFAULT_SECTION = "Biologie"
# HL7 table 0078 flags that mark a value outside its reference interval or abnormal.
ABNORMAL_FLAGS = frozenset({"L", "LL", "H", "HH", "A", "AA", "<", ">", "POS", "LU", "HU"})
STATUS_TITLE = {
    ReportStatus.PARTIAL: "Compte rendu partiel",
    ReportStatus.FINAL: "Compte rendu",
    ReportStatus.CORRECTED: "Compte rendu corrigé",
}
LINE_STATUS = {
    ResultStatus.PENDING: "en cours",
    ResultStatus.PRELIMINARY: "provisoire",
    ResultStatus.CORRECTED: "corrigé",
    ResultStatus.CANCELLED: "annulé",
    ResultStatus.ENTERED_IN_ERROR: "annulé",
}


def is_abnormal(flag: str | None) -> bool:
    return bool(flag) and flag in ABNORMAL_FLAGS


def display_value(value: str) -> str:
    """A value as written, the French way: a number with a decimal comma and its comparator
    (``<0.5`` -> ``< 0,5``); a text as it is."""
    try:
        n = read_number(value)
    except ValueError:
        n = None
    if n is None:
        return value
    text = fr_number(n.text)
    return f"{n.comparator} {text}" if n.comparator else text


def reference_text(low: float | None, high: float | None, text: str | None) -> str:
    """The reference interval on paper: its text when there is one, else ``3,5 à 5,1``, ``< 5``, ``> 60``."""
    if text:
        return display_value(text)
    if low is not None and high is not None:
        return f"{fr_float(low)} à {fr_float(high)}"
    if high is not None:
        return f"< {fr_float(high)}"
    if low is not None:
        return f"> {fr_float(low)}"
    return ""


@dataclass(frozen=True, slots=True)
class _Row:
    label: str
    value: str
    unit: str
    reference: str
    flag: str
    abnormal: bool
    previous: str
    comment: str
    status: str


def _row(line: ReportLine, zone: tzinfo) -> _Row:
    prev = ""
    if line.previous is not None:
        p = line.previous
        unit = f" {p.unit}" if p.unit and p.unit != line.unit else ""
        prev = f"{display_value(p.value)}{unit} ({fr_date(p.at, zone)})"
    pending = line.status is ResultStatus.PENDING
    return _Row(
        label=line.label,
        value="" if pending else display_value(line.value),
        unit=line.unit or "",
        reference=reference_text(line.ref_low, line.ref_high, line.ref_text),
        flag=line.flag or "",
        abnormal=is_abnormal(line.flag),
        previous=prev,
        comment=line.comment or "",
        status=LINE_STATUS.get(line.status, ""),
    )


def _sections(lines: Sequence[ReportLine], zone: tzinfo) -> list[tuple[str, list[_Row]]]:
    out: dict[str, list[_Row]] = {}
    for line in lines:
        out.setdefault(line.section or DEFAULT_SECTION, []).append(_row(line, zone))
    return list(out.items())


def _patient(p: ReportPatient) -> dict[str, str]:
    return {
        "birth_name": (p.birth_name or p.family_name).upper(),
        "used_name": p.family_name.upper() if p.birth_name and p.birth_name != p.family_name else "",
        "given_names": p.given_names,
        "used_given_name": p.used_given_name or "",
        "birth_date": fr_date(p.birth_date),
        "sex": SEX_LABEL.get(p.sex, "Indéterminé"),
        "ins": p.ins_shown or "",
        "ins_kind": "NIA" if p.ins_oid.endswith(".9") else "NIR",
        "short": f"{(p.birth_name or p.family_name).upper()} {p.given_names}",
    }


def report_html(report: Report, *, zone: tzinfo = LAB_ZONE) -> str:
    r = report
    prescriber = None
    if r.prescriber is not None:
        prescriber = {
            "name": f"Dr {r.prescriber.given_name} {r.prescriber.family_name.upper()}".replace("  ", " "),
            "rpps": r.prescriber.rpps,
        }
    return render_html(
        "report.html",
        r=r,
        title=STATUS_TITLE[r.status],
        corrected=r.status is ReportStatus.CORRECTED,
        partial=r.status is ReportStatus.PARTIAL,
        replaces=fr_moment(r.replaces, zone) if r.replaces else "",
        patient=_patient(r.patient),
        prescriber=prescriber,
        requested_at=fr_moment(r.requested_at, zone),
        issued_at=fr_moment(r.issued_at, zone),
        validated_at=fr_moment(r.validated_at, zone),
        specimens=[
            {
                "type": SPECIMEN_LABEL.get(s.type, s.type),
                "collected_at": fr_moment(s.collected_at, zone),
                "received_at": fr_moment(s.received_at, zone) if s.received_at else "",
            }
            for s in r.specimens
        ],
        sections=_sections(r.lines, zone),
    )


def report_pdf(report: Report, *, zone: tzinfo = LAB_ZONE) -> bytes:
    """The report as a PDF (A4, French)."""
    return html_to_pdf(report_html(report, zone=zone))


# ------------------------------------------------------------------------------------- cumulative


def _collected(r: Report) -> datetime:
    return min((s.collected_at for s in r.specimens), default=r.requested_at)


def cumulative_html(reports: Sequence[Report], *, zone: tzinfo = LAB_ZONE) -> str:
    """One patient's results over time: a row per test (in the order first met), a column per
    report (by collection time, oldest first). Every report must be the same patient's."""
    if not reports:
        raise ValueError("no report for a cumulative report")
    ids = {r.patient.patient_id for r in reports}
    if len(ids) != 1:
        raise ValueError("a cumulative report is one patient's")
    ordered = sorted(reports, key=_collected)
    latest = max(reports, key=lambda r: r.issued_at)
    columns = [fr_moment(_collected(r), zone) for r in ordered]
    rows: dict[tuple[str, str], dict] = {}
    for k, r in enumerate(ordered):
        for line in r.lines:
            if line.status in (ResultStatus.PENDING, ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR):
                continue
            key = (line.code_system, line.code)
            row = rows.get(key)
            if row is None:
                row = rows[key] = {
                    "section": line.section or DEFAULT_SECTION,
                    "label": line.label,
                    "unit": line.unit or "",
                    "reference": "",
                    "cells": [None] * len(ordered),
                }
            row["reference"] = reference_text(line.ref_low, line.ref_high, line.ref_text) or row["reference"]
            value = display_value(line.value)
            if line.unit and line.unit != row["unit"]:
                value = f"{value} {line.unit}"
            row["cells"][k] = {"value": value, "flag": line.flag or "", "abnormal": is_abnormal(line.flag)}
    sections: dict[str, list[dict]] = {}
    for row in rows.values():
        sections.setdefault(row["section"], []).append(row)
    return render_html(
        "cumulative.html",
        lab=latest.lab,
        patient=_patient(latest.patient),
        columns=columns,
        sections=list(sections.items()),
        issued_at=fr_moment(latest.issued_at, zone),
    )


def cumulative_pdf(reports: Sequence[Report], *, zone: tzinfo = LAB_ZONE) -> bytes:
    """The cumulative report as a PDF (A4 landscape)."""
    return html_to_pdf(cumulative_html(reports, zone=zone))


# ---------------------------------------------------------------------------------- from the rows


def value_as_written(res: Result) -> str:
    """A result's value as written: its number (digits kept) with its comparator, else its text."""
    text = number_text(res.value_repr, res.value_num)
    if text is not None:
        return f"{res.comparator}{text}" if res.comparator else text
    return res.value_text or ""


def report_from_domain(
    *,
    report_id: str,
    version: int,
    tenant: Tenant,
    lab_address: str,
    identity: Identity,
    request: Request,
    specimens: Sequence[Specimen],
    results: Sequence[Result],
    prescriber: Prescriber | None,
    issued_at: datetime,
    sections: Mapping[str, str] | None = None,
    previous: Mapping[str, PreviousResult] | None = None,
    replaces: datetime | None = None,
) -> Report:
    """A ``Report`` from the domain's rows. ``sections`` maps a result's code to its section (the
    catalogue's), ``previous`` a code to the patient's previous result. The status is corrected
    when ``replaces`` is given, else partial while a result is pending or preliminary, else final;
    the validating biologist and time are those of the last result validated."""
    live = [r for r in results if r.status not in (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)]
    if replaces is not None:
        status = ReportStatus.CORRECTED
    elif any(r.status in (ResultStatus.PENDING, ResultStatus.PRELIMINARY) for r in live):
        status = ReportStatus.PARTIAL
    else:
        status = ReportStatus.FINAL
    validated = [r for r in live if r.validated_at is not None]
    last = max(validated, key=lambda r: r.validated_at or issued_at, default=None)
    i = identity
    return Report(
        report_id=report_id,
        version=version,
        status=status,
        lab=ReportLab(name=tenant.name, finess=tenant.finess, address=lab_address),
        patient=ReportPatient(
            patient_id=i.patient_id,
            family_name=i.family_name,
            given_names=i.given_names,
            birth_date=i.birth_date,
            sex=i.sex,
            birth_name=i.birth_name,
            used_given_name=i.used_given_name,
            ins=i.nir,
            ins_oid=i.ins_oid,
            identity_status=i.identity_status,
            local_ids=tuple(i.local_ids),
        ),
        prescriber=(
            ReportPrescriber(prescriber.prescriber_id, prescriber.family_name, prescriber.given_name, prescriber.rpps)
            if prescriber is not None
            else None
        ),
        request_id=request.request_id,
        request_number=request.accession or request.request_id,
        requested_at=request.requested_at,
        issued_at=issued_at,
        specimens=tuple(ReportSpecimen(s.specimen_id, s.type, s.collected_at, s.received_at) for s in specimens),
        lines=tuple(
            ReportLine(
                result_id=r.result_id,
                section=(sections or {}).get(r.code, DEFAULT_SECTION),
                code=r.code,
                label=r.label,
                value=value_as_written(r),
                unit=r.unit,
                ref_low=r.ref_low,
                ref_high=r.ref_high,
                ref_text=r.ref_text,
                flag=r.flag,
                previous=(previous or {}).get(r.code),
                comment=r.comment,
                status=r.status,
                code_system=r.code_system,
                unit_system=r.unit_system,
                specimen_id=r.specimen_id,
            )
            for r in live
        ),
        validated_by=last.validated_by if last is not None else None,
        validated_at=last.validated_at if last is not None else None,
        replaces=replaces,
    )
