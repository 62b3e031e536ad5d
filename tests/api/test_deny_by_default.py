"""Deny by default: every route the app serves, found by walking ``app.routes``, needs credentials,
except an explicit allow-list; and a lab's routes refuse the accounts of another lab."""

from __future__ import annotations

import re

import pytest

from labvault.accounts import service
from tests.api.conftest import LAB_A, LAB_B

# The only routes anyone may call without credentials. Adding a route that answers without
# authentication makes test_routes_deny_by_default fail until it is listed here, on purpose.
PUBLIC = frozenset(
    {
        ("GET", "/health"),
        ("POST", "/api/v1/auth/login"),
        ("POST", "/api/v1/auth/mfa"),
        ("POST", "/api/v1/auth/enrol"),
        ("POST", "/api/v1/auth/enrol/confirm"),
        ("GET", "/fhir/R4/metadata"),  # the CapabilityStatement: no data, public as FHIR servers do
        # The web interface's sign-in pages and its static files (script, style sheet).
        ("GET", "/"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("GET", "/login/totp"),
        ("POST", "/login/totp"),
        ("GET", "/static/{name}"),
        # Enrolment by the one-time link the lab_admin sent (the link's token is the credential,
        # checked by the account service as for POST /api/v1/auth/enrol and /enrol/confirm).
        ("GET", "/enrol"),
        ("POST", "/enrol"),
        ("POST", "/enrol/confirm"),
    }
)


def is_page(template: str) -> bool:
    """A route of the web interface (not the JSON API, FHIR or the health check)."""
    return not template.startswith(("/api/", "/fhir/", "/health"))


# Plausible bodies, so that a 401 is not a side effect of a body the route would reject anyway.
BODIES = {
    ("POST", "/api/v1/advisories"): {"source": "anssi", "severity": "high", "owner": "x", "summary": "s"},
    ("POST", "/api/v1/advisories/{advisory_id}/assess"): {"breach": "no", "reasoning": "r", "notify_labs": False},
    ("POST", "/api/v1/tokens"): {"scopes": ["read"], "days": 1},
    ("POST", "/api/v1/tenants/{tenant}/grants"): {
        "ticket": "SUP-1",
        "reason": "investigate a report",
        "hours": 1,
        "fields": ["identity"],
        "period_from": "2024-01-01",
        "period_to": "2024-06-30",
    },
    ("POST", "/api/v1/tenants/{tenant}/instructions"): {
        "instruction": {"id": "X-1"},
        "signature": "AA==",
        "signer_public_key": "00" * 32,
    },
    ("POST", "/api/v1/tenants/{tenant}/instructions/draft"): {"instruction": {"id": "X-1"}},
    ("POST", "/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals"): {
        "public_key": "00" * 32,
        "signature": "AA==",
    },
    ("POST", "/api/v1/tenants/{tenant}/migrations/{migration_id}/receipt"): {"receipt": {}, "mac": "00"},
    ("POST", "/api/v1/tenants/{tenant}/identity/queue/{queue_id}/resolve"): {"action": "reject"},
    ("POST", "/api/v1/tenants/{tenant}/identity/patients/{patient_id}/status"): {
        "to": "validated",
        "evidence": "id-card",
    },
    ("POST", "/api/v1/tenants/{tenant}/identity/merges"): {"kept": "p1", "merged": "p2"},
    ("POST", "/api/v1/tenants/{tenant}/requests"): {
        "patient_id": "p1",
        "tests": ["2823-3"],
        "collected_at": "2026-12-07T08:30:00+01:00",
        "collector": "IDE",
    },
    ("POST", "/api/v1/tenants/{tenant}/specimens/{specimen_id}/reject"): {"nonconformity": "haemolysed"},
    ("POST", "/api/v1/tenants/{tenant}/results/{result_id}/value"): {"value": "4.2"},
    ("POST", "/api/v1/tenants/{tenant}/results/validate"): {"ids": ["r1"], "level": "technical"},
    ("POST", "/api/v1/tenants/{tenant}/catalogue"): {"toml": 'version = "x"'},
    ("POST", "/api/v1/tenants/{tenant}/autovalidation-rules"): {"toml": 'version = "x"'},
    ("PUT", "/api/v1/tenants/{tenant}/details"): {"address": "1 rue X"},
    ("POST", "/api/v1/alerts/{alert_id}/resolve"): {"reason": "known cause"},
    ("POST", "/api/v1/incidents"): {"title": "t", "aware_at": "2026-12-07T08:00:00+00:00", "labs": ["lab-a"]},
    ("POST", "/api/v1/incidents/{incident_id}/notices"): {"measures": []},
    ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/drafts"): {},
    ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/decision"): {"decision": "notify", "reasoning": "r"},
    ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/notified"): {
        "at": "2026-12-07T08:00:00+00:00",
        "reference": "CNIL-1",
    },
    ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/letters"): {"patients": ["p1"]},
    ("POST", "/api/v1/incidents/{incident_id}/labs/{tenant}/exemption"): {"ground": "encrypted", "reason": "r"},
}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


