"""Pages for outside reports (H2, H4) and the lab's explained accesses (G5, H1).

``/security/advisories``: the vendor's security team's register (list, add, open one, assess,
close); the platform admin reads it; any other account is refused. ``/dpo/accesses``: a lab's
DPO or admin reviews the day's accesses its relations do not explain, and sees the outside reports
the vendor decided to tell the lab of; vendor accounts are refused (a lab's accesses are the lab's).
Everything goes through the gateway (``labvault.monitoring``), which authorises and audits again.
"""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labvault.access import Principal, Purpose
from labvault.api.deps import gateway
from labvault.errors import InvalidInput
from labvault.monitoring import advisories, explained
from labvault.web.errors import refuse
from labvault.web.pages import SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)
SECURITY = frozenset({"security_officer", "platform_admin"})
REVIEWERS = frozenset({"lab_dpo", "lab_admin"})
SOURCES = ("anssi", "cert", "lab-it", "researcher", "press", "police", "employee", "other")
SEVERITIES = ("critical", "high", "medium", "low")


def _security(request: Request, principal: Principal, action: str) -> None:
    if not principal.is_platform or not SECURITY & set(principal.roles):
        refuse(request, principal, action, "this page is for the vendor's security team")


def _reviewer(request: Request, principal: Principal) -> str:
    if principal.is_platform or not REVIEWERS & set(principal.roles):
        refuse(request, principal, "access:review", "this page is for the lab's data protection officer and admin")
    return principal.tenant_id


def _field(sent: SentForm, name: str, limit: int = 20_000) -> str:
    return str(sent.get(name) or "")[:limit]


@router.get("/security/advisories")
def register(request: Request, caller: Viewer) -> HTMLResponse:
    """The register: every outside report, its state, owner, deadline and level."""
    principal = caller[0]
    _security(request, principal, "advisory:read")
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        rows = advisories.listing(u)
    return render(
        request,
        "advisories_list.html",
        rows=rows,
        sources=SOURCES,
        severities=SEVERITIES,
        manage="security_officer" in principal.roles,
    )


@router.post("/security/advisories")
def add(request: Request, caller: Writer, sent: SentForm) -> Response:
    principal = caller[0]
    _security(request, principal, "advisory:manage")
    labs = [x.strip() for x in _field(sent, "labs", 2000).split(",") if x.strip()]
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        a = advisories.add(
            u,
            source=_field(sent, "source", 32),
            severity=_field(sent, "severity", 16),
            owner=_field(sent, "owner", 320) or principal.account_id,
            summary=_field(sent, "summary"),
            reference=_field(sent, "reference", 200) or None,
            labs=labs,
        )
    return RedirectResponse(f"/security/advisories/{a.advisory_id}", status_code=303)


@router.get("/security/advisories/{advisory_id}")
def one(request: Request, caller: Viewer, advisory_id: str) -> HTMLResponse:
    """One report with its text opened (audited), and the forms to assess and close it."""
    principal = caller[0]
    _security(request, principal, "advisory:read")
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        a = advisories.show(u, advisory_id[:64])
    return render(request, "advisories_one.html", a=a, manage="security_officer" in principal.roles)


@router.post("/security/advisories/{advisory_id}/assess")
def assess(request: Request, caller: Writer, sent: SentForm, advisory_id: str) -> Response:
    principal = caller[0]
    _security(request, principal, "advisory:manage")
    notify = _field(sent, "notify_labs", 8)
    if notify not in ("yes", "no"):
        raise InvalidInput("decide whether the labs are told")
    labs = [x.strip() for x in _field(sent, "labs", 2000).split(",") if x.strip()]
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        a = advisories.assess(
            u,
            advisory_id[:64],
            breach=_field(sent, "breach", 16),
            reasoning=_field(sent, "reasoning"),
            notify_labs=notify == "yes",
            labs=labs or None,
        )
    return RedirectResponse(f"/security/advisories/{a.advisory_id}", status_code=303)


@router.post("/security/advisories/{advisory_id}/close")
def close(request: Request, caller: Writer, sent: SentForm, advisory_id: str) -> Response:
    principal = caller[0]
    _security(request, principal, "advisory:manage")
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        a = advisories.close(u, advisory_id[:64])
    return RedirectResponse(f"/security/advisories/{a.advisory_id}", status_code=303)


@router.get("/dpo/accesses")
def accesses(request: Request, caller: Viewer, day: str = "") -> HTMLResponse:
    """The lab's day: accesses explained and to review per account, the unexplained ones listed,
    and the outside reports the vendor told the lab of."""
    principal = caller[0]
    lab = _reviewer(request, principal)
    try:
        chosen = date.fromisoformat(day) if day else None
    except ValueError:
        raise InvalidInput("a day is given as a date") from None
    with gateway(request).unit(principal, Purpose.MONITORING) as u:
        d = explained.digest(u, lab, chosen or explained.today(u, lab))
        told = advisories.for_lab(u, lab)
    return render(request, "advisories_accesses.html", d=d, told=told)
