"""The vendor never acts on a lab's people without the lab: the platform invites a lab's first
lab_admin and nothing else; from then on only that lab's lab_admin adds, changes, deactivates and
re-enables its accounts and mints tokens for its service accounts; a vendor role may only suspend an
account for security. Every refusal: a reason, a ``denied`` event in the lab's trail, nothing changed.

These run on the account service through the gateway (the CLI and the API have their own tests in
tests/cli/test_lab_control_cli.py and tests/api/test_lab_control_api.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.store import schema as t
from tests.api.conftest import cheap_argon2  # noqa: F401  (autouse: argon2 at minimal cost)
from tests.conftest import ADMIN, first_lab_admin, make_lab

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")
LAB, OTHER = "lab-a", "lab-b"


def vendor(gw, role: str) -> Principal:
    """A vendor account of ``role`` (the platform admin is the one the test store starts with)."""
    if role == "platform_admin":
        return ADMIN
    account_id = f"vendor-{role}".replace("_", "-")
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        service.create_account(
            u, tenant_id=PLATFORM, name=f"Vendor {role}", email=f"{account_id}@vendor.invalid", roles=[role]
        )
    with gw.engine.connect() as conn:
        row = conn.execute(select(t.account).where(t.account.c.email == f"{account_id}@vendor.invalid")).one()
    return Principal(row.account_id, row.name, PLATFORM, frozenset({role}))


@pytest.fixture
def lab(gateway):
    """lab-a with its lab_admin (invited by the platform), a biologist and a feed's service
    account (added by that lab_admin); lab-b with its own lab_admin."""
    make_lab(gateway, LAB)
    make_lab(gateway, OTHER, "440000018")
    admin = first_lab_admin(gateway, ADMIN, LAB)
    with gateway.auth_unit() as u:
        service.enrol_directly(u, f"admin@{LAB}.invalid", "Correct-horse-battery-9")
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=LAB, name="Claire Moreau", email="bio@lab-a.invalid", roles=["biologist"])
        service.create_account(
            u,
            tenant_id=LAB,
            name="Analyser feed",
            email="feed@lab-a.invalid",
            roles=["service"],
            kind="service",
            purpose="ingest",
        )
    with gateway.auth_unit() as u:
        service.enrol_directly(u, "bio@lab-a.invalid", "Correct-horse-battery-9")
    other = first_lab_admin(gateway, ADMIN, OTHER)
    return gateway, admin, other


def snapshot(gw) -> tuple:
    """Every account and token row: a refused attempt leaves them exactly as they were."""
    with gw.engine.connect() as conn:
        return (
            sorted(tuple(r) for r in conn.execute(select(t.account)).all()),
            sorted(tuple(r) for r in conn.execute(select(t.api_token)).all()),
            conn.execute(select(func.count()).select_from(t.login_session)).scalar(),
        )


def denials(gw, tenant: str, actor: str) -> list[str]:
    with gw.engine.connect() as conn:
        return [
            r.action
            for r in conn.execute(
                select(t.audit_event).where(
                    t.audit_event.c.tenant_id == tenant,
                    t.audit_event.c.actor == actor,
                    t.audit_event.c.outcome == "denied",
                )
            )
        ]


def refused(gw, who: Principal, fn, *, reason: str, tenant: str = LAB) -> None:
    """``fn(unit)`` is refused with ``reason``, one ``denied`` event more in ``tenant``'s trail, nothing changed."""
    before, seen = snapshot(gw), len(denials(gw, tenant, who.account_id))
    with pytest.raises(AccessDenied) as err, gw.unit(who, Purpose.ADMINISTRATION) as u:
        fn(u)
    assert reason in str(err.value)
    assert snapshot(gw) == before
    assert len(denials(gw, tenant, who.account_id)) == seen + 1


def roles_of(gw, email: str) -> str:
    with gw.engine.connect() as conn:
        return conn.execute(select(t.account.c.roles).where(t.account.c.email == email)).scalar_one()


