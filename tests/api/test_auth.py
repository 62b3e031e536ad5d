"""Login, cookies, CSRF, MFA and bearer tokens, over HTTP."""

from __future__ import annotations

import pytest

from tests.api.conftest import HTTP, HTTPS, LAB_A, LOGIN, MFA


def set_cookies(r) -> dict[str, str]:
    """Set-Cookie headers of a response, by cookie name (lower-cased attributes kept raw)."""
    out = {}
    for header in r.headers.get_list("set-cookie"):
        out[header.split("=", 1)[0]] = header
    return out


def attrs(header: str) -> set[str]:
    return {a.strip().lower() for a in header.split(";")[1:]}


def test_wrong_credentials_one_generic_answer(api):
    bio = api.accounts[f"biologist@{LAB_A}"]
    admin = api.accounts[f"lab_admin@{LAB_A}"]
    api.deactivate(f"technician@{LAB_A}")
    tech = api.accounts[f"technician@{LAB_A}"]
    c = api.client()
    answers = []
    for email, password in (
        (bio.email, bio.password + "x"),  # right account, wrong password
        (bio.email.upper(), "Totally-wrong-99!"),
        ("nobody@lab-a.api.invalid", bio.password),  # no such account, a real password
        (admin.email, "Totally-wrong-99!"),  # an MFA account: no hint either
        (tech.email, tech.password),  # a deactivated account, its right password
    ):
        r = c.post(LOGIN, json={"email": email, "password": password})
        assert r.status_code == 401, (email, r.status_code, r.text)
        assert not set_cookies(r), "no cookie for a failed login"
        answers.append(r.json())
    assert all(a == answers[0] for a in answers), answers
    assert "password" in answers[0]["error"] and "e-mail" in answers[0]["error"]


@pytest.mark.parametrize("base_url", [HTTPS, HTTP])
def test_session_cookies_are_httponly_strict_and_secure_over_https(api, base_url):
    bio, admin = api.accounts[f"biologist@{LAB_A}"], api.accounts[f"lab_admin@{LAB_A}"]
    secure = base_url == HTTPS
    c = api.client(base_url=base_url)
    r = c.post(LOGIN, json={"email": bio.email, "password": bio.password})
    assert r.status_code == 200
    cookies = set_cookies(r)
    assert {"lv_session", "lv_csrf"} <= set(cookies)
    session, csrf = attrs(cookies["lv_session"]), attrs(cookies["lv_csrf"])
    assert "httponly" in session and "samesite=strict" in session
    assert "httponly" not in csrf and "samesite=strict" in csrf  # the page reads it to send the header
    assert ("secure" in session) is secure and ("secure" in csrf) is secure
    assert r.json()["csrf_token"] == cookies["lv_csrf"].split("=", 1)[1].split(";")[0]
    assert cookies["lv_session"].split("=", 1)[1].split(";")[0] not in r.text  # the secret is cookie-only

    c2 = api.client(base_url=base_url)
    r = c2.post(LOGIN, json={"email": admin.email, "password": admin.password})
    assert r.status_code == 200 and r.json() == {"mfa_required": True, "csrf_token": None}
    cookies = set_cookies(r)
    assert set(cookies) == {"lv_preauth"}
    pre = attrs(cookies["lv_preauth"])
    assert "httponly" in pre and "samesite=strict" in pre and ("secure" in pre) is secure
    r = c2.post(MFA, json={"code": admin.code()})
    assert r.status_code == 200
    cookies = set_cookies(r)
    assert {"lv_session", "lv_csrf"} <= set(cookies)
    assert "httponly" in attrs(cookies["lv_session"]) and ("secure" in attrs(cookies["lv_session"])) is secure


def test_csrf_token_required_on_unsafe_methods(api, bio_a):
    good = bio_a.headers.pop("x-csrf-token")
    body = {"scopes": ["read"], "days": 1}
    r = bio_a.post("/api/v1/tokens", json=body)
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    for wrong in ("", "0" * 64, good[:-1] + ("0" if good[-1] != "0" else "1"), good.upper()):
        r = bio_a.post("/api/v1/tokens", json=body, headers={"x-csrf-token": wrong})
        assert r.status_code == 403, wrong
    r = bio_a.post("/api/v1/auth/logout")
    assert r.status_code == 403  # a cross-site page cannot log the user out either
    assert bio_a.get("/api/v1/me").status_code == 200  # safe methods need no token; session still alive
    # Another session's CSRF token does not fit this one.
    other = api.login(f"biologist@{LAB_A}", addr="203.0.113.99")
    r = bio_a.post("/api/v1/tokens", json=body, headers={"x-csrf-token": other.headers["x-csrf-token"]})
    assert r.status_code == 403
    r = bio_a.post("/api/v1/tokens", json=body, headers={"x-csrf-token": good})
    assert r.status_code == 201
    r = bio_a.post("/api/v1/auth/logout", headers={"x-csrf-token": good})
    assert r.status_code == 204
    assert bio_a.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize("key", [f"lab_admin@{LAB_A}", "support", "operator", "security_officer"])
