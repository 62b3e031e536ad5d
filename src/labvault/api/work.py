"""The lab's daily work over HTTP: requests entered, labels printed, specimens received or
rejected, values entered, results validated, reports issued and read again (PDF, FHIR, HL7).

Every route declares its access (``deps``): reads (labels, reports read again) take ``Reader``;
changes take ``SessionOnly`` (a logged-in session with its CSRF header, never a bearer token).
The gateway authorises each action (lab roles only; a vendor account is refused and the refusal
audited) and a lab's routes find nothing of another lab.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from labvault.access import Purpose
from labvault.api.deps import Caller, Reader, SessionOnly, authenticated, gateway
from labvault.api.routes import ERRORS
from labvault.lab import reports, work

router = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS, tags=["work"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
PREFIX = "/api/v1/tenants/{tenant}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestIn(_Strict):
    patient_id: str = Field(min_length=1, max_length=64)
    tests: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(min_length=1, max_length=100)
    collected_at: datetime
    collector: str = Field(min_length=1, max_length=200)
    urgent: bool = False
    clinical: str | None = Field(default=None, max_length=2000)
    prescriber_id: str | None = Field(default=None, max_length=64)


class RequestOut(BaseModel):
    request_id: str
    specimens: list[dict[str, str]]
    results: list[dict[str, str]]


class SpecimenOut(BaseModel):
    specimen_id: str
    status: str | None
    nonconformity: str | None = None


class RejectIn(_Strict):
    nonconformity: str = Field(min_length=1, max_length=32)


class ValueIn(_Strict):
    value: str = Field(min_length=1, max_length=2000)
    unit: str | None = Field(default=None, max_length=40)
    comment: str | None = Field(default=None, max_length=2000)


class ResultOut(BaseModel):
    result_id: str
    workflow: str | None
    status: str


class ValidateIn(_Strict):
    ids: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(min_length=1, max_length=500)
    level: Literal["technical", "biological"]


def _care(caller: Caller, request: Request) -> Any:
    return gateway(request).unit(caller.principal, Purpose.CARE)


def _pdf(data: bytes, name: str) -> Response:
    return Response(
        data,
        media_type="application/pdf",
        headers={"content-disposition": f'attachment; filename="{name}.pdf"', "cache-control": "no-store"},
    )


@router.post(PREFIX + "/requests", response_model=RequestOut, status_code=201)
def enter_request(caller: SessionOnly, request: Request, tenant: str, body: RequestIn) -> RequestOut:
    tests = work.ordered_tests(body.tests)
    with _care(caller, request) as u:
        done = work.enter_request(
            u,
            tenant,
            body.patient_id,
            tests,
            collected_at=body.collected_at,
            collector=body.collector,
            prescriber_id=body.prescriber_id,
            urgent=body.urgent,
            clinical=body.clinical,
        )
    return RequestOut(
        request_id=done.request_id,
        specimens=[{"specimen_id": s, "container": c, "type": k} for s, c, k in done.specimens],
        results=[{"result_id": r, "code": c} for r, c in done.results],
    )


@router.get(PREFIX + "/requests/{request_id}/labels", response_class=Response)
def labels(caller: Reader, request: Request, tenant: str, request_id: Id) -> Response:
    with _care(caller, request) as u:
        pdf = reports.request_labels(u, tenant, request_id)
    return _pdf(pdf, "labels")


def _specimen_out(sp: Any) -> SpecimenOut:
    return SpecimenOut(
        specimen_id=sp.specimen_id,
        status=None if sp.status is None else str(sp.status),
        nonconformity=None if sp.nonconformity is None else str(sp.nonconformity),
    )


@router.post(PREFIX + "/specimens/{specimen_id}/receive", response_model=SpecimenOut)
def receive(caller: SessionOnly, request: Request, tenant: str, specimen_id: Id) -> SpecimenOut:
    with _care(caller, request) as u:
        return _specimen_out(work.receive(u, tenant, specimen_id))


@router.post(PREFIX + "/specimens/{specimen_id}/reject", response_model=SpecimenOut)
def reject(caller: SessionOnly, request: Request, tenant: str, specimen_id: Id, body: RejectIn) -> SpecimenOut:
    with _care(caller, request) as u:
        return _specimen_out(work.reject(u, tenant, specimen_id, body.nonconformity))


def _result_out(r: Any) -> ResultOut:
    return ResultOut(
        result_id=r.result_id, workflow=None if r.workflow is None else str(r.workflow), status=str(r.status)
    )


@router.post(PREFIX + "/results/{result_id}/value", response_model=ResultOut)
def enter_value(caller: SessionOnly, request: Request, tenant: str, result_id: Id, body: ValueIn) -> ResultOut:
    with _care(caller, request) as u:
        res, _ = work.enter_result(u, tenant, result_id, body.value, body.unit, comment=body.comment)
    return ResultOut(
        result_id=res.result_id, workflow=None if res.workflow is None else str(res.workflow), status=str(res.status)
    )


@router.post(PREFIX + "/results/validate", response_model=list[ResultOut])
def validate(caller: SessionOnly, request: Request, tenant: str, body: ValidateIn) -> list[ResultOut]:
    with _care(caller, request) as u:
        done = u.validate(tenant, body.ids, body.level)
    return [_result_out(r) for r in done]


@router.post(PREFIX + "/requests/{request_id}/report", response_class=Response, status_code=201)
def issue(caller: SessionOnly, request: Request, tenant: str, request_id: Id) -> Response:
    """Issue the request's report (a biologist): partial, final or corrected; the PDF."""
    with _care(caller, request) as u:
        out = reports.issue_report(u, tenant, request_id)
    response = _pdf(out.pdf, f"report-{out.report_id}")
    response.status_code = 201
    response.headers.update(
        {"x-report-id": out.report_id, "x-report-version": str(out.version), "x-report-status": str(out.status)}
    )
    return response


@router.get(PREFIX + "/requests/{request_id}/report", response_class=Response)
def report(caller: Reader, request: Request, tenant: str, request_id: Id) -> Response:
    """The latest issued report, rendered again (the same PDF)."""
    with _care(caller, request) as u:
        out = reports.current_report(u, tenant, request_id)
    response = _pdf(out.pdf, f"report-{out.report_id}")
    response.headers.update({"x-report-id": out.report_id, "x-report-status": str(out.status)})
    return response


@router.get(PREFIX + "/requests/{request_id}/report.fhir")
def report_fhir(caller: Reader, request: Request, tenant: str, request_id: Id) -> Response:
    import json

    with _care(caller, request) as u:
        dr = reports.report_fhir(u, tenant, request_id)
    return Response(json.dumps(dr), media_type="application/fhir+json", headers={"cache-control": "no-store"})


@router.get(PREFIX + "/requests/{request_id}/report.hl7", response_class=Response)
def report_hl7(caller: Reader, request: Request, tenant: str, request_id: Id) -> Response:
    with _care(caller, request) as u:
        text = reports.report_oru(u, tenant, request_id)
    return Response(text, media_type="x-application/hl7-v2+er7; charset=utf-8", headers={"cache-control": "no-store"})
