"""Issued reports: a request's report (compte rendu) as the lab signs and sends it, every version
recorded (table ``lab_report``), through the unit of work.

``issue_report`` builds the ``Report`` from the gateway's reads (the patient's identity, the
request, its specimens, its results, the patient's previous values of the same tests), renders it
as a PDF and records the issue: status ``partial`` while a result is not biologically validated,
``final`` otherwise, ``corrected`` when a final report was issued before for the request and a
result changed since (it then names the report it replaces, and its PDF says "Ce compte rendu
remplace le compte rendu du ..."). Issuing again when nothing changed gives the report already
issued. The PDF holds personal data: it is never stored, only its SHA-256; ``current_report``
renders the latest issued report again, the same bytes, and refuses when results changed since.

Actions (``labvault.access.policy``, ``REPORT_WORK``): ``report:issue`` (a biologist),
``report:read`` (biologists, technicians). No vendor role holds either. Audit events name ids only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from labvault.crypto.digest import sha256_hex
from labvault.domain.models import Identity, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.domain.report import PreviousResult, Report, ReportStatus
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.interop import report_out
from labvault.lab.catalogue import SECTION_LABELS
from labvault.lab.report import cumulative_pdf, report_from_domain, report_pdf, value_as_written
from labvault.lab.service import current_catalogue
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = [
    "IssuedReport",
    "cumulative_report",
    "current_report",
    "issue_report",
    "issued_reports",
    "report_fhir",
    "report_oru",
    "request_labels",
]

_GONE = frozenset({ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR})
_DONE = frozenset({ResultStatus.FINAL, ResultStatus.CORRECTED})


@dataclass(frozen=True)
class IssuedReport:
    """One issued version of a request's report, with its PDF (rendered, never stored)."""

    report_id: str
    request_id: str
    version: int
    status: ReportStatus
    issued_at: datetime
    issued_by: str
    replaces: str | None
    pdf_sha256: str
    report: Report
    pdf: bytes


@dataclass(frozen=True)
class _Rows:
    identity: Identity
    request: Request
    specimens: list[Specimen]
    results: list[Result]
    prescriber: Prescriber | None
    previous: dict[str, PreviousResult]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _check(request_id: object) -> str:
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 64:
        raise NotFound("no such request in this lab")
    return request_id


def _state(results: Sequence[Result]) -> str:
    """The SHA-256 of the results' state: ids, versions, statuses, workflow steps (no value)."""
    lines = sorted(f"{r.result_id}|{r.version}|{r.status}|{r.workflow or ''}" for r in results)
    return sha256_hex("\n".join(lines).encode())


def _gather(u: Unit, tenant: str, request_id: str) -> _Rows:
    results = u.results_of_request(tenant, request_id)
    if not results:
        raise NotFound("no such request in this lab")
    patient_id = u.patient_of_result(tenant, results[0].result_id)
    identity = u.get_patient(tenant, patient_id)
    requests = {q.request_id: q for q in u.requests_of(tenant, patient_id)}
    request = requests.get(request_id)
    if request is None:
        raise NotFound("no such request in this lab")
    specimen_ids = list(dict.fromkeys(r.specimen_id for r in results if r.specimen_id))
    specimens = [u.specimen(tenant, sid) for sid in specimen_ids]
    prescriber = None
    if request.prescriber_id is not None:
        from labvault.access import scan

        prescriber = next((p for p in scan.prescribers(u, tenant) if p.prescriber_id == request.prescriber_id), None)
    # The previous value of each test: the latest validated one of an earlier request.
    now = _aware(request.requested_at)
    previous: dict[str, PreviousResult] = {}
    seen: dict[str, datetime] = {}
    for r in u.results_of(tenant, patient_id):
        q = requests.get(r.request_id)
        if q is None or r.request_id == request_id or r.status not in _DONE:
            continue
        at = _aware(q.requested_at)
        if at < now and (r.code not in seen or at > seen[r.code]):
            seen[r.code] = at
            previous[r.code] = PreviousResult(value_as_written(r), r.unit, at)
    return _Rows(identity, request, specimens, results, prescriber, previous)


