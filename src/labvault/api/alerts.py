"""Alerts over HTTP (H1): list, one with its deliveries, acknowledge, resolve. References only.

Reads take ``Reader`` (a session or a token with the ``read`` scope); acknowledging and resolving
take ``SessionOnly`` (a person, from a logged-in session). The gateway authorises each: a lab's
account sees its own lab's alerts only; the vendor's security officer every lab's; a vendor
account without it (support) nothing of a lab's.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from labvault.access import Purpose
from labvault.api.deps import Caller, Reader, SessionOnly, authenticated, gateway
from labvault.api.routes import ERRORS
from labvault.monitoring import alerts

router = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS, tags=["alerts"])

Id = Annotated[str, Path(min_length=1, max_length=64)]


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500)


def _unit(caller: Caller, request: Request) -> Any:
    return gateway(request).unit(caller.principal, Purpose.MONITORING)


@router.get("/api/v1/alerts")
def list_alerts(
    caller: Reader,
    request: Request,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    state: Annotated[Literal["open", "acknowledged", "resolved"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """Alerts this account may read, newest first."""
    with _unit(caller, request) as u:
        return [a.public() for a in alerts.list_alerts(u, tenant, state=state, limit=limit)]


@router.get("/api/v1/alerts/{alert_id}")
def get_alert(caller: Reader, request: Request, alert_id: Id) -> dict[str, Any]:
    """One alert with its deliveries (channel, level, attempts, delivered or next try)."""
    with _unit(caller, request) as u:
        h = alerts.history(u, alert_id)
    return {**h.alert.public(), "deliveries": [d.public() for d in h.deliveries]}


@router.post("/api/v1/alerts/{alert_id}/ack")
def ack(caller: SessionOnly, request: Request, alert_id: Id, body: AckIn | None = None) -> dict[str, Any]:
    """Acknowledge an open alert: the caller owns it; escalation stops."""
    with _unit(caller, request) as u:
        return alerts.acknowledge(u, alert_id, reason=body.reason if body else None).public()


@router.post("/api/v1/alerts/{alert_id}/resolve")
def resolve(caller: SessionOnly, request: Request, alert_id: Id, body: ResolveIn) -> dict[str, Any]:
    """Resolve an open or acknowledged alert, with a reason."""
    with _unit(caller, request) as u:
        return alerts.resolve(u, alert_id, reason=body.reason).public()
