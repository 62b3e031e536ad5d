"""The lab's daily work in the browser: a request entered with its labels, specimens received by
scanning their barcode or rejected with a non-conformity, the worklist where values are entered by
hand and validated technically, the biological validation screen, the request's report.

Every read and write goes through the gateway (``labvault.access.work``, through
``labvault.lab.work``) under the person's own account: authorised, sealed and audited there. What
the catalogue judged (flag, range, comment, the rule that released a result) is shown as stored on
the result: no page computes a verdict. Vendor accounts are refused on every route, the refusal
recorded (``labvault.web.errors.refuse``); another lab's request, specimen or result is not found.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from labvault.access import Principal, Purpose
from labvault.api.deps import gateway
from labvault.domain.models import (
    Nonconformity,
    OrderedTest,
    Result,
    ResultStatus,
    Specimen,
    Workflow,
)
from labvault.domain.models import (
    Request as LabRequest,
)
from labvault.domain.report import PreviousResult
from labvault.errors import AccessDenied, InvalidInput, LabvaultError, NotFound
from labvault.ids import stored_utc, utcnow
from labvault.lab import reports, work
from labvault.lab.catalogue import DEFAULT_SECTION, SECTION_LABELS, Catalogue
from labvault.lab.report import report_from_domain, report_pdf, value_as_written
from labvault.lab.service import current_catalogue
from labvault.web.errors import refuse
from labvault.web.pages import LAB_ZONE, SentForm, Viewer, Writer, _ref, _value, render

router = APIRouter(include_in_schema=False)

# Who works on the lab's bench: the lab's own staff, never a vendor account.
LAB_STAFF = frozenset({"biologist", "technician", "lab_admin"})
LOINC = "http://loinc.org"
WAITING = (Workflow.ORDERED, Workflow.ENTERED, Workflow.TECHNICAL)
VALIDATED = (Workflow.BIOLOGICAL, Workflow.AUTO_RELEASED)
_MAX_FIELD = 2000
_MAX_ROWS = 500  # rows a worklist or the validation screen shows at once


def _lab(request: Request, principal: Principal, action: str) -> str:
    """The lab of the person at the bench; a vendor account (or a role without bench work) is
    refused, the refusal of ``action`` recorded in its own trail."""
    if principal.is_platform or not LAB_STAFF & set(principal.roles):
        refuse(request, principal, action, "this page is for the lab's staff")
    return principal.tenant_id


def _field(form: FormData, name: str, limit: int = 200) -> str:
    return str(form.get(name) or "").strip()[:limit]


def _pdf(body: bytes, name: str) -> Response:
    return Response(
        body,
        media_type="application/pdf",
        headers={"content-disposition": f'attachment; filename="{name}"', "cache-control": "no-store"},
    )


# -- the catalogue ----------------------------------------------------------------------------------


def _ordered(cat: Catalogue, code: str) -> OrderedTest | None:
    """A test of the lab's catalogue as ordered: by its local code or its LOINC code."""
    test = cat.test(code) or cat.by_loinc(code)
    if test is None:
        return None
    return OrderedTest(LOINC, test.loinc, test.label_fr, test.unit, test.specimen, test.container)


def _tests_asked(cat: Catalogue, form: FormData) -> list[OrderedTest]:
    """The tests ticked and the panels' tests, each once, in the catalogue's order; codes typed in
    the code list too (comma or space separated)."""
    codes: list[str] = [str(c) for c in form.getlist("test")]
    for panel in form.getlist("panel"):
        codes.extend(cat.expand(str(panel)[:40]))
    typed = _field(form, "codes", 1000).replace(",", " ").split()
    codes.extend(typed)
    seen: set[str] = set()
    out: list[OrderedTest] = []
    for test in work.ordered_tests(codes, lambda c: _ordered(cat, c)):
        if test.code not in seen:
            seen.add(test.code)
            out.append(test)
    return out


