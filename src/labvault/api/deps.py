"""Authentication and the access each route declares. Authorisation happens in the gateway.

Every route declares, in its signature, the one kind of access it needs (``Access``): a route
handler takes ``caller: Reader`` (or ``Ingester``, ``SessionOnly``, ``SteppedUp``), or a public
route lists ``Depends(no_credentials)``. ``check_declared`` refuses to build an app holding a route
without exactly one such declaration, so an undeclared route cannot be served.

    public    no credentials (health, login, MFA, enrolment, the FHIR CapabilityStatement)
    read      safe methods: a session, or a bearer token with the ``read`` scope
    ingest    results in: a session, or a bearer token with the ``ingest`` scope
    session   any other change: a logged-in session only (with its CSRF header), never a token
    step-up   approvals: a session whose TOTP code was checked in the last
              ``service.STEP_UP_WINDOW`` (at login, or ``POST /api/v1/auth/step-up``)

A token used outside its scope, or an approval without a recent step-up, is refused (403, with
the reason) and the refusal recorded in the audit trail.
"""

from __future__ import annotations

import enum
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from labvault.access import Gateway, Principal, Purpose
from labvault.accounts import service
from labvault.accounts.service import AuthenticationFailed
from labvault.crypto import tokens
from labvault.errors import AccessDenied

SESSION_COOKIE = "lv_session"
PREAUTH_COOKIE = "lv_preauth"
CSRF_COOKIE = "lv_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Access(enum.StrEnum):
    PUBLIC = "public"
    READ = "read"
    INGEST = "ingest"
    SESSION = "session"
    STEP_UP = "step-up"


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


