"""The DPO's pages in a real browser: the lab's DPO (no second factor: its role needs none) signs
in and opens the audit explorer, the patient access history and the chain's state; each page has
its CSP, breaks none of it and has no serious or critical accessibility fault. The patient access
history shows a read a biologist made just before, in another browser."""

from __future__ import annotations

from urllib.parse import urlparse

from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def _path(page) -> str:
    return urlparse(page.url).path


def test_the_dpo_opens_each_page_and_sees_the_biologists_read(web_server: WebServer, browser, page, page_events):
    """G3, G4, G5: the biologist opens a patient's page; the DPO finds that read by the patient's
    NIR (posted, never in the URL), by the biologist's name and e-mail; the explorer shows names;
    the chain page verifies the lab's chain and links the downloads."""
    lab = web_server.labs[0]
    pid, nir = web_server.patients[lab][4], web_server.nirs[lab][4]
    bio = web_server.accounts["biologist_a"]
    other = browser.new_context(locale="fr-FR")
    try:
        bio_page = other.new_page()
        login(bio_page, web_server, bio)
        r = bio_page.goto(web_server.url(f"/patients/{pid}"))
        assert r is not None and r.status == 200
    finally:
        other.close()

    dpo = web_server.accounts["dpo_a"]
    assert dpo.mfa  # the role opens patients' identities: a second factor
    login(page, web_server, dpo)

    page.goto(web_server.url("/dpo/audit"))
    assert _path(page) == "/dpo/audit" and page.locator("h1").inner_text() == "Journal d'accès du laboratoire"
    assert page.locator("tbody tr").count() > 0
    assert bio.email in page.locator("tbody").inner_text()
    assert axe_check(page) == []
    page.fill("input[name=person]", bio.email)
    page.select_option("select[name=action]", "patient:")
    page.click("form.search button[type=submit]")
    page.wait_for_load_state()
    text = page.locator("tbody").inner_text()
    assert bio.email in text and "Lecture des résultats" in text
    assert axe_check(page) == []

    page.goto(web_server.url("/dpo/patient-access"))
    assert axe_check(page) == []
    page.fill("input[name=nir]", nir)
    page.click("form.search button[type=submit]")
    page.wait_for_load_state()
    assert _path(page) == "/dpo/patient-access" and nir not in page.url
    rows = page.locator("tbody tr")
    assert rows.count() >= 3
    text = page.locator("tbody").inner_text()
    assert "Web biologist" in text and bio.email in text and "Soins" in text
    assert "Lecture des résultats" in text and "Lecture de l'identité" in text
    assert axe_check(page) == []

    page.goto(web_server.url("/dpo/chain"))
    assert "Chaîne intègre" in page.locator("main").inner_text()
    assert page.locator(f'a[href="/api/v1/tenants/{lab}/audit/export"]').count() == 1
    assert page.locator(f'a[href="/api/v1/tenants/{lab}/audit/checkpoints"]').count() == 1
    assert axe_check(page) == []
    assert_page_clean(page_events)
    assert web_server.personal_values_in_logs() == []
