"""The audit routes as a lab and as the vendor's staff use them: no oracle on a NIR for vendor
accounts (G5), a lab pulls its own signed checkpoints (G4, G6) and no vendor account does."""

from __future__ import annotations

import json

import pytest

from labvault.access import Purpose
from labvault.accounts import service
from labvault.synth import LabGenerator
from tests.api.conftest import LAB_A, LAB_B, SEED
from tests.audit.test_tamper import events
from tests.conftest import ADMIN, totp_code

VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")


def extra_account(api, role: str, tenant: str):
    """A logged-in client for an account the shared fixture does not make (platform_admin,
    lab_dpo): created and enrolled in one place, as the other API tests do. A vendor account is
    added by the platform admin, a lab account by the lab's own lab_admin."""
    email = f"{role.replace('_', '-')}-extra@{tenant}.api.invalid"
    password = f"Extra-{role}-pass-01!"
    creator = ADMIN if tenant == PLATFORM_TENANT else api.accounts.creator(tenant, role)
    with api.gateway.unit(creator, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=tenant, name="Nora Petit", email=email, roles=[role])
    with api.gateway.auth_unit(source_addr="setup", user_agent="setup") as u:
        secret = service.enrol_directly(u, email, password)
    c = api.client()
    r = c.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    if r.json()["mfa_required"]:
        r = c.post("/api/v1/auth/mfa", json={"code": totp_code(secret)})
        assert r.status_code == 200, r.text
    c.headers["x-csrf-token"] = r.json()["csrf_token"]
    c.account_id = service_account_id(api, email)
    return c


def service_account_id(api, email: str) -> str:
    from sqlalchemy import select

    from labvault.store import schema as t

    with api.gateway.engine.connect() as conn:
        return conn.execute(select(t.account.c.account_id).where(t.account.c.email == email)).scalar_one()


def vendor(api, role: str):
    if role == "platform_admin":
        return extra_account(api, role, PLATFORM_TENANT)
    c = api.login(role)
    c.account_id = service_account_id(api, api.accounts[role].email)
    return c


PLATFORM_TENANT = "platform"


@pytest.fixture
def checkpointed(api):
    from labvault.audit import service as audit

    with api.gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        audit.checkpoint(u, LAB_A)
    return api


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_nir_search_is_no_oracle_for_vendor_roles(api, raw_engine, role):
    """G5: a vendor account searching lab A's audit trail by NIR gets the same refusal whether the
    NIR is a patient of lab A or not; the refusal is audited; the NIR is nowhere in the trail."""
    c = vendor(api, role)
    present = api.nirs[LAB_A][0]
    absent = LabGenerator(LAB_B, SEED + 7).patient(0).identity.nir
    before = len(events(raw_engine, LAB_A))
    url = f"/api/v1/tenants/{LAB_A}/audit/events"
    r1, r2 = c.get(url, params={"patient_nir": present}), c.get(url, params={"patient_nir": absent})
    assert r1.status_code == r2.status_code == 403, (r1.text, r2.text)
    assert r1.content == r2.content and present not in r1.text and r1.json()["error"]
    new = events(raw_engine, LAB_A)[before:]
    assert [(e.outcome, e.actor) for e in new] == [("denied", c.account_id)] * 2
    assert all(e.action.startswith("audit:") for e in new)
    assert not any(present in repr(tuple(e)) for e in events(raw_engine, LAB_A))


def test_lab_admin_and_dpo_search_by_nir(api, admin_a, bio_a):
    """G5, G6: the lab's own roles answer a patient's access request by NIR."""
    assert bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{api.patients[LAB_A][0]}").status_code == 200
    dpo = extra_account(api, "lab_dpo", LAB_A)
    url = f"/api/v1/tenants/{LAB_A}/audit/events"
    absent = LabGenerator(LAB_B, SEED + 7).patient(0).identity.nir
    for c in (admin_a, dpo):
        r = c.get(url, params={"patient_nir": api.nirs[LAB_A][0]})
        assert r.status_code == 200 and r.json(), r.text
        assert all(api.patients[LAB_A][0] in (e["object_refs"] or "") for e in r.json())
        assert c.get(url, params={"patient_nir": absent}).status_code == 404


def test_security_officer_searches_by_pseudonymous_reference(api, bio_a):
    """G5: the vendor's security officer follows a pseudonymous id, never an identity."""
    pid = api.patients[LAB_A][1]
    assert bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{pid}").status_code == 200
    so = vendor(api, "security_officer")
    r = so.get(f"/api/v1/tenants/{LAB_A}/audit/events", params={"ref": pid})
    assert r.status_code == 200 and r.json(), r.text
    assert all(pid in json.loads(e["object_refs"]) for e in r.json())
    assert so.get(f"/api/v1/tenants/{LAB_A}/audit/events", params={"ref": "1 OR 1=1"}).status_code in (400, 422)


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_roles_cannot_pull_checkpoints(checkpointed, raw_engine, role):
    """G4, G6: refused with the reason, audited, nothing given."""
    api = checkpointed
    c = vendor(api, role)
    before = len(events(raw_engine, LAB_A))
    r = c.get(f"/api/v1/tenants/{LAB_A}/audit/checkpoints")
    assert r.status_code == 403 and "not allowed" in r.json()["error"] and "signature" not in r.text
    new = events(raw_engine, LAB_A)[before:]
    assert [(e.action, e.outcome, e.actor) for e in new] == [("audit:pull", "denied", c.account_id)]


def test_lab_pulls_its_checkpoints(checkpointed, admin_a, admin_b):
    """G4, G6: the lab's admin and DPO pull their lab's signed checkpoints, from a number on;
    another lab's admin cannot."""
    from labvault.audit import service as audit

    api = checkpointed
    dpo = extra_account(api, "lab_dpo", LAB_A)
    with api.gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        audit.checkpoint(u, LAB_A)
    for c in (admin_a, dpo):
        r = c.get(f"/api/v1/tenants/{LAB_A}/audit/checkpoints")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(x) for x in r.text.splitlines()]
        assert [x["body"]["index"] for x in lines if x["type"] == "checkpoint"] == [1, 2]
        later = [
            json.loads(x)
            for x in c.get(f"/api/v1/tenants/{LAB_A}/audit/checkpoints", params={"since": 1}).text.splitlines()
        ]
        assert [x["body"]["index"] for x in later if x["type"] == "checkpoint"] == [2]
    assert admin_a.get(f"/api/v1/tenants/{LAB_A}/audit/checkpoints", params={"since": -1}).status_code in (400, 422)
    assert admin_b.get(f"/api/v1/tenants/{LAB_A}/audit/checkpoints").status_code == 403
