"""The breach response's pages over HTTP: the leak upload (read in memory, capped, an unreadable
file refused with one line), the result per lab, the incident opened from it, the register with
each lab's 72-hour countdown, one incident's timeline, analysis, drafts and decisions, the letters.

What each account gets: a lab's admin and DPO see their own lab's part only (never another lab's id
or counts); the vendor's security officer and platform admin see each lab's clock, state and
counts, never a lab's reasoning, authority reference or letters; operator and support get nothing;
no vendor account posts a lab's decision."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from labvault.access import Purpose
from labvault.accounts import service
from labvault.ids import utcnow
from labvault.store import schema as t
from labvault.web import breach as upload_pages
from labvault.web.pages import LAB_ZONE, PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.conftest import totp_code

LEAKED = {LAB_A: 4, LAB_B: 7}  # patients of each lab in the leaked file
REASONING = "Résultats VIH exposés : risque élevé pour les personnes"
AUTHORITY_REF = "CNIL-2026-REF-4471"
FACTS = "Signalé par un journaliste le matin même"


def leaked_csv(api, extra: str = "") -> bytes:
    """A leaked file: NIRs of some patients of each lab with results, a junk title and strangers."""
    lines = ["Export resultats laboratoire", "NIR;Code;Libellé;Résultat;Unité"]
    for lab, n in LEAKED.items():
        for nir in api.nirs[lab][:n]:
            lines.append(f"{nir};718-7;Hémoglobine;13,2;g/dL")
    lines.append("2850375123456;718-7;Hémoglobine;12,9;g/dL")  # nobody's
    return ("\n".join(lines) + "\n" + extra).encode("utf-8")


def _upload(c, data: bytes, name: str = "fuite.csv"):
    page = c.get("/breach/analyze")
    assert page.status_code == 200, page.text
    return c.post(
        "/breach/analyze",
        data={"csrf": _form_csrf(page.text)},
        files={"leak": (name, data, "text/csv")},
        follow_redirects=False,
    )


def _lab_account(api, lab: str, roles: list[str], email: str):
    """A lab account signed in through the pages (its TOTP when its roles need one)."""
    password = "Api-tests-pass-incidents-1!"
    with api.gateway.unit(api.accounts.creator(lab, "lab_dpo"), Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=lab, name="Agathe Delorme", email=email, roles=roles)
    with api.gateway.auth_unit(source_addr="setup", user_agent="setup") as u:
        secret = service.enrol_directly(u, email, password)
    c = api.client()
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": email, "password": password, "next": "/incidents"},
        follow_redirects=False,
    )
    if secret is not None:
        page = c.get(r.headers["location"])
        r = c.post(
            "/login/totp",
            data={"csrf": _form_csrf(page.text), "code": totp_code(secret), "next": "/incidents"},
            follow_redirects=False,
        )
    assert r.status_code == 303 and r.headers["location"] == "/incidents", r.text
    return c


@pytest.fixture
def opened(api):
    """The security officer's upload, its result, the incident opened from it and the notices sent."""
    so = _page_login(api, "security_officer")
    r = _upload(so, leaked_csv(api))
    assert r.status_code == 303 and r.headers["location"].startswith("/breach/analyses/"), r.text
    result = so.get(r.headers["location"])
    analysis_id = r.headers["location"].rsplit("/", 1)[1]
    r = so.post(
        f"/breach/analyses/{analysis_id}/incident",
        data={"csrf": _form_csrf(result.text), "title": "Fichier publié sur un forum", "aware_at": "", "facts": FACTS},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/incidents/"), r.text
    incident_id = r.headers["location"].rsplit("/", 1)[1]
    page = so.get(f"/incidents/{incident_id}")
    r = so.post(f"/incidents/{incident_id}/notices", data={"csrf": _form_csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return so, result, analysis_id, incident_id


def _cells(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html, re.S)]


def test_the_upload_gives_each_labs_counts_and_opens_the_incident(api, opened):
    """I1 (item 1, the upload page): a leaked file read in memory gives each lab's exact count of
    affected patients and records, the rows matching nobody counted; the incident opened from it
    concerns both labs, each with its 72-hour clock started by the processor's notice."""
    so, result, _analysis_id, incident_id = opened
    assert result.status_code == 200 and result.headers["content-security-policy"] == PAGE_CSP
    rows = re.findall(r"<tr><th scope=\"row\">(lab-[ab])</th><td>(\d+)</td><td>(\d+)</td>", result.text)
    assert {lab: (int(p), int(n)) for lab, p, n in rows} == {lab: (n, n) for lab, n in LEAKED.items()}
    assert re.search(r"Lignes sans correspondance</dt><dd>1</dd>", result.text)
    listing = so.get("/incidents")
    assert listing.status_code == 200 and f'href="/incidents/{incident_id}"' in listing.text
    assert FACTS in so.get(f"/incidents/{incident_id}").text  # the owner's sealed facts, opened for it
    deadlines = re.findall(r'data-deadline="([^"]+)"', listing.text)
    assert len(deadlines) == 2  # one clock per lab, started by the notice
    left = re.findall(r'class="countdown[^"]*"[^>]*>(\d\d):(\d\d):(\d\d)<', listing.text)
    assert len(left) == 2 and all(71 <= int(h) <= 72 for h, _, _ in left)
    for iso in deadlines:
        datetime.fromisoformat(iso)
    assert '<script src="/static/countdown.js" defer></script>' in listing.text
    assert so.get("/static/countdown.js").status_code == 200


def test_a_lab_sees_its_own_part_only_and_decides(api, opened):
    """I1, I3, I5: lab A's admin sees its own part (its count, its clock), nothing of lab B (neither
    its id nor its count) on any page; it drafts its Art. 33 notification (HTML, PDF, JSON), decides
    to notify with its reasoning and records the authority's notification."""
    _so, _result, analysis_id, incident_id = opened
    admin = _page_login(api, f"lab_admin@{LAB_A}")
    listing = admin.get("/incidents")
    assert listing.status_code == 200 and "Fichier publié sur un forum" in listing.text
    assert str(LEAKED[LAB_A]) in _cells(listing.text)
    one = admin.get(f"/incidents/{incident_id}")
    assert one.status_code == 200
    assert re.search(rf"Patients concernés</dt><dd>{LEAKED[LAB_A]}</dd>", one.text)
    r = admin.post(
        f"/incidents/{incident_id}/draft",
        data={"csrf": _form_csrf(one.text), "measures_taken": "Retrait demandé\nSecrets renouvelés"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    one = admin.get(f"/incidents/{incident_id}")
    assert f"/incidents/{incident_id}/documents/art33/1?format=pdf" in one.text
    html = admin.get(f"/incidents/{incident_id}/documents/art33/1?format=html")
    assert html.status_code == 200 and "script-src" not in html.headers["content-security-policy"]
    pdf = admin.get(f"/incidents/{incident_id}/documents/art33/1?format=pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    body = admin.get(f"/incidents/{incident_id}/documents/art33/1?format=json").json()
    notice = admin.get(f"/incidents/{incident_id}/documents/notice/1?format=json").json()
    assert FACTS not in one.text  # the processor's own facts stay the processor's
    for page in (listing.text, one.text, html.text, str(body), str(notice)):
        assert LAB_B not in page
        assert str(LEAKED[LAB_B]) not in _cells(page)

    r = admin.post(
        f"/incidents/{incident_id}/decision",
        data={"csrf": _form_csrf(one.text), "decision": "notify", "reasoning": REASONING},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    now = datetime.now(LAB_ZONE).strftime("%Y-%m-%dT%H:%M")
    r = admin.post(
        f"/incidents/{incident_id}/notified",
        data={"csrf": _form_csrf(one.text), "at": now, "reference": AUTHORITY_REF},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    one = admin.get(f"/incidents/{incident_id}")
    assert REASONING in one.text and AUTHORITY_REF in one.text and "notifié à l&#39;autorité" in one.text
    assert 'class="countdown' not in one.text  # the clock stops once notified

    # Lab B's admin: its own part, never lab A's id, count, reasoning or reference
    other = _page_login(api, f"lab_admin@{LAB_B}")
    for path in ("/incidents", f"/incidents/{incident_id}"):
        page = other.get(path)
        assert page.status_code == 200
        assert LAB_A not in page.text and REASONING not in page.text and AUTHORITY_REF not in page.text
        assert str(LEAKED[LAB_A]) not in _cells(page.text)
    assert other.get(f"/breach/analyses/{analysis_id}").status_code == 403  # not the DPO's page


def test_vendor_accounts_get_no_lab_decision_and_post_none(api, opened):
    """I1, E2: the platform admin sees each lab's clock, state and counts, not its reasoning nor its
    authority reference; operator and support get no incident page; the security officer cannot
    post a lab's decision; none of them downloads letters."""
    so, _result, _analysis_id, incident_id = opened
    admin = _page_login(api, f"lab_admin@{LAB_A}")
    one = admin.get(f"/incidents/{incident_id}")
    admin.post(
        f"/incidents/{incident_id}/decision",
        data={"csrf": _form_csrf(one.text), "decision": "notify", "reasoning": REASONING},
    )
    padmin = _page_login(api, "platform_admin")
    page = padmin.get(f"/incidents/{incident_id}")
    assert page.status_code == 200 and LAB_A in page.text and LAB_B in page.text
    assert REASONING not in page.text and "decision: notify" not in page.text
    assert "/letters" not in page.text and "/decision" not in page.text
    for key in ("operator", "support"):
        c = _page_login(api, key)
        for path in ("/incidents", f"/incidents/{incident_id}", "/breach/analyze"):
            r = c.get(path)
            assert r.status_code == 403 and REASONING not in r.text and LAB_A not in r.text, (key, path)
    for vendor in (so, padmin):
        page = vendor.get(f"/incidents/{incident_id}")
        for action, data in (
            ("decision", {"decision": "no-risk", "reasoning": "vendor"}),
            ("notified", {"at": "2026-01-01T10:00", "reference": "X"}),
            ("exemption", {"ground": "encrypted", "reason": "vendor"}),
            ("draft", {}),
            ("letters", {"as": "zip"}),
        ):
            r = vendor.post(f"/incidents/{incident_id}/{action}", data={"csrf": _form_csrf(page.text), **data})
            assert r.status_code == 403 and not r.content.startswith((b"PK", b"%PDF")), (action, r.status_code)
        for fmt in ("html", "json", "pdf"):
            assert vendor.get(f"/incidents/{incident_id}/documents/notice/1?format={fmt}").status_code == 403
    mine = admin.get(f"/incidents/{incident_id}")
    assert "no-risk" not in _cells(mine.text) and REASONING in mine.text


def test_the_labs_dpo_downloads_the_letters_built_in_memory(api, opened):
    """I4 (Art. 34): the lab's DPO (with a second factor: the letters open names and addresses)
    downloads one PDF per affected patient of its lab in a ZIP, or all of them as one PDF."""
    _so, _result, _analysis_id, incident_id = opened
    dpo = _lab_account(api, LAB_A, ["lab_dpo"], f"dpo-letters@{LAB_A}.api.invalid")
    page = dpo.get(f"/incidents/{incident_id}")
    assert 'action="/incidents/' + incident_id + '/letters"' in page.text
    r = dpo.post(f"/incidents/{incident_id}/letters", data={"csrf": _form_csrf(page.text), "as": "zip"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert len(names) == LEAKED[LAB_A] and all(n.endswith(".pdf") for n in names)
    r = dpo.post(f"/incidents/{incident_id}/letters", data={"csrf": _form_csrf(page.text), "as": "pdf"})
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    import pypdfium2

    assert len(pypdfium2.PdfDocument(r.content)) >= LEAKED[LAB_A]


def test_the_upload_refuses_a_too_big_body_and_an_unreadable_file(api):
    """I1, E2: a body over the limit is a 413 with its reason; a file no reader recognises a 400
    with one line; a lab's DPO analyses against its own lab only; a biologist gets no upload page."""
    so = _page_login(api, "security_officer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upload_pages, "MAX_UPLOAD", 64 * 1024)
        r = _upload(so, b"x" * (128 * 1024))
    assert r.status_code == 413 and "larger than the upload limit" in r.text
    for data in (b"\x00\x01\x02\x03" * 64, b""):
        r = _upload(so, data, "fuite.bin")
        assert 400 <= r.status_code < 500, r.status_code
        reason = re.search(r'<p role="alert">([^<]*)</p>', r.text)
        assert reason and reason.group(1).startswith(("file: ", "no leaked file")) and "\n" not in reason.group(1)
    # the JSON API: raw body; too big is refused by the request middleware
    api_so = api.login("security_officer")
    r = api_so.post("/api/v1/breach/analyses", params={"name": "x.csv"}, content=b"\x00\x01\x02\x03" * 64)
    assert r.status_code == 400 and r.json()["error"] and "\n" not in r.json()["error"]
    r = api_so.post("/api/v1/breach/analyses", params={"name": "fuite.csv"}, content=leaked_csv(api))
    assert r.status_code == 201, r.text
    got = api_so.get(f"/api/v1/breach/analyses/{r.json()['analysis_id']}").json()
    assert {m["tenant_id"]: m["patients"] for m in got["matches"]} == LEAKED
    other = api.login(f"lab_admin@{LAB_B}").get(f"/api/v1/breach/analyses/{r.json()['analysis_id']}")
    assert other.status_code in (403, 404) and LAB_A not in other.text  # the platform's analysis
    # a lab's DPO: its own lab only
    dpo = _lab_account(api, LAB_B, ["lab_dpo"], f"dpo-upload@{LAB_B}.api.invalid")
    r = _upload(dpo, leaked_csv(api))
    assert r.status_code == 303, r.text
    result = dpo.get(r.headers["location"])
    assert LAB_A not in result.text
    assert re.search(rf"<th scope=\"row\">{LAB_B}</th><td>{LEAKED[LAB_B]}</td>", result.text)
    bio = _page_login(api, f"biologist@{LAB_A}")
    assert bio.get("/breach/analyze").status_code == 403
    operator = _page_login(api, "operator")
    page = operator.get("/patients")
    r = operator.post(
        "/breach/analyze", data={"csrf": _form_csrf(page.text)}, files={"leak": ("f.csv", leaked_csv(api))}
    )
    assert r.status_code == 403 and "security officer" in r.text
    r = api.login("operator").post("/api/v1/breach/analyses", params={"name": "f.csv"}, content=leaked_csv(api))
    assert r.status_code == 403


def test_the_upload_never_touches_the_disk(api):
    """I1, D1: the multipart upload is parsed in memory: no spooled or temporary file is made while
    the leaked file is received, opened and analysed (every way of making one fails here)."""
    import tempfile

    import starlette.formparsers

    def no_file(*args, **kwargs):
        raise AssertionError("a temporary file was made for the upload")

    so = _page_login(api, "security_officer")
    page = so.get("/breach/analyze")
    with pytest.MonkeyPatch.context() as mp:
        for module, name in (
            (tempfile, "SpooledTemporaryFile"),
            (tempfile, "NamedTemporaryFile"),
            (tempfile, "TemporaryFile"),
            (tempfile, "mkstemp"),
            (starlette.formparsers, "SpooledTemporaryFile"),
        ):
            mp.setattr(module, name, no_file)
        r = so.post(
            "/breach/analyze",
            data={"csrf": _form_csrf(page.text)},
            files={"leak": ("fuite.csv", leaked_csv(api), "text/csv")},
            follow_redirects=False,
        )
    assert r.status_code == 303, r.text
    result = so.get(r.headers["location"])
    assert re.search(rf"<th scope=\"row\">{LAB_A}</th><td>{LEAKED[LAB_A]}</td>", result.text)
    # the raw body, its CSRF token in a header and its name in the query, is read the same way
    raw = so.post(
        "/breach/analyze",
        params={"name": "fuite.csv"},
        content=leaked_csv(api),
        headers={"content-type": "text/csv", "x-csrf-token": _form_csrf(page.text)},
        follow_redirects=False,
    )
    assert raw.status_code == 303 and raw.headers["location"] != r.headers["location"], raw.text
    forged = so.post("/breach/analyze", params={"name": "f.csv"}, content=leaked_csv(api), follow_redirects=False)
    assert forged.status_code == 403  # no CSRF token: refused


def test_the_request_limit_is_raised_for_the_leak_upload_only():
    """E2: the leak upload takes up to 256 MiB; every other page or API body keeps its small limit."""
    from labvault.api.middleware import LEAK_MAX_BODY, MAX_BODY, SecurityMiddleware

    m = SecurityMiddleware(None)
    assert LEAK_MAX_BODY == 256 * 1024 * 1024
    assert m.limit({"method": "POST", "path": "/breach/analyze"}) == LEAK_MAX_BODY
    assert m.limit({"method": "POST", "path": "/api/v1/breach/analyses"}) == LEAK_MAX_BODY
    for path in ("/breach/analyses/x/incident", "/incidents/x/decision", "/breach/analyze/x"):
        assert m.limit({"method": "POST", "path": path}) == MAX_BODY
    assert upload_pages.MAX_UPLOAD == LEAK_MAX_BODY


def test_the_letters_need_a_recent_step_up(api, opened):
    """I4, E2: the letters open names and addresses: without a TOTP code checked in the last minutes
    (the DPO's code at login is older than the step-up window), the form sends the person to
    /step-up and back to the incident, and nothing is produced or recorded."""
    _so, _result, _analysis_id, incident_id = opened
    dpo = _lab_account(api, LAB_A, ["lab_dpo"], f"dpo-stale@{LAB_A}.api.invalid")
    stale = utcnow() - service.STEP_UP_WINDOW - timedelta(minutes=1)
    with api.gateway.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", "*", True)))
        conn.execute(update(t.login_session).where(t.login_session.c.tenant_id == LAB_A).values(totp_at=stale))
    page = dpo.get(f"/incidents/{incident_id}")
    r = dpo.post(
        f"/incidents/{incident_id}/letters",
        data={"csrf": _form_csrf(page.text), "as": "zip", "next": f"/incidents/{incident_id}"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/step-up?next=/incidents/{incident_id}"
    again = dpo.get(f"/incidents/{incident_id}")
    assert "courriers</dd>" not in again.text and "lettre" not in again.text
    assert 'action="/incidents/' + incident_id + '/letters"' in again.text  # still to do
