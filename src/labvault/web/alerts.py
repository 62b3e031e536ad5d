"""The alerts' pages (H1): the list with its filters, one alert with its history (deliveries,
escalations, acknowledgement, resolution), the acknowledge and resolve forms; and the lab's own
channels (where its alerts and signed checkpoints go), added and removed by its lab_admin or DPO
after a TOTP step-up.

Each read and write goes through the gateway (``labvault.monitoring.alerts``) under the person's
own account: a lab's account sees its own lab's alerts only; the vendor's security officer every
lab's; the platform admin the platform's; support, nothing. References only: no personal value.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labvault.access import Principal, Purpose
from labvault.access.alerts import CHANNEL_KINDS, SEVERITIES, STATES
from labvault.api.deps import gateway
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput
from labvault.ids import utcnow
from labvault.monitoring import alerts
from labvault.web.errors import refuse
from labvault.web.pages import Approver, SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)
LAB_OFFICERS = frozenset({"lab_admin", "lab_dpo"})


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _field(form: Any, name: str, size: int = 500) -> str:
    return str(form.get(name, "") or "")[:size]


@router.get("/alerts")
def list_page(request: Request, caller: Viewer) -> HTMLResponse:
    """The alerts this account may read, newest first; filters: state, lab (for the vendor)."""
    principal = caller[0]
    state = request.query_params.get("state") or None
    if state not in (None, *STATES):
        raise InvalidInput(f"state is one of {', '.join(STATES)}")
    tenant = (request.query_params.get("tenant") or "")[:64] or None
    if not principal.is_platform:
        tenant = None  # a lab's account: its own lab, whatever the address says
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        found = alerts.list_alerts(u, tenant, state=state, limit=500)
    return render(
        request,
        "alerts_list.html",
        alerts=found,
        state=state or "",
        tenant=tenant or "",
        states=STATES,
        vendor=principal.is_platform,
        channels=not principal.is_platform and bool(LAB_OFFICERS & set(principal.roles)),
    )


def _require_officer(request: Request, principal: Principal, action: str) -> str:
    """The lab's channels: its own lab_admin's and DPO's (a vendor account is refused, recorded)."""
    if principal.is_platform or not LAB_OFFICERS & set(principal.roles):
        refuse(request, principal, action, "a lab's channels are set by its lab_admin or its DPO")
    return principal.tenant_id


def _channels_page(request: Request, principal: Principal, **shown: Any) -> HTMLResponse:
    lab = _require_officer(request, principal, "channel:manage")
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        found = u.channels(lab)
    return render(request, "alerts_channels.html", channels=found, kinds=CHANNEL_KINDS, severities=SEVERITIES, **shown)


@router.get("/alerts/channels")
def channels_page(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's channels: kind, target, level, minimum severity; add and remove forms."""
    return _channels_page(request, caller[0])


@router.post("/alerts/channels/add")
def add_channel(request: Request, caller: Approver, sent: SentForm) -> HTMLResponse:
    """Add a channel of the lab (a TOTP step-up first); a webhook's signing key is shown once."""
    principal = caller[0]
    lab = _require_officer(request, principal, "channel:manage")
    try:
        level = int(_field(sent, "level", 2) or "1")
    except ValueError:
        raise InvalidInput("a channel's level is 1 to 9") from None
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        ch, secret = u.add_channel(
            lab,
            kind=_field(sent, "kind", 16),
            target=_field(sent, "target").strip(),
            level=level,
            min_severity=_field(sent, "min_severity", 16) or "low",
            at=utcnow(),
        )
    return _channels_page(request, principal, added=ch, secret=secret)


@router.post("/alerts/channels/{channel_id}/remove")
def remove_channel(request: Request, channel_id: str, caller: Approver) -> Response:
    """Stop a channel of the lab (a TOTP step-up first)."""
    principal = caller[0]
    lab = _require_officer(request, principal, "channel:manage")
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        u.remove_channel(lab, channel_id[:64])
    return _back("/alerts/channels")


@router.get("/alerts/{alert_id}")
def one(request: Request, alert_id: str, caller: Viewer) -> HTMLResponse:
    """One alert: its references, counts, deadline, level, and what happened to it."""
    principal = caller[0]
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        h = alerts.history(u, alert_id[:64])
    # A lab's alerts are answered by the lab; the vendor answers the platform's (the gateway refuses the rest).
    answers = principal.is_platform == (h.alert.tenant_id == PLATFORM)
    return render(request, "alerts_one.html", a=h.alert, steps=h.steps(), answers=answers)


@router.post("/alerts/{alert_id}/ack")
def ack(request: Request, alert_id: str, caller: Writer, sent: SentForm) -> Response:
    """Acknowledge: the account owns the alert; escalation stops."""
    with gateway(request).unit(caller[0], Purpose.MONITORING) as u:
        a = alerts.acknowledge(u, alert_id[:64], reason=_field(sent, "reason") or None)
    return _back(f"/alerts/{a.alert_id}")


@router.post("/alerts/{alert_id}/resolve")
def resolve(request: Request, alert_id: str, caller: Writer, sent: SentForm) -> Response:
    """Resolve, with a reason (required)."""
    with gateway(request).unit(caller[0], Purpose.MONITORING) as u:
        a = alerts.resolve(u, alert_id[:64], reason=_field(sent, "reason"))
    return _back(f"/alerts/{a.alert_id}")