def _report(
    u: Unit,
    tenant: str,
    rows: _Rows,
    *,
    report_id: str,
    version: int,
    issued_at: datetime,
    replaces: datetime | None,
    status: ReportStatus,
) -> Report:
    lab = u.tenant(tenant)
    cat = current_catalogue(u, tenant).catalogue
    out = report_from_domain(
        report_id=report_id,
        version=version,
        tenant=lab,
        lab_address=lab.address,
        sections={t.loinc: SECTION_LABELS.get(t.section, t.section) for t in cat.tests},
        identity=rows.identity,
        request=rows.request,
        specimens=rows.specimens,
        results=rows.results,
        prescriber=rows.prescriber,
        issued_at=issued_at,
        previous=rows.previous,
        replaces=replaces,
    )
    return out if out.status is status else dataclasses.replace(out, status=status)


def _status(results: Sequence[Result]) -> ReportStatus:
    live = [r for r in results if r.status not in _GONE]
    if any(r.status not in _DONE for r in live):
        return ReportStatus.PARTIAL
    return ReportStatus.FINAL


def _stored(u: Unit, tenant: str, request_id: str) -> list[Any]:
    lr = t.lab_report
    return list(
        u.execute(
            tenant,
            select(lr).where(lr.c.tenant_id == tenant, lr.c.request_id == request_id).order_by(lr.c.version),
        ).all()
    )


def _rendered(u: Unit, tenant: str, rows: _Rows, row: Any, stored: list[Any]) -> IssuedReport:
    """An issued report rendered again from its row (same id, version, time, status)."""
    replaced = next((x for x in stored if x.report_id == row.replaces), None)
    report = _report(
        u,
        tenant,
        rows,
        report_id=row.report_id,
        version=row.version,
        issued_at=_aware(row.issued_at),
        replaces=None if replaced is None else _aware(replaced.issued_at),
        status=ReportStatus(row.status),
    )
    pdf = report_pdf(report)
    return IssuedReport(
        row.report_id,
        row.request_id,
        row.version,
        ReportStatus(row.status),
        _aware(row.issued_at),
        row.issued_by,
        row.replaces,
        row.pdf_sha256,
        report,
        pdf,
    )


def issue_report(u: Unit, tenant: str, request_id: str) -> IssuedReport:
    """Issue the request's report (a biologist): a new version when nothing was issued yet or a
    result changed since the latest; else the latest, rendered again. Audited ``report:issue``
    (the report's and the request's ids)."""
    u.authorise(tenant, "report:issue")
    request_id = _check(request_id)
    rows = _gather(u, tenant, request_id)
    state = _state(rows.results)
    stored = _stored(u, tenant, request_id)
    latest = stored[-1] if stored else None
    if latest is not None and latest.results_sha256 == state:
        out = _rendered(u, tenant, rows, latest, stored)
        u.audit(tenant, "report:issue", "report", 0, refs=[latest.report_id, request_id])
        return out
    status = _status(rows.results)
    finals = [x for x in stored if x.status in (ReportStatus.FINAL, ReportStatus.CORRECTED)]
    replaced = finals[-1] if finals and status is ReportStatus.FINAL else None
    if replaced is not None:
        status = ReportStatus.CORRECTED
    report_id, version, now = new_id(), (latest.version + 1 if latest is not None else 1), utcnow()
    report = _report(
        u,
        tenant,
        rows,
        report_id=report_id,
        version=version,
        issued_at=now,
        replaces=None if replaced is None else _aware(replaced.issued_at),
        status=status,
    )
    pdf = report_pdf(report)
    digest = sha256_hex(pdf)
    who = u.principal.account_id
    u.execute(
        tenant,
        insert(t.lab_report).values(
            tenant_id=tenant,
            report_id=report_id,
            request_id=request_id,
            version=version,
            status=str(status),
            issued_at=now,
            issued_by=who,
            replaces=None if replaced is None else replaced.report_id,
            pdf_sha256=digest,
            results_sha256=state,
        ),
    )
    refs = [report_id, request_id] + ([replaced.report_id] if replaced is not None else [])
    u.audit(tenant, "report:issue", "report", 1, refs=refs)
    return IssuedReport(
        report_id,
        request_id,
        version,
        status,
        now,
        who,
        None if replaced is None else replaced.report_id,
        digest,
        report,
        pdf,
    )