# H1: unauthenticated requests are recorded (``api:unauthenticated``, in the platform's trail,
# the route template as reference) so that probing is detected; at most one event per network
# (IPv4 /24, IPv6 /64: the monitoring's ``source_net``) and route a minute, and at most
# ``PROBE_BUDGET`` events a minute in all, so that a flood from many addresses does not become a
# flood of writes.
class ProbeLimiter:
    """Which unauthenticated requests are recorded. Time is cut in minutes: in each minute, one
    event per (network, route) and ``budget`` events in all. The memory is the current minute's
    keys, at most ``budget`` of them: it never resets within a minute, whatever the number of
    addresses (a new minute starts a new set, which is the limit's own period)."""

    def __init__(self, *, every_s: float = 60.0, budget: int = 300) -> None:
        self.every_s = every_s
        self.budget = budget
        self._bucket = -1
        self._seen: set[tuple[str | None, str]] = set()
        self._lock = threading.Lock()

    def allow(self, addr: str | None, ref: str, now: float) -> bool:
        from labvault.monitoring.engine import network_of

        key = (network_of(addr), ref)
        bucket = int(now // self.every_s)
        with self._lock:
            if bucket != self._bucket:
                self._bucket, self._seen = bucket, set()
            if key in self._seen or len(self._seen) >= self.budget:
                return False
            self._seen.add(key)
            return True


PROBE_BUDGET = 300
_probe_limiter = ProbeLimiter(budget=PROBE_BUDGET)


def _record_unauthenticated(request: Request, addr: str | None, ua: str | None) -> None:
    from labvault.api.middleware import route_template
    from labvault.crypto.keys import PLATFORM

    ref = re.sub(r"[^A-Za-z0-9_.:-]", ".", f"{request.method}:{route_template(request.scope)}")[:64]
    if not _probe_limiter.allow(addr, ref, time.monotonic()):
        return
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        u.audit(PLATFORM, "api:unauthenticated", "route", 1, outcome="denied", refs=[ref])


def authenticated(request: Request) -> Caller:
    """A session cookie (with CSRF check on unsafe methods) or a bearer token; else 401 (recorded:
    ``_record_unauthenticated``). What the credential may do on this route is the route's declared
    ``Access``."""
    addr, ua = client(request)
    try:
        return _authenticated(request, addr, ua)
    except AuthenticationFailed:
        _record_unauthenticated(request, addr, ua)
        raise


def _authenticated(request: Request, addr: str | None, ua: str | None) -> Caller:
    gw = gateway(request)
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        with gw.auth_unit(source_addr=addr, user_agent=ua) as u:
            principal, scopes = service.principal_for_token(u, auth[7:].strip(), addr=addr, user_agent=ua)
        request.state.principal = principal  # the access log names the actor
        return Caller(principal, None, scopes)
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        raise AuthenticationFailed("authentication required")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not tokens.digests_equal(sent, service.csrf_token(secret)):
            raise AccessDenied("missing or wrong CSRF token (send the lv_csrf cookie's value in X-CSRF-Token)")
    with gw.auth_unit(source_addr=addr, user_agent=ua) as u:
        principal = service.principal_for_session(u, secret, addr=addr, user_agent=ua)
    request.state.principal = principal
    return Caller(principal, secret, None)


def _refuse(request: Request, caller: Caller, action: str, reason: str) -> NoReturn:
    """Record the refusal under the caller's own account (in its lab's trail), then refuse."""
    with gateway(request).unit(caller.principal, Purpose.AUTHENTICATION) as u:
        u.refuse(caller.principal.tenant_id, action, reason)
    raise AccessDenied(reason)  # not reached: refuse raises


def _declares(access: Access) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.access = access  # type: ignore[attr-defined]
        return fn

    return mark


@_declares(Access.PUBLIC)
async def no_credentials() -> None:
    """A public route: answers without credentials, and uses none it is sent."""


@_declares(Access.READ)
async def reading(request: Request, caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if request.method not in SAFE_METHODS:  # check_declared keeps this from happening
        raise AccessDenied("this route is declared read-only")
    if caller.scopes is not None and "read" not in caller.scopes:
        await run_in_threadpool(
            _refuse,
            request,
            caller,
            "token:scope",
            f"this token's scope ({', '.join(sorted(caller.scopes))}) does not include 'read'",
        )
    return caller


@_declares(Access.INGEST)
async def ingesting(request: Request, caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if caller.scopes is not None and "ingest" not in caller.scopes:
        await run_in_threadpool(
            _refuse,
            request,
            caller,
            "token:scope",
            f"this token's scope ({', '.join(sorted(caller.scopes))}) does not include 'ingest'",
        )
    return caller


@_declares(Access.SESSION)
async def session_only(request: Request, caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if caller.session is None:
        await run_in_threadpool(
            _refuse,
            request,
            caller,
            "token:scope",
            "this route needs a logged-in session: a bearer token only reads ('read') or ingests ('ingest')",
        )
    return caller


@_declares(Access.STEP_UP)
def stepped_up(request: Request, caller: Annotated[Caller, Depends(authenticated)]) -> Caller:
    if caller.session is None:
        _refuse(
            request,
            caller,
            "token:scope",
            "approvals need a logged-in session with a recent TOTP step-up, not a bearer token",
        )
    with gateway(request).unit(caller.principal, Purpose.AUTHENTICATION) as u:
        service.require_step_up(u, caller.session)
    return caller


Reader = Annotated[Caller, Depends(reading)]
Ingester = Annotated[Caller, Depends(ingesting)]
SessionOnly = Annotated[Caller, Depends(session_only)]
SteppedUp = Annotated[Caller, Depends(stepped_up)]
Public = Depends(no_credentials)


def declared_access(route: Any) -> set[Access]:
    """The access kinds a route declares (in its dependencies, router-level ones included)."""
    found: set[Access] = set()
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", None) or [])
    while stack:
        dep = stack.pop()
        access = getattr(dep.call, "access", None)
        if isinstance(access, Access):
            found.add(access)
        stack.extend(dep.dependencies)
    return found


def flat_routes(routes: Iterable[Any]) -> list[Any]:
    """Every route of an app, included routers flattened (FastAPI keeps them as lazy groups)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
        return list(routes)
    # A route context answers for its effective route (path, methods, dependant ...).
    return list(iter_route_contexts(list(routes)))


def check_declared(routes: Iterable[Any]) -> dict[tuple[str, str], Access]:
    """(method, path) -> declared access of every route; refuses a route without exactly one
    declaration, a read-only one on an unsafe method, or one that is not an API route at all."""
    out: dict[tuple[str, str], Access] = {}
    for route in flat_routes(routes):
        path = getattr(route, "path_format", None) or getattr(route, "path", None) or repr(route)
        methods = sorted(getattr(route, "methods", None) or ())
        found = declared_access(route)
        if len(found) != 1 or not methods:
            raise RuntimeError(
                f"route {', '.join(methods) or '?'} {path} declares {len(found)} kinds of access: each route "
                "takes exactly one of Reader, Ingester, SessionOnly, SteppedUp, or lists Depends(no_credentials)"
            )
        (access,) = found
        if access is Access.READ and set(methods) - SAFE_METHODS:
            raise RuntimeError(f"route {', '.join(methods)} {path} changes state: it cannot be declared read-only")
        for m in methods:
            out[(m, path)] = access
    return out
