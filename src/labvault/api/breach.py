"""Leak analysis over HTTP (issue item 1): ``POST /api/v1/breach/analyses`` takes a leaked file as
the raw request body (``?name=`` its file name, which tells the reader its format), reads it in
memory (never spooled to disk; capped by the request middleware, ``LEAK_MAX_BODY``), opens it with
``breach.reader.open_bytes`` and matches it through each lab's blind indexes; ``GET`` gives an
analysis back with each lab's counts. The vendor's security officer analyses against every lab, a
lab's DPO against its own lab (the gateway decides: ``breach:analyze``); a session only (a bearer
token reads or ingests, never analyses). Counts, layouts and references only: no value of the file.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from labvault.access import Purpose
from labvault.access.breach import Analysis, LabMatch
from labvault.api.deps import Reader, SessionOnly, authenticated, gateway
from labvault.api.middleware import LEAK_MAX_BODY
from labvault.api.routes import ERRORS
from labvault.breach import analyze as analysis
from labvault.breach.reader import open_bytes
from labvault.errors import InvalidInput, NotFound

router = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS, tags=["breach"])

REFUSED = "leaked files are analysed by the vendor's security officer or a lab's DPO"
Id = Annotated[str, Path(min_length=1, max_length=64)]


def _out(a: Analysis, labs: list[LabMatch]) -> dict[str, Any]:
    return {**a.to_json(), "matches": [m.to_json() for m in labs]}


def _refuse(request: Request, caller: Any) -> None:
    p = caller.principal
    with gateway(request).unit(p, Purpose.AUTHENTICATION) as u:
        u.refuse(p.tenant_id, "breach:analyze", REFUSED)


def _run(request: Request, caller: Any, data: bytes, name: str) -> dict[str, Any]:
    p = caller.principal
    lab = None if p.is_platform else p.tenant_id
    leak = open_bytes(data, name, index=1)
    found, labs = analysis.analyze(gateway(request), p, [leak], tenant_id=lab)
    return _out(found, labs)


@router.post("/api/v1/breach/analyses", status_code=201)
async def analyse(
    caller: SessionOnly,
    request: Request,
    name: Annotated[str, Query(min_length=1, max_length=200)] = "upload",
) -> dict:
    """The body is the leaked file itself (any content type)."""
    p = caller.principal
    if not (p.is_platform and "security_officer" in p.roles) and not (not p.is_platform and "lab_dpo" in p.roles):
        await run_in_threadpool(_refuse, request, caller)  # before a byte of the body is read
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > LEAK_MAX_BODY:  # the middleware answers 413 first; kept should it be bypassed
            raise InvalidInput("the leaked file is larger than the upload limit")
        chunks.append(chunk)
    data = b"".join(chunks)
    if not data:
        raise InvalidInput("no leaked file was sent: the body is the file")
    safe = name.replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    return await run_in_threadpool(_run, request, caller, data, safe)


@router.get("/api/v1/breach/analyses/{analysis_id}")
def show(caller: Reader, request: Request, analysis_id: Id) -> dict:
    with gateway(request).unit(caller.principal, Purpose.BREACH) as u:
        a = u.leak_analysis(analysis_id)
        labs = []
        for lab in a.labs:
            try:
                labs.append(u.leak_match(lab, a.analysis_id))
            except NotFound:
                continue
    return _out(a, labs)
