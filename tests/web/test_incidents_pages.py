"""The breach response's pages in a real browser (I1, I3): the lab's DPO uploads a leaked file, reads
its lab's counts, opens the incident from the analysis; the register's 72-hour countdown ticks
(read twice, a second apart); every page keeps its CSP and has no serious or critical
accessibility fault. The vendor's support account is refused the register."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlparse

from labvault.access import Purpose
from labvault.breach import incidents
from labvault.ids import utcnow
from tests.conftest import lab_user
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login

LEAKED = 5


def _seconds(text: str) -> int:
    m = re.fullmatch(r"(-?)(\d+):(\d\d):(\d\d)", text.strip())
    assert m, text
    value = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    return -value if m.group(1) else value


def test_the_dpo_uploads_a_leak_and_the_countdown_ticks(web_server: WebServer, page, page_events):
    """I1, I3: the upload's result gives the lab's exact count; the incident opened from it shows its
    clock; the countdown ticks every second in the browser and starts from the server's value."""
    lab = web_server.labs[0]
    rows = "\n".join(f"{nir};718-7;Hémoglobine;13,2;g/dL" for nir in web_server.nirs[lab][:LEAKED])
    leak = f"NIR;Code;Libellé;Résultat;Unité\n{rows}\n".encode()
    login(page, web_server, web_server.accounts["dpo_a"])

    page.goto(web_server.url("/breach/analyze"))
    assert page.locator("h1").inner_text() == "Analyse d'un fichier divulgué"
    assert axe_check(page) == []
    page.set_input_files("input[name=leak]", files=[{"name": "fuite.csv", "mimeType": "text/csv", "buffer": leak}])
    page.click("button[type=submit]:has-text('Analyser')")
    page.wait_for_url(lambda url: urlparse(url).path.startswith("/breach/analyses/"))
    cells = page.locator(f"tr:has(th:text-is('{lab}')) td").all_inner_texts()
    assert cells[:2] == [str(LEAKED), str(LEAKED)]
    assert web_server.labs[1] not in page.locator("main").inner_text()
    assert axe_check(page) == []

    page.fill("input[name=title]", "Fichier trouvé sur un forum")
    page.click("button[type=submit]:has-text('Ouvrir')")
    page.wait_for_url(lambda url: urlparse(url).path.startswith("/incidents/"))
    assert page.locator("h1").inner_text() == "Fichier trouvé sur un forum"
    assert page.locator("dd", has_text=str(LEAKED)).count() >= 1
    assert axe_check(page) == []

    page.goto(web_server.url("/incidents"))
    clock = page.locator("span.countdown").first
    first = _seconds(clock.inner_text())
    page.wait_for_timeout(1100)
    second = _seconds(clock.inner_text())
    assert 71 * 3600 < second < first <= 72 * 3600, (first, second)
    assert first - second in (1, 2)
    assert axe_check(page) == []
    assert_page_clean(page_events)


def test_an_overdue_clock_is_shown_late_and_support_gets_no_register(web_server: WebServer, browser, page, page_events):
    """I3, E2: a lab's own incident known 80 hours ago is past its deadline: the time left is
    negative, marked late, also without the script (printed by the server); the vendor's support
    account is refused the register."""
    lab = web_server.labs[0]
    keeper = lab_user(web_server.gateway, lab, "lab_admin", name="Keeper")
    with web_server.gateway.unit(keeper, Purpose.BREACH) as u:
        inc = incidents.open_incident(u, title="Poste volé", aware_at=utcnow() - timedelta(hours=80), tenant=lab)
    login(page, web_server, web_server.accounts["dpo_a"])
    page.goto(web_server.url(f"/incidents/{inc.incident_id}"))
    clock = page.locator("span.countdown.late")
    assert clock.count() == 1 and _seconds(clock.inner_text()) < -7 * 3600
    assert axe_check(page) == []
    assert_page_clean(page_events)

    no_js = browser.new_context(locale="fr-FR", java_script_enabled=False)
    try:
        static = no_js.new_page()
        login(static, web_server, web_server.accounts["dpo_a"])
        static.goto(web_server.url(f"/incidents/{inc.incident_id}"))
        shown = _seconds(static.locator("span.countdown.late").inner_text())
        assert -81 * 3600 < shown < -7 * 3600
        static.wait_for_timeout(1100)
        assert _seconds(static.locator("span.countdown.late").inner_text()) == shown  # nothing ticks
    finally:
        no_js.close()

    page.context.clear_cookies()
    login(page, web_server, web_server.accounts["support"])
    r = page.goto(web_server.url("/incidents"))
    assert r is not None and r.status == 403
    assert "Poste volé" not in page.locator("main").inner_text()
