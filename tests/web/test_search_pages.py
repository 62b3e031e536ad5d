"""The patient search by the start of the name and the birth date, in Chromium: found through
htmx, a refusal shown in place; CSP kept, no serious accessibility fault."""

from __future__ import annotations

from labvault.synth import LabGenerator
from tests.api.conftest import PATIENTS, SEED
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def test_the_start_of_the_name_and_the_birth_date_find_the_patient(web_server: WebServer, page, page_events):
    """M2, E2: three letters of the family name and the birth date find the lab's patient; one
    letter is refused in place with the reason; every state of the page is CSP and axe clean."""
    lab = web_server.labs[0]
    first = next(iter(LabGenerator(lab, SEED).patients(PATIENTS))).identity
    login(page, web_server, web_server.accounts["biologist_a"])
    page.goto(web_server.url("/patients"))
    assert axe_check(page) == []
    page.fill("input[name=family_name]", first.family_name[:3].lower())
    page.fill("input[name=birth_date]", first.birth_date.isoformat())
    page.press("input[name=birth_date]", "Enter")
    page.wait_for_selector(f'#found a[href$="/patients/{first.patient_id}"]')
    assert axe_check(page) == []
    page.fill("input[name=family_name]", first.family_name[:1])
    page.press("input[name=family_name]", "Enter")
    page.wait_for_selector("#found [role=alert]")
    assert "deux lettres" in page.inner_text("#found")
    assert axe_check(page) == []
    assert_page_clean(page_events)
