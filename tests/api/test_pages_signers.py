"""The lab's signers page over HTTP: the lab's own lab_admin registers a signer (an active, named
account of the lab and the public half of an Ed25519 key, as ``labvault signer add``) and revokes
one, each as an approval (CSRF field and a TOTP step-up), each audited without a personal value.
A biologist, another lab's admin and the vendor's accounts register and revoke nothing; a malformed
key or an address that is no account of the lab is refused with its one-line reason, nothing kept.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.crypto.signing import Signer
from labvault.instructions import signers
from labvault.store import schema as t
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.api.test_step_up import STALE, checked_ago
from tests.conftest import lab_user

ADMIN_A = f"lab_admin@{LAB_A}"


def _signers(api, lab: str = LAB_A) -> list[signers.SignerKey]:
    """The lab's signers as the CLI lists them (in process, under a lab admin of the lab)."""
    with api.gateway.unit(lab_user(api.gateway, lab, "lab_admin", name="Keeper"), Purpose.ADMINISTRATION) as u:
        return signers.list_signers(u, lab)


def _events(api, action: str, lab: str = LAB_A) -> list:
    e = t.audit_event
    with api.gateway.engine.connect() as conn:
        return list(conn.execute(select(e).where(e.c.tenant_id == lab, e.c.action == action).order_by(e.c.seq)))


def _account_id(api, email: str) -> str:
    with api.gateway.engine.connect() as conn:
        return conn.execute(select(t.account.c.account_id).where(t.account.c.email == email)).scalar_one()


def _public_key() -> str:
    return Signer.generate()[1].hex()


def _csrf(c) -> str:
    return _form_csrf(c.get("/lab/signers").text)


