"""The patient report (compte rendu) as plain data: what a lab signs and sends for one request.

Frozen dataclasses, no database, no keys: ``labvault.lab.report`` renders a ``Report`` as a PDF in
French, ``labvault.interop.report_out`` writes the same report as a FHIR DiagnosticReport and as an
HL7 v2 ORU^R01. The content follows ISO 15189 (7.4.1.6: the report's items) and the identity
rules of the RNIV (the INS shown and sent only for a qualified identity).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from labvault.domain.models import LOINC, IdentityStatus, ResultStatus

OID_INS_NIR = "1.2.250.1.213.1.4.8"


class ReportStatus(enum.StrEnum):
    """A report's status (FHIR DiagnosticReport.status): partial while some results are to come,
    final once every result is validated, corrected when it replaces a report already sent."""

    PARTIAL = "partial"
    FINAL = "final"
    CORRECTED = "corrected"


@dataclass(frozen=True, slots=True)
class ReportLab:
    name: str
    finess: str
    address: str = ""


@dataclass(frozen=True, slots=True)
class ReportPatient:
    """Who the report is about: the RNIV traits, the name used, the INS when the identity is
    qualified (``ins_shown``), the lab's local identifiers (IPP) as (system, value)."""

    patient_id: str
    family_name: str  # the name used
    given_names: str  # the given names at birth, in order
    birth_date: date
    sex: str  # "M", "F" or "U"
    birth_name: str | None = None
    used_given_name: str | None = None
    ins: str | None = None  # NIR or NIA
    ins_oid: str = OID_INS_NIR
    identity_status: IdentityStatus = IdentityStatus.PROVISIONAL
    local_ids: tuple[tuple[str, str], ...] = ()

    @property
    def ins_shown(self) -> str | None:
        """The INS, only for a qualified identity (RNIV): otherwise it is neither printed nor sent."""
        return self.ins if self.ins and self.identity_status is IdentityStatus.QUALIFIED else None


@dataclass(frozen=True, slots=True)
class ReportPrescriber:
    prescriber_id: str
    family_name: str
    given_name: str = ""
    rpps: str = ""


@dataclass(frozen=True, slots=True)
class ReportSpecimen:
    specimen_id: str
    type: str  # HL7 table 0487: BLD, SER, PLAS, UR...
    collected_at: datetime
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PreviousResult:
    """The patient's previous value of the same test (antériorité), as written, with its day."""

    value: str
    unit: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One result as the report shows it. ``value`` is as written, with its comparator when it is a
    bound (``12.50``, ``<0.5``) or a text (``Négatif``); the reference interval is its bounds and/or
    a text (``ref_text`` wins on paper: ``< 5``, ``Négatif``)."""

    result_id: str
    section: str
    code: str
    label: str
    value: str
    unit: str | None = None
    ref_low: float | None = None
    ref_high: float | None = None
    ref_text: str | None = None
    flag: str | None = None  # HL7 table 0078: L, H, LL, HH, A, AA, N, POS, NEG
    previous: PreviousResult | None = None
    comment: str | None = None
    status: ResultStatus = ResultStatus.FINAL
    code_system: str = LOINC
    unit_system: str | None = None
    specimen_id: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """One request's report, one version of it. ``replaces`` is when the report it replaces was
    issued (a corrected report says so on paper)."""

    report_id: str
    version: int
    status: ReportStatus
    lab: ReportLab
    patient: ReportPatient
    prescriber: ReportPrescriber | None
    request_id: str
    request_number: str  # the lab's accession number
    requested_at: datetime
    issued_at: datetime
    specimens: tuple[ReportSpecimen, ...]
    lines: tuple[ReportLine, ...]
    validated_by: str | None = None
    validated_at: datetime | None = None
    replaces: datetime | None = None
    clinical_information: str | None = None
