"""The lab's pages about what leaves it (its migrations to approve, its signers and instructions):
the lab's admin and DPO only; vendor accounts, other roles and other labs see nothing of them."""

from __future__ import annotations

from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_instructions_api import planned_migration
from tests.api.test_pages import _form_csrf, _page_login


def test_the_lab_admin_sees_its_migrations_plan_and_signers(api):
    """A1, B1: the planned migration with its plan and what the signer signs; the lab's signers."""
    c = _page_login(api, f"lab_admin@{LAB_A}")  # the lab's own admin first: a lab has one
    planned = planned_migration(api.gateway, LAB_A)
    r = c.get("/lab/migrations")
    assert r.status_code == 200 and planned.migration_id in r.text and "plan_sha256" in r.text
    r = c.get("/lab/signers")
    assert r.status_code == 200 and planned.instruction_id in r.text


def test_others_see_nothing_and_approve_nothing(api):
    """A1, F1, F2: a biologist, the vendor's operator and support are refused; lab B's admin sees
    none of lab A's migrations; a forged signature approves nothing."""
    a = _page_login(api, f"lab_admin@{LAB_A}")  # the lab's own admin first: a lab has one
    b = _page_login(api, f"lab_admin@{LAB_B}")
    planned = planned_migration(api.gateway, LAB_A)
    for key in (f"biologist@{LAB_A}", "operator", "support"):
        c = _page_login(api, key)
        for path in ("/lab/migrations", "/lab/signers"):
            assert c.get(path).status_code == 403, (key, path)
    r = b.get("/lab/migrations")
    assert r.status_code == 200 and planned.migration_id not in r.text
    csrf = _form_csrf(a.get("/lab/migrations").text)
    r = a.post(
        f"/lab/migrations/{planned.migration_id}/approve",
        data={"csrf": csrf, "public_key": "00" * 32, "signature": "AA=="},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "error=signature" in r.headers["location"]
    r = b.post(
        f"/lab/migrations/{planned.migration_id}/approve",
        data={"csrf": _form_csrf(b.get("/lab/migrations").text), "public_key": "00" * 32, "signature": "AA=="},
        follow_redirects=False,
    )
    assert r.status_code in (303, 403, 404)
    assert "approved by lab" not in a.get("/lab/migrations").text
