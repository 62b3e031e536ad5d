"""A lab signer signs a checked draft instruction in Chromium with their own key file (WebCrypto
Ed25519) and gives it: the key never leaves the browser; the lab keeps the instruction."""

from __future__ import annotations

import json

from pyrage import x25519

from labvault.access import Purpose
from labvault.crypto.signing import Signer
from labvault.instructions import signers
from tests.api.test_instructions_api import record
from tests.conftest import lab_user
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def test_a_draft_is_checked_and_signed_in_the_browser(web_server: WebServer, page, page_events, tmp_path):
    """A1: check, sign in the browser, give; the private key is in no request."""
    lab = web_server.labs[0]
    private, public = Signer.generate()
    admin = lab_user(web_server.gateway, lab, "lab_admin", name="Keeper")
    person = lab_user(web_server.gateway, lab, "biologist", name="Signer")
    with web_server.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, lab, email=f"{person.account_id}@lab.invalid", public_key=public.hex())
    key_file = tmp_path / "signer.key"
    key_file.write_text(private.hex())
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.post_data or "") if r.method == "POST" else None)

    login(page, web_server, web_server.accounts["lab_admin_a"])
    page.goto(web_server.url("/lab/instructions"))
    assert axe_check(page) == []
    draft = record(lab, str(x25519.Identity.generate().to_public()), id="MIG-BROWSER-1")
    page.fill("textarea[name=draft]", json.dumps(draft))
    page.click("form[action='/lab/instructions/check'] button[type=submit]")
    page.wait_for_selector("#checked")
    assert "MIG-BROWSER-1" in page.inner_text("#checked")
    assert axe_check(page) == []
    form = page.locator("form[action='/lab/instructions/receive']")
    form.locator("input[type=file]").set_input_files(str(key_file))
    form.locator("button[data-sign]").click()
    page.wait_for_url(lambda url: url.endswith("/lab/signers"))
    assert "MIG-BROWSER-1" in page.inner_text("main")
    assert private.hex() not in "".join(posted)
    assert_page_clean(page_events)
