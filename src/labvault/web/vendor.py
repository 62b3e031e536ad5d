"""The vendor's pages: operators see the migrations and their state; security officers see each
lab's audit verification, refused operations and suspended accounts. References and counts only:
no page here shows a personal value, and each read goes through the gateway under the vendor
account's own roles (a lab's data stays out of reach)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from labvault.access import Principal, Purpose
from labvault.api.deps import gateway
from labvault.crypto.keys import PLATFORM
from labvault.errors import LabvaultError
from labvault.ids import utcnow
from labvault.web.errors import refuse
from labvault.web.pages import Viewer, render

router = APIRouter(include_in_schema=False)
OPERATORS = frozenset({"operator", "platform_admin"})
SECURITY = frozenset({"security_officer", "platform_admin"})


def _require(request: Request, principal: Principal, roles: frozenset[str], action: str) -> None:
    """The vendor's own pages: a lab's account, or a vendor role the page is not for, is refused
    (the refusal of ``action`` recorded in the caller's own trail)."""
    if not principal.is_platform or not roles & set(principal.roles):
        refuse(request, principal, action, "this page is for the vendor's " + " or ".join(sorted(roles)) + " accounts")


@router.get("/vendor/migrations")
def migrations(request: Request, caller: Viewer) -> HTMLResponse:
    """Every lab's migrations and exports: state, kind, deadline, planned counts."""
    from labvault.migration import service as migration

    principal = caller[0]
    _require(request, principal, OPERATORS, "migration:read")
    rows: list[dict[str, Any]] = []
    with gateway(request).unit(principal, Purpose.EXPORT) as u:
        labs = u.list_tenants()
        for lab in labs:
            try:
                jobs = migration.status(u, lab.id)
            except LabvaultError:
                continue
            rows += [{"lab": lab, "job": job.public()} for job in jobs]
    return render(request, "vendor_migrations.html", rows=rows)


@router.get("/vendor/security")
def security(request: Request, caller: Viewer) -> HTMLResponse:
    """Each lab's audit chain verified now with its last checkpoint, the refused operations of the
    last seven days and the suspended accounts: references and counts; only the vendor's own staff
    are named (a lab's people are the lab's)."""
    from labvault.accounts import service as accounts
    from labvault.audit import service as audit

    principal = caller[0]
    _require(request, principal, SECURITY, "audit:verify")
    since = utcnow() - timedelta(days=7)
    labs_out: list[dict[str, Any]] = []
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        labs = [lab for lab in u.list_tenants() if lab.status == "active"]
        # A lab's people are the lab's: their names stay out of the vendor's pages. Only the
        # vendor's own staff are named; a lab's account is a reference (its pseudonymous id).
        vendor_names = {a["account_id"]: a["name"] for a in accounts.list_accounts(u, PLATFORM)}
        vendor_names[principal.account_id] = principal.name
        for lab in labs:
            report = audit.verify_log(u, lab.id)
            last = audit.last_checkpoint(u, lab.id)
            people = accounts.list_accounts(u, lab.id)
            refused = [e for e in audit.search(u, lab.id, since=since, limit=5000) if e.get("outcome") == "denied"]
            labs_out.append(
                {
                    "lab": lab,
                    "ok": report.ok,
                    "problem": report.problem,
                    "events": report.events,
                    "checkpoints": report.checkpoints,
                    "last": last,
                    "refused": [
                        {
                            "at": e.get("at"),
                            "vendor": e.get("actor", "") in vendor_names,
                            "actor": vendor_names.get(e.get("actor", ""), e.get("actor", "")),
                            "action": e["action"],
                        }
                        for e in refused[-20:]
                    ],
                    "refused_count": len(refused),
                    "suspended": [
                        {"account": a["account_id"], "at": a["suspended"]["at"]} for a in people if a.get("suspended")
                    ],
                }
            )
    return render(request, "vendor_security.html", labs=labs_out)
