"""The lab's instruction drafts in the pages: a draft checked before signing (its exact bytes
shown), refused with its one-line reason when wrong or for another lab; a signed instruction
given with a step-up, kept as the API keeps it; vendor accounts neither check nor give one."""

from __future__ import annotations

import json

from pyrage import x25519

from labvault.crypto.signing import canonical
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_instructions_api import add_signer, record
from tests.api.test_pages import _form_csrf, _page_login


def _draft(lab: str, id_: str) -> dict:
    return record(lab, str(x25519.Identity.generate().to_public()), id=id_)


def test_a_draft_is_checked_then_signed_and_given(api):
    """A1: the draft's exact bytes shown; a wrong draft refused with its reason, nothing kept; the
    signed instruction given by the lab admin (TOTP at login counts as the step-up) is received."""
    admin = _page_login(api, f"lab_admin@{LAB_A}")
    signer = add_signer(api.gateway, LAB_A)
    draft = _draft(LAB_A, "MIG-PAGE-1")
    csrf = _form_csrf(admin.get("/lab/instructions").text)
    r = admin.post("/lab/instructions/check", data={"csrf": csrf, "draft": json.dumps(draft)})
    assert r.status_code == 200 and "MIG-PAGE-1" in r.text and "Instruction vérifiée" in r.text
    r = admin.post("/lab/instructions/check", data={"csrf": csrf, "draft": "{not json"})
    assert r.status_code == 400 and "not JSON" in r.text
    r = admin.post("/lab/instructions/check", data={"csrf": csrf, "draft": json.dumps(_draft(LAB_B, "X-1"))})
    assert r.status_code == 400 and "another lab" in r.text
    body = {
        "csrf": csrf,
        "instruction": canonical(draft).decode(),
        "signature": signer.sign(draft),
        "public_key": signer.public_key.hex(),
    }
    r = admin.post("/lab/instructions/receive", data=body, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/lab/signers"
    assert "MIG-PAGE-1" in admin.get("/lab/signers").text
    r = admin.post("/lab/instructions/receive", data=body | {"signature": signer.sign(_draft(LAB_A, "Z"))})
    assert r.status_code == 400  # a signature of something else: refused, nothing kept


def test_vendor_accounts_and_biologists_neither_check_nor_give(api):
    """A1, A8, F2: the vendor's operator and support, and a biologist, are refused."""
    _page_login(api, f"lab_admin@{LAB_A}")  # the lab's admin first: a lab has one
    draft = json.dumps(_draft(LAB_A, "MIG-PAGE-2"))
    for key in ("operator", "support", f"biologist@{LAB_A}"):
        c = _page_login(api, key)
        assert c.get("/lab/instructions").status_code == 403, key
        r = c.post("/lab/instructions/check", data={"csrf": _form_csrf(c.get("/patients").text), "draft": draft})
        assert r.status_code == 403 and "MIG-PAGE-2" not in r.text, key
