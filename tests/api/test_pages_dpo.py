"""The DPO's pages over HTTP: the lab's audit explorer (people by name and e-mail, filters by
person, action, patient and period), who saw a patient's data, and the state of the audit chain
with its retention rules; the lab's DPO and admin only, their own lab only, nothing for a vendor
account (not even the security officer, who reads a lab's trail through the API)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from labvault.access import Purpose
from labvault.accounts import service
from labvault.web.pages import LAB_ZONE, PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.conftest import totp_code

DPO_NAME = {LAB_A: "Agathe Delorme", LAB_B: "Bruno Sabatier"}


def _dpo(api, lab: str):
    """The lab's DPO (a second factor: the role opens patients' identities), signed in through the
    pages."""
    email, password = f"dpo@{lab}.api.invalid", "Api-tests-pass-dpo-1!"
    with api.gateway.unit(api.accounts.creator(lab, "lab_dpo"), Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=lab, name=DPO_NAME[lab], email=email, roles=["lab_dpo"])
    with api.gateway.auth_unit(source_addr="setup", user_agent="setup") as u:
        secret = service.enrol_directly(u, email, password)
    assert secret is not None
    c = api.client()
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": email, "password": password, "next": "/dpo/audit"},
        follow_redirects=False,
    )
    page = c.get(r.headers["location"])
    r = c.post(
        "/login/totp",
        data={"csrf": _form_csrf(page.text), "code": totp_code(secret), "next": "/dpo/audit"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/dpo/audit", r.text
    return c


def _rows(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)


def _post(c, path: str, page_html: str, **data):
    return c.post(path, data={"csrf": _form_csrf(page_html), **data})


def test_the_dpo_sees_the_labs_events_by_name_and_filters_them(api):
    """G3, G5: the lab's DPO reads its lab's audit trail: the actor by name and e-mail, the action,
    the time in French, the outcome; filters by person (e-mail or name), action and period."""
    bio_acct = api.accounts[f"biologist@{LAB_A}"]
    bio = _page_login(api, f"biologist@{LAB_A}")
    pid = api.patients[LAB_A][0]
    assert bio.get(f"/patients/{pid}").status_code == 200
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/audit")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    rows = _rows(page.text)
    assert 0 < len(rows) <= 100
    reads = [r for r in rows if "patient:result:read" in r]
    assert reads and all(bio_acct.email in r for r in reads)
    assert "Lecture des résultats" in reads[0] and "Autorisé" in reads[0]
    now = datetime.now(LAB_ZONE)
    assert re.search(rf"{now:%d/%m/%Y} \d\d:\d\d", reads[0])  # French date and time, the lab's zone
    # the main label of a person is a name, never an account id
    name = re.search(r'<span class="name">([^<]*)</span>', reads[0])
    assert name and name.group(1).strip() and not re.fullmatch(r"[0-9a-f-]{16,}", name.group(1).strip())

    by_email = _post(dpo, "/dpo/audit", page.text, person=bio_acct.email)
    rows = _rows(by_email.text)
    assert rows and all(bio_acct.email in r for r in rows)
    by_name = _post(dpo, "/dpo/audit", page.text, person=name.group(1).strip().split()[-1].lower())
    assert any(bio_acct.email in r for r in _rows(by_name.text))
    nobody = _post(dpo, "/dpo/audit", page.text, person="nobody@nowhere.invalid")
    assert "Aucune personne ne correspond." in nobody.text and not _rows(nobody.text)
    # a person is never a filter of the URL (it would sit in history and logs): ignored there
    in_url = dpo.get("/dpo/audit", params={"person": "nobody@nowhere.invalid"})
    assert "Aucune personne ne correspond." not in in_url.text and _rows(in_url.text)

    logins = dpo.get("/dpo/audit", params={"action": "account:"})
    rows = _rows(logins.text)
    assert rows and all("<code>account:" in r for r in rows)
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    later = dpo.get("/dpo/audit", params={"since": tomorrow})
    assert "Aucun événement ne correspond." in later.text and not _rows(later.text)
    today = dpo.get("/dpo/audit", params={"since": now.date().isoformat(), "until": now.date().isoformat()})
    assert _rows(today.text)


def test_a_patient_search_is_posted_and_finds_that_patients_events(api):
    """G5: the explorer filters by a patient's NIR through the blind index, posted (never in a URL);
    a NIR of no patient of the lab says so."""
    bio = _page_login(api, f"biologist@{LAB_A}")
    first, second = api.patients[LAB_A][0], api.patients[LAB_A][1]
    assert bio.get(f"/patients/{second}").status_code == 200
    assert bio.get(f"/patients/{first}").status_code == 200
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/audit")
    r = _post(dpo, "/dpo/audit", page.text, nir=api.nirs[LAB_A][1], action="patient:")
    rows = _rows(r.text)
    assert rows and all(second in r for r in rows) and not any(first in r for r in rows)
    assert api.nirs[LAB_A][1] not in str(r.url)
    r = _post(dpo, "/dpo/audit", page.text, nir=api.nirs[LAB_B][0])
    assert "Aucun patient de ce laboratoire" in r.text and not _rows(r.text)


def test_patient_access_lists_the_biologists_read(api):
    """G5 (GDPR Art. 15): who saw this patient's data: the biologist's reads of the patient, by
    name, with time and purpose; another patient's reads are not listed."""
    bio_acct = api.accounts[f"biologist@{LAB_A}"]
    bio = _page_login(api, f"biologist@{LAB_A}")
    pid = api.patients[LAB_A][2]
    assert bio.get(f"/patients/{pid}").status_code == 200
    assert bio.get(f"/patients/{api.patients[LAB_A][3]}").status_code == 200
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/patient-access")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    r = _post(dpo, "/dpo/patient-access", page.text, nir=api.nirs[LAB_A][2])
    assert r.status_code == 200
    rows = _rows(r.text)
    actions = {a for row in rows for a in re.findall(r"<code>(patient:[a-z:]+)</code>", row)}
    assert {"patient:identity:read", "patient:request:read", "patient:result:read"} <= actions
    assert all(bio_acct.email in row and "Soins" in row for row in rows)
    assert all(api.patients[LAB_A][3] not in row for row in rows)
    assert not any(":create" in a for a in actions)


