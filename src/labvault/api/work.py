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


# -- the catalogue and the auto-validation rules -----------------------------------------------------


class TomlIn(_Strict):
    toml: str = Field(min_length=1, max_length=2_000_000)


class CatalogueOut(BaseModel):
    number: int
    version: str
    digest: str
    tests: int
    panels: int
    sections: list[str]
    loaded_by: str | None
    loaded_at: datetime | None


class RulesOut(BaseModel):
    number: int
    version: str
    digest: str
    rules: int
    written_by: str
    written_at: datetime
    activated_by: str | None
    activated_at: datetime | None


def _catalogue_out(loaded: Any) -> CatalogueOut:
    cat = loaded.catalogue
    return CatalogueOut(
        number=loaded.number,
        version=cat.version,
        digest=cat.digest,
        tests=len(cat.tests),
        panels=len(cat.panels),
        sections=list(cat.sections),
        loaded_by=loaded.loaded_by,
        loaded_at=loaded.loaded_at,
    )


def _rules_out(stored: Any) -> RulesOut:
    return RulesOut(
        number=stored.number,
        version=stored.rules.version,
        digest=stored.rules.digest,
        rules=len(stored.rules.rules),
        written_by=stored.written_by,
        written_at=stored.written_at,
        activated_by=stored.activated_by,
        activated_at=stored.activated_at,
    )


@router.get(PREFIX + "/catalogue", response_model=CatalogueOut)
def catalogue(caller: Reader, request: Request, tenant: str) -> CatalogueOut:
    """The lab's catalogue in force (number 0: the default one, the lab loaded none)."""
    from labvault.lab import service

    with _care(caller, request) as u:
        return _catalogue_out(service.current_catalogue(u, tenant))


@router.post(PREFIX + "/catalogue", response_model=CatalogueOut, status_code=201)
def load_catalogue(caller: SessionOnly, request: Request, tenant: str, body: TomlIn) -> CatalogueOut:
    """Load a new version of the lab's catalogue (TOML, checked whole; its version string is new)."""
    from labvault.lab import service

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _catalogue_out(service.load_catalogue(u, tenant, body.toml))


@router.get(PREFIX + "/autovalidation-rules", response_model=list[RulesOut])
def rules(caller: Reader, request: Request, tenant: str) -> list[RulesOut]:
    """Every stored version of the lab's auto-validation rules, oldest first (activated ones say by whom)."""
    from labvault.lab import service

    with _care(caller, request) as u:
        return [_rules_out(r) for r in service.list_rules(u, tenant)]


@router.post(PREFIX + "/autovalidation-rules", response_model=RulesOut, status_code=201)
def write_rules(caller: SessionOnly, request: Request, tenant: str, body: TomlIn) -> RulesOut:
    """Store a new version of the rules, checked against the lab's catalogue; not in force until activated."""
    from labvault.lab import service

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _rules_out(service.write_rules(u, tenant, body.toml))


@router.post(PREFIX + "/autovalidation-rules/{number}/activate", response_model=RulesOut)
def activate_rules(
    caller: SessionOnly, request: Request, tenant: str, number: Annotated[int, Path(ge=1, le=1_000_000)]
) -> RulesOut:
    """Put a stored version of the rules in force: a biologist of the lab, named in the record."""
    from labvault.lab import service

    with gateway(request).unit(caller.principal, Purpose.CARE) as u:
        return _rules_out(service.activate_rules(u, tenant, number))


class DetailsIn(_Strict):
    address: str | None = Field(default=None, max_length=300)
    working_hours: str | None = Field(default=None, max_length=100)


class DetailsOut(BaseModel):
    tenant: str
    name: str
    address: str
    working_hours: str


@router.put(PREFIX + "/details", response_model=DetailsOut)
def set_details(caller: SessionOnly, request: Request, tenant: str, body: DetailsIn) -> DetailsOut:
    """The lab's address (printed on its reports) and opening hours (off-hours monitoring): its lab_admin."""
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        lab = u.set_lab_details(tenant, address=body.address, working_hours=body.working_hours)
    return DetailsOut(tenant=lab.id, name=lab.name, address=lab.address, working_hours=lab.working_hours)
