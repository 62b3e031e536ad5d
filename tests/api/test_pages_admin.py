"""The lab admin's pages over HTTP: /admin/accounts (the lab's accounts by name and e-mail,
invite with a one-time enrolment token shown once, roles, deactivate, re-enable; the service
accounts' tokens minted and revoked) and /admin/grants (support grants, pending first, with who
asks by name and e-mail; approve after a TOTP step-up, refuse, revoke).

Who gets what: the lab's own lab_admin does each; a biologist of the lab, another lab's admin and
the vendor's accounts (support, operator, platform_admin) get nothing of the lab and approve
nothing; an approval without a recent step-up goes to /step-up and changes nothing; a form
without its CSRF field changes nothing.
"""

from __future__ import annotations

import re

import pytest

from labvault.web.pages import PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.api.test_step_up import STALE, checked_ago, later_code, pending_grant

ACCOUNTS = f"/api/v1/tenants/{LAB_A}/accounts"
GRANTS = f"/api/v1/tenants/{LAB_A}/grants"
NEWCOMER = "claire.martin@lab-a.api.invalid"


def _csrf(c) -> str:
    return _form_csrf(c.get("/patients").text)


def _accounts(admin_api) -> dict[str, dict]:
    return {a["email"]: a for a in admin_api.get(ACCOUNTS).json()}


def _grant_state(admin_api, grant_id: str) -> str:
    return admin_api.get(f"{GRANTS}/{grant_id}").json()["state"]


