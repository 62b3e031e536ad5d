"""Security headers and request size limits (pure ASGI, so they also cover error responses), and
the access log.

``AccessLogMiddleware`` writes one line per request (G2): method, route *template* (never the raw
path, never the query), status, duration and the actor's account id, nothing else.
"""

from __future__ import annotations

import json
import logging
import re
import time

from labvault import logs

log = logging.getLogger("labvault.api")

MAX_BODY = 64 * 1024
# Result files posted to POST /api/v1/tenants/{tenant}/ingest: one file of a feed, read whole in
# memory (its body is read only once the caller is authenticated and allowed to ingest there).
INGEST_MAX_BODY = 8 * 1024 * 1024
_INGEST_PATH = re.compile(r"^/api/v1/tenants/[^/]+/ingest$")
# A leaked file sent for analysis (the upload page, the API): read whole in memory, once the caller
# is signed in; never spooled to disk.
LEAK_MAX_BODY = 256 * 1024 * 1024
_LEAK_PATH = re.compile(r"^(/breach/analyze|/api/v1/breach/analyses)$")

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class SecurityMiddleware:
    def __init__(
        self,
        app,
        *,
        max_body: int = MAX_BODY,
        ingest_max_body: int = INGEST_MAX_BODY,
        leak_max_body: int = LEAK_MAX_BODY,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.ingest_max_body = ingest_max_body
        self.leak_max_body = leak_max_body

    def limit(self, scope) -> int:
        if scope.get("method") == "POST" and _INGEST_PATH.match(scope.get("path", "")):
            return self.ingest_max_body
        if scope.get("method") == "POST" and _LEAK_PATH.match(scope.get("path", "")):
            return self.leak_max_body
        return self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        tls = scope.get("scheme") == "https"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in _HEADERS if h[0] not in names]
                if tls:
                    headers.append(_HSTS)
                message["headers"] = headers
            await send(message)

        limit = self.limit(scope)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._reject(send_with_headers, limit)
        received = 0
        started = False
        rejected = False

        async def limited_receive():
            # A body without Content-Length is counted as it arrives; past the limit we answer
            # 413 ourselves and tell the app the client went away.
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    if not started:
                        await self._reject(send_with_headers, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal started
            if rejected:
                return  # the 413 went out already; whatever the app says now is dropped
            if message["type"] == "http.response.start":
                started = True
            await send_with_headers(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as exc:  # answered here, so the server keeps the connection
            if not scope.get("labvault.error_logged"):  # the traceback, without the exception's message
                log.error("internal error in %s %s", scope.get("method"), route_template(scope), exc_info=exc)
            if not started and not rejected:
                body = json.dumps({"error": "internal error"}).encode()
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_with_headers({"type": "http.response.body", "body": body})

    async def _reject(self, send, limit: int):
        body = json.dumps({"error": f"request body larger than {limit} bytes"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def route_template(scope) -> str:
    """The route's template (``/api/v1/tenants/{tenant_id}/patients``), or ``-`` when none matched."""
    route = scope.get("route")
    return getattr(route, "path", None) or "-"


class AccessLogMiddleware:
    """One access-log line per HTTP request (outermost, so it sees every answer)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = 500

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            principal = (scope.get("state") or {}).get("principal")
            logs.access(
                "http",
                method=scope.get("method"),
                route=route_template(scope),
                status=status,
                ms=(time.monotonic() - started) * 1000,
                actor=getattr(principal, "account_id", None),
            )