# -- the attack, per vendor role --------------------------------------------------------------------
@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_add_its_own_account_to_a_lab(lab, role):
    """F1, F2, E1: a vendor adding a (vendor person's) account to a lab, with any lab role: refused."""
    gw, _, _ = lab
    who = vendor(gw, role)
    for r in ("biologist", "technician", "lab_dpo"):
        refused(
            gw,
            who,
            lambda u, r=r: service.create_account(
                u, tenant_id=LAB, name="Vendor Person", email=f"{r}-mole@vendor.invalid", roles=[r]
            ),
            reason="only the lab's own lab_admin adds its accounts",
        )
    refused(
        gw,
        who,
        lambda u: service.create_account(
            u,
            tenant_id=LAB,
            name="Feed",
            email="feed2@vendor.invalid",
            roles=["service"],
            kind="service",
            purpose="ingest",
        ),
        reason="only the lab's own lab_admin adds its accounts",
    )


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_add_a_second_lab_admin(lab, role):
    """F2: once the lab has its lab_admin, no vendor role invites another."""
    gw, _, _ = lab
    refused(
        gw,
        vendor(gw, role),
        lambda u: service.create_account(
            u, tenant_id=LAB, name="Vendor Person", email="mole@vendor.invalid", roles=["lab_admin"]
        ),
        reason="already has its lab_admin" if role in ("platform_admin", "operator") else "not allowed",
    )


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_change_roles_demote_the_lab_admin(lab, role):
    """F2, G1: demoting the lab's own admin, or promoting a biologist: refused, roles unchanged."""
    gw, _, _ = lab
    who = vendor(gw, role)
    refused(
        gw,
        who,
        lambda u: service.set_roles(u, f"admin@{LAB}.invalid", ["biologist"]),
        reason="only the lab's own lab_admin changes the roles",
    )
    refused(
        gw,
        who,
        lambda u: service.set_roles(u, "bio@lab-a.invalid", ["lab_admin"]),
        reason="only the lab's own lab_admin changes the roles",
    )
    assert roles_of(gw, f"admin@{LAB}.invalid") == "lab_admin" and roles_of(gw, "bio@lab-a.invalid") == "biologist"


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_deactivate_or_re_enable(lab, role):
    """F2, E4: deactivation and re-enabling are the lab's; the vendor only suspends (below)."""
    gw, admin, _ = lab
    who = vendor(gw, role)
    refused(gw, who, lambda u: service.deactivate(u, "bio@lab-a.invalid"), reason="only the lab's own lab_admin")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        service.deactivate(u, "bio@lab-a.invalid")
    refused(
        gw, who, lambda u: service.reactivate(u, "bio@lab-a.invalid"), reason="only the lab's own lab_admin re-enables"
    )


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_mint_a_token_for_anyone_of_a_lab(lab, role):
    """E1, F2, G2: the token minted for a biologist (then used to read patients under the biologist's
    name), or for the lab's feed: refused; nothing stored."""
    gw, _, _ = lab
    who = vendor(gw, role)
    for email in ("bio@lab-a.invalid", "feed@lab-a.invalid", f"admin@{LAB}.invalid"):
        refused(
            gw,
            who,
            lambda u, e=email: service.create_token(u, e, scopes=["read"], days=1),
            reason="vendor accounts mint tokens for themselves only",
        )


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_revoke_a_lab_persons_token(lab, role):
    gw, _, _ = lab
    bio = Principal(*_ids(gw, "bio@lab-a.invalid"), LAB, frozenset({"biologist"}))
    with gw.unit(bio, Purpose.ADMINISTRATION) as u:
        token_id, _ = service.create_token(u, None, scopes=["read"], days=1)
    refused(gw, vendor(gw, role), lambda u: service.revoke_token(u, token_id), reason="only the lab's own lab_admin")


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_mints_only_for_itself_not_for_a_colleague(lab, role):
    """A vendor account mints its own token from its own session; not one for another vendor account."""
    gw, _, _ = lab
    who = vendor(gw, role)
    colleague = "colleague@vendor.invalid"
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=PLATFORM, name="Lea Garnier", email=colleague, roles=["support"])
    refused(
        gw,
        who,
        lambda u: service.create_token(u, colleague, scopes=["read"], days=1),
        reason="vendor accounts mint tokens for themselves only",
        tenant=PLATFORM,
    )
    refused(
        gw,
        who,
        lambda u: service.create_token(u, None, scopes=["read"], days=1, authenticated=False),
        reason="from your own logged-in session",
        tenant=PLATFORM,
    )
    with gw.unit(who, Purpose.ADMINISTRATION) as u:
        service.create_token(u, None, scopes=["read"], days=1)


