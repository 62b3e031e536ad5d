"""The pages: sign-in, patient search, the patient page.

Each route declares its access as the API's do (``labvault.api.deps.Access``): the sign-in pages
are public; every other page needs a logged-in session (a bearer token opens no page) and sends an
anonymous or expired visitor to ``/login``. A form posts a CSRF field: before sign-in, the value of
a random ``lv_form`` cookie; after, the session's CSRF token. Reads and writes go through the
gateway, under the caller's own account, and are audited there.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from labvault.access import Principal, Purpose
from labvault.access.records import PREFIX_LETTERS
from labvault.accounts import service
from labvault.accounts.errors import AuthenticationFailed, LockedOut
from labvault.api.deps import CSRF_COOKIE, PREAUTH_COOKIE, SESSION_COOKIE, Access, client, gateway
from labvault.crypto import tokens
from labvault.crypto.blind import normalise_name
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import stored_utc
from labvault.interop.view import result_lines
from labvault.web import charts, i18n
from labvault.web.errors import LoginRequired, StepUpNeeded

FORM_COOKIE = "lv_form"
LANG_COOKIE = "lv_lang"
# Scripts and styles from this origin only: no inline script or style, no eval.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {
    "htmx.min.js": "text/javascript",
    "app.css": "text/css",
    "sign.js": "text/javascript",
    "keygen.js": "text/javascript",
    "enrol.js": "text/javascript",
    "countdown.js": "text/javascript",
}
LAB_ZONE = ZoneInfo("Europe/Paris")

env = Environment(
    loader=PackageLoader("labvault.web", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # templates are package files: never re-read (a stat per template per page)
)
router = APIRouter(include_in_schema=False)

# The menu: (path, label, roles that see it). A part of the interface adds its entries; an entry
# whose page is not served is left out (``install``).
NAV: list[tuple[str, str, frozenset[str]]] = [
    ("/patients", "Patients", frozenset({"biologist", "technician", "lab_admin"})),
    ("/identity/queue", "Identitovigilance", frozenset({"biologist", "technician", "lab_admin"})),
    ("/quarantine", "Quarantaine", frozenset({"biologist", "technician", "lab_admin"})),
    ("/work/requests/new", "Nouvelle demande", frozenset({"biologist", "technician", "lab_admin"})),
    ("/work/reception", "Réception", frozenset({"biologist", "technician"})),
    ("/work/worklist", "Liste de travail", frozenset({"biologist", "technician"})),
    ("/work/validation", "Validation biologique", frozenset({"biologist"})),
    ("/admin/accounts", "Comptes", frozenset({"lab_admin"})),
    ("/admin/grants", "Accès du support", frozenset({"lab_admin"})),
    ("/dpo/audit", "Journal d'accès", frozenset({"lab_dpo", "lab_admin"})),
    ("/dpo/patient-access", "Accès à un patient", frozenset({"lab_dpo", "lab_admin"})),
    ("/dpo/chain", "Intégrité du journal", frozenset({"lab_dpo", "lab_admin"})),
    ("/dpo/accesses", "Accès à expliquer", frozenset({"lab_dpo", "lab_admin"})),
    ("/lab/migrations", "Migrations du laboratoire", frozenset({"lab_admin", "lab_dpo"})),
    ("/lab/instructions", "Instructions", frozenset({"lab_admin", "lab_dpo"})),
    ("/lab/signers", "Signataires", frozenset({"lab_admin", "lab_dpo"})),
    ("/vendor/migrations", "Migrations", frozenset({"operator", "platform_admin"})),
    ("/vendor/security", "Sécurité", frozenset({"security_officer", "platform_admin"})),
    ("/security/advisories", "Signalements extérieurs", frozenset({"security_officer", "platform_admin"})),
    ("/incidents", "Incidents", frozenset({"lab_admin", "lab_dpo", "security_officer", "platform_admin"})),
    ("/breach/analyze", "Analyse de fuite", frozenset({"lab_dpo", "security_officer"})),
    ("/alerts", "Alertes", frozenset({"lab_admin", "lab_dpo", "security_officer", "platform_admin"})),
]


def _mark(access: Access):
    def mark(fn):
        fn.access = access
        return fn

    return mark


@_mark(Access.PUBLIC)
async def public_page() -> None:
    """A public page (sign-in, static files)."""


async def _session(request: Request) -> tuple[Principal, str]:
    """The session behind the cookie, checked in a worker thread (a database read never runs on
    the event loop, which serves every other connection meanwhile)."""
    return await run_in_threadpool(_session_check, request)


def _session_check(request: Request) -> tuple[Principal, str]:
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise LoginRequired
    addr, ua = client(request)
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            principal = service.principal_for_session(u, secret, addr=addr, user_agent=ua)
    except AuthenticationFailed:
        raise LoginRequired from None
    request.state.principal = principal  # the access log names the actor
    return principal, secret


@_mark(Access.READ)
async def page_reader(request: Request) -> tuple[Principal, str]:
    """A page to read: a logged-in session."""
    return await _session(request)


async def _writer(request: Request) -> tuple[Principal, str]:
    principal, secret = await _session(request)
    form = await request.form()
    request.state.form = form
    sent = str(form.get("csrf", ""))
    if not tokens.digests_equal(sent, service.csrf_token(secret)):
        raise AccessDenied("missing or wrong CSRF token")
    return principal, secret


@_mark(Access.SESSION)
async def page_writer(request: Request) -> tuple[Principal, str]:
    """A form that changes something: a logged-in session and its CSRF token in the form."""
    return await _writer(request)


@_mark(Access.STEP_UP)
async def page_approver(request: Request) -> tuple[Principal, str]:
    """An approval: a logged-in session, its CSRF token in the form, and a TOTP code checked within
    ``service.STEP_UP_WINDOW`` (else the person is sent to ``/step-up`` and back)."""
    principal, secret = await _writer(request)
    await run_in_threadpool(_stepped_up, request, principal, secret)
    return principal, secret


def _stepped_up(request: Request, principal: Principal, secret: str) -> None:
    try:
        with gateway(request).unit(principal, Purpose.AUTHENTICATION) as u:
            service.require_step_up(u, secret)
    except AccessDenied:
        raise StepUpNeeded from None


async def sent_form(request: Request) -> FormData:
    """The posted form, read on the event loop (``Writer`` has read it already), so that a handler
    can be a plain function: its database work then runs in a worker thread, never on the loop
    that serves every other connection."""
    return await request.form()


async def public_form(request: Request) -> dict[str, str] | None:
    """A public form (sign-in, enrolment) with its CSRF token checked against its cookie: the
    fields, or None when the token is missing or wrong."""
    try:
        return await _public_form(request)
    except AccessDenied:
        return None


Viewer = Annotated[tuple[Principal, str], Depends(page_reader)]
Writer = Annotated[tuple[Principal, str], Depends(page_writer)]
Approver = Annotated[tuple[Principal, str], Depends(page_approver)]
SentForm = Annotated[FormData, Depends(sent_form)]
PublicForm = Annotated[dict[str, str] | None, Depends(public_form)]


# -- rendering ------------------------------------------------------------------------------------


def _lang(request: Request) -> str:
    return i18n.language(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = _lang(request)
    tr = i18n.translations(lang)
    principal = getattr(request.state, "principal", None)
    secret = request.cookies.get(SESSION_COOKIE)
    served: frozenset[str] = getattr(request.app.state, "page_paths", frozenset())
    menu = [
        (href, tr.gettext(label))
        for href, label, roles in NAV
        if principal is not None and href in served and roles & set(principal.roles)
    ]
    html = env.get_template(name).render(
        _=tr.gettext,
        menu=menu,
        lang=lang,
        me=principal,
        csrf=service.csrf_token(secret) if principal is not None and secret else "",
        number=lambda text: i18n.number(text, lang),
        label=lambda code: i18n.label(code, lang),
        day=lambda v: i18n.day(v, lang, LAB_ZONE),
        moment=lambda v: i18n.moment(v, lang, LAB_ZONE),
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    response.headers["content-security-policy"] = PAGE_CSP
    if request.query_params.get("lang") in i18n.LANGUAGES:
        _cookie(response, request, LANG_COOKIE, lang, http_only=True, max_age=365 * 86400)
    return response


def _cookie(response: Response, request: Request, name: str, value: str, *, http_only: bool, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=http_only,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _local(url: str | None) -> str:
    """Where to go after sign-in: a path of this site only (never another origin)."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return "/patients"
    return url


