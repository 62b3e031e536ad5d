"""Step-up before approvals: approving a grant, approving a migration (the lab signer's and the
operator's approval) and receiving a signed instruction need a logged-in session whose TOTP code
was checked within ``service.STEP_UP_WINDOW`` (at its login, or by ``POST /api/v1/auth/step-up``).

A session is made stale by moving its recorded check back in time in the store (the clock of the
server is not touched); the code sent to step up is of a time step the account has not used yet
(``Account.code()``), so that it is never the code the login itself used.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select, update

from labvault.access import Purpose
from labvault.accounts import service, totp
from labvault.ids import utcnow
from labvault.migration import service as migration
from labvault.store import schema as t
from tests.api.conftest import LAB_A, Account
from tests.api.test_deny_by_default import BODIES
from tests.api.test_instructions_api import planned_migration, signed

STEP_UP = "/api/v1/auth/step-up"
GRANTS = f"/api/v1/tenants/{LAB_A}/grants"
MIGRATIONS = f"/api/v1/tenants/{LAB_A}/migrations"
INSTRUCTIONS = f"/api/v1/tenants/{LAB_A}/instructions"


def later_code(acct: Account) -> str:
    """A code of a time step this account has not used yet: never the one the login used (codes
    are single-use, and a step-up consumes its code like a login)."""
    assert acct.totp is not None
    return acct.code()


def wrong_code(acct: Account) -> str:
    """A well-formed code matching none of the time steps around the time codes are checked at."""
    now = totp.clock()
    near = {pyotp.TOTP(acct.totp).at(now + d) for d in range(-90, 91, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in near)


@contextmanager
def store(api):
    """A transaction on the store seeing every lab's administrative rows (PostgreSQL: RLS '*')."""
    with api.gateway.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", "*", True)))
        yield conn


def checked_ago(api, key: str, age: timedelta) -> None:
    """Record that the TOTP code of every session of ``key`` was last checked ``age`` ago."""
    email = api.accounts[key].email
    with store(api) as conn:
        account_id = conn.execute(select(t.account.c.account_id).where(t.account.c.email == email)).scalar_one()
        conn.execute(
            update(t.login_session).where(t.login_session.c.account_id == account_id).values(totp_at=utcnow() - age)
        )


STALE = service.STEP_UP_WINDOW + timedelta(minutes=1)


def events(api, action: str, outcome: str) -> int:
    e = t.audit_event
    with store(api) as conn:
        return conn.execute(
            select(func.count()).select_from(e).where(e.c.action == action, e.c.outcome == outcome)
        ).scalar_one()


def failed_logins(api, key: str) -> int:
    with store(api) as conn:
        return conn.execute(
            select(t.account.c.failed_logins).where(t.account.c.email == api.accounts[key].email)
        ).scalar_one()


