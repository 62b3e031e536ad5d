"""Reports from outside (H2, H4) and the explained-access digest (G5, H1) over HTTP.

The register: the vendor's security officer adds, reads, assesses and closes (``advisory:*``); the
platform admin reads. A lab's lab_admin or lab_dpo reads the advisories decided for its lab
(``/tenants/{tenant}/advisories``) and its daily digest (``/tenants/{tenant}/accesses``). Reads take
``Reader``; changes take ``SessionOnly``. The gateway authorises and audits each call.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from labvault.access import Purpose
from labvault.access.advisories import Advisory
from labvault.api.deps import Caller, Reader, SessionOnly, authenticated, gateway
from labvault.api.routes import ERRORS
from labvault.monitoring import advisories, explained

router = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS, tags=["monitoring"])

Id = Annotated[str, Path(min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdvisoryIn(_Strict):
    source: Literal["anssi", "cert", "lab-it", "researcher", "press", "police", "employee", "other"]
    severity: Literal["low", "medium", "high", "critical"]
    owner: str = Field(min_length=1, max_length=320)
    summary: str = Field(min_length=1, max_length=20_000)
    reference: str | None = Field(default=None, max_length=200)
    received_at: datetime | None = None
    labs: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=500)
    deadline: datetime | None = None


class AssessIn(_Strict):
    breach: Literal["yes", "no", "possible"]
    reasoning: str = Field(min_length=1, max_length=20_000)
    notify_labs: bool
    labs: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None, max_length=500)


def _unit(caller: Caller, request: Request) -> Any:
    return gateway(request).unit(caller.principal, Purpose.MONITORING)


def _out(a: Advisory, *, text: bool = False) -> dict[str, Any]:
    out = a.public()
    if text:
        out.update(reference=a.reference, summary=a.summary, assessment=a.assessment, created_by=a.created_by)
    return out


@router.get("/api/v1/advisories")
def list_advisories(caller: Reader, request: Request, state: str | None = Query(None, max_length=16)) -> list[dict]:
    with _unit(caller, request) as u:
        return [_out(a) for a in advisories.listing(u, state)]


@router.post("/api/v1/advisories", status_code=201)
def add_advisory(caller: SessionOnly, request: Request, body: AdvisoryIn) -> dict:
    with _unit(caller, request) as u:
        a = advisories.add(u, **body.model_dump())
    return _out(a)


@router.get("/api/v1/advisories/{advisory_id}")
def show_advisory(caller: Reader, request: Request, advisory_id: Id) -> dict:
    with _unit(caller, request) as u:
        return _out(advisories.show(u, advisory_id), text=True)


@router.post("/api/v1/advisories/{advisory_id}/assess")
def assess_advisory(caller: SessionOnly, request: Request, advisory_id: Id, body: AssessIn) -> dict:
    with _unit(caller, request) as u:
        a = advisories.assess(
            u, advisory_id, breach=body.breach, reasoning=body.reasoning, notify_labs=body.notify_labs, labs=body.labs
        )
    return _out(a)


@router.post("/api/v1/advisories/{advisory_id}/close")
def close_advisory(caller: SessionOnly, request: Request, advisory_id: Id) -> dict:
    with _unit(caller, request) as u:
        return _out(advisories.close(u, advisory_id))


@router.get("/api/v1/tenants/{tenant}/advisories")
def lab_advisories(caller: Reader, request: Request, tenant: Id) -> list[dict]:
    with _unit(caller, request) as u:
        return [_out(a) for a in advisories.for_lab(u, tenant)]


@router.get("/api/v1/tenants/{tenant}/accesses")
def access_digest(caller: Reader, request: Request, tenant: Id, day: date | None = None) -> dict:
    with _unit(caller, request) as u:
        return explained.digest(u, tenant, day).as_json()
