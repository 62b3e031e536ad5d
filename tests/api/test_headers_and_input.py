"""Security headers on every response, a request size limit, and input errors that say what is
wrong without repeating what was sent."""

from __future__ import annotations

import json

import pytest

from labvault.api.middleware import MAX_BODY
from tests.api.conftest import HTTP, HTTPS, LAB_A, LAB_B, LOGIN

MARK = "ZQX-canary-4711"  # a value that must never come back in a response


def assert_security_headers(r, *, tls: bool) -> None:
    h = r.headers
    csp = h.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, (r.status_code, csp)
    assert h.get("x-content-type-options") == "nosniff", r.status_code
    assert h.get("x-frame-options") == "DENY", r.status_code
    assert h.get("cache-control") == "no-store", r.status_code
    hsts = h.get("strict-transport-security")
    if tls:
        assert hsts is not None, r.status_code
        max_age = int(hsts.split("max-age=")[1].split(";")[0])
        assert max_age >= 31536000
    else:
        assert hsts is None, (r.status_code, "HSTS sent over plain HTTP")


@pytest.mark.parametrize("base_url", [HTTP, HTTPS])
def test_security_headers_on_every_response(api, base_url):
    tls = base_url == HTTPS
    bio = api.login(f"biologist@{LAB_A}", base_url=base_url)
    anon = api.client(base_url=base_url)
    seen = {}
    for r in (
        anon.get("/health"),
        bio.get("/api/v1/me"),
        anon.get("/api/v1/me"),  # 401
        anon.post(LOGIN, json={"email": "nobody@x.invalid", "password": "wrong password"}),  # 401
        bio.get(f"/api/v1/tenants/{LAB_B}/patients/{api.patients[LAB_B][0]}"),  # 403
        anon.get("/no/such/route"),  # 404
        bio.get(f"/api/v1/tenants/{LAB_A}/patients/0000"),  # 404 from the gateway
        anon.get(LOGIN),  # 405
        anon.post(LOGIN, content=b"{" + b" " * (MAX_BODY + 1), headers={"content-type": "application/json"}),  # 413
        anon.post(LOGIN, json={"email": 5}),  # 422
        bio.get(f"/api/v1/tenants/{LAB_A}/patients"),  # 400
        bio.get("/api/v1/docs"),  # HTML
    ):
        assert_security_headers(r, tls=tls)
        seen[r.status_code] = True
    assert set(seen) >= {200, 400, 401, 403, 404, 405, 413, 422}


def test_oversized_body_is_refused(api, bio_a):
    anon = api.client()
    for c, path in ((anon, LOGIN), (bio_a, "/api/v1/tokens")):
        r = c.post(path, content=b"x" * (MAX_BODY + 1), headers={"content-type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)
        assert r.headers["content-type"].startswith("application/json")
        assert "larger than" in r.json()["error"]
    # At the limit exactly, the body is read (and judged on its content).
    filler = "a" * (MAX_BODY - len(json.dumps({"scopes": ["read"], "days": 1, "x": ""})))
    body = json.dumps({"scopes": ["read"], "days": 1, "x": filler}).encode()
    assert len(body) == MAX_BODY
    r = bio_a.post("/api/v1/tokens", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"].startswith("x:")


def test_oversized_chunked_body_is_413(api, bio_a):
    def chunks():
        yield b'{"scopes": ["read"], "days": 1, "x": "'
        for _ in range(5):
            yield b"a" * 16384
        yield b'"}'

    r = bio_a.post("/api/v1/tokens", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and "larger than" in r.json()["error"]


def _bad_inputs(api, bio_a, support):
    anon = api.client()
    patients = f"/api/v1/tenants/{LAB_A}/patients"
    grants = f"/api/v1/tenants/{LAB_A}/grants"
    raw = {"content-type": "application/json"}
    yield "malformed JSON", anon.post(LOGIN, content=f'{{"email": "{MARK}", "password": '.encode(), headers=raw)
    yield (
        "malformed JSON, private",
        bio_a.post("/api/v1/tokens", content=f'{{"scopes": ["{MARK}"'.encode(), headers=raw),
    )
    yield (
        "not JSON",
        anon.post(
            LOGIN,
            content=f"email={MARK}&password={MARK}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        ),
    )
    yield "JSON not an object", anon.post(LOGIN, json=[MARK, MARK])
    yield "wrong types", anon.post(LOGIN, json={"email": [MARK], "password": {"p": MARK}})
    yield "wrong types, private", bio_a.post("/api/v1/tokens", json={"scopes": MARK, "days": MARK})
    yield "extra field", anon.post(LOGIN, json={"email": "a@b.cd", "password": "x", "role": MARK})
    yield "extra field, private", bio_a.post("/api/v1/tokens", json={"scopes": ["read"], "days": 1, "admin": MARK})
    yield (
        "extra field, grant",
        support.post(grants, json={"ticket": "T", "reason": "r", "hours": 1, "fields": ["identity"], "approved": MARK}),
    )
    yield "out of range", support.post(grants, json={"ticket": MARK, "reason": MARK, "hours": 99, "fields": [MARK]})
    yield "too long", anon.post(LOGIN, json={"email": MARK * 30, "password": MARK * 100})
    yield "pattern", anon.post("/api/v1/auth/mfa", json={"code": MARK})
    yield "bad scope", bio_a.post("/api/v1/tokens", json={"scopes": [MARK], "days": 1})
    yield "bad date in query", bio_a.get(patients, params={"family_name": "X", "given_name": "Y", "birth_date": MARK})
    yield "long query", bio_a.get(patients, params={"nir": MARK * 5})
    yield "bad NIR", bio_a.get(patients, params={"nir": MARK})
    yield (
        "bad date range",
        bio_a.get(f"{patients}/{api.patients[LAB_A][0]}/results", params={"date_from": "2024-02-01", "date_to": MARK}),
    )


def test_bad_input_is_4xx_json_without_echo(api, bio_a, support):
    for what, r in _bad_inputs(api, bio_a, support):
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), what
        body = r.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (what, body)
        assert MARK not in r.text, (what, r.text)
        assert "Traceback" not in r.text and 'File "' not in r.text, what
