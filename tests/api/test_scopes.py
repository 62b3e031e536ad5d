"""Scopes per route: every route of the app declares the access it needs, an ``ingest`` token can
only ingest, a ``read`` token only reads, and sessions keep working.

The routes are found by walking the app (``app.routes``), never listed by hand, so a route added
later is covered here as soon as it exists. Calls use real ids and, where a route takes a body, a
body the route would accept from the right caller (a real signature, a real signed instruction), so
that a refusal is the scope's doing and not the body's.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import iter_route_contexts
from pyrage import x25519
from sqlalchemy import func, select

from labvault.access import Purpose
from labvault.accounts import service
from labvault.api.deps import Access, Public, Reader, check_declared
from labvault.migration import service as migration
from labvault.store import schema as t
from tests.api.conftest import LAB_A
from tests.api.test_deny_by_default import BODIES, PUBLIC, fill, is_page, lab_incident
from tests.api.test_instructions_api import planned_migration, record, signed
from tests.conftest import lab_user
from tests.interop.messages import oru

INGEST_ROUTE = ("POST", "/api/v1/tenants/{tenant}/ingest")
STEP_UP_ROUTES = frozenset(
    {
        ("POST", "/api/v1/tenants/{tenant}/grants/{grant_id}/approve"),
        ("POST", "/api/v1/tenants/{tenant}/instructions"),
        ("POST", "/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals"),
        ("POST", "/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals/operator"),
        ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/letters"),  # names and addresses opened
    }
)
# The pages' approvals (a session, its CSRF field, a recent TOTP step-up): the lab admin's grant page.
PAGE_STEP_UP_ROUTES = frozenset(
    {
        ("POST", "/admin/grants/{grant_id}/approve"),
        ("POST", "/lab/migrations/{migration_id}/approve"),
        ("POST", "/lab/instructions/receive"),
        ("POST", "/lab/signers/add"),
        ("POST", "/lab/signers/{signer_id}/revoke"),
        ("POST", "/alerts/channels/add"),
        ("POST", "/alerts/channels/{channel_id}/remove"),
        ("POST", "/incidents/{incident_id}/letters"),
    }
)
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
HL7 = "x-application/hl7-v2+er7"


# -- the one place lab service accounts and their tokens are made in this module ------------------
def feed_token(api, lab: str, scopes: list[str], *, name: str = "Analyser feed") -> str:
    """A bearer token of a service account of ``lab`` (made by the lab's own admin), for ``scopes``."""
    admin = lab_user(api.gateway, lab, "lab_admin", name="Keeper")
    email = f"{name.lower().replace(' ', '-')}@{lab}.api.invalid"
    with api.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        if not any(a["email"] == email for a in service.list_accounts(u, lab)):
            service.create_account(
                u, tenant_id=lab, name=name, email=email, roles=["service"], kind="service", purpose="ingest"
            )
        _, token = service.create_token(u, email, scopes=scopes, days=1)
    return token


def served(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, walked from ``app.routes``."""
    out = set()
    for rc in iter_route_contexts(app.routes):
        for method in rc.methods or ():
            out.add((method, rc.path_format))
    return sorted(out)


def snapshot(api) -> dict[str, list[tuple]]:
    """Every row of every table but the audit trail's (refusals are recorded there, on purpose)."""
    out = {}
    with api.gateway.engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            if not table.name.startswith("audit"):
                out[table.name] = sorted(tuple(map(repr, row)) for row in conn.execute(select(table)))
    return out


def denials(api, action: str) -> int:
    e = t.audit_event
    with api.gateway.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(e).where(e.c.action == action, e.c.outcome == "denied")
        ).scalar_one()


@dataclass
class World:
    ids: dict[str, str]
    bodies: dict[tuple[str, str], object]


@pytest.fixture
def world(api, bio_a, support) -> World:
    """Real ids of lab A's objects, and for each route taking a body, one it would accept."""
    planned = planned_migration(api.gateway, LAB_A)
    r = support.post(f"/api/v1/tenants/{LAB_A}/grants", json=BODIES[("POST", "/api/v1/tenants/{tenant}/grants")])
    assert r.status_code == 201, r.text
    token_id, _ = api.token(bio_a, ["read"])
    with api.gateway.unit(planned.operator, Purpose.EXPORT) as u:
        approval = migration.approval_record(migration.get(u, LAB_A, planned.migration_id))
    recipient = str(x25519.Identity.generate().to_public())
    bodies: dict[tuple[str, str], object] = dict(BODIES)
    bodies.update(
        {
            ("POST", "/api/v1/tenants/{tenant}/instructions"): signed(planned.signer, LAB_A, id="MIG-SCOPE-2"),
            ("POST", "/api/v1/tenants/{tenant}/instructions/draft"): {
                "instruction": record(LAB_A, recipient, id="MIG-SCOPE-3")
            },
            ("POST", "/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals"): {
                "public_key": planned.signer.public_key.hex(),
                "signature": planned.signer.sign(approval),
            },
            ("POST", "/api/v1/auth/step-up"): {"code": "123456"},
            INGEST_ROUTE: oru("SCOPE-1"),
        }
    )
    ids = {
        "tenant": LAB_A,
        "patient_id": api.patients[LAB_A][0],
        "request_id": api.requests[LAB_A][0],
        "result_id": api.results[LAB_A][0],
        "specimen_id": api.requests[LAB_A][0],  # a plausible id: refused before any lookup
        "grant_id": r.json()["grant_id"],
        "token_id": token_id,
        "instruction_id": planned.instruction_id,
        "migration_id": planned.migration_id,
        "queue_id": "no-such-queued-message",
        "number": "1",
        "advisory_id": "no-such-advisory",
        "incident_id": lab_incident(api.gateway, LAB_A),
        "version": "1",
        "document": "art33",
        "analysis_id": "no-such-analysis",
        "alert_id": "no-such-alert",
    }
    return World(ids, bodies)


def call(c, method: str, template: str, w: World, api):
    path = fill(template, w.ids)
    params = {"nir": api.nirs[LAB_A][0]} if template.endswith("/patients") else None
    body = w.bodies.get((method, template))
    if isinstance(body, bytes):
        return c.request(method, path, content=body, headers={"content-type": HL7}, params=params)
    return c.request(method, path, json=body, params=params)


def refused(r) -> bool:
    """401/403 with the reason, in the route's own error format."""
    if r.status_code not in (401, 403):
        return False
    body = r.json()
    return bool(body.get("error") or body.get("issue", [{}])[0].get("diagnostics"))


def test_every_route_declares_its_access(api):
    """E2, F1: walking app.routes, each route declares exactly one kind of access, in its signature;
    public ones are the allow-list; approvals need a step-up; only the ingest route ingests."""
    found: dict[tuple[str, str], set[Access]] = {}
    for rc in iter_route_contexts(api.app.routes):
        kinds = set()
        stack = list(rc.dependant.dependencies)
        while stack:
            dep = stack.pop()
            if isinstance(getattr(dep.call, "access", None), Access):
                kinds.add(dep.call.access)
            stack.extend(dep.dependencies)
        for method in rc.methods:
            found[(method, rc.path_format)] = kinds
    assert set(found) == set(served(api.app)) and len(found) >= 40
    undeclared = sorted(k for k, v in found.items() if len(v) != 1)
    assert not undeclared, f"routes without exactly one declared access: {undeclared}"
    access = {k: next(iter(v)) for k, v in found.items()}
    assert access == api.app.state.access  # what the app checked when it was built
    assert {k for k, a in access.items() if a is Access.PUBLIC} == PUBLIC
    assert {k for k, a in access.items() if a is Access.INGEST} == {INGEST_ROUTE}
    assert {k for k, a in access.items() if a is Access.STEP_UP} == STEP_UP_ROUTES | PAGE_STEP_UP_ROUTES
    assert all(a is not Access.READ for (m, _), a in access.items() if m not in SAFE)
    assert access[("POST", "/api/v1/auth/step-up")] is Access.SESSION


def test_an_app_with_an_undeclared_route_is_not_built():
    """E2: a route without a declaration, or with two, or read-only on POST, cannot be served."""
    router = APIRouter()

    @router.get("/api/v1/undeclared")
    def undeclared() -> dict:
        return {}

    bare = dict(openapi_url=None, docs_url=None, redoc_url=None)
    app = FastAPI(**bare)
    app.include_router(router)
    with pytest.raises(RuntimeError, match="undeclared declares 0 kinds of access"):
        check_declared(app.routes)
    with pytest.raises(RuntimeError, match=r"openapi.json declares 0 kinds of access"):
        check_declared(FastAPI().routes)  # FastAPI's own description routes, left on, are refused too

    twice, writes = FastAPI(**bare), FastAPI(**bare)

    @twice.get("/both", dependencies=[Public])
    def both(caller: Reader) -> dict:
        return {}

    @writes.post("/change")
    def change(caller: Reader) -> dict:
        return {}

    with pytest.raises(RuntimeError, match="declares 2 kinds of access"):
        check_declared(twice.routes)
    with pytest.raises(RuntimeError, match="cannot be declared read-only"):
        check_declared(writes.routes)


def test_an_ingest_token_is_refused_on_every_other_route(api, world, admin_a, operator):
    """E2, F2, B1, A1, G1: an ``ingest`` token (a lab's feed, a lab admin's, a vendor operator's) is
    refused (401/403, with the reason, recorded) on every route of the app but the ingest route:
    reads, grant and migration approvals, instructions, tokens, logout. Nothing changes. On public
    routes it gets exactly what no credentials get. The feed's token still ingests."""
    tokens = {
        "feed": feed_token(api, LAB_A, ["ingest"]),
        "lab admin": api.token(admin_a, ["ingest"])[1],
        "operator": api.token(operator, ["ingest"])[1],
    }
    routes = served(api.app)
    assert INGEST_ROUTE in routes
    # Pages take no token at all (a bearer token is sent to the login page: test_pages).
    others = [r for r in routes if r != INGEST_ROUTE and not is_page(r[1])]
    assert len(others) >= 40
    anonymous = api.client()
    before, denied = snapshot(api), denials(api, "token:scope")
    checked = 0
    for who, token in tokens.items():
        c = api.bearer(token)
        for method, template in others:
            if (method, template) in PUBLIC:  # takes no credentials: the token must add nothing
                path = fill(template, world.ids)
                mine, theirs = c.request(method, path), anonymous.request(method, path)
                assert (mine.status_code, mine.content) == (theirs.status_code, theirs.content), (who, template)
                continue
            r = call(c, method, template, world, api)
            assert refused(r), (who, method, template, r.status_code, r.text[:200])
            checked += 1
    assert snapshot(api) == before, "an ingest token changed something"
    assert denials(api, "token:scope") - denied == checked
    assert admin_a.get(f"/api/v1/tenants/{LAB_A}/grants").json()[0]["state"] == "pending"

    r = api.bearer(tokens["feed"]).post(
        fill(INGEST_ROUTE[1], world.ids), content=oru("SCOPE-1"), headers={"content-type": HL7}
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


def test_a_read_token_is_refused_on_every_unsafe_route(api, world, admin_a, operator, bio_a):
    """E2, F2, B1, A1: a ``read`` token (a lab admin's, a vendor operator's, a biologist's, a
    feed's) is refused on every route that changes anything, the ingest route included; nothing
    changes; it still reads."""
    tokens = {
        "lab admin": api.token(admin_a, ["read"])[1],
        "operator": api.token(operator, ["read"])[1],
        "biologist": api.token(bio_a, ["read"])[1],
        "feed": feed_token(api, LAB_A, ["read"]),
    }
    unsafe = [r for r in served(api.app) if r[0] not in SAFE and r not in PUBLIC and not is_page(r[1])]
    assert INGEST_ROUTE in unsafe and set(unsafe) >= STEP_UP_ROUTES and len(unsafe) >= 13
    before = snapshot(api)
    for who, token in tokens.items():
        c = api.bearer(token)
        for method, template in unsafe:
            r = call(c, method, template, world, api)
            assert refused(r), (who, method, template, r.status_code, r.text[:200])
    assert snapshot(api) == before, "a read token changed something"
    reader = api.bearer(tokens["biologist"])
    assert reader.get(f"/api/v1/tenants/{LAB_A}/patients/{world.ids['patient_id']}").status_code == 200
    assert api.bearer(tokens["lab admin"]).get(f"/api/v1/tenants/{LAB_A}/grants").status_code == 200


def test_sessions_keep_working_and_tokens_keep_their_reads(api, world, bio_a, tech_a):
    """E2: sessions reach reads and changes as before; a token with both scopes reads and ingests."""
    patient = f"/api/v1/tenants/{LAB_A}/patients/{world.ids['patient_id']}"
    assert bio_a.get(patient).status_code == 200
    assert bio_a.post("/api/v1/tokens", json={"scopes": ["read"], "days": 1}).status_code == 201
    both = api.bearer(api.token(tech_a, ["read", "ingest"])[1])
    assert both.get(patient).status_code == 200
    r = both.post(f"/api/v1/tenants/{LAB_A}/ingest", content=oru("SCOPE-2"), headers={"content-type": HL7})
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert both.post("/api/v1/tokens", json={"scopes": ["read"], "days": 1}).status_code == 403
    r = tech_a.post(f"/api/v1/tenants/{LAB_A}/ingest", content=oru("SCOPE-2"), headers={"content-type": HL7})
    assert r.status_code == 200 and r.json()["duplicates"] == 1, r.text