def _catalogue_groups(cat: Catalogue) -> list[tuple[str, list[Any]]]:
    """The catalogue's tests grouped by container (one tube, one specimen)."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for test in cat.tests:
        if test.calculation is None:  # a calculated test is not ordered: it follows its inputs
            groups[test.container].append(test)
    return sorted(groups.items())


# -- request entry ------------------------------------------------------------------------------------


@router.get("/work/requests/new")
def request_form(request: Request, caller: Viewer) -> HTMLResponse:
    """The request form, for the patient whose page linked here (``?patient=``) or pasted."""
    principal = caller[0]
    lab = _lab(request, principal, "request:enter")
    patient_id = request.query_params.get("patient", "").strip()[:64]
    return _request_page(request, principal, lab, patient_id, {}, None, 200)


def _request_page(
    request: Request,
    principal: Principal,
    lab: str,
    patient_id: str,
    form: dict[str, Any],
    error: str | None,
    status: int,
) -> HTMLResponse:
    ident = None
    with gateway(request).unit(principal, Purpose.CARE) as u:
        cat = current_catalogue(u, lab).catalogue
        if patient_id:
            try:
                ident = u.get_patient(lab, patient_id)
            except (NotFound, InvalidInput):
                ident = None
                error = error or "no such patient in this lab"
                status = 404 if status == 200 else status
    return render(
        request,
        "work_request_new.html",
        status,
        patient_id=patient_id,
        ident=ident,
        groups=_catalogue_groups(cat),
        panels=cat.panels,
        form=form,
        error=error,
    )


def _collected(text: str) -> datetime:
    """The collection time typed (``2026-06-12T08:30``), in the lab's zone."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput("collection date and time: a date and a time") from None
    return when.replace(tzinfo=LAB_ZONE) if when.tzinfo is None else when


@router.post("/work/requests/new")
def enter_request(request: Request, caller: Writer, form: SentForm) -> Response:
    principal = caller[0]
    lab = _lab(request, principal, "request:enter")
    patient_id = _field(form, "patient_id", 64)
    kept = {k: str(v)[:_MAX_FIELD] for k, v in form.multi_items() if k != "csrf"}
    kept["tests"] = set(map(str, form.getlist("test")))  # type: ignore[assignment]
    kept["panels"] = set(map(str, form.getlist("panel")))  # type: ignore[assignment]
    try:
        if not patient_id:
            raise InvalidInput("patient: give the patient's id")
        with gateway(request).unit(principal, Purpose.CARE) as u:
            cat = current_catalogue(u, lab).catalogue
            tests = _tests_asked(cat, form)
            pregnant = {"yes": True, "no": False}.get(_field(form, "pregnant"))
            done = work.enter_request(
                u,
                lab,
                patient_id,
                tests,
                collected_at=_collected(_field(form, "collected_at", 40)),
                collector=_field(form, "collector") or None,
                prescriber_id=_field(form, "prescriber_id", 64) or None,
                urgent=_field(form, "urgency") == "urgent",
                clinical=_field(form, "clinical", _MAX_FIELD) or None,
                pregnant=pregnant,
            )
    except (InvalidInput, NotFound) as exc:
        status = 404 if isinstance(exc, NotFound) else 400
        return _request_page(request, principal, lab, patient_id, kept, str(exc), status)
    return RedirectResponse(f"/work/requests/{done.request_id}", status_code=303)


class _Found(NamedTuple):
    request: LabRequest
    patient_id: str
    results: list[Result]
    specimens: list[Specimen]


def _request_of(u: Any, lab: str, request_id: str) -> _Found:
    """A request of the lab with its results and specimens, read through the gateway; another
    lab's request is not found."""
    results = u.results_of_request(lab, request_id)
    if not results:
        raise NotFound("no such request in this lab")
    patient_id = u.patient_of_result(lab, results[0].result_id)
    req = next((q for q in u.requests_of(lab, patient_id) if q.request_id == request_id), None)
    if req is None:
        raise NotFound("no such request in this lab")
    specimen_ids = list(dict.fromkeys(r.specimen_id for r in results if r.specimen_id))
    specimens = [u.specimen(lab, sid) for sid in specimen_ids]
    return _Found(req, patient_id, results, specimens)


@router.get("/work/requests/{request_id}")
def request_page(request: Request, request_id: str, caller: Viewer) -> HTMLResponse:
    """A request entered: its specimens (each a label to print), its results where they stand."""
    principal = caller[0]
    lab = _lab(request, principal, "patient:request:read")
    try:
        with gateway(request).unit(principal, Purpose.CARE) as u:
            found = _request_of(u, lab, request_id)
            ident = u.get_patient(lab, found.patient_id)
    except (NotFound, InvalidInput):
        return render(request, "not_found.html", 404)
    return render(
        request,
        "work_request.html",
        req=found.request,
        ident=ident,
        specimens=found.specimens,
        results=[_line(r, request) for r in found.results],
    )


