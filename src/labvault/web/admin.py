"""The lab admin's pages: the lab's accounts (invite, roles, deactivate, re-enable), its service
accounts' tokens (mint, revoke), and the support grants (approve with a TOTP step-up, refuse or
revoke).

Only a lab's own ``lab_admin`` opens them, for its own lab (``principal.tenant_id``); every other
account, a vendor's included, is refused. Reads and writes go through the gateway with the
account service and grant functions the CLI and the JSON API use, so the gateway checks and
audits each of them again. Accounts are named by their person's name and e-mail, never an id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from labvault.access import Principal, Purpose, grants
from labvault.accounts import service
from labvault.api.deps import gateway
from labvault.errors import InvalidInput, NotFound
from labvault.web.errors import refuse
from labvault.web.pages import Approver, SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)

# The roles a lab_admin gives (the role 'service' is for service accounts, made apart).
LAB_ROLES = ("biologist", "technician", "lab_admin", "lab_dpo")
GRANT_ORDER = {"pending": 0, "active": 1, "expired": 2, "revoked": 3}


def _lab_of(request: Request, principal: Principal, action: str) -> str:
    """The lab whose admin this is; anyone else (a vendor account, another role) is refused, the
    refusal of ``action`` recorded in the caller's own trail."""
    if principal.is_platform or "lab_admin" not in principal.roles or not principal.tenant_id:
        refuse(request, principal, action, "these pages are for the lab's own lab_admin")
    return principal.tenant_id


def _form(form: FormData) -> dict[str, Any]:
    return {k: form.getlist(k) if k in ("roles", "scopes") else str(v)[:500] for k, v in form.items()}