def test_the_chain_page_verifies_and_links_the_downloads(api):
    """G4, G6: the chain verified now, the last signed checkpoint, the links to the export and
    the checkpoints (which answer the DPO's session), the lab's retention rules."""
    from labvault.audit import service as audit
    from tests.conftest import ADMIN

    with api.gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        cp = audit.checkpoint(u, LAB_A)
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/chain")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    assert "Chaîne intègre" in page.text and cp["body"]["root"] in page.text
    for link in (f"/api/v1/tenants/{LAB_A}/audit/export", f"/api/v1/tenants/{LAB_A}/audit/checkpoints"):
        assert f'href="{link}"' in page.text
        got = dpo.get(link)
        assert got.status_code == 200 and got.headers["content-type"].startswith("application/x-ndjson")
    assert "Règles de conservation" in page.text and "3650" in page.text  # the lab's results rule
    english = dpo.get("/dpo/chain", params={"lang": "en"})
    assert "Chain intact" in english.text and "Retention rules" in english.text
    admin = _page_login(api, f"lab_admin@{LAB_A}")  # the lab's admin reads them too
    assert admin.get("/dpo/chain").status_code == 200
    assert admin.get("/dpo/audit").status_code == 200


def test_who_is_refused(api):
    """F1, F2, G5: a biologist is refused the DPO's pages; another lab's DPO sees only its own lab;
    vendor accounts (security officer, support) get nothing of a lab here."""
    bio_acct = api.accounts[f"biologist@{LAB_A}"]
    bio = _page_login(api, f"biologist@{LAB_A}")
    assert bio.get(f"/patients/{api.patients[LAB_A][0]}").status_code == 200
    for path in ("/dpo/audit", "/dpo/chain", "/dpo/patient-access"):
        r = bio.get(path)
        assert r.status_code == 403 and "<tbody>" not in r.text, path
    r = _post(bio, "/dpo/patient-access", bio.get("/patients").text, nir=api.nirs[LAB_A][0])
    assert r.status_code == 403 and "<tbody>" not in r.text

    other = _dpo(api, LAB_B)
    page = other.get("/dpo/audit")
    assert page.status_code == 200 and bio_acct.email not in page.text
    r = _post(other, "/dpo/patient-access", page.text, nir=api.nirs[LAB_A][0])
    assert "Aucun patient de ce laboratoire" in r.text and not _rows(r.text)
    chain = other.get("/dpo/chain")
    assert LAB_A not in chain.text
    assert other.get(f"/api/v1/tenants/{LAB_A}/audit/export").status_code in (403, 404)

    for key in ("security_officer", "support"):
        vendor = _page_login(api, key)
        for path in ("/dpo/audit", "/dpo/chain", "/dpo/patient-access"):
            r = vendor.get(path)
            assert r.status_code == 403 and "<tbody>" not in r.text and bio_acct.email not in r.text, (key, path)
        r = _post(vendor, "/dpo/patient-access", vendor.get("/patients").text, nir=api.nirs[LAB_A][0])
        assert r.status_code == 403 and "<tbody>" not in r.text, key


