"""The lab's own pages about what leaves it: its migrations with their plan (counts and fields) to
approve, signed by a lab signer with their own key *in the browser* (WebCrypto Ed25519: the private
key file is read by the page's script and never sent; only the public key and the signature are),
or by pasting the signature ``labvault migrate approve --signer-key`` would make; its signers and
the instructions it gave. Read and written through the gateway under the person's own account."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labvault.access import Principal, Purpose
from labvault.api.deps import gateway
from labvault.crypto.signing import canonical
from labvault.web.errors import refuse
from labvault.web.pages import Approver, SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)
LAB_OFFICERS = frozenset({"lab_admin", "lab_dpo"})


def _require(request: Request, principal: Principal, action: str) -> None:
    """These pages are a lab's own admin's and DPO's: never a vendor account's (the refusal of
    ``action`` recorded in the caller's own trail)."""
    if principal.is_platform or not LAB_OFFICERS & set(principal.roles):
        refuse(request, principal, action, "this page is for the lab's administrator and DPO")


def _require_admin(request: Request, principal: Principal, action: str, reason: str) -> None:
    """The lab administrator's own acts (approving, giving, registering): the DPO reads only."""
    _require(request, principal, action)
    if "lab_admin" not in principal.roles:
        refuse(request, principal, action, reason)


@router.get("/lab/migrations")
def migrations(request: Request, caller: Viewer) -> HTMLResponse:
    from labvault.migration import service as migration

    principal = caller[0]
    _require(request, principal, "migration:read")
    lab = principal.tenant_id
    rows: list[dict[str, Any]] = []
    with gateway(request).unit(principal, Purpose.EXPORT) as u:
        for job in migration.status(u, lab):
            record = migration.approval_record(job)
            rows.append(
                {
                    "job": job.public(),
                    "record": canonical(record).decode(),
                    "record_b64": base64.b64encode(canonical(record)).decode(),
                    "lab_approved": any(a.get("side") == "lab" for a in job.approvals),
                }
            )
    can_approve = "lab_admin" in principal.roles  # the DPO reads; approving needs a TOTP step-up
    return render(
        request, "lab_migrations.html", rows=rows, error=request.query_params.get("error"), can_approve=can_approve
    )


@router.post("/lab/migrations/{migration_id}/approve")
def approve(request: Request, migration_id: str, caller: Approver, form: SentForm) -> Response:
    """A lab signer's approval: the public key and the signature of the approval record, made in
    the browser or with the CLI; checked against the lab's current signers by the migration service."""
    from labvault.errors import LabvaultError
    from labvault.migration import service as migration

    _require_admin(request, caller[0], "migration:approve", "approving a migration is the lab administrator's")
    public_key = str(form.get("public_key", "")).strip()[:128]
    signature = str(form.get("signature", "")).strip()[:256]
    if not public_key or not signature:
        return RedirectResponse("/lab/migrations?error=missing", status_code=303)
    try:
        with gateway(request).unit(caller[0], Purpose.EXPORT) as u:
            migration.approve_lab(u, caller[0].tenant_id, migration_id, public_key=public_key, signature=signature)
    except LabvaultError:
        return RedirectResponse("/lab/migrations?error=signature", status_code=303)
    return RedirectResponse("/lab/migrations", status_code=303)


@router.get("/lab/instructions")
def instructions_page(request: Request, caller: Viewer) -> HTMLResponse:
    """A draft instruction to check before a lab signer signs it."""
    _require(request, caller[0], "instruction:read")
    return render(request, "lab_instructions.html", draft="", checked=None, error=None)


@router.post("/lab/instructions/check")
def check_draft(request: Request, caller: Writer, form: SentForm) -> HTMLResponse:
    """Check a draft (shape, lab, fields, validity) and show the exact bytes a lab signer signs:
    nothing is kept; the signer signs in the browser with their own key, or with the CLI."""
    import json

    from labvault.errors import LabvaultError
    from labvault.instructions import document

    principal = caller[0]
    _require(request, principal, "instruction:read")
    draft = str(form.get("draft", ""))[:65536]
    try:
        instr = document.from_record(json.loads(draft))
        if instr.tenant != principal.tenant_id:
            raise document.WrongTenant("instruction: it is for another lab")
    except ValueError:
        return render(request, "lab_instructions.html", 400, draft=draft, checked=None, error="not JSON")
    except LabvaultError as exc:
        return render(request, "lab_instructions.html", 400, draft=draft, checked=None, error=str(exc))
    record = document.to_record(instr)
    body = canonical(record)
    checked = {
        "id": instr.id,
        "kind": instr.kind,
        "text": json.dumps(record, indent=2, ensure_ascii=False, sort_keys=True),
        "record_json": body.decode(),
        "record_b64": base64.b64encode(body).decode(),
    }
    return render(request, "lab_instructions.html", draft=draft, checked=checked, error=None)


@router.post("/lab/instructions/receive")
def receive_signed(request: Request, caller: Approver, form: SentForm) -> Response:
    """A signed instruction given to the platform: verified (signature, current signer, lab,
    validity) and kept, as ``POST /api/v1/tenants/{tenant}/instructions`` does."""
    import json
    from datetime import UTC, datetime

    from labvault.errors import LabvaultError
    from labvault.instructions import signers

    principal = caller[0]
    _require_admin(request, principal, "instruction:receive", "giving an instruction is the lab administrator's")
    try:
        doc = {
            "instruction": json.loads(str(form.get("instruction", ""))[:65536]),
            "signature": str(form.get("signature", "")).strip()[:256],
            "signer_public_key": str(form.get("public_key", "")).strip()[:128],
        }
        with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
            signers.receive(u, principal.tenant_id, doc, datetime.now(UTC))
    except (ValueError, LabvaultError) as exc:
        reason = str(exc) if isinstance(exc, LabvaultError) else "not JSON"
        return render(request, "lab_instructions.html", 400, draft="", checked=None, error=reason)
    return RedirectResponse("/lab/signers", status_code=303)


def _signers_page(request: Request, principal: Principal, status: int = 200, **shown: Any) -> HTMLResponse:
    from labvault.instructions import signers

    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        keys = signers.list_signers(u, principal.tenant_id)
        received = signers.list_instructions(u, principal.tenant_id)
    can_manage = "lab_admin" in principal.roles  # the DPO reads; adding and revoking need a step-up
    return render(request, "lab_signers.html", status, keys=keys, received=received, can_manage=can_manage, **shown)


@router.get("/lab/signers")
def signers_page(request: Request, caller: Viewer) -> HTMLResponse:
    _require(request, caller[0], "signer:list")
    return _signers_page(request, caller[0])


@router.post("/lab/signers/add")
def add_signer(request: Request, caller: Approver, form: SentForm) -> Response:
    """Register a signer, as ``labvault signer add`` does: an active, named account of this lab
    (by its e-mail) and the public half of an Ed25519 key the signer made on their own machine or
    in this browser. Always the caller's own lab: the form names no lab. A malformed key or an
    e-mail that is no account of the lab is refused with its one-line reason, nothing written."""
    from labvault.instructions import signers

    principal = caller[0]
    _require_admin(request, principal, "signer:manage", "registering a signer is the lab administrator's")
    email = str(form.get("email", "")).strip()[:320]
    public_key = str(form.get("public_key", "")).strip()[:128]
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, principal.tenant_id, email=email, public_key=public_key)
    return RedirectResponse("/lab/signers", status_code=303)


@router.post("/lab/signers/{signer_id}/revoke")
def revoke_signer(request: Request, signer_id: str, caller: Approver) -> Response:
    """Revoke a signer, as ``labvault signer revoke`` does: instructions signed with its key are
    refused from now on; what it signed before stays verifiable."""
    from labvault.instructions import signers

    principal = caller[0]
    _require_admin(request, principal, "signer:manage", "revoking a signer is the lab administrator's")
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, principal.tenant_id, signer_id[:64])
    return RedirectResponse("/lab/signers", status_code=303)
