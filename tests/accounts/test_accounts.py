"""Account rules enforced by the gateway: commitment, service accounts, role sides, audit of changes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.errors import AccessDenied, InvalidInput
from labvault.store import schema as t
from tests.conftest import ADMIN, first_lab_admin, make_lab

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PW = "Correct-horse-battery-9"


@pytest.fixture
def lab(gateway):
    make_lab(gateway, "lab-a")
    return gateway


def test_no_personal_data_before_commitment(lab):
    """F3: no personal data before commitment."""
    with lab.unit(first_lab_admin(lab, ADMIN, "lab-a"), Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u, tenant_id="lab-a", name="Marie Curie", email="m@lab.example", roles=["biologist"]
        )
    who = Principal(new.account_id, "Marie Curie", "lab-a", frozenset({"biologist"}))
    with pytest.raises(AccessDenied) as err, lab.unit(who, Purpose.CARE) as u:
        u.find_patients_by_name("lab-a", "X", "Y", __import__("datetime").date(2000, 1, 1))
    assert "commitment" in str(err.value)
    with lab.auth_unit() as u:
        assert service.enrol_directly(u, "m@lab.example", PW) is None  # biologists: no MFA required
    with lab.unit(who, Purpose.CARE) as u:
        assert u.find_patients_by_name("lab-a", "X", "Y", __import__("datetime").date(2000, 1, 1)) == []


@pytest.mark.parametrize(
    ("tenant", "roles", "kind", "purpose"),
    [
        ("platform", ["biologist"], "person", None),  # lab role without a lab
        ("lab-a", ["operator"], "person", None),  # vendor role inside a lab
        ("lab-a", ["biologist", "support"], "person", None),  # both sides
        ("lab-a", ["wizard"], "person", None),  # unknown role
        ("lab-a", ["service"], "person", None),  # service role on a person
        ("lab-a", ["service"], "service", None),  # service account without purpose
    ],
)
def test_account_shapes_refused(lab, tenant, roles, kind, purpose):
    who = ADMIN if tenant == "platform" else first_lab_admin(lab, ADMIN, "lab-a")
    with pytest.raises(InvalidInput), lab.unit(who, Purpose.ADMINISTRATION) as u:
        service.create_account(
            u, tenant_id=tenant, name="Some One", email="s@x.example", roles=roles, kind=kind, purpose=purpose
        )


def test_service_account_token_only_and_one_purpose(lab):
    """E1: service account token only and one purpose."""
    with lab.unit(first_lab_admin(lab, ADMIN, "lab-a"), Purpose.ADMINISTRATION) as u:
        service.create_account(
            u,
            tenant_id="lab-a",
            name="Analyser feed",
            email="feed@lab.example",
            roles=["service"],
            kind="service",
            purpose="ingest",
        )
        _, token = service.create_token(u, "feed@lab.example", scopes=["ingest"], days=1)
    with lab.auth_unit() as u, pytest.raises(service.AuthenticationFailed):
        service.login(u, "feed@lab.example", "whatever password", addr="10.0.0.1", user_agent="x")
    with lab.auth_unit() as u:
        feed, scopes = service.principal_for_token(u, token, addr=None, user_agent=None)
    assert scopes == {"ingest"} and feed.kind == "service"
    with pytest.raises(AccessDenied), lab.unit(feed, Purpose.CARE) as u:
        u.add_prescribers("lab-a", [])
    with lab.unit(feed, Purpose.INGEST) as u:
        assert u.add_prescribers("lab-a", []) == 0


def test_role_changes_and_mfa_are_audited(lab, raw_engine):
    """G1: role changes and mfa are audited."""
    with lab.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id="lab-a", name="Paul Admin", email="pa@lab.example", roles=["lab_admin"])
    with lab.auth_unit() as u:
        secret = service.enrol_directly(u, "pa@lab.example", PW)
    assert secret  # lab_admin must enrol TOTP
    with lab.unit(first_lab_admin(lab, ADMIN, "lab-a"), Purpose.ADMINISTRATION) as u:
        service.set_roles(u, "pa@lab.example", ["lab_admin", "biologist"])
    with raw_engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(t.audit_event).where(t.audit_event.c.tenant_id == "lab-a"))]
    for expected in ("account:create", "account:enrol", "account:mfa:enable", "account:roles:change"):
        assert expected in actions