def test_mfa_roles_need_the_second_factor(api, key):
    acct = api.accounts[key]
    c = api.client()
    r = c.post(LOGIN, json={"email": acct.email, "password": acct.password})
    assert r.status_code == 200 and r.json()["mfa_required"] is True
    pre = c.cookies.get("lv_preauth")
    assert pre and c.cookies.get("lv_session") is None
    for path in ("/api/v1/me", "/api/v1/tenants", f"/api/v1/tenants/{LAB_A}/accounts", "/api/v1/openapi.json"):
        assert c.get(path).status_code == 401, path
    # The pre-authentication secret is no session, whatever cookie carries it.
    forged = api.client()
    forged.cookies.set("lv_session", pre)
    assert forged.get("/api/v1/me").status_code == 401
    # A wrong code does not complete the login.
    wrong = f"{(int(acct.code()) + 500_000) % 1_000_000:06d}"
    assert c.post(MFA, json={"code": wrong}).status_code == 401
    assert c.get("/api/v1/me").status_code == 401
    # No login in progress: the MFA step alone is refused.
    assert api.client().post(MFA, json={"code": acct.code()}).status_code == 401
    r = c.post(MFA, json={"code": acct.code()})
    assert r.status_code == 200 and r.json()["csrf_token"]
    me = c.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["roles"] == [acct.role]
    # The pre-session is spent once used.
    replay = api.client()
    replay.cookies.set("lv_preauth", pre)
    assert replay.post(MFA, json={"code": acct.code()}).status_code == 401


def test_bearer_tokens(api, bio_a):
    patient = f"/api/v1/tenants/{LAB_A}/patients/{api.patients[LAB_A][0]}"
    token_id, token = api.token(bio_a, ["read"])
    reader = api.bearer(token)
    assert reader.get("/api/v1/me").json()["tenant"] == LAB_A
    assert reader.get(patient).status_code == 200
    assert reader.get(f"{patient}/results").status_code == 200
    # read-only: unsafe methods refused, whatever they are
    assert reader.post("/api/v1/tokens", json={"scopes": ["read"], "days": 1}).status_code in (401, 403)
    assert reader.delete(f"/api/v1/tokens/{token_id}").status_code in (401, 403)
    assert reader.post("/api/v1/auth/logout").status_code in (401, 403)
    assert reader.get("/api/v1/me").status_code == 200  # still valid: nothing was done
    # a tampered secret or id is refused
    prefix, tid, secret = token.split("_", 2)
    flip = {"0": "1"}.get(tid[-1], "0")
    last = "A" if secret[-1] != "A" else "B"
    for bad in (
        f"{prefix}_{tid}_{secret[:-1]}{last}",
        f"{prefix}_{tid[:-1]}{flip}_{secret}",
        f"{tid}_{secret}",
        token + "x",
        f"{prefix}_{tid}_",
    ):
        assert api.bearer(bad).get("/api/v1/me").status_code == 401, bad
    assert api.client().get("/api/v1/me", headers={"authorization": f"Basic {token}"}).status_code == 401
    # revoked by its owner: refused on the next request
    r = bio_a.delete(f"/api/v1/tokens/{token_id}")
    assert r.status_code == 204
    assert reader.get("/api/v1/me").status_code == 401
    assert reader.get(patient).status_code == 401
    # an ingest token ingests and nothing else (see test_scopes), until it too is revoked
    ingest_id, ingest = api.token(bio_a, ["read", "ingest"])
    writer = api.bearer(ingest)
    assert writer.delete(f"/api/v1/tokens/{token_id}").status_code == 403  # tokens are managed from a session
    assert bio_a.delete(f"/api/v1/tokens/{ingest_id}").status_code == 204
    assert writer.get("/api/v1/me").status_code == 401


def test_tokens_of_another_account_cannot_be_revoked(api, bio_a, bio_b):
    token_id, token = api.token(bio_a, ["read"])
    assert bio_b.delete(f"/api/v1/tokens/{token_id}").status_code in (403, 404)
    assert api.bearer(token).get("/api/v1/me").status_code == 200
