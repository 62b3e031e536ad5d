"""The lab's staff pages: the identity-vigilance queue, the quarantine, and enrolment.

- ``/identity/queue``: the messages whose INS or local identifier points to an identity with
  other traits, each with the traits received and the candidate identity's, side by side; the
  decision (attach, create, reject) is ``labvault.identity.service.resolve``, as the API's and the
  CLI's. The lab's biologists and technicians decide; its lab_admin reads the queue only (the
  policy's rule: the service refuses it the decision).
- ``/quarantine``: the lab's refused messages with the reason, format, feed and date; replay and
  drop as ``labvault quarantine`` does.
- ``/enrol``: public, opened with the one-time enrolment link ``/enrol#token=...`` (the token in
  the fragment, never sent in a URL; posted with the form): the password (twice), the
  confidentiality commitment, then, for the roles that need it, the authenticator (QR code and
  secret) and its first code (``labvault.accounts.service.enrol`` and ``confirm_enrolment``).

The traits are shown to the lab's own staff on the page; they never reach a log, an exception or
a reason (errors name what failed, never a value).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from labvault.access import Principal, Purpose, identities
from labvault.access.policy import allowed
from labvault.accounts import passwords
from labvault.accounts import service as accounts
from labvault.accounts.errors import AuthenticationFailed
from labvault.api.deps import client, gateway
from labvault.errors import InvalidInput, LabvaultError, NotFound
from labvault.identity import service as identity
from labvault.ingest import intake
from labvault.ingest.service import Ingestor, read
from labvault.web.errors import refuse
from labvault.web.pages import PublicForm, SentForm, Viewer, Writer, _login_page, _redirect, public_page, render

router = APIRouter(include_in_schema=False)

# The text the person accepts at enrolment; the service records its acceptance, with its reference
# (``commitment_ref``: "confidentiality commitment accepted at enrolment (GDPR Art. 28(3)(b))").
COMMITMENT_REF = "RGPD art. 28(3)(b)"
DONE = {"attached", "created", "rejected", "replayed", "refused", "dropped"}


def _lab(request: Request, principal: Principal, action: str) -> str:
    """The caller's own lab; a vendor account has none to manage here (the refusal of ``action``
    recorded in its own trail)."""
    if principal.is_platform:
        refuse(request, principal, action, "these pages are the lab's own staff's")
    return principal.tenant_id


def _test_mode(request: Request) -> bool:
    return bool(request.app.state.runtime.settings.test_mode)


# -- identity vigilance ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Traits:
    birth_name: str
    family_name: str
    given_names: str
    birth_date: Any
    sex: str
    ins: str | None


def _traits(p: Any) -> Traits:
    return Traits(p.strict_birth_name, p.family_name, p.given_names, p.birth_date, p.sex, p.nir)


def _received(raw: bytes | None, key: str | None, fmt: str, queue_id: str, test_mode: bool) -> Traits | None:
    """The traits the queued message carries (read again from its sealed bytes), or None."""
    if not raw or key is None:
        return None
    try:
        pieces = read(raw, file=f"identity-queue:{queue_id}", fmt=fmt, test_mode=test_mode)
    except (LabvaultError, ValueError):
        return None
    for p in pieces:
        if p.envelope is not None and p.envelope.key == key and p.envelope.mapped:
            return _traits(p.envelope.mapped[0].identity)
    return None


@router.get("/identity/queue")
def queue(request: Request, caller: Viewer) -> HTMLResponse:
    """The messages waiting, each with its conflict and the two identities side by side."""
    principal = caller[0]
    lab = _lab(request, principal, "identity:queue:read")
    test_mode = _test_mode(request)
    rows = []
    with gateway(request).unit(principal, Purpose.CARE) as u:
        for item in identity.queue(u, lab):
            _, key, raw = identities.get(u, lab, item.queue_id)
            candidate = None
            if item.candidate_id:
                try:
                    candidate = _traits(identity.show(u, lab, item.candidate_id).identity)
                except NotFound:
                    candidate = None
            rows.append((item, _received(raw, key, item.format, item.queue_id, test_mode), candidate))
    done = request.query_params.get("done")
    return render(
        request,
        "staff_queue.html",
        rows=rows,
        can_resolve=allowed(frozenset(principal.roles), "identity:resolve"),
        done=done if done in DONE else None,
    )


@router.post("/identity/queue/{queue_id}/resolve")
def resolve(request: Request, queue_id: str, caller: Writer, form: SentForm) -> Response:
    """Attach, create or reject: the same decision as ``POST .../identity/queue/{id}/resolve``."""
    principal = caller[0]
    lab = _lab(request, principal, "identity:resolve")
    action = str(form.get("action", ""))[:16]
    patient_id = str(form.get("patient_id", "")).strip()[:64] or None
    with gateway(request).unit(principal, Purpose.CARE) as u:
        done = identity.resolve(u, lab, queue_id[:64], action, patient_id=patient_id, test_mode=_test_mode(request))
    return _redirect(f"/identity/queue?done={done.item.status}")


# -- quarantine -----------------------------------------------------------------------------------


@router.get("/quarantine")
def quarantine(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's refused messages held: reason, format, feed, date."""
    principal = caller[0]
    lab = _lab(request, principal, "quarantine:read")
    with gateway(request).unit(principal, Purpose.CARE) as u:
        items = intake.listing(u, lab, status=intake.HELD)
    done = request.query_params.get("done")
    return render(
        request,
        "staff_quarantine.html",
        items=items,
        can_manage=allowed(frozenset(principal.roles), "quarantine:manage"),
        done=done if done in DONE else None,
    )


