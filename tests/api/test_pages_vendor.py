"""The vendor's pages: an operator sees the labs' migrations, a security officer each lab's audit
verification, refused operations and suspended accounts; references and counts only, never a
personal value; lab accounts get neither page."""

from __future__ import annotations

from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _page_login


def _no_personal_value(api, html: str) -> None:
    for lab in (LAB_A, LAB_B):
        for nir in api.nirs[lab]:
            assert nir not in html


def test_the_operator_sees_migrations_by_reference(api):
    """B1, F2: the operator's migrations page lists each lab's migrations (state, kind, deadline)
    and no personal value."""
    from tests.api.test_instructions_api import planned_migration

    planned = planned_migration(api.gateway, LAB_A)
    c = _page_login(api, "operator")
    r = c.get("/vendor/migrations")
    assert r.status_code == 200, r.text
    assert planned.migration_id in r.text and "Migrations et exports" in r.text
    _no_personal_value(api, r.text)


def test_the_security_officer_sees_each_labs_verification_and_refusals(api):
    """G4, H1, F2: the security officer's page: each lab's chain verified with its counts, the
    refused operations of the week (a lab B biologist's refused read of lab A among them, by its
    account's reference: a lab's people are not named to the vendor), no personal value."""
    b = api.login(f"biologist@{LAB_B}")
    assert b.get(f"/api/v1/tenants/{LAB_A}/patients/{api.patients[LAB_A][0]}").status_code in (403, 404)
    c = _page_login(api, "security_officer")
    r = c.get("/vendor/security")
    assert r.status_code == 200, r.text
    assert r.text.count("vérifié") >= 2 and "anomalie" not in r.text
    lab_a = r.text.split(f"({LAB_A})", 1)[1].split(f"({LAB_B})", 1)[0]
    assert "Opérations refusées (7 jours)</dt><dd>1</dd>" in lab_a.replace("\n", "")
    me = b.get("/api/v1/me").json()
    assert me["name"] not in lab_a and "patient:identity:read" in lab_a
    assert me["account_id"][:12] in lab_a and "compte de laboratoire" in lab_a
    _no_personal_value(api, r.text)


def test_lab_accounts_and_other_vendor_roles_get_neither_page(api):
    """F1, F2: a lab's biologist, lab admin and the support agent are refused both pages; the
    operator is refused the security page, the security officer the migrations page."""
    for key in (f"biologist@{LAB_A}", f"lab_admin@{LAB_A}", "support"):
        c = _page_login(api, key)
        for path in ("/vendor/migrations", "/vendor/security"):
            r = c.get(path)
            assert r.status_code == 403, (key, path, r.status_code)
    assert _page_login(api, "operator").get("/vendor/security").status_code == 403
    assert _page_login(api, "security_officer").get("/vendor/migrations").status_code == 403