def pending_grant(support) -> str:
    r = support.post(GRANTS, json=BODIES[("POST", "/api/v1/tenants/{tenant}/grants")])
    assert r.status_code == 201, r.text
    return r.json()["grant_id"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_grant_approval_needs_a_fresh_step_up(api, admin_a, support):
    """F2, E2, G1: a lab admin's token is refused; a session whose TOTP check is older than the
    window is refused with a reason naming the step-up (recorded, nothing changed); a step-up with
    the right code opens the window and the approval goes through."""
    key = f"lab_admin@{LAB_A}"
    grant = pending_grant(support)
    approve = f"{GRANTS}/{grant}/approve"
    token = api.bearer(api.token(admin_a, ["read", "ingest"])[1])
    r = token.post(approve)
    assert r.status_code == 403 and "session" in r.json()["error"] and "step-up" in r.json()["error"]

    checked_ago(api, key, service.STEP_UP_WINDOW - timedelta(minutes=1))  # still inside the window
    assert admin_a.get("/api/v1/me").status_code == 200
    checked_ago(api, key, STALE)
    before = events(api, "account:step-up:required", "denied")
    r = admin_a.post(approve)
    assert r.status_code == 403, r.text
    assert "step-up required" in r.json()["error"] and STEP_UP in r.json()["error"]
    assert events(api, "account:step-up:required", "denied") == before + 1
    assert admin_a.get(GRANTS).json()[0]["state"] == "pending"
    assert admin_a.get("/api/v1/me").status_code == 200  # the session itself is fine: only approvals wait

    r = admin_a.post(STEP_UP, json={"code": later_code(api.accounts[key])})
    assert r.status_code == 204, r.text
    assert events(api, "account:step-up", "allowed") == 1
    r = admin_a.post(approve)
    assert r.status_code == 200 and r.json()["state"] == "active", r.text


def test_a_wrong_step_up_code_counts_as_a_failed_login(api, admin_a, support):
    """E3, G1: a wrong step-up code is refused and counted like a failed login (recorded): after
    as many as lock a login, the account is locked, even the right code is refused, and so is a
    new login; nothing is approved meanwhile."""
    key = f"lab_admin@{LAB_A}"
    acct = api.accounts[key]
    grant = pending_grant(support)
    checked_ago(api, key, STALE)
    for n in range(1, service.ACCOUNT_LOCK_AFTER + 1):
        r = admin_a.post(STEP_UP, json={"code": wrong_code(acct)})
        assert r.status_code == 401 and "does not match" in r.json()["error"], (n, r.text)
        assert failed_logins(api, key) == n
    assert events(api, "account:step-up:failure", "denied") == service.ACCOUNT_LOCK_AFTER
    r = admin_a.post(STEP_UP, json={"code": later_code(acct)})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text
    assert admin_a.post(f"{GRANTS}/{grant}/approve").status_code == 403
    assert admin_a.get(GRANTS).json()[0]["state"] == "pending"
    r = api.client().post("/api/v1/auth/login", json={"email": acct.email, "password": acct.password})
    assert r.status_code == 429


def test_step_up_needs_a_session_with_an_authenticator(api, admin_a, bio_a):
    """E2: the step-up itself takes a session (not a token), with its CSRF header, of an account
    with a TOTP authenticator."""
    acct = api.accounts[f"lab_admin@{LAB_A}"]
    token = api.bearer(api.token(admin_a, ["read", "ingest"])[1])
    r = token.post(STEP_UP, json={"code": later_code(acct)})
    assert r.status_code == 403 and "session" in r.json()["error"]
    assert api.client().post(STEP_UP, json={"code": "123456"}).status_code == 401
    csrf = admin_a.headers.pop("x-csrf-token")
    r = admin_a.post(STEP_UP, json={"code": later_code(acct)})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    admin_a.headers["x-csrf-token"] = csrf
    r = bio_a.post(STEP_UP, json={"code": "123456"})
    assert r.status_code == 403 and "no TOTP authenticator" in r.json()["error"]
    assert admin_a.post(STEP_UP, json={"code": "12ab56"}).status_code == 422


def test_migration_approvals_and_instructions_need_a_fresh_step_up(api, admin_a, operator):
    """B1, A1, E2: the operator's approval, the lab signer's approval and a received instruction
    are refused to stale sessions (nothing recorded as approved or received) and accepted once
    each person has stepped up."""
    p = planned_migration(api.gateway, LAB_A)
    base = f"{MIGRATIONS}/{p.migration_id}"
    with api.gateway.unit(p.operator, Purpose.EXPORT) as u:
        approval = migration.approval_record(migration.get(u, LAB_A, p.migration_id))
    lab_approval = {"public_key": p.signer.public_key.hex(), "signature": p.signer.sign(approval)}
    instruction = signed(p.signer, LAB_A, id="MIG-STEP-2")
    for key in (f"lab_admin@{LAB_A}", "operator"):
        checked_ago(api, key, STALE)
    for c, path, body in (
        (operator, f"{base}/approvals/operator", None),
        (admin_a, f"{base}/approvals", lab_approval),
        (admin_a, INSTRUCTIONS, instruction),
    ):
        r = c.post(path, json=body)
        assert r.status_code == 403 and "step-up required" in r.json()["error"], (path, r.text)
    assert admin_a.get(base).json()["approvals"] == [] and admin_a.get(base).json()["state"] == "planned"
    assert [i["id"] for i in admin_a.get(INSTRUCTIONS).json()] == [p.instruction_id]

    assert operator.post(STEP_UP, json={"code": later_code(api.accounts["operator"])}).status_code == 204
    assert admin_a.post(STEP_UP, json={"code": later_code(api.accounts[f"lab_admin@{LAB_A}"])}).status_code == 204
    assert operator.post(f"{base}/approvals/operator").status_code == 200
    r = admin_a.post(f"{base}/approvals", json=lab_approval)
    assert r.status_code == 200 and r.json()["state"] == "approved", r.text
    r = admin_a.post(INSTRUCTIONS, json=instruction)
    assert r.status_code == 201, r.text


def test_vendor_accounts_stepped_up_still_cannot_approve_a_grant(api, support):
    """F2, G1: a step-up proves who is at the keyboard; it adds no right. Each vendor role, freshly
    stepped up, is refused a lab's grant approval with the reason (recorded); nothing changes; the
    lab's own admin can approve it."""
    grant = pending_grant(support)
    for role in ("platform_admin", "operator", "support", "security_officer"):
        c = api.login(role)
        checked_ago(api, role, STALE)
        assert c.post(STEP_UP, json={"code": later_code(api.accounts[role])}).status_code == 204, role
        before = events(api, "grant:approve", "denied")
        r = c.post(f"{GRANTS}/{grant}/approve")
        assert r.status_code == 403 and "grant:approve" in r.json()["error"], (role, r.text)
        assert events(api, "grant:approve", "denied") == before + 1, role
    admin = api.login(f"lab_admin@{LAB_A}")
    assert admin.get(GRANTS).json()[0]["state"] == "pending"
    assert admin.post(f"{GRANTS}/{grant}/approve").json()["state"] == "active"


def test_the_code_a_login_used_cannot_step_up(api, support):
    """E2, E3, G1: a step-up consumes its code like a login does: the very code the login just used
    (still inside its time window) is refused as a replay, counted as a failure and recorded, the
    approval stays refused; a code of a time step not used yet steps up."""
    key = f"lab_admin@{LAB_A}"
    acct = api.accounts[key]
    grant = pending_grant(support)
    c = api.client()
    assert c.post("/api/v1/auth/login", json={"email": acct.email, "password": acct.password}).json()["mfa_required"]
    used = acct.code()
    r = c.post("/api/v1/auth/mfa", json={"code": used})
    assert r.status_code == 200, r.text
    c.headers["x-csrf-token"] = r.json()["csrf_token"]
    checked_ago(api, key, STALE)
    before = events(api, "account:step-up:failure", "denied")
    r = c.post(STEP_UP, json={"code": used})
    assert r.status_code == 401 and "does not match" in r.json()["error"], r.text
    assert failed_logins(api, key) == 1
    assert events(api, "account:step-up:failure", "denied") == before + 1
    assert c.post(f"{GRANTS}/{grant}/approve").status_code == 403
    assert c.post(STEP_UP, json={"code": later_code(acct)}).status_code == 204
    assert c.post(f"{GRANTS}/{grant}/approve").json()["state"] == "active"
