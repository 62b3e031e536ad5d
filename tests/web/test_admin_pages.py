"""The lab admin's pages in a real browser: the lab admin logs in with TOTP, opens the accounts
page and the support grants page, sees the support agent's grant request by the agent's name,
approves it by passing the step-up page with a TOTP code, and the grant shows approved. Every
page keeps its CSP and has no serious or critical accessibility fault."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

import httpx
from sqlalchemy import select, update

from labvault.accounts import service
from labvault.ids import utcnow
from labvault.store import schema as t
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login

TICKET = "SUP-WEB-7"


def _support_requests_a_grant(web: WebServer, lab: str) -> str:
    """The support agent asks for access through the JSON API, as the API tests do."""
    agent = web.accounts["support"]
    with httpx.Client(base_url=web.base) as c:
        r = c.post("/api/v1/auth/login", json={"email": agent.email, "password": agent.password})
        assert r.status_code == 200 and r.json()["mfa_required"], r.text
        r = c.post("/api/v1/auth/mfa", json={"code": agent.code()})
        assert r.status_code == 200, r.text
        body = {"ticket": TICKET, "reason": "investigate a report", "hours": 2, "fields": ["identity"]}
        body |= {"period_from": "2024-01-01", "period_to": "2024-06-30"}
        r = c.post(f"/api/v1/tenants/{lab}/grants", json=body, headers={"x-csrf-token": r.json()["csrf_token"]})
        assert r.status_code == 201, r.text
        return r.json()["grant_id"]


def _steps_up_long_ago(web: WebServer, email: str) -> None:
    """The TOTP check of the account's sessions is older than the step-up window."""
    with web.gateway.engine.begin() as conn:
        account_id = conn.execute(select(t.account.c.account_id).where(t.account.c.email == email)).scalar_one()
        conn.execute(
            update(t.login_session)
            .where(t.login_session.c.account_id == account_id)
            .values(totp_at=utcnow() - service.STEP_UP_WINDOW - timedelta(minutes=1))
        )


def test_the_lab_admin_approves_a_support_grant_through_the_step_up_page(web_server: WebServer, page, page_events):
    lab = web_server.labs[0]
    grant = _support_requests_a_grant(web_server, lab)
    admin = web_server.accounts["lab_admin_a"]
    login(page, web_server, admin)

    page.goto(web_server.url("/admin/accounts"))
    assert urlparse(page.url).path == "/admin/accounts"
    assert page.locator("th[scope=row]", has_text="Web biologist").count() == 1
    assert web_server.accounts["biologist_a"].email in page.inner_text("main")
    assert axe_check(page) == []

    page.goto(web_server.url("/admin/grants"))
    row = page.locator("tr", has_text=TICKET)
    assert "Web support" in row.inner_text() and web_server.accounts["support"].email in row.inner_text()
    assert "en attente" in row.inner_text()
    assert axe_check(page) == []

    _steps_up_long_ago(web_server, admin.email)
    row.get_by_role("button", name="Approuver la demande de Web support").click()
    page.wait_for_url(lambda url: urlparse(url).path == "/step-up")
    assert axe_check(page) == []
    page.fill("input[name=code]", admin.code())
    page.press("input[name=code]", "Enter")
    page.wait_for_url(lambda url: urlparse(url).path == "/admin/grants")  # back where the approval was asked
    row = page.locator("tr", has_text=TICKET)
    assert "en attente" in row.inner_text()  # nothing approved before the step-up
    row.get_by_role("button", name="Approuver la demande de Web support").click()
    page.wait_for_url(lambda url: urlparse(url).path == "/admin/grants")
    row = page.locator("tr", has_text=TICKET)
    assert "approuvé" in row.inner_text() and "en attente" not in row.inner_text()
    assert page.locator(f'form[action="/admin/grants/{grant}/revoke"]').count() == 1
    assert axe_check(page) == []
    assert_page_clean(page_events)
