"""The leak upload page (issue item 1): the vendor's security team (every lab) or a lab's DPO (its
own lab) sends a leaked file; it is read in memory (never spooled to a temporary file: the body is
read here and its multipart parts collected in memory), opened with ``breach.reader.open_bytes``
and matched through each lab's blind indexes (``breach.analyze``); the result page gives each lab's
counts and the probable source, and opens the incident from the analysis.

The file is capped (``MAX_UPLOAD``; the request middleware refuses a larger body with a 413 before
it is read). Nothing of the file is kept but its layout and the counts (``leak_analysis``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.api.deps import Access, gateway
from labvault.api.middleware import LEAK_MAX_BODY
from labvault.breach import analyze as analysis
from labvault.breach import incidents as register
from labvault.breach.reader import open_bytes
from labvault.crypto import tokens
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.web.errors import TooLarge, refuse
from labvault.web.incidents import _local_time
from labvault.web.pages import LAB_ZONE, SentForm, Viewer, Writer, _session, render

router = APIRouter(include_in_schema=False)

MAX_UPLOAD = LEAK_MAX_BODY  # 256 MiB: the body, multipart envelope included
MAX_NAME = 200
REFUSED = "leaked files are analysed by the vendor's security officer or a lab's DPO"


@dataclass(frozen=True, slots=True)
class Upload:
    principal: Principal
    name: str
    data: bytes
    fields: dict[str, str]


def _parts(body: bytes, boundary: bytes) -> tuple[dict[str, str], str, bytes]:
    """The form's text fields and its one file (name, bytes), parsed in memory: the parts are kept
    as views of the body (immutable bytes) and joined once, so the file is copied once only."""
    fields: dict[str, str] = {}
    found: list[tuple[str, str | None, list[memoryview]]] = []
    header: dict[str, bytes] = {}
    state: dict[str, bytes] = {"field": b"", "value": b""}

    def on_part_begin() -> None:
        header.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        header[state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(header.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        found.append((name, None if filename is None else filename.decode("utf-8", "replace"), []))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        found[-1][2].append(memoryview(bytes(data) if isinstance(data, bytearray) else data)[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except Exception:  # noqa: BLE001 - a malformed envelope: named, never quoted
        raise InvalidInput("the upload is not a well-formed multipart form") from None
    name, data = "", b""
    for field, filename, pieces in found:
        if filename is not None:
            if data:
                raise InvalidInput("one leaked file per upload")
            name, data = filename, b"".join(pieces)
        elif sum(len(p) for p in pieces) <= 20_000:
            fields[field] = b"".join(pieces).decode("utf-8", "replace")
    return fields, name, data


def may_analyse(principal: Principal) -> str | None:
    """Who may send a leaked file: "*" for the vendor's security officer (every lab), the lab for a
    lab's DPO (its own), None for anyone else."""
    if principal.is_platform and "security_officer" in principal.roles:
        return "*"
    if not principal.is_platform and "lab_dpo" in principal.roles:
        return principal.tenant_id
    return None


async def _upload(request: Request) -> Upload:
    """A signed-in session, the body read whole in memory (capped), its CSRF token checked: a
    multipart form's ``csrf`` field, or the ``x-csrf-token`` header with a raw body (``?name=``)."""
    principal, secret = await _session(request)
    if may_analyse(principal) is None:  # refused before a byte of the body is read
        await run_in_threadpool(refuse, request, principal, "breach:analyze", REFUSED)
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_UPLOAD:
        raise TooLarge("the leaked file is larger than the upload limit")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_UPLOAD:
            raise TooLarge("the leaked file is larger than the upload limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    del chunks
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind == b"multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidInput("the upload's multipart boundary is missing")
        fields, name, data = _parts(body, boundary)
        sent = fields.get("csrf", "")
    else:
        fields, name, data = {}, request.query_params.get("name", ""), body
        sent = request.headers.get("x-csrf-token", "")
    if not tokens.digests_equal(sent, service.csrf_token(secret)):
        raise AccessDenied("missing or wrong CSRF token")
    if not data:
        raise InvalidInput("no leaked file was sent")
    name = (name.replace("\\", "/").rsplit("/", 1)[-1] or "upload")[:MAX_NAME]
    return Upload(principal, name, data, fields)


_upload.access = Access.SESSION  # type: ignore[attr-defined]
Uploaded = Annotated[Upload, Depends(_upload)]


def _scope(request: Request, principal: Principal, action: str) -> str | None:
    """None (every lab) for the vendor's security officer; the lab for its DPO; anyone else refused."""
    who = may_analyse(principal)
    if who is None:
        refuse(request, principal, action, REFUSED)
    return None if who == "*" else who


@router.get("/breach/analyze")
def upload_page(request: Request, caller: Viewer) -> HTMLResponse:
    principal = caller[0]
    lab = _scope(request, principal, "breach:analyze")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        kept = u.leak_analyses(limit=20)
    return render(request, "incidents_upload.html", lab=lab, kept=kept, limit=MAX_UPLOAD // (1024 * 1024))


@router.post("/breach/analyze")
def upload(request: Request, up: Uploaded) -> Response:
    """The file opened in memory, analysed, stored (counts and layout only); then its result page."""
    lab = _scope(request, up.principal, "breach:analyze")
    leak = open_bytes(up.data, up.name, index=1)
    found, _parts_found = analysis.analyze(gateway(request), up.principal, [leak], tenant_id=lab)
    return RedirectResponse(f"/breach/analyses/{found.analysis_id}", status_code=303)


@router.get("/breach/analyses/{analysis_id}")
def result(request: Request, caller: Viewer, analysis_id: str) -> HTMLResponse:
    """One analysis: its files' layouts, the rows matched, ambiguous and unmatched, and each lab's
    counts, categories, fields and probable source."""
    principal = caller[0]
    _scope(request, principal, "incident:read")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        a = u.leak_analysis(analysis_id[:64])
        labs = []
        for lab in a.labs:
            try:
                labs.append(u.leak_match(lab, a.analysis_id))
            except NotFound:
                continue
    return render(request, "incidents_analysis.html", a=a, labs=labs, now=utcnow().astimezone(LAB_ZONE))


@router.post("/breach/analyses/{analysis_id}/incident")
def open_incident(request: Request, caller: Writer, sent: SentForm, analysis_id: str) -> Response:
    """The incident opened from the analysis: the processor's over its labs (the security officer),
    or the lab's own (its DPO)."""
    principal = caller[0]
    lab = _scope(request, principal, "incident:manage")
    aware = str(sent.get("aware_at") or "")[:40]
    at: datetime = _local_time(aware) if aware else utcnow()
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        a = u.leak_analysis(analysis_id[:64])
        inc = register.open_incident(
            u,
            title=str(sent.get("title") or "")[:200],
            aware_at=at,
            analysis_id=a.analysis_id,
            tenant=lab,
            facts={"facts": str(sent.get("facts") or "")[:20_000]} if sent.get("facts") else None,
        )
    return RedirectResponse(f"/incidents/{inc.incident_id}", status_code=303)
