"""TOTP done right: a code is accepted once per account (its time step is kept), wherever codes are
checked (enrolment, login, step-up); the enrolment secret is created once per enrolment."""

from __future__ import annotations

import threading

import pyotp
import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.accounts import service, totp
from labvault.store import schema as t
from tests.api.conftest import cheap_argon2  # noqa: F401  (autouse: argon2 at minimal cost)
from tests.conftest import ADMIN, first_lab_admin, make_lab

PW = "Correct-horse-battery-9"
EMAIL = "admin@lab-a.invalid"


@pytest.fixture
def invited(gateway):
    """lab-a's first lab_admin, invited: (gateway, enrolment token)."""
    make_lab(gateway, "lab-a")
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        new = service.create_account(u, tenant_id="lab-a", name="Paul Lefebvre", email=EMAIL, roles=["lab_admin"])
    return gateway, new.enrolment_token


def _secret(uri: str) -> str:
    return pyotp.parse_uri(uri).secret


def _failures(raw) -> int:
    with raw.connect() as conn:
        return len(
            conn.execute(
                select(t.audit_event).where(
                    t.audit_event.c.action == "account:mfa:failure", t.audit_event.c.outcome == "denied"
                )
            ).all()
        )


def _login(gw, code: str, addr: str = "192.0.2.1"):
    with gw.auth_unit() as u:
        pre = service.login(u, EMAIL, PW, addr=addr, user_agent="ua")
    assert pre.mfa_pending
    with gw.auth_unit() as u:
        return service.verify_mfa(u, pre.session, code, addr=addr, user_agent="ua")


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_code_opens_one_session_only(invited, totp_clock, raw_engine):
    """E2, E3: one TOTP code, two logins (another session, another address): the second is refused
    and recorded; the next code works."""
    gw, token = invited
    with gw.auth_unit() as u:
        e = service.enrol(u, token, PW, accept_commitment=True)
    secret = _secret(e.totp_uri)
    confirm = totp_clock.code(secret)
    with gw.auth_unit() as u:
        service.confirm_enrolment(u, token, confirm)
    # the code that confirmed the enrolment does not log in
    with pytest.raises(service.AuthenticationFailed, match="already used"):
        _login(gw, confirm)
    code = totp_clock.code(secret)
    _login(gw, code)
    seen = _failures(raw_engine)
    with pytest.raises(service.AuthenticationFailed, match="already used"):
        _login(gw, code, addr="198.51.100.7")
    assert _failures(raw_engine) == seen + 1
    # an earlier step than the last one used is refused as well (the window accepts one step back)
    with pytest.raises(service.AuthenticationFailed):
        _login(gw, pyotp.TOTP(secret).at(totp.clock() - 30))
    _login(gw, totp_clock.code(secret))


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_uses_of_one_code_one_wins(invited, totp_clock):
    """E2: the same code sent at once from several threads (several connections): one session."""
    gw, token = invited
    with gw.auth_unit() as u:
        secret = _secret(service.enrol(u, token, PW, accept_commitment=True).totp_uri)
    with gw.auth_unit() as u:
        service.confirm_enrolment(u, token, totp_clock.code(secret))
    code = totp_clock.code(secret)
    pres = []
    for k in range(4):
        with gw.auth_unit() as u:
            pres.append(service.login(u, EMAIL, PW, addr=f"192.0.2.{k + 1}", user_agent="ua").session)
    outcomes: list[str] = []
    barrier = threading.Barrier(len(pres))

    def attempt(pre: str) -> None:
        barrier.wait()
        try:
            with gw.auth_unit() as u:
                service.verify_mfa(u, pre, code, addr="192.0.2.99", user_agent="ua")
            outcomes.append("ok")
        except service.AuthenticationFailed:
            outcomes.append("refused")
        except Exception as exc:  # SQLite's busy lock: a refusal too, never a second session
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(p,)) for p in pres]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert outcomes.count("ok") == 1, outcomes


def test_step_up_code_single_use(invited, totp_clock):
    """E2: codes checked for a step-up (``verify_totp``) are single-use too, and share the login's
    record of steps."""
    gw, token = invited
    with gw.auth_unit() as u:
        secret = _secret(service.enrol(u, token, PW, accept_commitment=True).totp_uri)
    with gw.auth_unit() as u:
        service.confirm_enrolment(u, token, totp_clock.code(secret))
    code = totp_clock.code(secret)
    who = _login(gw, code).principal
    with gw.unit(who, Purpose.ADMINISTRATION) as u:
        assert not service.verify_totp(u, who, code)  # the login's code
    fresh = totp_clock.code(secret)
    with gw.unit(who, Purpose.ADMINISTRATION) as u:
        assert service.verify_totp(u, who, fresh)
    with gw.unit(who, Purpose.ADMINISTRATION) as u:
        assert not service.verify_totp(u, who, fresh)


def test_enrolment_secret_created_once(invited, totp_clock, raw_engine):
    """E2: enrolling twice with the same link gives the same secret (sealed, not shown anywhere
    else) until confirmed; a code of that secret confirms it."""
    gw, token = invited
    with gw.auth_unit() as u:
        first = service.enrol(u, token, PW, accept_commitment=True)
    with raw_engine.connect() as conn:
        sealed = conn.execute(select(t.account.c.totp_secret_wrapped).where(t.account.c.email == EMAIL)).scalar_one()
    secret = _secret(first.totp_uri)
    assert secret.encode() not in sealed
    with gw.auth_unit() as u:
        again = service.enrol(u, token, PW, accept_commitment=True)
    with gw.auth_unit() as u:
        pending = service.pending_enrolment(u, token)
    assert again.totp_uri == first.totp_uri == pending.totp_uri
    with gw.auth_unit() as u:
        service.confirm_enrolment(u, token, totp_clock.code(secret))
    with gw.auth_unit() as u, pytest.raises(service.AuthenticationFailed):
        service.pending_enrolment(u, token)  # the link is spent


def test_first_admin_then_lab_accounts(gateway):
    """The helper the other tests use: the platform invites, then the lab's admin is returned."""
    make_lab(gateway, "lab-a")
    a = first_lab_admin(gateway, ADMIN, "lab-a")
    assert first_lab_admin(gateway, ADMIN, "lab-a") == a