def current_report(u: Unit, tenant: str, request_id: str) -> IssuedReport:
    """The request's latest issued report, rendered again (biologists, technicians). Refused when
    none was issued, or when a result changed since (a biologist issues a new one)."""
    u.authorise(tenant, "report:read")
    request_id = _check(request_id)
    rows = _gather(u, tenant, request_id)
    stored = _stored(u, tenant, request_id)
    if not stored:
        raise NotFound("no report issued for this request yet")
    latest = stored[-1]
    if latest.results_sha256 != _state(rows.results):
        raise InvalidInput("results changed since this request's latest report: a biologist issues a new one")
    out = _rendered(u, tenant, rows, latest, stored)
    u.audit(tenant, "report:read", "report", 1, refs=[latest.report_id, request_id])
    return out


def issued_reports(u: Unit, tenant: str, request_id: str) -> list[dict[str, Any]]:
    """Every issued version of a request's report, oldest first: ids, status, times (no value)."""
    u.authorise(tenant, "report:read")
    u.tenant(tenant)
    rows = _stored(u, tenant, _check(request_id))
    u.audit(tenant, "report:read", "report", len(rows), refs=[request_id])
    return [
        {
            "report_id": r.report_id,
            "version": r.version,
            "status": r.status,
            "issued_at": _aware(r.issued_at),
            "issued_by": r.issued_by,
            "replaces": r.replaces,
            "pdf_sha256": r.pdf_sha256,
        }
        for r in rows
    ]


def cumulative_report(u: Unit, tenant: str, patient_id: str) -> bytes:
    """One patient's results over time as a PDF: one column per request, from the gateway's reads
    (not stored, not an issue). Audited ``report:read`` (the patient's id)."""
    u.authorise(tenant, "report:read")
    requests = u.requests_of(tenant, patient_id)
    if not requests:
        raise NotFound("no such patient in this lab, or no request")
    reports = []
    for q in requests:
        rows = _gather(u, tenant, q.request_id)
        reports.append(
            _report(
                u,
                tenant,
                rows,
                report_id=q.request_id,
                version=1,
                issued_at=utcnow(),
                replaces=None,
                status=_status(rows.results),
            )
        )
    pdf = cumulative_pdf(reports)
    u.audit(tenant, "report:read", "cumulative", len(reports), refs=[patient_id])
    return pdf


def report_fhir(u: Unit, tenant: str, request_id: str) -> dict[str, Any]:
    """The latest issued report as a FHIR R4 DiagnosticReport, its PDF in ``presentedForm``."""
    issued = current_report(u, tenant, request_id)
    return report_out.diagnostic_report(issued.report, issued.pdf)


def report_oru(u: Unit, tenant: str, request_id: str) -> str:
    """The latest issued report as an HL7 v2.5 ORU^R01 message (text, segments ended by CR)."""
    issued = current_report(u, tenant, request_id)
    lab = u.tenant(tenant)
    return report_out.oru_r01(issued.report, sending_facility=lab.finess, control_id=issued.report_id[:20]).decode()


def request_labels(u: Unit, tenant: str, request_id: str) -> bytes:
    """The labels of a request's specimens as a PDF (one 50 x 25 mm page each, DataMatrix of the
    specimen id), from the gateway's reads; audited ``labels:print`` (the request's id)."""
    from labvault.lab.labels import Label, labels_pdf

    rows = _gather(u, tenant, _check(request_id))
    i = rows.identity
    given = (i.used_given_name or i.given_names.split(" ")[0]) if i.given_names else ""
    out = labels_pdf(
        [
            Label(
                specimen_id=s.specimen_id,
                family_name=i.birth_name or i.family_name,
                given_name=given,
                birth_date=i.birth_date,
                sex=i.sex,
                collected_at=_aware(s.collected_at),
                container=s.container or "",
                specimen_type=s.type,
            )
            for s in rows.specimens
        ]
    )
    u.audit(tenant, "labels:print", "specimen", len(rows.specimens), refs=[request_id])
    return out