@router.get("/work/requests/{request_id}/labels.pdf")
def labels(request: Request, request_id: str, caller: Viewer) -> Response:
    """The request's specimen labels (one 50 x 25 mm page each), for the label printer."""
    principal = caller[0]
    lab = _lab(request, principal, "patient:request:read")
    try:
        with gateway(request).unit(principal, Purpose.CARE) as u:
            body = reports.request_labels(u, lab, request_id)
    except (NotFound, InvalidInput):
        return render(request, "not_found.html", 404)
    return _pdf(body, f"etiquettes-{request_id}.pdf")


def _unvalidated(r: Result) -> Result:
    """A result not yet validated biologically, as a report shows it: awaited, without its value."""
    return dataclasses.replace(
        r,
        value_num=None,
        value_text=None,
        value_repr=None,
        comparator=None,
        flag=None,
        comment=None,
        status=ResultStatus.PENDING,
        validated_by=None,
        validated_at=None,
    )


def _shown(r: Result) -> bool:
    return r.workflow is None or r.workflow in VALIDATED


@router.get("/work/requests/{request_id}/report.pdf")
def report(request: Request, request_id: str, caller: Viewer) -> Response:
    """The request's report: its validated results; partial while some are not validated (those
    shown awaited, never their value)."""
    principal = caller[0]
    lab = _lab(request, principal, "patient:result:read")
    try:
        with gateway(request).unit(principal, Purpose.CARE) as u:
            found = _request_of(u, lab, request_id)
            ident = u.get_patient(lab, found.patient_id)
            tenant = u.tenant(lab)
            history = u.results_of(lab, found.patient_id)
            earlier = {q.request_id: q.requested_at for q in u.requests_of(lab, found.patient_id)}
    except (NotFound, InvalidInput):
        return render(request, "not_found.html", 404)
    previous = _previous(found.request, history, earlier)
    rep = report_from_domain(
        report_id=request_id,
        version=1,
        tenant=tenant,
        lab_address="",
        identity=ident,
        request=found.request,
        specimens=found.specimens,
        results=[r if _shown(r) else _unvalidated(r) for r in found.results],
        prescriber=None,
        issued_at=utcnow(),
        previous=previous,
    )
    return _pdf(report_pdf(rep), f"compte-rendu-{request_id}.pdf")


def _previous(req: LabRequest, history: Iterable[Result], requested: dict[str, datetime]) -> dict[str, PreviousResult]:
    """Per code, the patient's latest validated value from an earlier request."""
    mine = stored_utc(req.requested_at)
    out: dict[str, tuple[datetime, PreviousResult]] = {}
    for r in history:
        when = requested.get(r.request_id)
        at = None if when is None else stored_utc(when)
        if at is None or r.request_id == req.request_id or at >= mine or not _shown(r):
            continue
        if r.status in (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR, ResultStatus.PENDING):
            continue
        if r.value_num is None and not r.value_text:
            continue
        if r.code not in out or out[r.code][0] < at:
            out[r.code] = (at, PreviousResult(value_as_written(r), r.unit, at))
    return {code: p for code, (_, p) in out.items()}


# -- reception ---------------------------------------------------------------------------------------


def _reception_page(
    request: Request, principal: Principal, lab: str, specimen_id: str, error: str | None, status: int
) -> HTMLResponse:
    specimen = None
    timeline: list[Any] = []
    if specimen_id:
        try:
            with gateway(request).unit(principal, Purpose.CARE) as u:
                specimen = u.specimen(lab, specimen_id)
                timeline = u.specimen_timeline(lab, specimen_id)
        except (NotFound, InvalidInput) as exc:
            error, status = error or str(exc), 404 if status == 200 else status
    return render(
        request,
        "work_reception.html",
        status,
        specimen=specimen,
        timeline=timeline,
        error=error,
        done=request.query_params.get("done"),
        codes=[n.value for n in Nonconformity],
    )


@router.get("/work/reception")
def reception(request: Request, caller: Viewer) -> HTMLResponse:
    """The reception desk: one field the barcode scanner types into, Enter receives."""
    principal = caller[0]
    lab = _lab(request, principal, "specimen:event")
    return _reception_page(request, principal, lab, request.query_params.get("specimen", "")[:64], None, 200)