def test_the_lab_admin_sees_the_accounts_by_name_invites_changes_roles_deactivates_and_re_enables(api, admin_a):
    """E2, F1: the lab's accounts by name and e-mail (never an id), roles and state; an invitation
    shows its one-time enrolment token once and the token enrols the person; roles change; an
    account is deactivated (its sessions end) and re-enabled, each through the account service."""
    bio = api.accounts[f"biologist@{LAB_A}"]
    bio_id = _accounts(admin_a)[bio.email]["account_id"]
    bio_name = _accounts(admin_a)[bio.email]["name"]
    c = _page_login(api, f"lab_admin@{LAB_A}")
    assert 'href="/admin/accounts"' in c.get("/patients").text and 'href="/admin/grants"' in c.get("/patients").text
    page = c.get("/admin/accounts")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    assert f'<th scope="row">{bio_name}</th>' in page.text and bio.email in page.text
    assert bio_id not in page.text
    assert "Biologiste" in page.text and "actif" in page.text
    assert api.accounts[f"biologist@{LAB_B}"].email not in page.text

    r = c.post(
        "/admin/accounts/invite",
        data={"csrf": _csrf(c), "name": "Claire Martin", "email": NEWCOMER, "role": "technician"},
    )
    assert r.status_code == 201, r.text
    token = re.search(r'<code class="secret">([^<]+)</code>', r.text)
    assert token, r.text
    assert "Claire Martin" in r.text and "enrôlement en attente" in r.text
    assert f"https://testserver/enrol#token={token.group(1)}" in r.text  # a fragment: never sent to the server
    assert f"?token={token.group(1)}" not in r.text
    assert token.group(1) not in c.get("/admin/accounts").text  # shown once
    assert _accounts(admin_a)[NEWCOMER]["roles"] == "technician"
    body = {"token": token.group(1), "password": "Tube-violet-hemato-7!", "accept_commitment": True}
    enrolled = api.client().post("/api/v1/auth/enrol", json=body)
    assert enrolled.status_code == 200 and enrolled.json()["mfa_required"] is False, enrolled.text

    r = c.post(
        "/admin/accounts/roles",
        data={"csrf": _csrf(c), "email": NEWCOMER, "roles": ["biologist", "technician"]},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/accounts"
    assert _accounts(admin_a)[NEWCOMER]["roles"] == "biologist,technician"

    bio_session = api.login(f"biologist@{LAB_A}")
    r = c.post("/admin/accounts/deactivate", data={"csrf": _csrf(c), "email": bio.email}, follow_redirects=False)
    assert r.status_code == 303
    assert _accounts(admin_a)[bio.email]["active"] is False
    assert bio_session.get("/api/v1/me").status_code == 401
    assert "désactivé" in c.get("/admin/accounts").text
    r = c.post("/admin/accounts/enable", data={"csrf": _csrf(c), "email": bio.email}, follow_redirects=False)
    assert r.status_code == 303 and _accounts(admin_a)[bio.email]["active"] is True
    assert api.login(f"biologist@{LAB_A}").get("/api/v1/me").status_code == 200


def test_the_lab_admin_adds_a_service_account_mints_and_revokes_its_token(api, admin_a):
    """E2: a service account of the lab, listed; its token minted from the page (shown once, as
    POST /api/v1/tokens with its e-mail), listed without its secret, and revoked: it stops."""
    c = _page_login(api, f"lab_admin@{LAB_A}")
    feed = "feed.sil@lab-a.api.invalid"
    r = c.post(
        "/admin/accounts/service",
        data={"csrf": _csrf(c), "name": "Flux SIL", "email": feed, "purpose": "HL7 feed from the LIS"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert _accounts(admin_a)[feed]["kind"] == "service"
    assert "Flux SIL" in c.get("/admin/accounts").text
    r = c.post("/admin/tokens", data={"csrf": _csrf(c), "email": feed, "scopes": ["read", "ingest"], "days": "7"})
    assert r.status_code == 201, r.text
    token = re.search(r'<code class="secret">(lvt_[^<]+)</code>', r.text)
    assert token, r.text
    assert api.bearer(token.group(1)).get("/api/v1/me").json()["account_id"] == _accounts(admin_a)[feed]["account_id"]
    page = c.get("/admin/accounts").text
    assert token.group(1) not in page and token.group(1).split("_")[2] not in page
    token_id = token.group(1).split("_")[1]
    assert f'name="token_id" value="{token_id}"' in page
    r = c.post("/admin/tokens/revoke", data={"csrf": _csrf(c), "token_id": token_id}, follow_redirects=False)
    assert r.status_code == 303
    assert api.bearer(token.group(1)).get("/api/v1/me").status_code == 401
    assert f'name="token_id" value="{token_id}"' not in c.get("/admin/accounts").text  # revoked: no button
    # Nobody mints a token for another person from this page either.
    bio = api.accounts[f"biologist@{LAB_A}"]
    r = c.post("/admin/tokens", data={"csrf": _csrf(c), "email": bio.email, "scopes": ["read"], "days": "7"})
    assert r.status_code == 403 and "lvt_" not in r.text


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_lab_admin_reviews_the_grants_by_requester_name_approves_and_refuses(api, admin_a, support):
    """F2, E2: the support grants of the lab, pending first, naming who asks (name and e-mail, no
    id), the ticket, the reason, the scope and the duration; approve (with the TOTP of the login
    still fresh) makes it active; refuse ends a pending one; revoke ends an approved one."""
    me = support.get("/api/v1/me").json()
    first, second = pending_grant(support), pending_grant(support)
    c = _page_login(api, f"lab_admin@{LAB_A}")
    page = c.get("/admin/grants")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    assert me["name"] in page.text and api.accounts["support"].email in page.text
    assert me["account_id"] not in page.text
    assert "SUP-1" in page.text and "investigate a report" in page.text and "identity" in page.text
    assert "1 h" in page.text and "en attente" in page.text

    r = c.post(f"/admin/grants/{first}/approve", data={"csrf": _csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/grants", r.text
    assert _grant_state(admin_a, first) == "active"
    page = c.get("/admin/grants").text
    assert page.index(f"/admin/grants/{second}/approve") < page.index(f"/admin/grants/{first}/revoke")  # pending first
    r = c.post(f"/admin/grants/{second}/revoke", data={"csrf": _csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and _grant_state(admin_a, second) == "revoked"
    r = c.post(f"/admin/grants/{first}/revoke", data={"csrf": _csrf(c)}, follow_redirects=False)
    assert r.status_code == 303 and _grant_state(admin_a, first) == "revoked"


def test_an_approval_without_a_recent_step_up_goes_to_the_step_up_page_and_approves_nothing(api, admin_a, support):
    """G1, F2: the TOTP check of the session is older than the window: approving sends to
    /step-up and back, the grant stays pending; after a code on that page, the approval goes."""
    key = f"lab_admin@{LAB_A}"
    grant = pending_grant(support)
    c = _page_login(api, key)
    checked_ago(api, key, STALE)
    csrf = _csrf(c)
    r = c.post(
        f"/admin/grants/{grant}/approve",
        data={"csrf": csrf},
        headers={"referer": "https://testserver/admin/grants"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/step-up?next=/admin/grants", r.headers
    assert _grant_state(admin_a, grant) == "pending"
    page = c.get(r.headers["location"])
    assert page.status_code == 200
    r = c.post(
        "/step-up",
        data={"csrf": _form_csrf(page.text), "code": later_code(api.accounts[key]), "next": "/admin/grants"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/grants"
    r = c.post(f"/admin/grants/{grant}/approve", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and _grant_state(admin_a, grant) == "active"


def test_a_biologist_of_the_lab_gets_no_admin_page_and_changes_nothing(api, admin_a, support):
    """F1, E2: no menu entry; a direct visit is a 403 page; the forms are refused; nothing changes."""
    grant = pending_grant(support)
    c = _page_login(api, f"biologist@{LAB_A}")
    assert "/admin/" not in c.get("/patients").text
    for path in ("/admin/accounts", "/admin/grants"):
        r = c.get(path)
        assert r.status_code == 403 and "Refusé" in r.text and api.accounts["support"].email not in r.text
    tech = api.accounts[f"technician@{LAB_A}"]
    for path, data in (
        ("/admin/accounts/invite", {"name": "X Y", "email": NEWCOMER, "role": "lab_admin"}),
        ("/admin/accounts/deactivate", {"email": tech.email}),
        ("/admin/accounts/roles", {"email": tech.email, "roles": ["lab_admin"]}),
        (f"/admin/grants/{grant}/revoke", {}),
    ):
        r = c.post(path, data={"csrf": _csrf(c), **data}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    r = c.post(f"/admin/grants/{grant}/approve", data={"csrf": _csrf(c)}, follow_redirects=False)
    assert r.status_code in (303, 403) and _grant_state(admin_a, grant) == "pending"
    if r.status_code == 303:
        assert r.headers["location"].startswith("/step-up")
    accounts = _accounts(admin_a)
    assert NEWCOMER not in accounts and accounts[tech.email]["active"] and accounts[tech.email]["roles"] == "technician"


def test_another_labs_admin_gets_nothing_of_this_lab(api, admin_a, support):
    """F1: lab B's admin sees lab B's accounts and grants only; lab A's grant and accounts named
    in a form are refused or unknown; nothing of lab A changes."""
    grant = pending_grant(support)
    bio = api.accounts[f"biologist@{LAB_A}"]
    c = _page_login(api, f"lab_admin@{LAB_B}")
    page = c.get("/admin/accounts")
    assert page.status_code == 200 and bio.email not in page.text and "@lab-a." not in page.text
    assert api.accounts[f"lab_admin@{LAB_B}"].email in page.text
    page = c.get("/admin/grants")
    assert page.status_code == 200 and grant not in page.text and "SUP-1" not in page.text
    for path in (f"/admin/grants/{grant}/approve", f"/admin/grants/{grant}/revoke"):
        r = c.post(path, data={"csrf": _csrf(c)}, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
    for path, data in (
        ("/admin/accounts/deactivate", {"email": bio.email}),
        ("/admin/accounts/roles", {"email": bio.email, "roles": ["lab_admin"]}),
    ):
        r = c.post(path, data={"csrf": _csrf(c), **data}, follow_redirects=False)
        # as for an address no one has: another lab's people are not even confirmed to exist
        assert r.status_code == 404 and LAB_A not in r.text, (path, r.status_code)
    assert _grant_state(admin_a, grant) == "pending"
    assert _accounts(admin_a)[bio.email]["active"] and _accounts(admin_a)[bio.email]["roles"] == "biologist"


@pytest.mark.parametrize("key", ["support", "operator", "platform_admin"])
def test_vendor_accounts_get_nothing_and_cannot_approve(api, admin_a, support, key):
    """F1, F2, G5: a vendor account, signed in with its TOTP (so stepped up), gets no admin page,
    approves and revokes no grant and manages no account of the lab."""
    grant = pending_grant(support)
    bio = api.accounts[f"biologist@{LAB_A}"]
    c = _page_login(api, key)
    for path in ("/admin/accounts", "/admin/grants"):
        r = c.get(path)
        assert r.status_code == 403 and bio.email not in r.text and "SUP-1" not in r.text, (path, r.status_code)
    for path in (f"/admin/grants/{grant}/approve", f"/admin/grants/{grant}/revoke"):
        r = c.post(path, data={"csrf": _csrf(c)}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    for path, data in (
        ("/admin/accounts/deactivate", {"email": bio.email}),
        ("/admin/accounts/invite", {"name": "X Y", "email": NEWCOMER, "role": "lab_admin"}),
    ):
        r = c.post(path, data={"csrf": _csrf(c), **data}, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    assert _grant_state(admin_a, grant) == "pending"
    accounts = _accounts(admin_a)
    assert accounts[bio.email]["active"] and NEWCOMER not in accounts


def test_the_admin_forms_need_their_csrf_field(api, admin_a, support):
    """E2: without the CSRF field (or with a wrong one), an invitation, a deactivation, an
    approval and a refusal are refused and change nothing."""
    grant = pending_grant(support)
    bio = api.accounts[f"biologist@{LAB_A}"]
    c = _page_login(api, f"lab_admin@{LAB_A}")
    for csrf in ({}, {"csrf": "wrong"}):
        for path, data in (
            ("/admin/accounts/invite", {"name": "Claire Martin", "email": NEWCOMER, "role": "technician"}),
            ("/admin/accounts/deactivate", {"email": bio.email}),
            (f"/admin/grants/{grant}/approve", {}),
            (f"/admin/grants/{grant}/revoke", {}),
        ):
            r = c.post(path, data={**csrf, **data}, follow_redirects=False)
            assert r.status_code == 403, (path, r.status_code)
    assert _grant_state(admin_a, grant) == "pending"
    accounts = _accounts(admin_a)
    assert NEWCOMER not in accounts and accounts[bio.email]["active"]


def test_another_labs_admin_learns_nothing_of_an_address_elsewhere(api):
    """F1, E1: lab B's admin naming lab A's biologist in the account forms gets the same answer as
    for an address no one has (404, no lab named): the forms are no oracle of who works where."""
    a_bio = api.accounts[f"biologist@{LAB_A}"].email
    b = _page_login(api, f"lab_admin@{LAB_B}")
    answers = []
    for email in (a_bio, "nobody-at-all@lab.invalid"):
        for path in ("/admin/accounts/deactivate", "/admin/accounts/enable"):
            r = b.post(path, data={"csrf": _csrf(b), "email": email}, follow_redirects=False)
            answers.append((r.status_code, LAB_A in r.text))
    assert answers == [(404, False)] * 4
    assert api.login(f"biologist@{LAB_A}").get("/api/v1/me").status_code == 200  # still active
