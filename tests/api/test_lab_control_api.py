"""The vendor never acts on a lab's people without the lab, over HTTP: ``POST /api/v1/tokens``
mints the caller's own token, or, for a lab's lab_admin, one for that lab's service account; no
vendor role mints or revokes one for anybody of a lab. Each refusal: 403 with the reason, a
``denied`` event in the lab's trail, nothing stored."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.accounts import service
from labvault.store import schema as t
from tests.api.conftest import LAB_A, LAB_B
from tests.conftest import ADMIN, first_lab_admin

VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")
FEED = "feed@lab-a.api.invalid"
TOKENS = "/api/v1/tokens"


@pytest.fixture
def feed(api) -> str:
    """lab-a's analyser feed, a service account its lab_admin added."""
    api.accounts[f"lab_admin@{LAB_A}"]
    with api.gateway.unit(first_lab_admin(api.gateway, ADMIN, LAB_A), Purpose.ADMINISTRATION) as u:
        service.create_account(
            u, tenant_id=LAB_A, name="Analyser feed", email=FEED, roles=["service"], kind="service", purpose="ingest"
        )
    return FEED


def _state(api, tenant: str = LAB_A) -> tuple[list, int]:
    with api.gateway.engine.connect() as conn:
        tokens = sorted(tuple(r) for r in conn.execute(select(t.api_token).where(t.api_token.c.tenant_id == tenant)))
        denied = len(
            conn.execute(
                select(t.audit_event).where(t.audit_event.c.tenant_id == tenant, t.audit_event.c.outcome == "denied")
            ).all()
        )
    return tokens, denied


def _refused(api, call, reason: str, tenant: str = LAB_A) -> None:
    tokens, denied = _state(api, tenant)
    r = call()
    assert r.status_code == 403, r.text
    assert reason in r.json()["error"]
    after_tokens, after_denied = _state(api, tenant)
    assert after_tokens == tokens and after_denied == denied + 1


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_vendor_cannot_mint_or_revoke_a_lab_token(api, feed, role):
    """E1, F2, G2: the token minted for a lab's biologist (then read patients under their name) or
    for its feed: 403 for every vendor role; revoking a lab person's token too; the vendor mints its
    own token, for itself only."""
    bio = api.login(f"biologist@{LAB_A}")
    bio_token_id, bio_token = api.token(bio, ["read"])
    vendor = api.login(role)
    for email in (api.accounts[f"biologist@{LAB_A}"].email, feed, api.accounts[f"lab_admin@{LAB_A}"].email):
        _refused(
            api,
            lambda e=email: vendor.post(TOKENS, json={"scopes": ["read"], "days": 1, "email": e}),
            "vendor accounts mint tokens for themselves only",
        )
    _refused(api, lambda: vendor.delete(f"{TOKENS}/{bio_token_id}"), "only the lab's own lab_admin")
    assert api.bearer(bio_token).get("/api/v1/me").status_code == 200  # still works
    r = vendor.post(TOKENS, json={"scopes": ["read"], "days": 1})
    assert r.status_code == 201
    me = api.bearer(r.json()["token"]).get("/api/v1/me").json()
    assert me["tenant"] == "platform" and me["roles"] == [role]


def test_lab_admin_mints_for_its_service_accounts_only(api, feed):
    """F2: the lab's lab_admin mints for its own lab's feed; not for a person of its lab, not from a
    token, and the lab_admin of another lab not at all."""
    admin = api.login(f"lab_admin@{LAB_A}")
    r = admin.post(TOKENS, json={"scopes": ["ingest"], "days": 1, "email": feed})
    assert r.status_code == 201, r.text
    with api.gateway.engine.connect() as conn:
        row = conn.execute(
            select(
                t.api_token.c.tenant_id, t.api_token.c.scopes, t.account.c.email, t.account.c.roles, t.account.c.kind
            )
            .join(t.account, t.account.c.account_id == t.api_token.c.account_id)
            .where(t.api_token.c.token_id == r.json()["token_id"])
        ).one()
    assert tuple(row) == (LAB_A, "ingest", feed, "service", "service")  # the feed's token, nobody else's
    # a live token of the feed (an 'ingest' token only ingests: /me, a read, is refused for its scope)
    me = api.bearer(r.json()["token"]).get("/api/v1/me")
    assert me.status_code == 403 and "does not include 'read'" in me.json()["error"]
    _refused(
        api,
        lambda: admin.post(
            TOKENS, json={"scopes": ["read"], "days": 1, "email": api.accounts[f"biologist@{LAB_A}"].email}
        ),
        "nobody mints a token for another person",
    )
    other = api.login(f"lab_admin@{LAB_B}")
    _refused(
        api,
        lambda: other.post(TOKENS, json={"scopes": ["ingest"], "days": 1, "email": feed}),
        f"account of lab '{LAB_B}' cannot act on lab '{LAB_A}'",
    )
    _, own = api.token(admin, ["ingest"])
    _refused(
        api,
        lambda: api.bearer(own).post(TOKENS, json={"scopes": ["ingest"], "days": 1, "email": feed}),
        "logged-in session",
    )