def test_the_lab_admin_adds_a_signer_then_revokes_it(api):
    """A1, F2: the lab_admin (its TOTP at login counts as the step-up) registers a biologist of the
    lab with a public key, sees them by name, then revokes them; each is one audit event naming
    the admin and the signer's id, and neither the e-mail, the name nor the key."""
    admin = _page_login(api, ADMIN_A)
    bio = api.accounts[f"biologist@{LAB_A}"]
    key = _public_key()
    page = admin.get("/lab/signers")
    assert page.status_code == 200 and 'action="/lab/signers/add"' in page.text
    r = admin.post(
        "/lab/signers/add",
        data={"csrf": _form_csrf(page.text), "email": bio.email, "public_key": key},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/lab/signers", r.text
    [signer] = _signers(api)
    assert (signer.email, signer.public_key, signer.active) == (bio.email, key, True)
    page = admin.get("/lab/signers")
    assert bio.email in page.text and key[:16] in page.text
    assert f'action="/lab/signers/{signer.signer_id}/revoke"' in page.text

    r = admin.post(f"/lab/signers/{signer.signer_id}/revoke", data={"csrf": _csrf(admin)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/lab/signers"
    [signer] = _signers(api)
    assert not signer.active
    assert "/revoke" not in admin.get("/lab/signers").text
    r = admin.post(f"/lab/signers/{signer.signer_id}/revoke", data={"csrf": _csrf(admin)})
    assert r.status_code == 400 and "already revoked" in r.text

    actor = _account_id(api, api.accounts[ADMIN_A].email)
    for action in ("signer:add", "signer:revoke"):
        [event] = _events(api, action)
        assert (event.actor, event.outcome, event.object_refs) == (actor, "allowed", f'["{signer.signer_id}"]')
        text = repr(tuple(event))
        assert bio.email not in text and key not in text and signer.name not in text


def test_bad_input_is_refused_with_its_reason_and_nothing_is_kept(api):
    """A1, F2: a malformed key, an address that is no account of the lab, a key already registered:
    a 400 page with the one-line reason (no value echoed), no signer added, no event of an addition;
    an unknown signer's revocation is a 404."""
    admin = _page_login(api, ADMIN_A)
    bio = api.accounts[f"biologist@{LAB_A}"]
    key = _public_key()
    csrf = _csrf(admin)
    for data, reason in (
        ({"email": bio.email, "public_key": "zz" * 32}, "64 hexadecimal characters"),
        ({"email": bio.email, "public_key": key[:40]}, "64 hexadecimal characters"),
        ({"email": "nobody@lab-a.api.invalid", "public_key": key}, "active, named person&#39;s account of this lab"),
        ({"email": api.accounts[f"biologist@{LAB_B}"].email, "public_key": key}, "account of this lab"),
        ({"public_key": key}, "account of this lab"),
    ):
        r = admin.post("/lab/signers/add", data={"csrf": csrf, **data})
        assert r.status_code == 400 and reason in r.text, (data, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/html") and "nobody@" not in r.text
    assert _signers(api) == [] and _events(api, "signer:add") == []
    assert admin.post("/lab/signers/add", data={"csrf": csrf, "email": bio.email, "public_key": key}).status_code == 200
    r = admin.post("/lab/signers/add", data={"csrf": csrf, "email": api.accounts[ADMIN_A].email, "public_key": key})
    assert r.status_code == 400 and "already registered" in r.text
    assert len(_signers(api)) == 1
    r = admin.post("/lab/signers/no-such-signer/revoke", data={"csrf": csrf})
    assert r.status_code == 404
    assert _events(api, "signer:revoke") == []


def test_an_addition_needs_a_recent_step_up_and_its_csrf_field(api):
    """G1, E2: without the CSRF field nothing is added; with a TOTP check older than the window the
    admin is sent to /step-up and back to the signers page, nothing added."""
    admin = _page_login(api, ADMIN_A)
    bio = api.accounts[f"biologist@{LAB_A}"]
    body = {"email": bio.email, "public_key": _public_key()}
    for bad in ({}, {"csrf": "wrong"}):
        assert admin.post("/lab/signers/add", data={**bad, **body}, follow_redirects=False).status_code == 403
    csrf = _csrf(admin)
    checked_ago(api, ADMIN_A, STALE)
    r = admin.post("/lab/signers/add", data={"csrf": csrf, **body}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/step-up?next=/lab/signers"
    assert _signers(api) == []


def test_a_biologist_adds_and_revokes_no_signer(api):
    """A1, F1: a biologist of the lab gets a refusal page and changes nothing."""
    admin = _page_login(api, ADMIN_A)
    admin.post(
        "/lab/signers/add",
        data={"csrf": _csrf(admin), "email": api.accounts[ADMIN_A].email, "public_key": _public_key()},
    )
    [signer] = _signers(api)
    c = _page_login(api, f"biologist@{LAB_A}")
    csrf = _form_csrf(c.get("/patients").text)
    assert c.get("/lab/signers").status_code == 403
    bio = api.accounts[f"biologist@{LAB_A}"]
    for path, data in (
        ("/lab/signers/add", {"email": bio.email, "public_key": _public_key()}),
        (f"/lab/signers/{signer.signer_id}/revoke", {}),
    ):
        r = c.post(path, data={"csrf": csrf, **data}, follow_redirects=False)
        assert r.status_code in (303, 403), (path, r.status_code)
        if r.status_code == 303:
            assert r.headers["location"].startswith("/step-up")
        else:
            assert "Refusé" in r.text
    assert [(s.signer_id, s.active) for s in _signers(api)] == [(signer.signer_id, True)]


@pytest.mark.parametrize("key", ["support", "operator", "security_officer", "platform_admin", f"lab_admin@{LAB_B}"])
def test_vendor_accounts_and_another_labs_admin_add_no_signer_to_the_lab(api, key):
    """A1, A8, F1, F2: a vendor account (signed in with its TOTP, so stepped up) is refused the
    page and both forms; it cannot register anyone of lab A, whatever address it names; lab B's
    admin registers no account of lab A in its own lab, nor revokes lab A's signer."""
    admin = _page_login(api, ADMIN_A)
    admin.post(
        "/lab/signers/add",
        data={"csrf": _csrf(admin), "email": api.accounts[ADMIN_A].email, "public_key": _public_key()},
    )
    [signer] = _signers(api)
    bio = api.accounts[f"biologist@{LAB_A}"]
    c = _page_login(api, key)
    csrf = _form_csrf(c.get("/patients").text)
    vendor = "@" not in key
    page = c.get("/lab/signers")
    assert page.status_code == (403 if vendor else 200) and bio.email not in page.text
    assert signer.signer_id not in page.text
    r = c.post("/lab/signers/add", data={"csrf": csrf, "email": bio.email, "public_key": _public_key()})
    assert r.status_code == (403 if vendor else 400) and bio.email not in r.text
    r = c.post(f"/lab/signers/{signer.signer_id}/revoke", data={"csrf": csrf})
    assert r.status_code == (403 if vendor else 404)
    assert [(s.signer_id, s.active) for s in _signers(api)] == [(signer.signer_id, True)]
    assert _signers(api, LAB_B) == []