def test_a_read_under_a_support_grant_names_the_vendor_person_and_the_grant(api, support):
    """F2, G5: a support engineer's read of a patient under a grant the lab approved is listed for
    the DPO with the engineer's name and e-mail, the support purpose and the grant's ticket."""
    pid = api.patients[LAB_A][5]
    grants = f"/api/v1/tenants/{LAB_A}/grants"
    body = {"ticket": "SUP-77", "reason": "wrong unit reported", "hours": 1, "fields": ["identity"], "patients": [pid]}
    r = support.post(grants, json=body)
    assert r.status_code == 201, r.text
    admin = api.login(f"lab_admin@{LAB_A}")
    assert admin.post(f"{grants}/{r.json()['grant_id']}/approve").json()["state"] == "active"
    assert support.get(f"/api/v1/tenants/{LAB_A}/patients/{pid}").status_code == 200
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/patient-access")
    r = _post(dpo, "/dpo/patient-access", page.text, nir=api.nirs[LAB_A][5])
    rows = [row for row in _rows(r.text) if api.accounts["support"].email in row]
    assert rows and all("SUP-77" in row and "Support (accès accordé)" in row for row in rows)
    assert all("Compte du prestataire" in row for row in rows)


def test_the_explorer_pages_by_100(api, monkeypatch):
    """G5: the explorer shows 100 events a page (5 here, on a lab of few events), newest first;
    the next page holds the older ones."""
    from labvault.web import dpo as part

    assert part.PAGE_SIZE == 100
    monkeypatch.setattr(part, "PAGE_SIZE", 5)
    dpo = _dpo(api, LAB_A)
    page = dpo.get("/dpo/audit")
    first = _rows(page.text)
    assert len(first) == 5 and "Page suivante" in page.text and "Page précédente" not in page.text
    seqs = [int(x) for x in re.findall(r'data-seq="(\d+)"', page.text)]
    r = _post(dpo, "/dpo/audit", page.text, page="2", before=str(seqs[-1]))
    assert "Page précédente" in r.text and "Page suivante" in r.text
    older = [int(x) for x in re.findall(r'data-seq="(\d+)"', r.text)]
    assert older == list(range(seqs[-1] - 1, seqs[-1] - 6, -1))  # the next 5, though the log grew meanwhile
    back = _post(dpo, "/dpo/audit", page.text, page="1", after=str(older[0]))
    assert [int(x) for x in re.findall(r'data-seq="(\d+)"', back.text)] == seqs
