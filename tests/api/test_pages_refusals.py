"""A page's refusal of a signed-in account is audited as the JSON API audits its own: a vendor
account (support, operator, security officer) opening a lab's page, or a lab account a page is
not for, leaves a ``denied`` event naming the account and the action refused, in the caller's
own trail (as ``labvault.api.deps`` records a refusal before the gateway), with no personal value
and no id taken from the URL. An anonymous visitor is sent to the login page, not audited per
request (as the API's anonymous 401s)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from labvault.crypto.keys import PLATFORM
from labvault.store import schema as t
from tests.api.conftest import LAB_A
from tests.api.test_pages import _page_login

VENDOR_PAGES = {
    "/admin/accounts": "account:list",
    "/admin/grants": "grant:list",
    "/identity/queue": "identity:queue:read",
    "/quarantine": "quarantine:read",
    "/lab/migrations": "migration:read",
    "/lab/signers": "signer:list",
    "/dpo/audit": "audit:read",
}


def _account_id(api, email: str) -> str:
    with api.gateway.engine.connect() as conn:
        return conn.execute(select(t.account.c.account_id).where(t.account.c.email == email)).scalar_one()


def _denied(api, tenant: str, actor: str) -> list:
    e = t.audit_event
    with api.gateway.engine.connect() as conn:
        return list(
            conn.execute(
                select(e).where(e.c.tenant_id == tenant, e.c.actor == actor, e.c.outcome == "denied").order_by(e.c.seq)
            )
        )


def _count(api) -> int:
    with api.gateway.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.audit_event)).scalar_one()


@pytest.mark.parametrize("key", ["support", "operator", "security_officer"])
def test_a_vendor_account_refused_a_lab_page_is_audited(api, key):
    """F1, F2, G2: a vendor account GETs a patient of lab A and the lab's admin pages: each refusal
    (404 for the patient, 403 for the others, as before) adds one ``denied`` event naming the
    account and the action, in the vendor's own trail, as the API does for its own refusals;
    the event holds neither the patient's id nor a value of the lab."""
    _page_login(api, f"lab_admin@{LAB_A}")  # the lab's admin first: a lab has one
    c = _page_login(api, key)
    actor = _account_id(api, api.accounts[key].email)
    patient = api.patients[LAB_A][0]
    before = len(_denied(api, PLATFORM, actor))
    r = c.get(f"/patients/{patient}")
    assert r.status_code == 404 and patient not in r.text.replace(f"/patients/{patient}", "")
    events = _denied(api, PLATFORM, actor)[before:]
    assert [e.action for e in events] == ["patient:identity:read"], [e.action for e in events]
    for path, action in VENDOR_PAGES.items():
        before = len(_denied(api, PLATFORM, actor))
        r = c.get(path)
        assert r.status_code == 403, (path, r.status_code)
        events = _denied(api, PLATFORM, actor)[before:]
        assert [e.action for e in events] == [action], (path, [e.action for e in events])
    for e in _denied(api, PLATFORM, actor):
        assert e.object_refs is None or patient not in json.loads(e.object_refs)
        assert patient not in repr(tuple(e)) and LAB_A not in repr(tuple(e))
    assert _denied(api, LAB_A, actor) == []  # the page named no lab: no lab's trail is opened by it


def test_a_lab_account_refused_a_page_is_audited_in_its_own_lab(api):
    """F1: a biologist of lab A on the lab admin's and the vendor's pages, and a form it may not
    send: each refusal is a ``denied`` event in lab A's trail naming the biologist."""
    _page_login(api, f"lab_admin@{LAB_A}")
    c = _page_login(api, f"biologist@{LAB_A}")
    actor = _account_id(api, api.accounts[f"biologist@{LAB_A}"].email)
    for path, action in (
        ("/admin/accounts", "account:list"),
        ("/lab/signers", "signer:list"),
        ("/vendor/migrations", "migration:read"),
        ("/vendor/security", "audit:verify"),
    ):
        before = len(_denied(api, LAB_A, actor))
        assert c.get(path).status_code == 403, path
        assert [e.action for e in _denied(api, LAB_A, actor)[before:]] == [action], path


def test_an_anonymous_visitor_is_sent_to_sign_in_and_not_audited(api):
    """E2: an anonymous visitor of a lab page gets 303 to /login, and no audit event (as the API's
    anonymous 401s: no account to name)."""
    anon = api.client()
    before = _count(api)
    for path in (f"/patients/{api.patients[LAB_A][0]}", *VENDOR_PAGES):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    assert _count(api) == before