# -- suspension: the vendor's one power over a lab account -----------------------------------------
def _ids(gw, email: str) -> tuple[str, str]:
    with gw.engine.connect() as conn:
        row = conn.execute(select(t.account).where(t.account.c.email == email)).one()
    return row.account_id, row.name


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_suspension_by_the_vendor_for_security(lab, role):
    """E4, G1, F2: a security officer (or the platform admin) suspends a lab account with a reason:
    sessions and tokens revoked, the event in the lab's trail, the reason shown to the lab's admin;
    re-enabled by the lab's lab_admin only. Operator and support: refused."""
    gw, admin, _ = lab
    who = vendor(gw, role)
    bio_id, bio_name = _ids(gw, "bio@lab-a.invalid")
    bio = Principal(bio_id, bio_name, LAB, frozenset({"biologist"}))
    with gw.unit(bio, Purpose.ADMINISTRATION) as u:
        _token_id, token = service.create_token(u, None, scopes=["read"], days=1)
    with gw.auth_unit() as u:
        session = service.login(u, "bio@lab-a.invalid", "Correct-horse-battery-9", addr="a", user_agent="b").session
    if role in ("operator", "support"):
        refused(
            gw,
            who,
            lambda u: service.suspend(u, "bio@lab-a.invalid", "credential leak, ticket SEC-1"),
            reason="not allowed",
        )
        return
    with pytest.raises(InvalidInput), gw.unit(who, Purpose.ADMINISTRATION) as u:
        service.suspend(u, "bio@lab-a.invalid", "   ")
    with gw.unit(who, Purpose.ADMINISTRATION) as u:
        service.suspend(u, "bio@lab-a.invalid", "credential leak, ticket SEC-1")
    with gw.auth_unit() as u, pytest.raises(service.AuthenticationFailed):
        service.principal_for_token(u, token, addr=None, user_agent=None)
    with gw.auth_unit() as u, pytest.raises(service.AuthenticationFailed):
        service.principal_for_session(u, session, addr=None, user_agent=None)
    with gw.engine.connect() as conn:
        ev = conn.execute(
            select(t.audit_event).where(t.audit_event.c.tenant_id == LAB, t.audit_event.c.action == "account:suspend")
        ).one()
    assert ev.actor == who.account_id and bio_id in ev.object_refs and "leak" not in str(tuple(ev))
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        [row] = [a for a in service.list_accounts(u, LAB) if a["email"] == "bio@lab-a.invalid"]
    assert not row["active"] and row["suspended"]["reason"] == "credential leak, ticket SEC-1"
    assert row["suspended"]["by"] == who.account_id
    refused(gw, who, lambda u: service.reactivate(u, "bio@lab-a.invalid"), reason="only the lab's own lab_admin")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        service.reactivate(u, "bio@lab-a.invalid")
    with gw.auth_unit() as u:
        service.login(u, "bio@lab-a.invalid", "Correct-horse-battery-9", addr="a", user_agent="b")
    with gw.auth_unit() as u, pytest.raises(service.AuthenticationFailed):  # revoked stays revoked
        service.principal_for_token(u, token, addr=None, user_agent=None)


def test_suspending_the_lab_admin_does_not_let_the_platform_invite_another(lab):
    """F2: the take-over path (suspend the lab's admin, then invite one's own) is closed."""
    gw, _, _ = lab
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        service.suspend(u, f"admin@{LAB}.invalid", "account shows signs of compromise")
    refused(
        gw,
        ADMIN,
        lambda u: service.create_account(
            u, tenant_id=LAB, name="New Admin", email="new-admin@lab-a.invalid", roles=["lab_admin"]
        ),
        reason="already has its lab_admin",
    )


