"""Errors become HTTP in this one place: a 4xx with a one-line reason, never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from labvault.accounts.service import AuthenticationFailed, LockedOut
from labvault.api.middleware import route_template
from labvault.errors import (
    AccessDenied,
    DecryptionError,
    InvalidInput,
    LabvaultError,
    NotFound,
    TenantShredded,
    UnknownTenant,
)

log = logging.getLogger("labvault.api")


class UnsupportedMediaType(InvalidInput):
    """A body whose Content-Type the route does not take, or that its content contradicts."""


STATUS: list[tuple[type[LabvaultError], int]] = [
    (AuthenticationFailed, 401),
    (LockedOut, 429),
    (AccessDenied, 403),
    (UnknownTenant, 404),
    (NotFound, 404),
    (TenantShredded, 410),
    (UnsupportedMediaType, 415),
    (InvalidInput, 400),
    (DecryptionError, 500),
]


def _json(status: int, reason: str, headers: dict[str, str] | None = None, request: Request | None = None) -> JSONResponse:
    if request is not None and request.url.path.startswith("/fhir/"):
        from labvault.api.fhir import ISSUE_CODES, outcome

        response = outcome(status, ISSUE_CODES.get(status, "processing"), reason)
        response.headers.update(headers or {})
        return response
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(LabvaultError)
    async def labvault_error(request: Request, exc: LabvaultError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 400)
        if status == 500:  # integrity failure of stored data: say so, without details
            request.scope["labvault.error_logged"] = True
            log.error("stored data failed an integrity check in %s %s", request.method,
                      route_template(request.scope), exc_info=exc)
            return _json(500, "stored data failed its integrity check", request=request)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, LockedOut) else None
        if status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="labvault"'}
        return _json(status, exc.diagnostics(), headers, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        # The offending value is not echoed back: it may be personal data.
        return _json(422, f"{where}: {first.get('msg', 'invalid')}", request=request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json(exc.status_code, str(exc.detail), getattr(exc, "headers", None), request)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The traceback goes to the log through labvault.logs' filter: frames and type names,
        # never the exception's message or arguments (they may hold personal values).
        request.scope["labvault.error_logged"] = True
        log.error("internal error in %s %s", request.method, route_template(request.scope), exc_info=exc)
        return _json(500, "internal error", request=request)
