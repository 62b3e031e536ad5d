"""Identity vigilance over HTTP, as ``labvault identity`` does it: the queue of messages whose
identity conflicts and their resolution, an identity with its status and merges, status changes,
merges and unmerges. Reads take ``Reader``; every change needs a logged-in session."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from labvault.access import Purpose
from labvault.api.deps import Reader, SessionOnly, gateway
from labvault.api.routes import ERRORS
from labvault.domain.models import IdentityStatus
from labvault.identity import service

router = APIRouter(responses=ERRORS)
_BASE = "/api/v1/tenants/{tenant}/identity"


class QueuedOut(BaseModel):
    """A message waiting in the identity-vigilance queue (codes and ids: no personal value)."""

    id: str
    received_at: datetime
    format: str
    feed: str
    reason: str
    candidate: str | None
    status: str
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolved_to: str | None = None


class ResolveIn(BaseModel):
    action: str = Field(description="attach, create or reject")
    patient_id: str | None = Field(None, max_length=64, description="attach: the patient instead of the candidate")


class ResolveOut(BaseModel):
    item: QueuedOut
    results: int


class MergeOut(BaseModel):
    id: str
    kept: str
    merged: str
    requests: int
    merged_by: str
    merged_at: datetime
    source: str
    undone_by: str | None = None
    undone_at: datetime | None = None


class IdentityOut(BaseModel):
    patient_id: str
    status: str
    status_changed_by: str | None
    status_changed_at: datetime | None
    status_evidence: str | None
    ins: str | None
    ins_oid: str | None
    birth_name: str
    family_name: str
    given_names: str
    first_given_name: str
    used_given_name: str | None
    birth_date: date
    sex: str
    birthplace_code: str | None
    local_ids: list[tuple[str, str]]
    merged_into: str | None
    merged_from: list[str]
    merges: list[MergeOut]


class StatusIn(BaseModel):
    to: IdentityStatus
    evidence: str = Field(max_length=64, description="a code: " + ", ".join(service.EVIDENCE))
    ins: str | None = Field(None, max_length=32, description="the INS-NIR, when none is stored yet")


class MergeIn(BaseModel):
    kept: str = Field(max_length=64)
    merged: str = Field(max_length=64)


def _queued(i: service.Queued) -> QueuedOut:
    return QueuedOut(
        id=i.queue_id,
        received_at=i.received_at,
        format=i.format,
        feed=i.feed,
        reason=i.reason,
        candidate=i.candidate_id,
        status=i.status,
        resolved_at=i.resolved_at,
        resolved_by=i.resolved_by,
        resolved_to=i.resolved_to,
    )


def _merge(m: service.Merge) -> MergeOut:
    return MergeOut(
        id=m.merge_id,
        kept=m.kept_id,
        merged=m.merged_id,
        requests=m.requests,
        merged_by=m.merged_by,
        merged_at=m.merged_at,
        source=m.source,
        undone_by=m.undone_by,
        undone_at=m.undone_at,
    )


def _purpose(caller_is_platform: bool) -> Purpose:
    return Purpose.SUPPORT if caller_is_platform else Purpose.CARE


@router.get(f"{_BASE}/queue", response_model=list[QueuedOut])
def queue(
    caller: Reader,
    request: Request,
    tenant: str,
    every: Annotated[bool, Query(alias="all", description="resolved ones too")] = False,
) -> list[QueuedOut]:
    """Messages waiting because their INS or local identifier points to an identity with other traits."""
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        items = service.queue(u, tenant, status=None if every else service.HELD)
    return [_queued(i) for i in items]


@router.post(f"{_BASE}/queue/{{queue_id}}/resolve", response_model=ResolveOut)
def resolve(caller: SessionOnly, request: Request, tenant: str, queue_id: str, body: ResolveIn) -> ResolveOut:
    """Attach the message to the candidate (or the patient named), create a new identity, or reject it."""
    test_mode = request.app.state.runtime.settings.test_mode
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        done = service.resolve(u, tenant, queue_id, body.action, patient_id=body.patient_id, test_mode=test_mode)
    return ResolveOut(item=_queued(done.item), results=done.results)


@router.get(f"{_BASE}/patients/{{patient_id}}", response_model=IdentityOut)
def show(caller: Reader, request: Request, tenant: str, patient_id: str) -> IdentityOut:
    """An identity: status and its last change, traits, local identifiers, merge links."""
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        v = service.show(u, tenant, patient_id)
    p = v.identity
    return IdentityOut(
        patient_id=p.patient_id,
        status=str(p.identity_status),
        status_changed_by=v.status_changed_by,
        status_changed_at=v.status_changed_at,
        status_evidence=v.status_evidence,
        ins=p.nir,
        ins_oid=p.ins_oid if p.nir else None,
        birth_name=p.strict_birth_name,
        family_name=p.family_name,
        given_names=p.given_names,
        first_given_name=p.first_given,
        used_given_name=p.used_given_name,
        birth_date=p.birth_date,
        sex=p.sex,
        birthplace_code=p.birthplace_code,
        local_ids=list(p.local_ids),
        merged_into=p.merged_into,
        merged_from=v.merged_from,
        merges=[_merge(m) for m in v.merges],
    )


@router.post(f"{_BASE}/patients/{{patient_id}}/status", status_code=204)
def change_status(caller: SessionOnly, request: Request, tenant: str, patient_id: str, body: StatusIn) -> None:
    """Change an identity's status, with the evidence's code (who and when are recorded)."""
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        service.change_status(u, tenant, patient_id, body.to, evidence=body.evidence, ins=body.ins)


@router.post(f"{_BASE}/merges", response_model=MergeOut, status_code=201)
def merge(caller: SessionOnly, request: Request, tenant: str, body: MergeIn) -> MergeOut:
    """Merge ``merged`` into ``kept``: its requests move (undone by unmerge)."""
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        return _merge(service.merge(u, tenant, body.kept, body.merged, source="api"))


@router.post(f"{_BASE}/patients/{{patient_id}}/unmerge", response_model=MergeOut)
def unmerge(caller: SessionOnly, request: Request, tenant: str, patient_id: str) -> MergeOut:
    """Undo the merge of this identity: exactly the requests it moved go back."""
    with gateway(request).unit(caller.principal, _purpose(caller.principal.is_platform)) as u:
        return _merge(service.unmerge(u, tenant, patient_id))