def install(app: FastAPI, *routers: APIRouter) -> None:
    """The pages (these and each part's ``routers``) and their handlers on ``app``."""
    for r in (router, *routers):
        app.include_router(r)
    app.state.page_paths = frozenset(
        getattr(r, "path", "") for part in (router, *routers) for r in part.routes if "GET" in getattr(r, "methods", ())
    )
    app.state.page_error = lambda request, status, reason: (
        page_error(request, status, reason) if is_page(request) else None
    )

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return _redirect("/login?next=" + quote(request.url.path, safe="/"))

    @app.exception_handler(StepUpNeeded)
    async def step_up_needed(request: Request, exc: StepUpNeeded) -> Response:
        # Back, after the code, to the form's ``next`` or else the page that lists what is approved
        # (``/admin/grants/{id}/approve`` -> ``/admin/grants``): pages send no Referer.
        form = getattr(request.state, "form", None) or {}
        back = str(form.get("next") or "") or "/" + "/".join(request.url.path.split("/")[1:3])
        return _redirect("/step-up?next=" + quote(_local(back), safe="/"))


# -- static files ---------------------------------------------------------------------------------


@router.get("/static/{name}", dependencies=[Depends(public_page)])
def static(name: str) -> Response:
    kind = STATIC_FILES.get(name)
    if kind is None:
        return Response("not found", status_code=404, media_type="text/plain")
    response = Response((STATIC / name).read_bytes(), media_type=kind)
    response.headers["cache-control"] = "public, max-age=3600"
    return response


