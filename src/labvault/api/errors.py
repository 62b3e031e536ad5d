"""Errors become HTTP in this one place.

A ``LabvaultError`` is answered from its class attributes (``labvault.errors``): ``http_status``,
``http_headers()``, and the one-line ``diagnostics()`` as the reason; a 5xx answer says the class's
``public_reason`` instead, and the traceback goes to the log. Any other exception is a bug: a bare
500 "internal error", the traceback logged (frames and type names, never the exception's message:
``labvault.logs``). Under ``/fhir`` the same answer is an OperationOutcome.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from labvault.api.middleware import route_template
from labvault.errors import InvalidInput, LabvaultError

log = logging.getLogger("labvault.api")

# The OperationOutcome issue code of each status (FHIR R4 IssueType).
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    409: "conflict",
    410: "deleted",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class UnsupportedMediaType(InvalidInput):
    """A body whose Content-Type the route does not take, or that its content contradicts."""

    http_status = 415


def answer(exc: LabvaultError) -> tuple[int, str, dict[str, str]]:
    """The status, the one-line reason and the headers of the answer to ``exc``."""
    status = exc.http_status
    if status >= 500:
        return status, exc.public_reason, {}
    return status, exc.diagnostics(), exc.http_headers()


def _json(status: int, reason: str, headers: dict[str, str] | None = None, request: Request | None = None) -> Response:
    # The web interface, when installed on the app, answers a page's refusal as a page (the same
    # one-line reason); it registers the hook (``labvault.web.pages.install``).
    hook = getattr(request.app.state, "page_error", None) if request is not None else None
    page = hook(request, status, reason) if hook is not None else None
    if page is not None:
        page.headers.update(headers or {})
        return page
    if request is not None and request.url.path.startswith("/fhir/"):
        from labvault.api.fhir import outcome

        response = outcome(status, ISSUE_CODES.get(status, "processing"), reason)
        response.headers.update(headers or {})
        return response
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(LabvaultError)
    async def labvault_error(request: Request, exc: LabvaultError) -> Response:
        status, reason, headers = answer(exc)
        if status >= 500:  # the platform failed (integrity, keys, database): logged, not told
            request.scope["labvault.error_logged"] = True
            log.error(
                "%s (%d) in %s %s",
                type(exc).__name__,
                status,
                request.method,
                route_template(request.scope),
                exc_info=exc,
            )
        return _json(status, reason, headers or None, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        # The offending value is not echoed back: it may be personal data.
        return _json(422, f"{where}: {first.get('msg', 'invalid')}", request=request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # The traceback goes to the log through labvault.logs' filter: frames and type names,
        # never the exception's message or arguments (they may hold personal values).
        request.scope["labvault.error_logged"] = True
        log.error("internal error in %s %s", request.method, route_template(request.scope), exc_info=exc)
        return _json(500, "internal error", request=request)
