"""The web pages over HTTP (the browser suite drives the same pages in Chromium): sign-in with a
password then a TOTP code, CSRF on every form, every page denied to an anonymous visitor, the
patient page read through the gateway, another lab's patient a 404, the strict CSP on every page."""

from __future__ import annotations

import re

import pytest

from labvault.api.deps import Access
from labvault.web.pages import PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B

PUBLIC_PAGES = {"/", "/login", "/login/totp", "/static/{name}", "/enrol", "/enrol/confirm"}


def _page_routes(app) -> dict[tuple[str, str], Access]:
    return {(m, p): a for (m, p), a in app.state.access.items() if not p.startswith(("/api/", "/fhir/", "/health"))}


def _form_csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]*)"', html)
    assert m, html
    return m.group(1)


def _page_login(api, key: str):
    """Sign in through the pages as a person would: the form, then the TOTP form."""
    acct = api.accounts[key]
    c = api.client()
    page = c.get("/login")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    r = c.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": acct.email, "password": acct.password, "next": "/patients"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    if acct.mfa:
        assert r.headers["location"].startswith("/login/totp")
        page = c.get(r.headers["location"])
        assert page.status_code == 200
        r = c.post(
            "/login/totp",
            data={"csrf": _form_csrf(page.text), "code": acct.code(), "next": "/patients"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
    assert r.headers["location"] == "/patients"
    cookie = r.headers.get_list("set-cookie")
    session = next(x for x in cookie if x.startswith("lv_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session.replace("Strict", "strict") and "Secure" in session
    return c


def _search(c, **fields: str):
    """A search as the form posts it (a NIR or a name never travels in a URL)."""
    return c.post("/patients", data={"csrf": _form_csrf(c.get("/patients").text), **fields})


def test_every_page_but_sign_in_and_static_files_is_denied_to_an_anonymous_visitor(api):
    """E2, F1: route enumeration over the pages as over the API: each page route declares its
    access; an anonymous visitor is sent to the login page, with nothing of the page."""
    routes = _page_routes(api.app)
    assert {p for _, p in routes} >= {"/patients", "/patients/{patient_id}", "/login", "/logout"}
    anon = api.client()
    for (method, path), access in sorted(routes.items()):
        if path in PUBLIC_PAGES:
            assert access is Access.PUBLIC, path
            continue
        assert access is not Access.PUBLIC, path
        url = path.replace("{patient_id}", api.patients[LAB_A][0])
        r = anon.request(method, url, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path, r.status_code)
        assert "DUPONT" not in r.text and api.patients[LAB_A][0] not in r.text.replace(url, "")


def test_sign_in_with_password_then_totp_search_and_read_a_patient(api):
    """E2, G1: a biologist signs in (password, then TOTP), finds a patient by NIR and reads the
    patient page: requests, results with unit, range, status, previous values; French numbers; CSP."""
    c = _page_login(api, f"biologist@{LAB_A}")
    nir = api.nirs[LAB_A][0]
    found = _search(c, nir=nir)
    assert found.status_code == 200 and found.headers["content-security-policy"] == PAGE_CSP
    assert nir not in str(found.url)
    pid = api.patients[LAB_A][0]
    assert f'href="/patients/{pid}"' in found.text
    page = c.get(f"/patients/{pid}")
    assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
    assert "<table>" in page.text and "Antériorités" in page.text
    assert 'lang="fr"' in page.text and "<script>" not in page.text and " style=" not in page.text
    english = c.get(f"/patients/{pid}", params={"lang": "en"})
    assert english.status_code == 200 and 'lang="en"' in english.text and "Previous values" in english.text


def test_another_labs_patient_is_a_404_and_a_vendor_reads_no_patient(api):
    """F1, F2: a lab B biologist asking for a lab A patient page gets 404, nothing of the patient;
    a vendor support account reads no patient without an approved grant."""
    c = _page_login(api, f"biologist@{LAB_B}")
    pid = api.patients[LAB_A][0]
    r = c.get(f"/patients/{pid}")
    assert r.status_code == 404 and pid not in r.text
    r = _search(c, nir=api.nirs[LAB_A][0])
    assert r.status_code == 200 and pid not in r.text


def test_a_search_is_posted_with_its_csrf_field_and_a_nir_in_the_url_finds_nothing(api):
    """E2, M3: the search reads a NIR from the posted form only: a NIR in the URL is not searched
    (it would sit in browser history and proxies' logs); without the CSRF field, refused."""
    c = _page_login(api, f"biologist@{LAB_A}")
    nir, pid = api.nirs[LAB_A][0], api.patients[LAB_A][0]
    r = c.get("/patients", params={"nir": nir})
    assert r.status_code == 200 and pid not in r.text
    r = c.post("/patients", data={"nir": nir})
    assert r.status_code == 403 and pid not in r.text
    assert pid in _search(c, nir=nir).text


def test_forms_need_their_csrf_field(api):
    """E2: a form posted without its CSRF field changes nothing: the login form and the logout."""
    acct = api.accounts[f"biologist@{LAB_A}"]
    c = api.client()
    c.get("/login")
    r = c.post("/login", data={"email": acct.email, "password": acct.password}, follow_redirects=False)
    assert r.status_code == 403 and "lv_session" not in c.cookies
    c = _page_login(api, f"biologist@{LAB_A}")
    r = c.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert c.get("/patients", follow_redirects=False).status_code == 200  # still signed in
    page = c.get("/patients")
    r = c.post("/logout", data={"csrf": _form_csrf(page.text)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/patients", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example"])
def test_after_sign_in_only_a_path_of_this_site(api, target):
    """E2: the ``next`` of the login form never sends the person to another site."""
    acct = api.accounts[f"biologist@{LAB_A}"]
    c = api.client()
    page = c.get("/login")
    r = c.post(
        "/login",
        data={"csrf": _form_csrf(page.text), "email": acct.email, "password": acct.password, "next": target},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert "evil" not in r.headers["location"]


def test_every_string_of_the_pages_has_its_english():
    """The English catalogue covers every string the templates say (French is the source)."""
    from pathlib import Path

    from labvault.web import i18n, pages

    templates = Path(i18n.__file__).parent / "templates"
    said = {m.group(2) for f in templates.glob("*.html") for m in re.finditer(r"_\(([\"'])(.*?)\1\)", f.read_text())}
    said |= set(i18n.LABELS.values()) | {label for _, label, _ in pages.NAV}
    from babel.messages.pofile import read_po

    given: set[str] = set()
    for po in (Path(i18n.__file__).parent / "locale" / "en" / "LC_MESSAGES").glob("*.po"):
        with po.open("rb") as f:
            given |= {str(m.id) for m in read_po(f) if m.id and m.string}
    missing = sorted(said - given)
    assert len(said) > 30 and not missing, missing


def test_a_bearer_token_opens_no_page(api):
    """E2: pages take a signed-in session only: a lab's read token is sent to the login page."""
    c = _page_login(api, f"biologist@{LAB_A}")
    page = c.get("/patients")
    csrf = re.search(r'name="csrf" value="([^"]*)"', page.text)
    assert csrf
    bio = api.login(f"biologist@{LAB_A}")
    _, token = api.token(bio, ["read"])
    r = api.bearer(token).get(f"/patients/{api.patients[LAB_A][0]}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
