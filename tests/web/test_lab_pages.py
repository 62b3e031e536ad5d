"""The lab's migrations page in Chromium: a lab signer approves a planned migration by signing its
approval record in the browser (WebCrypto Ed25519) with their own key file; the key never leaves
the browser (the request carries only the public key and the signature); the plan is shown with its
fields; the page keeps its CSP and passes axe."""

from __future__ import annotations

from pathlib import Path

from pyrage import x25519

from labvault.access import Purpose
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.instructions import document, signers
from labvault.migration import service as migration
from tests.api.test_instructions_api import NOW, record
from tests.conftest import lab_user
from tests.web.conftest import WebServer, assert_page_clean, axe_check
from tests.web.test_browser_smoke import login


def _planned_with_key(web: WebServer, instruction_id: str) -> tuple[str, str]:
    """A signer of lab A (their private key kept here, as on their own machine), a migration_out
    instruction they signed, received by the lab, and a migration planned under it by an operator."""
    lab = web.labs[0]
    gw = web.gateway
    admin = lab_user(gw, lab, "lab_admin", name="Keeper")
    person = lab_user(gw, lab, "biologist", name="Signer")
    private, public = Signer.generate()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, lab, email=f"{person.account_id}@lab.invalid", public_key=public.hex())
    recipient = str(x25519.Identity.generate().to_public())
    doc = document.sign(document.from_record(record(lab, recipient, id=instruction_id)), Signer(private))
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        received = signers.receive(u, lab, doc, NOW)
    operator = lab_user(gw, PLATFORM, "operator", name="Planner")
    with gw.unit(operator, Purpose.EXPORT) as u:
        job = migration.plan(u, lab, received.instruction_id)
    return job.migration_id, private.hex()


def test_a_lab_signer_approves_a_migration_by_signing_in_the_browser(
    web_server: WebServer, page, page_events, tmp_path
):
    """A1, B1: the plan (fields and counts) shown to the lab; the lab signer's approval signed in
    the browser; the private key not sent; the migration approved by the lab side."""
    migration_id, private_hex = _planned_with_key(web_server, "MIG-WEB-1")
    key_file = tmp_path / "signer.key"
    key_file.write_text(private_hex + "\n")
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.post_data or "") if r.method == "POST" else None)

    login(page, web_server, web_server.accounts["lab_admin_a"])  # its TOTP at login counts as a step-up
    page.goto(web_server.url("/lab/migrations"))
    assert migration_id in page.inner_text("main")
    assert "result" in page.inner_text("main")  # the plan's fields are shown
    assert axe_check(page) == []
    form = page.locator(f'form[action="/lab/migrations/{migration_id}/approve"]')
    form.locator("input[type=file]").set_input_files(str(key_file))
    form.locator("button[data-sign]").click()
    page.wait_for_load_state()
    page.wait_for_function("() => !document.querySelector('button[data-sign]')")

    with web_server.gateway.unit(
        lab_user(web_server.gateway, web_server.labs[0], "lab_admin", name="Keeper"), Purpose.EXPORT
    ) as u:
        job = migration.get(u, web_server.labs[0], migration_id)
    assert [a["side"] for a in job.approvals] == ["lab"]
    approve_posts = [p for p in posted if "signature=" in p]
    assert len(approve_posts) == 1
    assert private_hex not in approve_posts[0] and private_hex not in "".join(posted)
    assert "public_key=" in approve_posts[0]
    assert_page_clean(page_events)


def test_a_key_that_is_not_a_signers_approves_nothing(web_server: WebServer, page, page_events, tmp_path):
    """A1: a well-formed key of nobody the lab registered: the approval is refused, the plan waits."""
    migration_id, _ = _planned_with_key(web_server, "MIG-WEB-2")
    other, _public = Signer.generate()
    key_file = tmp_path / "other.key"
    key_file.write_text(other.hex())
    login(page, web_server, web_server.accounts["lab_admin_a"])
    page.goto(web_server.url("/lab/migrations"))
    form = page.locator(f'form[action="/lab/migrations/{migration_id}/approve"]')
    form.locator("input[type=file]").set_input_files(str(key_file))
    form.locator("button[data-sign]").click()
    page.wait_for_selector("p.error")
    assert "Signature refusée" in page.inner_text("p.error")
    with web_server.gateway.unit(
        lab_user(web_server.gateway, web_server.labs[0], "lab_admin", name="Keeper"), Purpose.EXPORT
    ) as u:
        assert migration.get(u, web_server.labs[0], migration_id).approvals == []
    assert_page_clean(page_events)


def test_the_lab_admin_registers_a_signer_with_a_key_made_in_the_browser_then_revokes_it(
    web_server: WebServer, page, page_events
):
    """A1, F2: on /lab/signers the lab admin makes a key pair in the browser (WebCrypto Ed25519):
    the private key is saved as a file in the format ``labvault signer keygen`` writes, and is in no
    request; the public key filled in is that key's; the signer is registered, then revoked. The
    page keeps its CSP and passes axe."""
    lab = web_server.labs[0]
    person = web_server.accounts["biologist_a"]
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.post_data or "") if r.method == "POST" else None)

    login(page, web_server, web_server.accounts["lab_admin_a"])  # its TOTP at login counts as a step-up
    page.goto(web_server.url("/lab/signers"))
    assert axe_check(page) == []
    form = page.locator("form#add-signer")
    form.locator("input[name=email]").fill(person.email)
    with page.expect_download() as info:
        form.locator("button[data-keygen]").click()
    private_hex = Path(info.value.path()).read_text().strip()
    page.wait_for_function("() => document.querySelector('input[name=public_key]').value.length === 64")
    public_hex = form.locator("input[name=public_key]").input_value()
    assert public_hex == Signer(bytes.fromhex(private_hex)).public_key.hex()
    assert "labvault-signer.key" in form.locator("[role=status]").inner_text()
    form.locator("button[type=submit]").click()
    page.wait_for_url(lambda url: url.endswith("/lab/signers"))
    page.wait_for_selector("form[action$='/revoke']")
    assert person.email in page.inner_text("main")
    assert axe_check(page) == []

    admin = lab_user(web_server.gateway, lab, "lab_admin", name="Keeper")
    with web_server.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        [mine] = [s for s in signers.list_signers(u, lab) if s.public_key == public_hex]
    assert mine.email == person.email and mine.active
    page.locator(f"form[action='/lab/signers/{mine.signer_id}/revoke'] button").click()
    page.wait_for_url(lambda url: url.endswith("/lab/signers"))
    with web_server.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        [mine] = [s for s in signers.list_signers(u, lab) if s.public_key == public_hex]
    assert not mine.active
    assert private_hex not in "".join(posted) and any(public_hex in p for p in posted)
    assert_page_clean(page_events)