def _back(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _state(a: dict) -> str:
    if a["active"]:
        return "active"
    return "suspended" if a["suspended"] else "deactivated"


# -- accounts -------------------------------------------------------------------------------------


def _accounts_page(request: Request, principal: Principal, status: int = 200, **shown: Any) -> HTMLResponse:
    lab = _lab_of(request, principal, "account:list")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        rows = service.list_accounts(u, lab)
        toks = service.list_tokens(u, lab)
    people = [dict(a, state=_state(a), role_list=a["roles"].split(",")) for a in rows if a["kind"] != "service"]
    services = [dict(a, state=_state(a)) for a in rows if a["kind"] == "service"]
    return render(
        request,
        "admin_accounts.html",
        status,
        lab=lab,
        people=sorted(people, key=lambda a: (a["name"].casefold(), a["email"])),
        services=services,
        tokens=toks,
        lab_roles=LAB_ROLES,
        scopes=service.TOKEN_SCOPES,
        max_days=service.TOKEN_MAX_DAYS,
        **shown,
    )


@router.get("/admin/accounts")
def accounts(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's accounts: name, e-mail, roles, state; its service accounts and their tokens."""
    return _accounts_page(request, caller[0])


@router.post("/admin/accounts/invite")
def invite(request: Request, caller: Writer, sent: SentForm) -> HTMLResponse:
    """A named account for one person of the lab: its one-time enrolment token is shown once."""
    principal = caller[0]
    lab = _lab_of(request, principal, "account:manage")
    form = _form(sent)
    role = str(form.get("role", ""))
    if role not in LAB_ROLES:
        raise InvalidInput("choose one of the lab's roles")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u, tenant_id=lab, name=str(form.get("name", "")), email=str(form.get("email", "")), roles=[role]
        )
    # The token in the link's fragment: a browser never sends it to the server (no access log,
    # proxy or Referer sees it); the enrolment page's script reads it (``web.staff.enrol_page``).
    link = f"{str(request.base_url).rstrip('/')}/enrol#token={new.enrolment_token}"
    return _accounts_page(request, principal, 201, invited=new, enrol_link=link)


@router.post("/admin/accounts/service")
def add_service(request: Request, caller: Writer, sent: SentForm) -> Response:
    """A token-only service account of the lab, for one purpose (a feed)."""
    principal = caller[0]
    lab = _lab_of(request, principal, "account:manage")
    form = _form(sent)
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        service.create_account(
            u,
            tenant_id=lab,
            name=str(form.get("name", "")),
            email=str(form.get("email", "")),
            roles=["service"],
            kind="service",
            purpose=str(form.get("purpose", "")).strip() or None,
        )
    return _back("/admin/accounts")


def _own_email(u: Any, lab: str, email: str) -> str:
    """The e-mail of an account of the admin's own lab, or ``NotFound`` with one neutral answer:
    another lab cannot learn from these forms whether an address has an account elsewhere."""
    wanted = email.strip().lower()
    if not any(a["email"].lower() == wanted for a in service.list_accounts(u, lab)):
        raise NotFound("no account with this e-mail address in your lab")
    return email


@router.post("/admin/accounts/roles")
def change_roles(request: Request, caller: Writer, sent: SentForm) -> Response:
    principal = caller[0]
    lab = _lab_of(request, principal, "account:manage")
    form = _form(sent)
    roles = [str(r) for r in form.get("roles", [])]
    if not roles or not set(roles) <= set(LAB_ROLES):
        raise InvalidInput("choose at least one of the lab's roles")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        service.set_roles(u, _own_email(u, lab, str(form.get("email", ""))), roles)
    return _back("/admin/accounts")


@router.post("/admin/accounts/deactivate")
def deactivate(request: Request, caller: Writer, sent: SentForm) -> Response:
    """Deactivate: every session and token of the account stops at once."""
    principal = caller[0]
    lab = _lab_of(request, principal, "account:manage")
    form = _form(sent)
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        service.deactivate(u, _own_email(u, lab, str(form.get("email", ""))))
    return _back("/admin/accounts")


@router.post("/admin/accounts/enable")
def enable(request: Request, caller: Writer, sent: SentForm) -> Response:
    """Re-enable a deactivated or suspended account of the lab."""
    principal = caller[0]
    lab = _lab_of(request, principal, "account:manage")
    form = _form(sent)
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        service.reactivate(u, _own_email(u, lab, str(form.get("email", ""))))
    return _back("/admin/accounts")


@router.post("/admin/tokens")
def mint_token(request: Request, caller: Writer, sent: SentForm) -> HTMLResponse:
    """A token for one of the lab's service accounts, shown once (as ``POST /api/v1/tokens``
    with ``email``: only a service account, only by its lab's lab_admin, from a session)."""
    principal = caller[0]
    _lab_of(request, principal, "token:manage")
    form = _form(sent)
    try:
        days = int(str(form.get("days", "")))
    except ValueError:
        raise InvalidInput("a token lasts a whole number of days") from None
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        _, token = service.create_token(
            u, str(form.get("email", "")), scopes=[str(s) for s in form.get("scopes", [])], days=days
        )
    return _accounts_page(request, principal, 201, minted=token)


@router.post("/admin/tokens/revoke")
def revoke_token(request: Request, caller: Writer, sent: SentForm) -> Response:
    principal = caller[0]
    _lab_of(request, principal, "token:manage")
    form = _form(sent)
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        service.revoke_token(u, str(form.get("token_id", "")))
    return _back("/admin/accounts")


# -- support grants -------------------------------------------------------------------------------


def _when(g: grants.Grant) -> datetime:
    at = g.requested_at or datetime.min
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


@router.get("/admin/grants")
def grants_page(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's support grants, pending first, then newest first: who asks (name, e-mail), the
    ticket, the reason, the scope, the duration, the state."""
    principal = caller[0]
    lab = _lab_of(request, principal, "grant:list")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        found = grants.list_grants(u, lab)
    found.sort(key=lambda g: _when(g), reverse=True)
    found.sort(key=lambda g: GRANT_ORDER.get(g.state, 9))
    return render(request, "admin_grants.html", lab=lab, grants=found)


@router.post("/admin/grants/{grant_id}/approve")
def approve(request: Request, grant_id: str, caller: Approver) -> Response:
    """Approve a pending grant: needs a TOTP code checked within the last minutes (step-up)."""
    principal = caller[0]
    lab = _lab_of(request, principal, "grant:approve")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        grants.approve_grant(u, lab, grant_id[:64])
    return _back("/admin/grants")


@router.post("/admin/grants/{grant_id}/revoke")
def revoke(request: Request, grant_id: str, caller: Writer) -> Response:
    """Refuse a pending grant, or end an approved one now."""
    principal = caller[0]
    lab = _lab_of(request, principal, "grant:revoke")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        grants.revoke_grant(u, lab, grant_id[:64])
    return _back("/admin/grants")