# -- sign-in --------------------------------------------------------------------------------------


def _form_token(request: Request) -> str:
    return request.cookies.get(FORM_COOKIE) or tokens.new_token()


def _login_page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    token = _form_token(request)
    response = render(
        request, template, status, form_token=token, next=_local(request.query_params.get("next")), **context
    )
    _cookie(response, request, FORM_COOKIE, token, http_only=True, max_age=900)
    return response


async def _public_form(request: Request) -> dict[str, str]:
    form = await request.form()
    sent = str(form.get("csrf", ""))
    if not sent or not tokens.digests_equal(sent, request.cookies.get(FORM_COOKIE, "")):
        raise AccessDenied("missing or wrong CSRF token")
    return {k: str(v) for k, v in form.items()}


@router.get("/", dependencies=[Depends(public_page)])
def home(request: Request) -> Response:
    return _redirect("/patients" if request.cookies.get(SESSION_COOKIE) else "/login")


@router.get("/login", dependencies=[Depends(public_page)])
def login_page(request: Request) -> HTMLResponse:
    return _login_page(request, "login.html")


@router.post("/login", dependencies=[Depends(public_page)])
def login(request: Request, form: PublicForm) -> Response:
    if form is None:
        return _login_page(request, "login.html", 403, error="form")
    addr, ua = client(request)
    target = _local(form.get("next"))
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            result = service.login(
                u, form.get("email", "")[:320], form.get("password", "")[:1024], addr=addr, user_agent=ua
            )
    except LockedOut:
        return _login_page(request, "login.html", 429, error="locked")
    except (AuthenticationFailed, InvalidInput):
        return _login_page(request, "login.html", 401, error="credentials")
    if result.mfa_pending:
        response = _redirect("/login/totp?next=" + quote(target, safe="/"))
        _cookie(response, request, PREAUTH_COOKIE, result.session, http_only=True, max_age=300)
        return response
    return _start(request, result.session, target)


