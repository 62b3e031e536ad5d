"""The web interface in a real browser (Debian's chromium): the app served on loopback answers,
every document carries the Content-Security-Policy header and breaks none of it, axe-core finds no
serious or critical accessibility fault, no personal value reaches the server's log.

The pages' tests: login with TOTP, patient search, the patient page, another lab's patient, the
keyboard alone.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from tests.web.conftest import HEALTH, PageEvents, WebAccount, WebServer, assert_page_clean, axe_check

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


# --- the infrastructure, on what the app serves today -------------------------------------------


def test_chromium_reads_the_health_json_with_its_csp_and_no_console_error(web_server: WebServer, page, page_events):
    """The real server, reached by a real browser: /health is JSON ``{"status": "ok"}``,
    served with the API's Content-Security-Policy; nothing in the console."""
    r = page.goto(web_server.url(HEALTH))
    assert r is not None and r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["content-security-policy"] == API_CSP
    assert r.headers["x-frame-options"] == "DENY"
    assert json.loads(page.inner_text("body")) == {"status": "ok"}
    assert page_events.documents == [(web_server.url(HEALTH), 200, API_CSP)]
    assert_page_clean(page_events)


def test_a_csp_violation_is_caught(web_server: WebServer, page, page_events: PageEvents):
    """The collector sees what the policy blocks: an image added to a page served with
    ``default-src 'none'`` is refused, and reported."""
    page.goto(web_server.url(HEALTH))
    assert not page_events.csp_violations
    with page.expect_console_message(lambda m: "Content Security Policy" in m.text):
        page.evaluate("() => { const i = document.createElement('img'); i.src = '/x.png'; document.body.append(i); }")
    assert page_events.csp_violations and any("img-src" in v for v in page_events.csp_violations)
    with pytest.raises(AssertionError):
        assert_page_clean(page_events)


def test_axe_reports_serious_faults_and_not_a_clean_page(page):
    """axe-core runs in the page: an image without text alternative and an unlabelled field are
    reported (critical), a small page written properly reports nothing."""
    page.set_content(
        '<!doctype html><html lang="fr"><head><title>T</title></head><body><main><h1>T</h1>'
        '<img src="data:,"><input type="text"></main></body></html>'
    )
    ids = {v["id"] for v in axe_check(page)}
    assert {"image-alt", "label"} <= ids, ids
    page.set_content(
        '<!doctype html><html lang="fr"><head><title>Connexion</title></head><body><main><h1>Connexion</h1>'
        '<form><label for="e">Adresse</label><input id="e" name="email" type="email">'
        '<button type="submit">Se connecter</button></form></main></body></html>'
    )
    assert axe_check(page) == []


def test_the_server_log_is_captured_and_holds_no_personal_value(web_server: WebServer, page):
    """G2: a NIR and a name sent in a query and in an unknown path reach the server, which logs
    the requests (the access log is captured), but neither value."""
    lab = web_server.labs[0]
    nir, (family, _) = web_server.nirs[lab][0], web_server.names[lab][0]
    before = len(web_server.logs.lines)
    page.goto(web_server.url(f"{HEALTH}?nir={nir}&name={family}"))
    page.goto(web_server.url(f"/api/v1/tenants/{lab}/patients/{nir}"))
    new = web_server.logs.lines[before:]
    assert any("labvault.access.http" in ln and "status=200" in ln for ln in new), new
    assert any("labvault.access.http" in ln and "status=401" in ln for ln in new), new
    assert web_server.personal_values_in_logs() == []


def test_the_log_scan_finds_a_planted_nir_and_name(web_server: WebServer):
    """The scan can fail: a NIR and a family name logged by a Labvault logger are found (and named
    by patient, never by value); the planted lines are then dropped from the capture."""
    import logging

    lab = web_server.labs[1]
    before = len(web_server.logs.lines)
    logging.getLogger("labvault.web.test").warning(
        "planted %s %s", web_server.nirs[lab][2], web_server.names[lab][2][0]
    )
    try:
        assert web_server.personal_values_in_logs() == [f"{lab} patient 2: nir", f"{lab} patient 2: family name"]
    finally:
        del web_server.logs.lines[before:]
    assert web_server.personal_values_in_logs() == []


# --- the pages (once they exist) ----------------------------------------------------------------


def _path(page) -> str:
    return urlparse(page.url).path