@router.post("/quarantine/{quarantine_id}/replay")
def replay(request: Request, quarantine_id: str, caller: Writer) -> Response:
    """Read the message again with the current readers; stored if it now passes (as the CLI's)."""
    principal = caller[0]
    lab = _lab(request, principal, "quarantine:manage")
    ing = Ingestor(gateway(request), principal, lab, feed="replay", test_mode=_test_mode(request))
    s = ing.replay(quarantine_id[:64])
    return _redirect("/quarantine?done=" + ("refused" if s.rejected else "replayed"))


@router.post("/quarantine/{quarantine_id}/drop")
def drop(request: Request, quarantine_id: str, caller: Writer) -> Response:
    """Erase the message's content; the record that it was refused and dropped stays."""
    principal = caller[0]
    lab = _lab(request, principal, "quarantine:manage")
    with gateway(request).unit(principal, Purpose.CARE) as u:
        intake.resolve(u, lab, quarantine_id[:64], intake.DROPPED)
    return _redirect("/quarantine?done=dropped")


# -- enrolment (public: the one-time link is the credential) --------------------------------------


def _secret_of(uri: str | None) -> str:
    """The otpauth URI's secret, for entering it by hand."""
    if not uri:
        return ""
    return parse_qs(urlsplit(uri).query).get("secret", [""])[0]


def _qr_src(svg: str | None) -> str:
    """The QR code as an image (CSP: img-src data:), never inline SVG."""
    return "data:image/svg+xml;base64," + base64.b64encode((svg or "").encode()).decode()


def _enrol_page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return _login_page(
        request,
        template,
        status,
        min_length=passwords.MIN_LENGTH,
        commitment_ref=COMMITMENT_REF,
        **context,
    )


def _totp_page(request: Request, token: str, e: accounts.Enrolment, status: int = 200, **kw: Any) -> HTMLResponse:
    return _enrol_page(
        request, "staff_enrol_totp.html", status, token=token, qr=_qr_src(e.qr_svg), secret=_secret_of(e.totp_uri), **kw
    )


@router.get("/enrol", dependencies=[Depends(public_page)])
def enrol_page(request: Request) -> HTMLResponse:
    """The enrolment form, always empty: the one-time token is never read from the URL.

    The invitation's link is ``/enrol#token=...``: a fragment is never sent to the server, so the
    token stays out of access logs, proxies and Referer headers; ``static/enrol.js`` copies it into
    the form's token field and clears it from the address bar (and the browser history). Without
    script, the person pastes the code from the invitation into that field. A token in the query
    string (``/enrol?token=...``, the old link) is ignored on purpose: accepting it would invite
    links that leak it. The form then posts the token (``POST /enrol``)."""
    return _enrol_page(request, "staff_enrol.html", token="")


@router.post("/enrol", dependencies=[Depends(public_page)])
def enrol(request: Request, form: PublicForm) -> Response:
    """The password and the commitment; then the authenticator for the roles that need one."""
    if form is None:
        return _enrol_page(request, "staff_enrol.html", 403, token="", error="form")
    token = form.get("token", "").strip()[:256]
    password = form.get("password", "")[:1024]
    addr, ua = client(request)
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            pending = accounts.pending_enrolment(u, token)
    except AuthenticationFailed:
        return _enrol_page(request, "staff_enrol.html", 401, token="", error="link")
    if pending is not None:  # the password is set; the authenticator awaits its first code: that step again
        return _totp_page(request, token, pending)
    if password != form.get("password2", "")[:1024]:
        return _enrol_page(request, "staff_enrol.html", 422, token=token, error="mismatch")
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            e = accounts.enrol(u, token, password, accept_commitment=form.get("commitment") == "accepted")
    except AuthenticationFailed:
        return _enrol_page(request, "staff_enrol.html", 401, token="", error="link")
    except InvalidInput as exc:
        return _enrol_page(request, "staff_enrol.html", 422, token=token, error="policy", reason=str(exc))
    if e.mfa_required:
        return _totp_page(request, token, e)
    return _enrol_page(request, "staff_enrol_done.html")


@router.post("/enrol/confirm", dependencies=[Depends(public_page)])
def enrol_confirm(request: Request, form: PublicForm) -> Response:
    """The authenticator's first code: MFA is on, the link is spent."""
    if form is None:
        return _enrol_page(request, "staff_enrol.html", 403, token="", error="form")
    token = form.get("token", "")[:256]
    addr, ua = client(request)
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            accounts.confirm_enrolment(u, token, form.get("code", "")[:16])
    except (AuthenticationFailed, InvalidInput):
        try:
            with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
                pending = accounts.pending_enrolment(u, token)
        except AuthenticationFailed:
            pending = None
        if pending is None:
            return _enrol_page(request, "staff_enrol.html", 401, token="", error="link")
        return _totp_page(request, token, pending, 401, error="code")
    return _enrol_page(request, "staff_enrol_done.html")