def _start(request: Request, secret: str, target: str) -> Response:
    response = _redirect(target)
    ttl = int(service.SESSION_TTL.total_seconds())
    _cookie(response, request, SESSION_COOKIE, secret, http_only=True, max_age=ttl)
    _cookie(response, request, CSRF_COOKIE, service.csrf_token(secret), http_only=False, max_age=ttl)
    response.delete_cookie(PREAUTH_COOKIE, path="/")
    response.delete_cookie(FORM_COOKIE, path="/")
    return response


@router.get("/login/totp", dependencies=[Depends(public_page)])
def totp_page(request: Request) -> Response:
    if not request.cookies.get(PREAUTH_COOKIE):
        return _redirect("/login")
    return _login_page(request, "totp.html")


@router.post("/login/totp", dependencies=[Depends(public_page)])
def totp(request: Request, form: PublicForm) -> Response:
    if form is None:
        return _login_page(request, "totp.html", 403, error="form")
    pre = request.cookies.get(PREAUTH_COOKIE)
    if not pre:
        return _redirect("/login")
    addr, ua = client(request)
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            result = service.verify_mfa(u, pre, form.get("code", "")[:16], addr=addr, user_agent=ua)
    except LockedOut:
        return _login_page(request, "totp.html", 429, error="locked")
    except (AuthenticationFailed, InvalidInput):
        return _login_page(request, "totp.html", 401, error="code")
    return _start(request, result.session, _local(form.get("next")))


@router.post("/logout")
def logout(request: Request, caller: Writer) -> Response:
    with gateway(request).auth_unit() as u:
        service.logout(u, caller[1])
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/step-up")
def step_up_page(request: Request, caller: Viewer) -> HTMLResponse:
    return render(request, "step_up.html", next=_local(request.query_params.get("next")))


@router.post("/step-up")
def step_up(request: Request, caller: Writer, form: SentForm) -> Response:
    """A TOTP code again: approvals are accepted for the next few minutes. A wrong code counts as a
    failed login."""
    addr, ua = client(request)
    try:
        with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
            service.step_up(u, caller[1], str(form.get("code", ""))[:16], addr=addr, user_agent=ua)
    except LockedOut:
        return render(request, "step_up.html", 429, error="locked", next=_local(str(form.get("next", ""))))
    except (AuthenticationFailed, InvalidInput):
        return render(request, "step_up.html", 401, error="code", next=_local(str(form.get("next", ""))))
    return _redirect(_local(str(form.get("next", ""))))


# -- lab staff ------------------------------------------------------------------------------------


def _purpose(p: Principal) -> Purpose:
    return Purpose.SUPPORT if p.is_platform else Purpose.CARE


@router.get("/patients")
def patients(request: Request, caller: Viewer) -> HTMLResponse:
    """The search form. A search is posted (``POST /patients``): a NIR, a name or a birth date
    never travels in a URL (browser history, proxies' logs)."""
    return render(request, "patients.html", found=[], error=None, searched=False, form={})


@router.post("/patients")
def search(request: Request, caller: Writer, q: SentForm) -> HTMLResponse:
    """Search: by NIR or INS (exact), or by the start of the family name (birth or used name, two
    letters at least), optionally the start of the given name, and the birth date (required).
    A refused search is a 400 page naming the field, never the value; to htmx, the same message
    in a 200 fragment (htmx swaps no error response)."""
    principal = caller[0]
    nir = str(q.get("nir") or "").strip()[:32]
    family, given, born = (str(q.get(k) or "").strip()[:200] for k in ("family_name", "given_name", "birth_date"))
    found: list[Any] = []
    error: str | None = None
    searched = bool(nir or family or given or born)
    if searched:
        error = None if nir else _name_search_fault(family, born)
        try:
            if error is None:
                with gateway(request).unit(principal, _purpose(principal)) as u:
                    if nir:
                        found = u.find_patients_by_nir(principal.tenant_id, nir)
                    else:
                        found = u.find_patients_by_prefix(
                            principal.tenant_id, family, given or None, date.fromisoformat(born)
                        )
        except InvalidInput:
            error = "nir" if nir else "many"
        except AccessDenied:
            error = "denied"
    partial = request.headers.get("hx-request") == "true"
    template = "patients_list.html" if partial else "patients.html"
    status = 200 if partial or error in (None, "denied") else 400
    form = {k: str(v) for k, v in q.items() if k != "csrf"}
    return render(request, template, status, found=found, error=error, searched=searched, form=form)


