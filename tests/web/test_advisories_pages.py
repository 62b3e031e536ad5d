"""The accesses page in a real browser (G5, H1): the lab's DPO opens /dpo/accesses after a
biologist read a patient's page; the read with no relation is listed by account, action and
reference; the page keeps its CSP and has no serious or critical accessibility fault. The vendor's
support account is refused it."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def test_the_dpo_reviews_the_days_unexplained_accesses(web_server: WebServer, browser, page, page_events):
    """G5, H1: the biologist's read of a patient it has no relation with is to review."""
    lab = web_server.labs[0]
    pid = web_server.patients[lab][3]
    bio = web_server.accounts["biologist_a"]
    other = browser.new_context(locale="fr-FR")
    try:
        bio_page = other.new_page()
        login(bio_page, web_server, bio)
        r = bio_page.goto(web_server.url(f"/patients/{pid}"))
        assert r is not None and r.status == 200
    finally:
        other.close()
    login(page, web_server, web_server.accounts["dpo_a"])
    page.goto(web_server.url("/dpo/accesses"))
    assert urlparse(page.url).path == "/dpo/accesses"
    assert page.locator("h1").inner_text() == "Accès à expliquer"
    text = page.locator("main").inner_text()
    assert pid in text and "patient:identity:read" in text
    assert axe_check(page) == []
    assert_page_clean(page_events)


def test_the_vendor_support_is_refused_the_accesses_page(web_server: WebServer, page, page_events):
    """G5, F2: a vendor account gets nothing of a lab's accesses."""
    login(page, web_server, web_server.accounts["support"])
    r = page.goto(web_server.url("/dpo/accesses"))
    assert r is not None and r.status == 403
    assert "Accès à expliquer" not in page.locator("main").inner_text()