def login(page, web: WebServer, account: WebAccount) -> None:
    """Log in through the forms: email and password, then the TOTP code for an account with MFA."""
    page.goto(web.url("/login"))
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.press("input[name=password]", "Enter")
    if account.mfa:
        page.wait_for_url(lambda url: urlparse(url).path == "/login/totp")
        page.fill("input[name=code]", account.code())
        page.press("input[name=code]", "Enter")
    page.wait_for_url(lambda url: not urlparse(url).path.startswith("/login"))


def _tab_to(page, name: str, limit: int = 30) -> None:
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.name") == name:
            return
    raise AssertionError(f"no field named {name} reached with Tab")


def test_login_with_totp_then_search_by_nir_and_open_the_patient(web_server: WebServer, page, page_events):
    """The lab_admin logs in (password, then a TOTP code), searches a patient by NIR and opens the
    patient's page, which names the patient; every page has its CSP, breaks none of it, and has no
    serious or critical accessibility fault."""
    lab = web_server.labs[0]
    login(page, web_server, web_server.accounts["lab_admin_a"])
    page.goto(web_server.url("/patients"))
    assert _path(page) == "/patients"
    assert axe_check(page) == []
    page.fill("input[name=nir]", web_server.nirs[lab][0])
    page.press("input[name=nir]", "Enter")
    page.wait_for_selector("#found a")  # htmx swaps the results in
    assert axe_check(page) == []
    pid = web_server.patients[lab][0]
    page.click(f'a[href$="/patients/{pid}"]')
    page.wait_for_url(f"**/patients/{pid}")
    assert web_server.names[lab][0][0].casefold() in page.inner_text("body").casefold()
    assert page.locator("th", has_text="Antériorités").count() >= 1  # results with their previous values
    assert page.locator("tbody tr").count() >= 1
    assert axe_check(page) == []
    assert_page_clean(page_events)


def test_login_page_has_no_accessibility_fault(web_server: WebServer, page, page_events):
    """The login page and the TOTP page: no serious or critical axe-core violation, CSP kept."""
    account = web_server.accounts["lab_admin_a"]
    page.goto(web_server.url("/login"))
    assert axe_check(page) == []
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.press("input[name=password]", "Enter")
    page.wait_for_url(lambda url: urlparse(url).path == "/login/totp")
    assert axe_check(page) == []
    assert_page_clean(page_events)


def test_an_anonymous_visit_to_patients_goes_to_login(web_server: WebServer, page, page_events):
    """No session: /patients sends the browser to /login."""
    page.goto(web_server.url("/patients"))
    assert _path(page) == "/login"
    assert page.locator("input[name=email]").count() == 1
    assert_page_clean(page_events)


def test_a_lab_b_biologist_gets_404_on_a_lab_a_patient(web_server: WebServer, page, page_events):
    """Tenant isolation through the pages: lab B's biologist asking for a lab A patient's page gets
    404, a page that names no patient of lab A."""
    lab_a = web_server.labs[0]
    login(page, web_server, web_server.accounts["biologist_b"])
    r = page.goto(web_server.url(f"/patients/{web_server.patients[lab_a][0]}"))
    assert r is not None and r.status == 404
    body = page.inner_text("body").casefold()
    assert web_server.names[lab_a][0][0].casefold() not in body
    assert_page_clean(page_events, allow_status=frozenset({404}))


def test_login_with_the_keyboard_only(web_server: WebServer, page, page_events):
    """Tab, typing and Enter are enough to log in (with the TOTP step)."""
    account = web_server.accounts["lab_admin_a"]
    page.goto(web_server.url("/login"))
    _tab_to(page, "email")
    page.keyboard.type(account.email)
    _tab_to(page, "password")
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: urlparse(url).path == "/login/totp")
    _tab_to(page, "code")
    page.keyboard.type(account.code())
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: not urlparse(url).path.startswith("/login"))
    assert_page_clean(page_events)


@pytest.mark.parametrize("attempt", [1, 2])
def test_totp_codes_are_accepted_by_the_served_app(web_server: WebServer, page, attempt):
    """The codes ``WebAccount.code()`` gives are accepted by the server thread, in every test (the
    server keeps each account's last time step across tests: a code is never a replay): the
    lab_admin logs in over the API from the browser's context, twice per test."""
    account = web_server.accounts["lab_admin_a"]
    for _ in range(2):
        r = page.request.post(
            web_server.url("/api/v1/auth/login"), data={"email": account.email, "password": account.password}
        )
        assert r.status == 200 and r.json()["mfa_required"] is True, r.status
        r = page.request.post(web_server.url("/api/v1/auth/mfa"), data={"code": account.code()})
        assert r.status == 200, (r.status, r.text())
        assert r.json()["mfa_required"] is False and r.json()["csrf_token"]
