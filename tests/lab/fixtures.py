"""A report with values chosen to show each thing the paper must say."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from labvault.domain.models import IdentityStatus, ResultStatus
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

T0 = datetime(2026, 12, 7, 7, 35, tzinfo=UTC)  # 08:35 in Paris
LAB = ReportLab("Laboratoire des Tilleuls", "750012345", "12 rue des Tilleuls, 75012 Paris")
PATIENT = ReportPatient(
    "p1",
    "Durand",
    "Marie Claire",
    date(1961, 3, 9),
    "F",
    birth_name="Lefèvre",
    ins="261037511200342",
    identity_status=IdentityStatus.QUALIFIED,
)
PRESCRIBER = ReportPrescriber("pr1", "Bernard", "Luc", "10001234567")
LINES = (
    ReportLine(
        "r1",
        "Biochimie",
        "2823-3",
        "Potassium",
        "6.8",
        "mmol/L",
        3.5,
        5.1,
        flag="HH",
        previous=PreviousResult("4.2", "mmol/L", T0 - timedelta(days=30)),
        comment="Contrôlé sur un second prélèvement | appel au service",
        status=ResultStatus.CORRECTED,
    ),
    ReportLine("r2", "Biochimie", "2160-0", "Créatinine", "105", "umol/L", 53, 97, flag="H"),
    ReportLine("r3", "Biochimie", "1988-5", "CRP", "<0.5", "mg/L", None, 5, "<5"),
    ReportLine("r4", "Hématologie", "718-7", "Hémoglobine", "12.50", "g/dL", 12, 16),
    ReportLine("r5", "Hématologie", "777-3", "Plaquettes", "95", "10*9/L", 150, 400, flag="L"),
    ReportLine("r6", "Sérologie", "5196-1", "Antigène HBs", "Négatif", None, None, None, "Négatif", flag="N"),
)


def report(status: ReportStatus = ReportStatus.CORRECTED, **changes: object) -> Report:
    values: dict = dict(
        report_id="CR-1",
        version=2,
        status=status,
        lab=LAB,
        patient=PATIENT,
        prescriber=PRESCRIBER,
        request_id="req1",
        request_number="2612070042",
        requested_at=T0 - timedelta(hours=1),
        issued_at=T0 + timedelta(hours=6),
        specimens=(ReportSpecimen("s1", "SER", T0, T0 + timedelta(hours=1)),),
        lines=LINES,
        validated_by="Dr Anne Petit",
        validated_at=T0 + timedelta(hours=5),
        replaces=T0 + timedelta(hours=3) if status is ReportStatus.CORRECTED else None,
    )
    values.update(changes)
    return Report(**values)
