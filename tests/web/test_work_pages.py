"""The lab's daily work in Chromium: a request entered by the technician, its specimen received by
the keyboard alone (the id typed where the scanner types it, then Enter), the value entered and
validated technically in the worklist, validated biologically by the biologist by keyboard, the
report PDF; every page CSP clean and axe clean."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def _clean(page) -> None:
    assert axe_check(page) == [], page.url


def test_reception_worklist_validation_report(web_server: WebServer, page, page_events):
    """G1, E2: the walk reception -> worklist -> validation -> report, two people."""
    lab = web_server.labs[0]
    patient = web_server.patients[lab][0]
    login(page, web_server, web_server.accounts["technician_a"])

    page.goto(web_server.url(f"/patients/{patient}"))
    page.click(f'a[href="/work/requests/new?patient={patient}"]')
    page.wait_for_url(lambda url: urlparse(url).path == "/work/requests/new")
    _clean(page)
    page.check("#test-K")
    page.fill("#collected_at", "2026-06-12T08:30")
    page.fill("#collector", "IDE Martin")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(lambda url: re.fullmatch(r"/work/requests/[^/]+", urlparse(url).path) is not None)
    _clean(page)
    request_path = urlparse(page.url).path
    specimen = page.inner_text("table tbody th a")
    labels = page.request.get(web_server.url(f"{request_path}/labels.pdf"))
    assert labels.status == 200 and labels.headers["content-type"] == "application/pdf"
    assert labels.body().startswith(b"%PDF")

    # reception by the keyboard alone: the field has the focus, the scanner types and sends Enter
    page.goto(web_server.url("/work/reception"))
    _clean(page)
    assert page.evaluate("() => document.activeElement.id") == "scan"
    page.keyboard.type(specimen)
    page.keyboard.press("Enter")
    page.wait_for_selector("#specimen-status")
    assert page.inner_text("#specimen-status") == "réceptionné"
    assert "specimen:received" in page.inner_text("main")
    _clean(page)

    # the worklist: the value typed, then validated technically
    page.goto(web_server.url("/work/worklist?test=2823-3"))
    _clean(page)
    page.fill("input[id^=value-]", "4,2")
    page.click("text=Enregistrer les valeurs")
    page.wait_for_selector("input[id^=tech-]")
    _clean(page)
    page.check("input[id^=tech-]")
    page.click("text=Valider techniquement la sélection")
    page.wait_for_selector("text=Résultats validés techniquement.")

    # the biologist validates by keyboard: the first box has the focus, Space, Tab to the button, Enter
    page.context.clear_cookies()
    login(page, web_server, web_server.accounts["biologist_a"])
    page.goto(web_server.url("/work/validation"))
    _clean(page)
    assert page.evaluate("() => document.activeElement.name") == "result_id"
    assert "4,2" in page.inner_text("main")
    page.keyboard.press("Space")
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.getAttribute('accesskey')") == "v":
            break
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Résultats validés biologiquement.")
    _clean(page)

    report = page.request.get(web_server.url(f"{request_path}/report.pdf"))
    assert report.status == 200 and report.headers["content-type"] == "application/pdf"
    assert report.body().startswith(b"%PDF")
    page.goto(web_server.url(request_path))
    assert "validé biologiquement" in page.inner_text("main")
    _clean(page)
    assert_page_clean(page_events)
