"""The alerts' pages in Chromium (H1): the list, one alert with its history and its forms, the
lab's channels; acknowledged then resolved through the forms; each page keeps its CSP and passes
axe; no personal value on them."""

from __future__ import annotations

from labvault.access import Purpose
from labvault.access.principal import MONITOR
from labvault.monitoring import alerts
from labvault.monitoring.findings import Finding, Severity
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def test_the_lab_admin_answers_an_alert_in_the_browser(web_server: WebServer, page, page_events):
    """H1: the lab admin opens the list, the alert (references, history), acknowledges and resolves
    it with the forms; the channels page; CSP and axe clean on each; no patient's name on them."""
    lab = web_server.labs[0]
    with web_server.gateway.unit(MONITOR, Purpose.MONITORING) as u:
        alert_id = alerts.raise_alert(
            u, Finding("off-hours-read", Severity.MEDIUM, lab, "reads outside opening hours", "acct-3", ("acct-3",))
        )
    login(page, web_server, web_server.accounts["lab_admin_a"])
    page.goto(web_server.url("/alerts"))
    assert alert_id in page.content() and axe_check(page) == []
    page.click(f'a[href="/alerts/{alert_id}"]')
    page.wait_for_url(web_server.url(f"/alerts/{alert_id}"))
    assert "acct-3" in page.inner_text("main") and axe_check(page) == []
    page.click('form[action$="/ack"] button[type=submit]')
    page.wait_for_load_state()
    assert page.locator('form[action$="/ack"]').count() == 0
    page.fill("#resolve-reason", "planned inventory")
    page.click('form[action$="/resolve"] button[type=submit]')
    page.wait_for_load_state()
    assert page.locator('form[action$="/resolve"]').count() == 0 and axe_check(page) == []
    page.goto(web_server.url("/alerts/channels"))
    assert page.locator("#channel-target").count() == 1 and axe_check(page) == []
    text = page.content()
    for family, _ in web_server.names[lab]:
        assert family not in text
    assert_page_clean(page_events)
