"""The pages for outside reports (H2, H4) and the lab's explained accesses (G5, H1), over HTTP:
the security officer registers, assesses and closes a report through the forms; the lab's admin
sees the accesses to review and the report told to the lab; vendor accounts get no lab's accesses,
lab accounts and vendor support get no register."""

from __future__ import annotations

import re

from tests.api.conftest import LAB_A
from tests.api.test_pages import _form_csrf, _page_login

LEAKED = "DUPONT Jeanne 2690375123456"


def test_the_register_through_the_pages(api):
    """H2: register, refuse to close before the assessment, assess (told to lab A), close; the lab's
    admin then sees it on its accesses page; the text never shows there."""
    so = _page_login(api, "security_officer")
    page = so.get("/security/advisories")
    assert page.status_code == 200 and "Signalements extérieurs" in page.text
    r = so.post(
        "/security/advisories",
        data={
            "csrf": _form_csrf(page.text),
            "source": "anssi",
            "severity": "critical",
            "reference": "CERTFR-2026-ALE-001",
            "owner": "",
            "labs": LAB_A,
            "summary": f"56 lignes : {LEAKED}",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    where = r.headers["location"]
    one = so.get(where)
    assert one.status_code == 200 and LEAKED in one.text
    advisory_id = where.rsplit("/", 1)[1]
    r = so.post(where + "/close", data={"csrf": _form_csrf(one.text)})
    assert r.status_code == 400 and "breach assessment" in r.text
    r = so.post(
        where + "/assess",
        data={
            "csrf": _form_csrf(one.text),
            "breach": "yes",
            "notify_labs": "yes",
            "labs": LAB_A,
            "reasoning": "lignes du laboratoire A",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    one = so.get(where)
    assert "Clore le signalement" in one.text
    r = so.post(where + "/close", data={"csrf": _form_csrf(one.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert re.search(r"<dd>closed</dd>", so.get(where).text)
    admin = _page_login(api, f"lab_admin@{LAB_A}")
    page = admin.get("/dpo/accesses")
    assert page.status_code == 200 and advisory_id in page.text and LEAKED not in page.text
    assert 'href="/dpo/accesses"' in page.text  # in the menu


def test_who_gets_what(api):
    """G5, H2, F2: vendor accounts (support, security officer) are refused a lab's accesses page;
    lab accounts and vendor support are refused the register; a biologist gets no accesses page."""
    for key in ("support", "security_officer", "operator"):
        c = _page_login(api, key)
        r = c.get("/dpo/accesses")
        assert r.status_code == 403, key
    for key in (f"lab_admin@{LAB_A}", f"biologist@{LAB_A}", "support", "operator"):
        c = _page_login(api, key)
        assert c.get("/security/advisories").status_code == 403, key
    bio = _page_login(api, f"biologist@{LAB_A}")
    assert bio.get("/dpo/accesses").status_code == 403
    pa = _page_login(api, "platform_admin")
    page = pa.get("/security/advisories")
    assert page.status_code == 200 and "Enregistrer un signalement" not in page.text


def test_the_accesses_page_lists_the_unexplained(api):
    """G5, H1: a patient read by a lab account with no relation to it is listed for review, by
    account, action and reference, never by name."""
    bio = api.login(f"biologist@{LAB_A}")
    patient = api.patients[LAB_A][0]
    r = bio.get(f"/api/v1/tenants/{LAB_A}/patients/{patient}")
    assert r.status_code == 200, r.text
    admin = _page_login(api, f"lab_admin@{LAB_A}")
    page = admin.get("/dpo/accesses")
    assert page.status_code == 200
    assert patient in page.text and "patient:identity:read" in page.text
    assert r.json().get("family_name", "@@") not in page.text
    assert admin.get("/dpo/accesses?day=notaday").status_code == 400