def served_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, included routers flattened."""
    try:  # FastAPI >= 0.12x keeps included routers as lazy groups in app.routes
        from fastapi.routing import iter_route_contexts

        routes = list(iter_route_contexts(app.routes))
    except ImportError:  # pragma: no cover - older FastAPI: app.routes is already flat
        routes = list(app.routes)
    out = []
    for r in routes:
        path = getattr(r, "path_format", None) or getattr(r, "path", None)
        assert path, f"a route without a path ({r!r}): teach this test how to reach it"
        for method in sorted(getattr(r, "methods", None) or {"GET", "POST"}):
            out.append((method, path))
    return sorted(set(out))


def fill(path: str, values: dict[str, str]) -> str:
    values = {"name": "app.css", **values}  # a static file of the pages

    def one(m: re.Match) -> str:
        assert m.group(1) in values, f"no plausible value for path parameter {m.group(1)!r}: add one"
        return values[m.group(1)]

    return _PARAM.sub(one, path)


@pytest.fixture
def lab_a_ids(api, bio_a, support):
    """Real ids of lab A's objects: a patient, a request, a grant (requested by support), a token,
    a received instruction and a migration planned under it, its lab signer."""
    from tests.api.test_instructions_api import planned_migration

    planned = planned_migration(api.gateway, LAB_A)
    r = support.post(f"/api/v1/tenants/{LAB_A}/grants", json=BODIES[("POST", "/api/v1/tenants/{tenant}/grants")])
    assert r.status_code == 201, r.text
    token_id, _ = api.token(bio_a, ["read"])
    signer_id = _signer_of(api.gateway, LAB_A)
    return {
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
        "quarantine_id": "no-such-quarantined-message",
        "signer_id": signer_id,
        "number": "1",
        "advisory_id": "no-such-advisory",
        "incident_id": lab_incident(api.gateway, LAB_A),
        "version": "1",
        "alert_id": "no-such-alert",
        "channel_id": "no-such-channel",
    }


def lab_incident(gw, lab: str) -> str:
    """The id of a lab's own incident, with a first version of its Art. 33 draft."""
    from labvault.access import Purpose
    from labvault.breach import incidents
    from labvault.ids import utcnow
    from tests.conftest import lab_user

    with gw.unit(lab_user(gw, lab, "lab_admin", name="Keeper"), Purpose.BREACH) as u:
        inc = incidents.open_incident(u, title="Poste volé", aware_at=utcnow(), tenant=lab)
        incidents.draft(u, inc.incident_id, lab)
    return inc.incident_id


