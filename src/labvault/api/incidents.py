"""The incident register over HTTP (I1..I5): ``/api/v1/incidents``.

The vendor's security officer opens the processor's incident and sends each lab its notice; a
lab's lab_admin or lab_dpo reads its own part (``?tenant=LAB``), drafts its Art. 33 notification,
decides, records the notification and the exemption; its lab_dpo downloads the letters (a ZIP of
PDFs built in memory) after a TOTP step-up, as on the page (they open names and addresses). Reads
take ``Reader``; changes take ``SessionOnly``; the letters ``SteppedUp``. The gateway authorises
and audits each call.
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from labvault.access import Purpose
from labvault.access.incidents import Incident, Version
from labvault.api.deps import Caller, Reader, SessionOnly, SteppedUp, authenticated, gateway
from labvault.api.routes import ERRORS
from labvault.breach import incidents

router = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS, tags=["incidents"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
Tenant = Annotated[str | None, Query(max_length=64)]
Text = Annotated[str, Field(min_length=1, max_length=20_000)]
Item = Annotated[str, Field(min_length=1, max_length=2_000)]
MEDIA = {"json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenIn(_Strict):
    title: str = Field(min_length=1, max_length=200)
    aware_at: datetime
    analysis_id: str | None = Field(default=None, max_length=64)
    advisory_id: str | None = Field(default=None, max_length=64)
    tenant: str | None = Field(default=None, max_length=64)
    labs: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=500)
    kind: Literal["confidentiality", "integrity", "availability"] = "confidentiality"
    facts: str | None = Field(default=None, max_length=20_000)


class NoticeIn(_Strict):
    measures: list[Item] = Field(default_factory=list, max_length=50)


class DraftIn(_Strict):
    measures_taken: list[Item] = Field(default_factory=list, max_length=50)
    measures_proposed: list[Item] = Field(default_factory=list, max_length=50)


class DecideIn(_Strict):
    decision: Literal["notify", "no-risk"]
    reasoning: Text


class NotifiedIn(_Strict):
    at: datetime
    reference: str = Field(min_length=1, max_length=100)
    delay_reason: str | None = Field(default=None, max_length=20_000)


class LettersIn(_Strict):
    patients: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(default=None, max_length=100_000)


class ExemptIn(_Strict):
    ground: Literal["encrypted", "measures", "disproportionate"]
    reason: Text


def _unit(caller: Caller, request: Request) -> Any:
    return gateway(request).unit(caller.principal, Purpose.BREACH)


def _out(inc: Incident) -> dict[str, Any]:
    out = inc.public()
    if inc.facts is not None:
        out["facts"] = inc.facts
    return out


def _version(v: Version, *, body: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tenant": v.tenant_id,
        "incident_id": v.incident_id,
        "document": v.document,
        "version": v.version,
        "phase": v.phase,
        "sha256": v.sha256,
        "created_at": v.created_at.isoformat(),
    }
    if body:
        out["body"] = v.body
    return out


@router.get("/api/v1/incidents")
def list_incidents(caller: Reader, request: Request, tenant: Tenant = None) -> list[dict]:
    with _unit(caller, request) as u:
        return [i.public() for i in u.incidents(tenant)]


@router.post("/api/v1/incidents", status_code=201)
def open_incident(caller: SessionOnly, request: Request, body: OpenIn) -> dict:
    with _unit(caller, request) as u:
        inc = incidents.open_incident(
            u,
            title=body.title,
            aware_at=body.aware_at,
            analysis_id=body.analysis_id,
            advisory_id=body.advisory_id,
            tenant=body.tenant,
            labs=body.labs,
            kind=body.kind,
            facts={"facts": body.facts} if body.facts else None,
        )
    return _out(inc)


@router.get("/api/v1/incidents/{incident_id}")
def show_incident(caller: Reader, request: Request, incident_id: Id, tenant: Tenant = None) -> dict:
    with _unit(caller, request) as u:
        return _out(u.incident(incident_id, tenant))


@router.get("/api/v1/incidents/{incident_id}/timeline")
def timeline(caller: Reader, request: Request, incident_id: Id, tenant: Tenant = None) -> list[dict]:
    with _unit(caller, request) as u:
        return [s.public() for s in u.incident_timeline(incident_id, tenant)]


@router.post("/api/v1/incidents/{incident_id}/close")
def close_incident(caller: SessionOnly, request: Request, incident_id: Id, tenant: Tenant = None) -> dict:
    with _unit(caller, request) as u:
        return _out(u.incident_close(incident_id, tenant))


@router.post("/api/v1/incidents/{incident_id}/notices")
def send_notices(caller: SessionOnly, request: Request, incident_id: Id, body: NoticeIn) -> list[dict]:
    with _unit(caller, request) as u:
        return [_version(v, body=False) for v in incidents.send_notices(u, incident_id, measures=body.measures)]


@router.get("/api/v1/incidents/{incident_id}/labs/{tenant}/notices")
def lab_notices(caller: Reader, request: Request, incident_id: Id, tenant: Id) -> list[dict]:
    with _unit(caller, request) as u:
        return [_version(v) for v in u.incident_versions(incident_id, tenant, "notice")]


@router.get("/api/v1/incidents/{incident_id}/labs/{tenant}/drafts")
def lab_drafts(caller: Reader, request: Request, incident_id: Id, tenant: Id) -> list[dict]:
    with _unit(caller, request) as u:
        return [_version(v) for v in u.incident_versions(incident_id, tenant, "art33")]


@router.post("/api/v1/incidents/{incident_id}/labs/{tenant}/drafts", status_code=201)
def new_draft(caller: SessionOnly, request: Request, incident_id: Id, tenant: Id, body: DraftIn) -> dict:
    with _unit(caller, request) as u:
        v = incidents.draft(
            u, incident_id, tenant, measures_taken=body.measures_taken, measures_proposed=body.measures_proposed
        )
    return _version(v)


@router.get("/api/v1/incidents/{incident_id}/labs/{tenant}/drafts/{version}")
def draft_document(
    caller: Reader,
    request: Request,
    incident_id: Id,
    tenant: Id,
    version: Annotated[int, Path(ge=1, le=10_000)],
    format: Literal["json", "html", "pdf"] = "json",  # noqa: A002 - the query parameter's name
) -> Response:
    from labvault.errors import NotFound

    with _unit(caller, request) as u:
        kept = u.incident_versions(incident_id, tenant, "art33")
    chosen = next((v for v in kept if v.version == version), None)
    if chosen is None:
        raise NotFound("no such version of the draft")
    return Response(incidents.render(chosen, format), media_type=MEDIA[format])


@router.post("/api/v1/incidents/{incident_id}/labs/{tenant}/decision")
def decide(caller: SessionOnly, request: Request, incident_id: Id, tenant: Id, body: DecideIn) -> dict:
    with _unit(caller, request) as u:
        return u.incident_decide(incident_id, tenant, decision=body.decision, reasoning=body.reasoning).public()


@router.post("/api/v1/incidents/{incident_id}/labs/{tenant}/notified")
def notified(caller: SessionOnly, request: Request, incident_id: Id, tenant: Id, body: NotifiedIn) -> dict:
    with _unit(caller, request) as u:
        part = u.incident_notified(
            incident_id, tenant, at=body.at, reference=body.reference, delay_reason=body.delay_reason
        )
    return part.public()


@router.post("/api/v1/incidents/{incident_id}/labs/{tenant}/letters")
def letters(caller: SteppedUp, request: Request, incident_id: Id, tenant: Id, body: LettersIn) -> Response:
    with _unit(caller, request) as u:
        pdfs = incidents.letters(u, incident_id, tenant, patients=body.patients)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n, pdf in enumerate(pdfs, 1):
            z.writestr(f"lettre-{n:05d}.pdf", pdf)
    return Response(buf.getvalue(), media_type="application/zip")


@router.post("/api/v1/incidents/{incident_id}/labs/{tenant}/exemption")
def exempt(caller: SessionOnly, request: Request, incident_id: Id, tenant: Id, body: ExemptIn) -> dict:
    with _unit(caller, request) as u:
        return u.incident_exempt(incident_id, tenant, ground=body.ground, reason=body.reason).public()