def _specimen_move(request: Request, caller: tuple[Principal, str], form: FormData, reject: bool) -> Response:
    principal = caller[0]
    lab = _lab(request, principal, "specimen:event")
    barcode = _field(form, "specimen_id", 64)
    try:
        with gateway(request).unit(principal, Purpose.CARE) as u:
            if reject:
                sp = work.reject(u, lab, barcode, _field(form, "nonconformity", 40))
            else:
                sp = work.receive(u, lab, barcode)
    except (InvalidInput, NotFound) as exc:
        status = 404 if isinstance(exc, NotFound) else 400
        return _reception_page(request, principal, lab, barcode.strip(), str(exc), status)
    done = "rejected" if reject else "received"
    return RedirectResponse(f"/work/reception?specimen={sp.specimen_id}&done={done}", status_code=303)


@router.post("/work/reception")
def receive(request: Request, caller: Writer, form: SentForm) -> Response:
    """A specimen received: its id as the scanner read it."""
    return _specimen_move(request, caller, form, reject=False)


@router.post("/work/reception/reject")
def reject(request: Request, caller: Writer, form: SentForm) -> Response:
    """A specimen rejected with its non-conformity: its results are cancelled, the request told."""
    return _specimen_move(request, caller, form, reject=True)


# -- worklist and validation -------------------------------------------------------------------------


class _Line(NamedTuple):
    """One result as the worklist and the validation screen show it (cells already written)."""

    result_id: str
    request_id: str
    specimen_id: str
    code: str
    label: str
    value: str
    unit: str
    flag: str
    ref: str
    comment: str
    workflow: str
    status: str
    released_by_rule: str
    catalogue_version: str
    previous: str


def _line(r: Result, request: Request, previous: str = "") -> _Line:
    lang = _lang(request)
    return _Line(
        r.result_id,
        r.request_id,
        r.specimen_id or "",
        r.code,
        r.label,
        _value(r, lang),
        r.unit or "",
        r.flag or "",
        _ref(r, lang),
        r.comment or "",
        str(r.workflow or ""),
        str(r.status),
        r.released_by_rule or "",
        "" if r.catalogue_version is None else str(r.catalogue_version),
        previous,
    )


def _lang(request: Request) -> str:
    from labvault.web.pages import _lang as page_lang

    return page_lang(request)


def _waiting(u: Any, lab: str, states: Sequence[Workflow]) -> list[Result]:
    """The lab's results standing at one of ``states`` (read through the gateway, audited as a
    read of the lab's results), oldest request first."""
    out: list[Result] = u.waiting_results(lab, states, limit=_MAX_ROWS)
    out.sort(key=lambda r: (r.request_id, r.code))
    return out


def _worklist_page(request: Request, principal: Principal, lab: str, error: str | None, status: int) -> HTMLResponse:
    test = request.query_params.get("test", "").strip()[:40]
    section = request.query_params.get("section", "").strip()[:32]
    with gateway(request).unit(principal, Purpose.CARE) as u:
        waiting = _waiting(u, lab, WAITING)
        cat = current_catalogue(u, lab).catalogue
    # Each result's section (bench) from the lab's catalogue; a test the catalogue lacks is "general".
    where = {r.result_id: cat.section_of(r.code) or DEFAULT_SECTION for r in waiting}
    sections = [(s, SECTION_LABELS.get(s, s)) for s in dict.fromkeys([*cat.sections, *where.values()])]
    if section:
        waiting = [r for r in waiting if where[r.result_id] == section]
    tests = sorted({(r.code, r.label) for r in waiting})
    rows = [_line(r, request) for r in waiting if not test or r.code == test]
    groups: dict[str, list[_Line]] = defaultdict(list)
    for row in rows:
        groups[row.workflow].append(row)
    return render(
        request,
        "work_worklist.html",
        status,
        tests=tests,
        test=test,
        sections=sections,
        section=section,
        query=_query(test, section),
        ordered=groups.get(Workflow.ORDERED.value, []),
        entered=groups.get(Workflow.ENTERED.value, []),
        technical=groups.get(Workflow.TECHNICAL.value, []),
        error=error,
        done=request.query_params.get("done"),
    )


@router.get("/work/worklist")
def worklist(request: Request, caller: Viewer) -> HTMLResponse:
    """Results waiting (ordered, entered, technically validated), per test on choice."""
    principal = caller[0]
    lab = _lab(request, principal, "result:enter")
    return _worklist_page(request, principal, lab, None, 200)


def _query(test: str, section: str) -> str:
    """The worklist's filters, for a form's action or a redirect (``&``-joined, URL-encoded)."""
    return urlencode([(k, v) for k, v in (("test", test), ("section", section)) if v])