def _signer_of(gw, lab: str) -> str:
    """The id of a signer ``lab`` registered (the planned migration's)."""
    from labvault.access import Purpose
    from labvault.instructions import signers
    from tests.conftest import lab_user

    with gw.unit(lab_user(gw, lab, "lab_admin", name="Keeper"), Purpose.ADMINISTRATION) as u:
        return signers.list_signers(u, lab)[0].signer_id


def _call(c, method: str, template: str, ids: dict[str, str], api):
    params = {"nir": api.nirs[LAB_A][0]} if template.endswith("/patients") else None
    return c.request(
        method,
        fill(template, ids),
        json=BODIES.get((method, template)),
        params=params,
        follow_redirects=not is_page(template),
    )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_routes_deny_by_default(api, lab_a_ids, bio_a, admin_a, bio_b, admin_b):
    routes = served_routes(api.app)
    assert len(routes) >= 20, routes
    assert set(routes) >= PUBLIC, f"stale allow-list entries: {sorted(PUBLIC - set(routes))}"
    private = [r for r in routes if r not in PUBLIC]
    assert ("GET", "/api/v1/openapi.json") in private and ("GET", "/api/v1/docs") in private

    anonymous = api.client()
    forged_cookie = api.client()
    forged_cookie.cookies.set("lv_session", "not-a-session")
    forged_cookie.headers["x-csrf-token"] = service.csrf_token("not-a-session")  # passes CSRF, not the session
    forged_token = api.bearer("lvt_00000000000000000000000000000000_forged")
    for method, template in private:
        for c in (anonymous, forged_cookie, forged_token):
            r = _call(c, method, template, lab_a_ids, api)
            if is_page(template):  # a page sends the visitor to the login page, nothing of the page
                assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, template)
                continue
            assert r.status_code == 401, (method, template, r.status_code, r.text)
            if template.startswith("/fhir/"):  # FHIR's own error body
                assert r.headers["content-type"].startswith("application/fhir+json")
                assert r.json()["resourceType"] == "OperationOutcome" and r.json()["issue"][0]["diagnostics"]
            else:
                assert r.headers["content-type"].startswith("application/json") and r.json()["error"]
            assert "www-authenticate" in r.headers

    # Another lab's accounts, biologist and lab admin, reach nothing of lab A by naming its ids.
    lab_a_nirs = api.nirs[LAB_A]
    tenant_routes = [(m, t) for m, t in routes if "{tenant}" in t]
    assert len(tenant_routes) >= 10
    for other in (bio_b, admin_b):
        assert other.get("/api/v1/me").json()["tenant"] == LAB_B
        for method, template in tenant_routes:
            r = _call(other, method, template, lab_a_ids, api)
            assert r.status_code in (403, 404), (method, template, r.status_code, r.text)
            assert not any(nir in r.text for nir in lab_a_nirs)

    # The same requests from lab A's own accounts succeed: the ids above are real ones (the
    # request's report issued first, so that reading it again has something to read).
    issued = bio_a.post(f"/api/v1/tenants/{LAB_A}/requests/{lab_a_ids['request_id']}/report")
    assert issued.status_code == 201, issued.text
    for method, template in tenant_routes:
        if method != "GET":
            continue
        statuses = [_call(c, method, template, lab_a_ids, api).status_code for c in (bio_a, admin_a)]
        assert 200 in statuses, (template, statuses)


def test_api_description_needs_login(api, bio_a):
    anonymous = api.client()
    for path in ("/api/v1/openapi.json", "/api/v1/docs"):
        assert anonymous.get(path).status_code == 401
    for path in ("/openapi.json", "/docs", "/redoc", "/api/v1/redoc"):  # FastAPI's defaults stay off
        assert anonymous.get(path).status_code == 404
        assert bio_a.get(path).status_code == 404
    r = bio_a.get("/api/v1/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v1/tenants/{tenant}/patients/{patient_id}/results" in paths
    assert "/api/v1/openapi.json" not in paths and "/api/v1/docs" not in paths
    r = bio_a.get("/api/v1/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/api/v1/openapi.json" in r.text
