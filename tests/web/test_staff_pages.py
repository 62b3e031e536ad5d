"""The lab staff's pages in a real browser (Debian's chromium): the identity-vigilance queue, the
quarantine and the enrolment by the one-time link; each page keeps its Content-Security-Policy, and
axe-core finds no serious or critical accessibility fault. The enrolment shows the authenticator's
QR code as an image the browser draws (a data URI, allowed by ``img-src data:``)."""

from __future__ import annotations

from urllib.parse import urlparse

from labvault.access import Purpose
from labvault.accounts import service
from labvault.identity import service as identity
from labvault.ingest import intake
from tests.api.conftest import LAB_A
from tests.conftest import ADMIN, first_lab_admin, lab_user, totp_code
from tests.identity.helpers import JONES_NIR, ingest, oru
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def _seed(web: WebServer) -> tuple[str, str]:
    """A queued conflict and a refused message in lab A: (queue id, quarantine id)."""
    feed = lab_user(web.gateway, LAB_A, "biologist", name="Feed")
    ingest(web.gateway, feed, oru("WJ1", ins=JONES_NIR, family="JONES", given="Mary", born="19610615", sex="F"))
    s = ingest(web.gateway, feed, oru("WQ2", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101"))
    assert s.queued == 1, s.reasons
    s = ingest(web.gateway, feed, oru("WR1", ins=None, family="", given="", born="19610615"))
    assert s.rejected == 1, s.reasons
    with web.gateway.unit(feed, Purpose.CARE) as u:
        return identity.queue(u, LAB_A)[-1].queue_id, intake.listing(u, LAB_A)[-1].quarantine_id


def test_the_queue_and_the_quarantine_in_the_browser(web_server: WebServer, page, page_events):
    """M2, G1: a biologist opens the queue (both identities side by side), rejects the message,
    then opens the quarantine (the refusal's reason); CSP and axe clean on each page."""
    qid, rid = _seed(web_server)
    login(page, web_server, web_server.accounts["biologist_a"])
    page.goto(web_server.url("/identity/queue"))
    assert page.locator("h1").inner_text() == "File d'identitovigilance"
    section = page.locator("section.queued", has=page.locator(f"form[action='/identity/queue/{qid}/resolve']"))
    table = section.locator("table").inner_text()
    assert "JEAN" in table and "JONES" in table and "01/01/1950" in table and "15/06/1961" in table
    assert axe_check(page) == []
    section.locator("input[value=reject]").check()
    section.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: urlparse(url).query == "done=rejected")
    assert page.locator("[role=status]").inner_text() == "Message rejeté."
    assert page.locator(f"form[action='/identity/queue/{qid}/resolve']").count() == 0
    assert axe_check(page) == []

    page.goto(web_server.url("/quarantine"))
    row = page.locator("tr", has=page.locator(f"form[action='/quarantine/{rid}/drop']"))
    assert "hl7v2" in row.inner_text() and row.locator("td").nth(3).inner_text().strip()
    assert axe_check(page) == []
    assert_page_clean(page_events)
    assert web_server.personal_values_in_logs() == []


def test_enrolment_in_the_browser_shows_the_qr_code(web_server: WebServer, page, page_events):
    """E1, E2: an invited lab_admin opens the link ``/enrol#token=...``: the token, in the
    fragment, is in no URL the browser requests (the server, its logs and any Referer never see
    it), the page's script puts it in the form and clears it from the address bar; the person
    reads the policy and the commitment, sets the password, sees the QR code drawn as an image and
    the key, enters the first code: enrolment complete, a link to sign in. CSP and axe clean on
    each step."""
    admin = first_lab_admin(web_server.gateway, ADMIN, LAB_A)
    email = "enrol-browser@lab-a.web.invalid"
    with web_server.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        invited = service.create_account(u, tenant_id=LAB_A, name="Nora Vidal", email=email, roles=["lab_admin"])
    token = invited.enrolment_token
    assert token
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url + " " + (r.headers.get("referer") or "")))
    page.goto(web_server.url(f"/enrol#token={token}"))
    assert page.locator("h1").inner_text() == "Activer votre compte"
    page.wait_for_function("() => !window.location.hash")
    assert page.input_value("#token") == token and token not in page.url
    assert axe_check(page) == []
    password = "Browser-enrol-pass-07!"
    page.fill("#password", password)
    page.fill("#password2", password)
    page.check("#commitment")
    page.click("button[type=submit]")
    qr = page.locator("img.qr")
    qr.wait_for()
    assert (qr.get_attribute("src") or "").startswith("data:image/svg+xml;base64,")
    assert page.evaluate("() => document.querySelector('img.qr').naturalWidth") > 0  # drawn by the browser
    assert page.locator("svg").count() == 0
    secret = page.locator("code.secret").inner_text()
    assert len(secret) >= 16
    assert axe_check(page) == []
    page.fill("#code", totp_code(secret))
    page.click("button[type=submit]")
    page.locator("a[href='/login']").wait_for()
    assert page.locator("h1").inner_text() == "Compte activé"
    assert axe_check(page) == []
    assert_page_clean(page_events)
    assert requested and not [u for u in requested if token in u]
    assert token not in web_server.logs.text


def test_enrolment_without_script_takes_the_pasted_code(web_server: WebServer, browser):
    """E1: with script off, the page is the same form with a visible field where the invitee
    pastes the code from the invitation; posted, it enrols (a technician: no authenticator)."""
    admin = first_lab_admin(web_server.gateway, ADMIN, LAB_A)
    with web_server.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        invited = service.create_account(
            u, tenant_id=LAB_A, name="Paul Girard", email="enrol-noscript@lab-a.web.invalid", roles=["technician"]
        )
    assert invited.enrolment_token
    context = browser.new_context(locale="fr-FR", java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(web_server.url("/enrol"))
        assert page.is_visible("#token")
        page.fill("#token", invited.enrolment_token)
        page.fill("#password", "Browser-enrol-pass-08!")
        page.fill("#password2", "Browser-enrol-pass-08!")
        page.check("#commitment")
        page.click("button[type=submit]")
        page.locator("a[href='/login']").wait_for()
        assert page.locator("h1").inner_text() == "Compte activé"
    finally:
        context.close()
