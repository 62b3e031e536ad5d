"""Authentication: the only dependency routes get. Authorisation happens in the gateway."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from labvault.access import Gateway, Principal
from labvault.accounts import service
from labvault.accounts.service import AuthenticationFailed

SESSION_COOKIE = "lv_session"
PREAUTH_COOKIE = "lv_preauth"
CSRF_COOKIE = "lv_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    principal: Principal
    session: str | None  # the cookie secret, when authenticated by session
    scopes: frozenset[str] | None  # token scopes, when authenticated by token


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def client(request: Request) -> tuple[str | None, str | None]:
    addr = request.client.host if request.client else None
    return addr, request.headers.get("user-agent")


def authenticated(request: Request) -> Caller:
    """A session cookie (with CSRF check on unsafe methods) or a bearer token; else 401."""
    addr, ua = client(request)
    gw = gateway(request)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        with gw.auth_unit(source_addr=addr, user_agent=ua) as u:
            principal, scopes = service.principal_for_token(u, auth[7:].strip(), addr=addr, user_agent=ua)
        if request.method not in SAFE_METHODS and "ingest" not in scopes:
            from labvault.errors import AccessDenied

            raise AccessDenied("this token is read-only")
        request.state.principal = principal  # the access log names the actor
        return Caller(principal, None, scopes)
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise AuthenticationFailed("authentication required")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, service.csrf_token(secret)):
            from labvault.errors import AccessDenied

            raise AccessDenied("missing or wrong CSRF token (send the lv_csrf cookie's value in X-CSRF-Token)")
    with gw.auth_unit(source_addr=addr, user_agent=ua) as u:
        principal = service.principal_for_session(u, secret, addr=addr, user_agent=ua)
    request.state.principal = principal
    return Caller(principal, secret, None)
