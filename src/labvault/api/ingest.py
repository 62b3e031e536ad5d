"""``POST /api/v1/tenants/{tenant}/ingest``: one result file in, as ``labvault ingest`` takes it.

The body is one HL7 v2 file (ORU^R01 / OUL^R22, batches too), one HPRIM Santé file, one FHIR R4
bundle, resource or Bulk Data ndjson file, or one CSV file. Its format is read from its content
(``labvault.ingest.service.detect``, as the CLI does); a Content-Type naming a format must agree
with the content (415 otherwise), and when the content alone says nothing it names the reader that
explains the refusal; a body in none of the formats, with no Content-Type naming one, is 415 too,
and is not kept (it is no lab message). Each message is stored whole, found a duplicate, or refused
with a one-line reason and kept in the lab's encrypted quarantine, by the same ``Ingestor`` the CLI
and MLLP use.

Who: a bearer token with the ``ingest`` scope (a lab's service account), or a lab account's
session; the gateway decides whether that account may write results in that lab (vendor accounts
never do: 403, recorded). The body is read only after that check, up to ``INGEST_MAX_BODY``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from labvault.api import schemas
from labvault.api.deps import Ingester, authenticated, gateway
from labvault.api.errors import UnsupportedMediaType
from labvault.api.routes import ERRORS
from labvault.errors import InvalidInput
from labvault.ingest import service as ingest
from labvault.ingest.errors import NotALabMessage

router = APIRouter(
    dependencies=[Depends(authenticated)],
    responses={
        **ERRORS,
        415: {"model": schemas.ErrorOut, "description": "Content-Type not taken or contradicted, or no lab message"},
        422: {"model": schemas.IngestOut, "description": "Some message refused (kept in quarantine), or malformed"},
    },
)
BODY_NAME = "body"  # how refusal reasons name the input
GROUP = 50  # messages per transaction; each message is still stored whole or not at all
_FHIR = frozenset({"fhir-json", "fhir-ndjson"})
# Content-Type (without parameters) -> the formats a body of that type may be; None: read the content.
CONTENT_TYPES: dict[str, frozenset[str] | None] = {
    "x-application/hl7-v2+er7": frozenset({"hl7v2"}),
    "application/hl7-v2": frozenset({"hl7v2"}),
    "application/hl7-v2+er7": frozenset({"hl7v2"}),
    "application/edi-hl7": frozenset({"hl7v2"}),
    "application/x-hprim": frozenset({"hprim"}),
    "text/x-hprim": frozenset({"hprim"}),
    "application/fhir+json": _FHIR,
    "application/json": _FHIR,
    "application/fhir+ndjson": frozenset({"fhir-ndjson"}),
    "application/ndjson": frozenset({"fhir-ndjson"}),
    "application/x-ndjson": frozenset({"fhir-ndjson"}),
    "text/csv": frozenset({"csv"}),
    "text/plain": None,
    "application/octet-stream": None,
}
_NAMES = {
    "hl7v2": "HL7 v2",
    "hprim": "HPRIM Santé",
    "fhir-json": "FHIR JSON",
    "fhir-ndjson": "FHIR ndjson",
    "csv": "CSV",
}


def formats_of(content_type: str | None) -> frozenset[str] | None:
    """The formats a Content-Type allows (None: any, read from the content); 415 for others."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            "Content-Type not taken here: send HL7 v2 (x-application/hl7-v2+er7), HPRIM Santé (application/x-hprim), "
            "FHIR (application/fhir+json, application/fhir+ndjson), CSV (text/csv), or text/plain to detect it"
        )
    return CONTENT_TYPES[media]


def choose_format(declared: frozenset[str] | None, data: bytes) -> str | None:
    """The format the body is read as: its content's, which a declared Content-Type must allow."""
    found = ingest.detect(data)
    if declared is None:
        return found
    if found is None:
        # the content alone says nothing: the declared reader explains the refusal
        return "fhir-json" if declared == _FHIR else next(iter(declared))
    if found not in declared:
        wanted = " or ".join(sorted(_NAMES[f] for f in declared))
        raise UnsupportedMediaType(f"the Content-Type says {wanted} but the body reads as {_NAMES[found]}")
    return found


def _run(ing: ingest.Ingestor, tenant: str, data: bytes, fmt: str | None) -> JSONResponse:
    pieces = ingest.read(data, file=BODY_NAME, fmt=fmt, test_mode=ing.test_mode)
    summary = ingest.Summary(BODY_NAME, pieces[0].format if pieces else fmt or "unknown")
    outcomes = ing.ingest_pieces(pieces, summary)
    out = schemas.IngestOut(
        tenant=tenant,
        format=summary.format,
        messages=len(pieces),
        accepted=summary.accepted,
        duplicates=summary.duplicates,
        rejected=summary.rejected,
        queued=summary.queued,
        results=summary.results,
        reasons=summary.reasons,
        quarantine_ids=summary.quarantine_ids,
        outcomes=[
            schemas.IngestOutcomeOut(message=p.index, status=o.status, reason=o.reason, quarantine_id=o.quarantine_id)
            for p, o in zip(pieces, outcomes, strict=True)
        ],
    )
    status = 200
    if summary.rejected:
        status = 422
        out.error = (
            f"{summary.rejected} of {len(pieces)} message(s) refused and kept in the lab's quarantine: "
            f"{summary.reasons[0]}"
        )
    return JSONResponse(out.model_dump(exclude_none=True), status_code=status)


_BODY = {
    "requestBody": {
        "required": True,
        "description": "One result file (HL7 v2, HPRIM Santé, FHIR R4, CSV)",
        "content": {ct: {"schema": {"type": "string", "format": "binary"}} for ct in CONTENT_TYPES},
    }
}


@router.post("/api/v1/tenants/{tenant}/ingest", response_model=schemas.IngestOut, openapi_extra=_BODY)
async def ingest_file(caller: Ingester, request: Request, tenant: str) -> Response:
    """Store the messages of one result file (or quarantine the refused ones); see the module."""
    declared = formats_of(request.headers.get("content-type"))
    settings = request.app.state.runtime.settings
    ing = ingest.Ingestor(
        gateway(request), caller.principal, tenant, feed="http", group=GROUP, test_mode=settings.test_mode
    )
    await run_in_threadpool(ing.preflight)  # may this account write results in this lab? (refusals recorded)
    try:
        data = await request.body()
    except ClientDisconnect:  # the body went past the limit: the 413 is already sent
        return Response(status_code=413)
    if not data.strip():
        raise InvalidInput("empty body: send one HL7 v2, HPRIM Santé, FHIR or CSV file")
    fmt = choose_format(declared, data)
    if fmt is None:  # no lab message at all: refused whole, nothing stored or quarantined
        raise NotALabMessage(f"{BODY_NAME}: {ingest.NOT_A_LAB_MESSAGE}: nothing was stored")
    return await run_in_threadpool(_run, ing, tenant, data, fmt)
