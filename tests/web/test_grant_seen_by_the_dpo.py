"""The story the interface exists for, in Chromium: the vendor's support agent asks for access to
one patient; the lab admin approves it in the browser (by name, ticket and reason, with a TOTP
code); the agent reads the patient under the grant; the lab's DPO then sees that read, by the
agent's name and the grant's ticket, in the patient's access history."""

from __future__ import annotations

import httpx

from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login

TICKET = "SUP-WEB-DPO-9"


def _support_session(web: WebServer) -> tuple[httpx.Client, str]:
    agent = web.accounts["support"]
    c = httpx.Client(base_url=web.base)
    r = c.post("/api/v1/auth/login", json={"email": agent.email, "password": agent.password})
    assert r.status_code == 200 and r.json()["mfa_required"], r.text
    r = c.post("/api/v1/auth/mfa", json={"code": agent.code()})
    assert r.status_code == 200, r.text
    return c, r.json()["csrf_token"]


def test_a_support_read_under_an_approved_grant_is_in_the_dpos_access_history(
    web_server: WebServer, page, page_events, browser
):
    """F2, G1, G5: grant asked, approved by the lab in the browser, used, and seen by the DPO."""
    lab = web_server.labs[0]
    pid, nir = web_server.patients[lab][1], web_server.nirs[lab][1]
    support, csrf = _support_session(web_server)
    try:
        body = {"ticket": TICKET, "reason": "a result the lab reported wrong", "hours": 2, "fields": ["identity"]}
        r = support.post(
            f"/api/v1/tenants/{lab}/grants", json=body | {"patients": [pid]}, headers={"x-csrf-token": csrf}
        )
        assert r.status_code == 201, r.text
        grant = r.json()["grant_id"]
        assert support.get(f"/api/v1/tenants/{lab}/patients/{pid}").status_code == 403  # not before the lab says yes

        login(page, web_server, web_server.accounts["lab_admin_a"])  # its TOTP at login is a fresh step-up
        page.goto(web_server.url("/admin/grants"))
        row = page.locator("tr", has_text=TICKET)
        assert "Web support" in row.inner_text() and "a result the lab reported wrong" in row.inner_text()
        row.locator(f'form[action="/admin/grants/{grant}/approve"] button').click()
        page.wait_for_load_state()
        assert "approuvé" in page.locator("tr", has_text=TICKET).inner_text()
        assert_page_clean(page_events)

        r = support.get(f"/api/v1/tenants/{lab}/patients/{pid}")
        assert r.status_code == 200, r.text  # the agent reads, under the lab's grant
    finally:
        support.close()

    context = browser.new_context(locale="fr-FR")
    try:
        dpo_page = context.new_page()
        login(dpo_page, web_server, web_server.accounts["dpo_a"])
        dpo_page.goto(web_server.url("/dpo/patient-access"))
        dpo_page.fill("input[name=nir]", nir)
        dpo_page.click("form.search button[type=submit]")
        dpo_page.wait_for_load_state()
        assert nir not in dpo_page.url
        history = dpo_page.locator("tbody").inner_text()
        assert "Web support" in history and TICKET in history
        assert axe_check(dpo_page) == []
    finally:
        context.close()
    assert web_server.personal_values_in_logs() == []