def _back(request: Request, path: str, done: str) -> RedirectResponse:
    test = request.query_params.get("test", "").strip()[:40]
    section = request.query_params.get("section", "").strip()[:32]
    extra = _query(test, section)
    return RedirectResponse(f"{path}?done={done}" + (f"&{extra}" if extra else ""), status_code=303)


@router.post("/work/worklist/enter")
def enter_values(request: Request, caller: Writer, form: SentForm) -> Response:
    """Values typed by hand: each non-empty ``value-<result id>`` (with ``unit-<result id>``)
    entered, all in one unit of work (one refused: none entered)."""
    principal = caller[0]
    lab = _lab(request, principal, "result:enter")
    typed = [
        (key[len("value-") :][:64], str(v).strip()[:_MAX_FIELD])
        for key, v in form.multi_items()
        if key.startswith("value-") and str(v).strip()
    ]
    try:
        if not typed:
            raise InvalidInput("no value typed")
        with gateway(request).unit(principal, Purpose.CARE) as u:
            for result_id, value in typed:
                unit = _field(form, f"unit-{result_id}", 40) or None
                comment = _field(form, f"comment-{result_id}", _MAX_FIELD) or None
                work.enter_result(u, lab, result_id, value, unit, comment=comment)
    except (InvalidInput, AccessDenied, NotFound) as exc:
        return _worklist_page(request, principal, lab, str(exc), _status(exc))
    return _back(request, "/work/worklist", "entered")


def _status(exc: LabvaultError) -> int:
    return 404 if isinstance(exc, NotFound) else 403 if isinstance(exc, AccessDenied) else 400


def _ticked(form: FormData) -> list[str]:
    return [str(v)[:64] for v in form.getlist("result_id")][:_MAX_ROWS]


@router.post("/work/worklist/technical")
def technical(request: Request, caller: Writer, form: SentForm) -> Response:
    """Technical validation of the entered results ticked, all or none."""
    principal = caller[0]
    lab = _lab(request, principal, "result:validate:technical")
    try:
        ids = _ticked(form)
        if not ids:
            raise InvalidInput("no result ticked")
        with gateway(request).unit(principal, Purpose.CARE) as u:
            work.validate_technical(u, lab, ids)
    except (InvalidInput, AccessDenied, NotFound) as exc:
        return _worklist_page(request, principal, lab, str(exc), _status(exc))
    return _back(request, "/work/worklist", "technical")


def _validation_page(request: Request, principal: Principal, lab: str, error: str | None, status: int) -> HTMLResponse:
    rows: list[_Line] = []
    with gateway(request).unit(principal, Purpose.CARE) as u:
        waiting = _waiting(u, lab, (Workflow.TECHNICAL,))
        patients: dict[str, dict[str, PreviousResult]] = {}
        for r in waiting:
            if r.request_id not in patients:
                patient_id = u.patient_of_result(lab, r.result_id)
                requests = {q.request_id: q for q in u.requests_of(lab, patient_id)}
                mine = requests.get(r.request_id)
                patients[r.request_id] = (
                    {}
                    if mine is None
                    else _previous(
                        mine, u.results_of(lab, patient_id), {k: q.requested_at for k, q in requests.items()}
                    )
                )
            p = patients[r.request_id].get(r.code)
            shown = "" if p is None else f"{p.value} {p.unit or ''}".strip()
            rows.append(_line(r, request, shown))
    return render(
        request,
        "work_validation.html",
        status,
        rows=rows,
        error=error,
        done=request.query_params.get("done"),
        may_validate="biologist" in principal.roles,
    )


@router.get("/work/validation")
def validation(request: Request, caller: Viewer) -> HTMLResponse:
    """Results waiting for biological validation, with what the biologist needs beside each."""
    principal = caller[0]
    lab = _lab(request, principal, "result:validate:biological")
    return _validation_page(request, principal, lab, None, 200)


@router.post("/work/validation")
def validate(request: Request, caller: Writer, form: SentForm) -> Response:
    """Biological validation of the results ticked, all or none; the gateway refuses a result the
    person entered, with its one-line reason shown on the page."""
    principal = caller[0]
    lab = _lab(request, principal, "result:validate:biological")
    try:
        ids = _ticked(form)
        if not ids:
            raise InvalidInput("no result ticked")
        with gateway(request).unit(principal, Purpose.CARE) as u:
            work.validate_biological(u, lab, ids)
    except (InvalidInput, AccessDenied, NotFound) as exc:
        return _validation_page(request, principal, lab, str(exc), _status(exc))
    return _back(request, "/work/validation", "validated")