def _name_search_fault(family: str, born: str) -> str | None:
    """Why a name search cannot be made, as a code the page says in the reader's language."""
    try:
        date.fromisoformat(born)
    except ValueError:
        return "born"
    return "prefix" if len(normalise_name(family)) < PREFIX_LETTERS else None


@router.get("/patients/{patient_id}")
def patient(request: Request, patient_id: str, caller: Viewer) -> HTMLResponse:
    """One patient: identity, then requests newest first, each result with its previous values,
    and a trend chart per analyte."""
    principal = caller[0]
    lab = principal.tenant_id
    try:
        with gateway(request).unit(principal, _purpose(principal)) as u:
            ident = u.get_patient(lab, patient_id)
            requests = u.requests_of(lab, patient_id)
            results = u.results_of(lab, patient_id)
    except (NotFound, AccessDenied, InvalidInput):
        return render(request, "not_found.html", 404)
    lines = result_lines(results, requests)
    by_request: dict[str, list[Any]] = defaultdict(list)
    for line in lines:
        by_request[line.result.request_id].append(line)
    ordered = sorted(requests, key=lambda q: stored_utc(q.requested_at), reverse=True)
    series: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    refs: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    labels: dict[tuple[str, str], tuple[str, str]] = {}
    for line in reversed(lines):
        r = line.result
        if r.value_num is not None and str(r.status) not in ("cancelled", "entered-in-error"):
            key = (r.code_system, r.code)
            series[key].append((line.at, r.value_num))
            refs[key] = (r.ref_low, r.ref_high)
            labels[key] = (r.label, r.unit or "")
    trends = []
    for key, values in series.items():
        chart = charts.trend(values, refs.get(key, (None, None)))
        if chart is not None:
            trends.append((labels[key][0], labels[key][1], chart))
    lang = _lang(request)
    return render(
        request,
        "patient.html",
        ident=ident,
        requests=[(q, [_row(line, lang) for line in by_request.get(q.request_id, [])]) for q in ordered],
        trends=trends,
    )


class _Row(NamedTuple):
    """One result line of the patient page, every cell already written in the page's language."""

    status: str
    label: str
    code: str
    value: str
    unit: str
    flag: str
    ref: str
    status_label: str
    version: int | None
    previous: list[tuple[str, str, str]]  # (value, unit, day)


def _row(line: Any, lang: str) -> _Row:
    r = line.result
    return _Row(
        str(r.status),
        r.label,
        r.code,
        _value(r, lang),
        r.unit or "",
        r.flag or "",
        _ref(r, lang),
        i18n.label(r.status, lang),
        r.version if r.version and r.version > 1 else None,
        [(_value(p, lang), p.unit or "", i18n.day(at, lang, LAB_ZONE)) for at, p in line.previous],
    )


def _value(r: Any, lang: str) -> str:
    from labvault.interop.fhir_out import number_text

    try:
        text = number_text(r.value_repr, r.value_num)
    except ValueError:
        text = None
    if text is None:
        return r.value_text or ""
    return f"{r.comparator or ''}{i18n.number(text, lang)}"


def _ref(r: Any, lang: str) -> str:
    if r.ref_text:
        return r.ref_text
    if r.ref_low is not None and r.ref_high is not None:
        return f"{i18n.number(repr(r.ref_low), lang)} - {i18n.number(repr(r.ref_high), lang)}"
    if r.ref_low is not None:
        return f"≥ {i18n.number(repr(r.ref_low), lang)}"
    if r.ref_high is not None:
        return f"≤ {i18n.number(repr(r.ref_high), lang)}"
    return ""


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/fhir/", "/health"))


def page_error(request: Request, status: int, reason: str) -> HTMLResponse:
    """A refusal on a page, as a page (the API answers JSON): the one-line reason, never a value."""
    return render(request, "not_found.html" if status == 404 else "error.html", status, reason=reason)