# -- the platform's invitation of a lab's first lab_admin ------------------------------------------
@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_first_lab_admin_invited_by_the_platform_only_once(gateway, role):
    """F2: platform_admin and operator (the roles that create labs) invite a new lab's first
    lab_admin, once; support and security officer cannot; a lab_admin of another lab cannot."""
    make_lab(gateway, "lab-new", "690000017")
    make_lab(gateway, OTHER, "440000018")
    who = vendor(gateway, role)
    other_admin = first_lab_admin(gateway, ADMIN, OTHER)
    refused(
        gateway,
        other_admin,
        lambda u: service.create_account(
            u, tenant_id="lab-new", name="X Y", email="x@lab-new.invalid", roles=["lab_admin"]
        ),
        reason="cannot act on lab 'lab-new'",
        tenant="lab-new",
    )

    def invite(u, email="first@lab-new.invalid"):
        return service.create_account(u, tenant_id="lab-new", name="Ines Roussel", email=email, roles=["lab_admin"])

    if role in ("support", "security_officer"):
        refused(gateway, who, invite, reason="not allowed", tenant="lab-new")
        return
    refused(
        gateway,
        who,
        lambda u: service.create_account(
            u, tenant_id="lab-new", name="Ines Roussel", email="first@lab-new.invalid", roles=["lab_admin", "biologist"]
        ),
        reason="first lab_admin only",
        tenant="lab-new",
    )
    with gateway.unit(who, Purpose.ADMINISTRATION) as u:
        new = invite(u)
    assert new.enrolment_token  # the person enrols and sets their own password and TOTP
    refused(
        gateway,
        who,
        lambda u: invite(u, "second@lab-new.invalid"),
        reason="already has its lab_admin",
        tenant="lab-new",
    )


# -- the lab's own admin does each ----------------------------------------------------------------
def test_lab_admin_manages_its_lab_and_only_its_lab(lab):
    """F1, F2: the lab's lab_admin adds, changes roles, deactivates, re-enables and mints for its
    service account; the lab_admin of another lab can do none of it; no one mints for a person."""
    gw, admin, other = lab
    for fn in (
        lambda u: service.create_account(
            u, tenant_id=LAB, name="Sami Haddad", email="x@lab-a.invalid", roles=["technician"]
        ),
        lambda u: service.set_roles(u, "bio@lab-a.invalid", ["technician"]),
        lambda u: service.deactivate(u, "bio@lab-a.invalid"),
        lambda u: service.create_token(u, "feed@lab-a.invalid", scopes=["ingest"], days=1),
    ):
        refused(gw, other, fn, reason=f"account of lab '{OTHER}' cannot act on lab '{LAB}'")
    refused(
        gw,
        admin,
        lambda u: service.create_token(u, "bio@lab-a.invalid", scopes=["read"], days=1),
        reason="nobody mints a token for another person",
    )
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=LAB, name="Sami Haddad", email="tech@lab-a.invalid", roles=["technician"])
        service.set_roles(u, "tech@lab-a.invalid", ["technician", "lab_dpo"])
        service.deactivate(u, "tech@lab-a.invalid")
        service.reactivate(u, "tech@lab-a.invalid")
        _, token = service.create_token(u, "feed@lab-a.invalid", scopes=["ingest"], days=1)
    with gw.auth_unit() as u:
        feed, scopes = service.principal_for_token(u, token, addr=None, user_agent=None)
    assert feed.kind == "service" and scopes == {"ingest"}
    assert roles_of(gw, "tech@lab-a.invalid") == "lab_dpo,technician"
    refused(
        gw,
        admin,
        lambda u: service.create_token(u, "feed@lab-a.invalid", scopes=["ingest"], days=1, authenticated=False),
        reason="logged-in session",
    )


def test_the_last_lab_admin_stays(lab):
    """A lab never loses its last lab_admin: nobody else may manage its accounts."""
    gw, admin, _ = lab
    refused(
        gw, admin, lambda u: service.set_roles(u, f"admin@{LAB}.invalid", ["biologist"]), reason="last active lab_admin"
    )
    refused(gw, admin, lambda u: service.deactivate(u, f"admin@{LAB}.invalid"), reason="last active lab_admin")
