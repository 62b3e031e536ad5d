"""Account services: creation, enrolment, login with MFA, sessions, API tokens, lockout.

Each function takes a gateway ``Unit`` (keyword ``u``): the unit's transaction holds the account
change and its audit event together. Secrets (passwords, enrolment links, session cookies, API
tokens) are stored as hashes only; TOTP secrets are wrapped by the platform key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, insert, select, update

from labvault.access import policy
from labvault.access.principal import Principal
from labvault.accounts import passwords, totp
from labvault.accounts.errors import AuthenticationFailed, LockedOut, StepUpRequired
from labvault.crypto import tokens
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

ENROLMENT_TTL = timedelta(hours=72)
SESSION_TTL = timedelta(hours=8)
SESSION_IDLE = timedelta(minutes=30)
PREAUTH_TTL = timedelta(minutes=5)
# Approvals (a grant, a migration, a received instruction) need a session whose TOTP code was
# checked this recently: at its login, or again by a step-up (``step_up``).
STEP_UP_WINDOW = timedelta(minutes=5)
ACCOUNT_LOCK_AFTER = 5  # failures in a row
ADDR_LOCK_AFTER = 20  # failures per address per window
FAILURE_WINDOW = timedelta(minutes=15)
LOCK_FOR = timedelta(minutes=15)
SHARED_USE_WINDOW = timedelta(minutes=10)
TOKEN_MAX_DAYS = 365
TOKEN_SCOPES = ("read", "ingest")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def digest(secret: str) -> str:
    """What the store keeps of a secret handed out (see ``labvault.crypto.tokens``)."""
    return tokens.token_digest(secret)


def _account_by_email(u, email: str):
    return u.execute("*", select(t.account).where(func.lower(t.account.c.email) == email.strip().lower())).first()


def _account(u, tenant_id: str, account_id: str):
    return u.execute(
        tenant_id, select(t.account).where(t.account.c.tenant_id == tenant_id, t.account.c.account_id == account_id)
    ).first()


# The kinds an account has: a person's or a feed's. ``system`` is the platform's own processes',
# which no account is (``policy.SYSTEM_PRINCIPALS``): a row saying so is refused, never trusted.
ACCOUNT_KINDS = ("person", "service")


def principal_of(row, *, source_addr: str | None = None, user_agent: str | None = None) -> Principal:
    if row.kind not in ACCOUNT_KINDS:
        raise AuthenticationFailed("this account cannot act")
    return Principal(
        row.account_id,
        row.name,
        row.tenant_id,
        frozenset(filter(None, row.roles.split(","))),
        row.kind,
        source_addr,
        (user_agent or "")[:300] or None,
    )


# -- creation and enrolment -------------------------------------------------------------------
@dataclass(frozen=True)
class NewAccount:
    account_id: str
    tenant_id: str
    email: str
    enrolment_token: str | None  # person accounts: a one-time link secret; service accounts: None


def create_account(
    u, *, tenant_id: str, name: str, email: str, roles: list[str], kind: str = "person", purpose: str | None = None
) -> NewAccount:
    """A named account for one natural person (or a service account for one feed)."""
    if kind not in ACCOUNT_KINDS:
        raise InvalidInput(f"an account's kind is one of {', '.join(ACCOUNT_KINDS)}")
    roles_ = sorted({policy.valid_role(r).value for r in roles})
    if not roles_:
        raise InvalidInput("an account needs at least one role")
    lab_roles = set(roles_) & policy.LAB_ROLES
    vendor_roles = set(roles_) & policy.VENDOR_ROLES
    if lab_roles and vendor_roles:
        raise InvalidInput("an account is either a lab's or the vendor's, not both")
    if lab_roles and tenant_id == PLATFORM:
        raise InvalidInput("lab roles need --tenant")
    if vendor_roles and tenant_id != PLATFORM:
        raise InvalidInput("vendor roles belong to the platform, not to a lab: drop --tenant")
    if kind == "service":
        if roles_ != ["service"] or tenant_id == PLATFORM or not purpose:
            raise InvalidInput("a service account has the role 'service', one lab and one purpose")
    elif "service" in roles_:
        raise InvalidInput("the role 'service' is for service accounts")
    if not name.strip() or not _EMAIL.match(email.strip()):
        raise InvalidInput("an account needs a person's name and a valid e-mail address")
    if tenant_id != PLATFORM:
        u.tenant(tenant_id)
    if tenant_id != PLATFORM and u.principal.is_platform and u.checked:
        _authorise_first_admin(u, tenant_id, roles_, kind)
    else:
        u.authorise(tenant_id, "account:manage")
    if _account_by_email(u, email) is not None:
        raise InvalidInput("an account with this e-mail address already exists")
    account_id = new_id()
    token = None if kind == "service" else tokens.new_token()
    u.execute(
        tenant_id,
        insert(t.account).values(
            tenant_id=tenant_id,
            account_id=account_id,
            name=name.strip(),
            email=email.strip().lower(),
            kind=kind,
            roles=",".join(roles_),
            active=1,
            created_at=utcnow(),
            service_purpose=purpose,
            enrolment_hash=None if token is None else digest(token),
            enrolment_expires=None if token is None else utcnow() + ENROLMENT_TTL,
            commitment_at=utcnow() if kind == "service" else None,
            commitment_ref="service account: bound to one lab and one purpose" if kind == "service" else None,
        ),
    )
    u.audit(tenant_id, "account:create", "account", 1, refs=[account_id])
    return NewAccount(account_id, tenant_id, email.strip().lower(), token)


def _lab_admins(u, tenant_id: str) -> list:
    rows = u.execute(
        tenant_id, select(t.account).where(t.account.c.tenant_id == tenant_id, t.account.c.kind == "person")
    ).all()
    return [r for r in rows if "lab_admin" in r.roles.split(",")]


def _enrolled(row) -> bool:
    """A person who completed (or began) enrolment: password set or commitment recorded."""
    return row.password_hash is not None or row.commitment_at is not None


def _authorise_first_admin(u, tenant_id: str, roles: list[str], kind: str) -> None:
    """The platform invites a lab's first ``lab_admin``, and nothing else about a lab's accounts.

    "First": the lab has no lab_admin account that enrolled, is suspended or deactivated, or holds
    a live invitation (an invitation that expired unused may be sent again)."""
    action = "account:invite-admin"
    if roles != ["lab_admin"] or kind != "person":  # the policy keeps a lab's accounts from vendor accounts
        u.authorise(
            tenant_id,
            "account:manage",
            vendor_refusal="only the lab's own lab_admin adds its accounts: "
            "the platform invites the lab's first lab_admin only",
        )
    u.authorise(tenant_id, action)
    now = utcnow()
    for r in _lab_admins(u, tenant_id):
        live_invitation = r.enrolment_hash is not None and stored_utc(r.enrolment_expires) > now
        if _enrolled(r) or not r.active or live_invitation:
            u.refuse(
                tenant_id, action, "this lab already has its lab_admin: only the lab's own lab_admin adds its accounts"
            )


@dataclass(frozen=True)
class Enrolment:
    account_id: str
    mfa_required: bool
    totp_uri: str | None = None
    qr_svg: str | None = None


def _by_enrolment(u, token: str):
    row = u.execute("*", select(t.account).where(t.account.c.enrolment_hash == digest(token))).first()
    if row is None or not row.active or stored_utc(row.enrolment_expires) < utcnow():
        raise AuthenticationFailed("this enrolment link is invalid or has expired")
    return row


def enrol(u, token: str, password: str, *, accept_commitment: bool) -> Enrolment:
    """Set the password, record the confidentiality commitment, start TOTP enrolment if required."""
    row = _by_enrolment(u, token)
    if not accept_commitment:
        raise InvalidInput("the confidentiality commitment must be accepted to use Labvault")
    passwords.check_policy(password, email=row.email, name=row.name)
    needs_mfa = bool(set(row.roles.split(",")) & policy.MFA_REQUIRED)
    values = {
        "password_hash": passwords.hash_password(password),
        "commitment_at": utcnow(),
        "commitment_ref": "confidentiality commitment accepted at enrolment (GDPR Art. 28(3)(b))",
    }
    uri = svg = None
    if needs_mfa:
        if row.totp_secret_wrapped is not None and not row.mfa_enabled:
            secret = _totp_secret(u, row)  # the same secret for this whole enrolment
        else:
            secret = totp.new_secret()
            values["totp_secret_wrapped"] = u.seal_totp_secret(row.account_id, secret)
            values["totp_last_step"] = None
        uri = totp.provisioning_uri(secret, row.email)
        svg = totp.qr_svg(uri)
    else:
        values["enrolment_hash"] = None
        values["enrolment_expires"] = None
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.account_id == row.account_id, t.account.c.tenant_id == row.tenant_id)
        .values(**values),
    )
    u.audit(row.tenant_id, "account:enrol", "account", 1, refs=[row.account_id])
    return Enrolment(row.account_id, needs_mfa, uri, svg)


def _totp_secret(u, row) -> str:
    return u.open_totp_secret(row.account_id, row.totp_secret_wrapped)


def _consume_totp(u, row, code: str) -> bool:
    """Whether ``code`` is right and its time step later than the last one this account used.

    The step is recorded by a conditional update, so of two uses of one code (two sessions, two
    processes) exactly one succeeds."""
    step = totp.match(_totp_secret(u, row), code)
    if step is None:
        return False
    done = u.execute(
        row.tenant_id,
        update(t.account)
        .where(
            t.account.c.tenant_id == row.tenant_id,
            t.account.c.account_id == row.account_id,
            (t.account.c.totp_last_step.is_(None)) | (t.account.c.totp_last_step < step),
        )
        .values(totp_last_step=step),
    )
    return done.rowcount == 1


def verify_totp(u, principal: Principal, code: str) -> bool:
    """Check a TOTP code of an account that enrolled its authenticator (single use, like every
    check of a code); a wrong or replayed code is recorded as an MFA failure."""
    row = _account(u, principal.tenant_id, principal.account_id)
    if row is None or not row.active or row.totp_secret_wrapped is None or not row.mfa_enabled:
        return False
    if _consume_totp(u, row, code):
        return True
    u.audit(row.tenant_id, "account:mfa:failure", "account", 1, outcome="denied", refs=[row.account_id])
    return False


def pending_enrolment(u, token: str) -> Enrolment | None:
    """An enrolment whose password is set and whose authenticator awaits its first code (the
    same secret as shown before), or None."""
    row = _by_enrolment(u, token)
    if row.password_hash is None or row.totp_secret_wrapped is None or row.mfa_enabled:
        return None
    uri = totp.provisioning_uri(_totp_secret(u, row), row.email)
    return Enrolment(row.account_id, True, uri, totp.qr_svg(uri))


def confirm_enrolment(u, token: str, code: str) -> None:
    """Prove the authenticator works: MFA is on, the enrolment link is spent."""
    row = _by_enrolment(u, token)
    if row.totp_secret_wrapped is None or row.password_hash is None:
        raise InvalidInput("set a password first")
    if not _consume_totp(u, row, code):
        u.audit(row.tenant_id, "account:mfa:failure", "account", 1, outcome="denied", refs=[row.account_id])
        raise AuthenticationFailed("the code does not match, or was already used")
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.account_id == row.account_id, t.account.c.tenant_id == row.tenant_id)
        .values(mfa_enabled=1, enrolment_hash=None, enrolment_expires=None),
    )
    u.audit(row.tenant_id, "account:mfa:enable", "account", 1, refs=[row.account_id])


# -- login --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Login:
    session: str  # the cookie secret
    mfa_pending: bool
    principal: Principal


def _throttle(u, addr: str | None) -> None:
    if not addr:
        return
    row = u.execute(
        PLATFORM,
        select(t.login_throttle).where(
            t.login_throttle.c.tenant_id == PLATFORM, t.login_throttle.c.source_addr == addr
        ),
    ).first()
    if row is not None and row.locked_until is not None and stored_utc(row.locked_until) > utcnow():
        raise LockedOut(
            "too many failed logins from this address: try again later",
            int((stored_utc(row.locked_until) - utcnow()).total_seconds()) + 1,
        )


def _fail(u, row, addr: str | None, action: str = "account:login:failure") -> None:
    """Count a failure against the address and the account, and lock either past its threshold.

    The caller is about to raise, which rolls its transaction back: the counting runs after it,
    in a transaction of its own, so that failures do add up.
    """
    tenant_id = row.tenant_id if row is not None else None
    account_id = row.account_id if row is not None else None
    u.after(lambda side: _count_failure(side, tenant_id, account_id, addr, action))


def _count_failure(u, tenant_id: str | None, account_id: str | None, addr: str | None, action: str) -> None:
    now = utcnow()
    if addr:
        th = u.execute(
            PLATFORM,
            select(t.login_throttle).where(
                t.login_throttle.c.tenant_id == PLATFORM, t.login_throttle.c.source_addr == addr
            ),
        ).first()
        if th is None:
            u.execute(
                PLATFORM,
                insert(t.login_throttle).values(tenant_id=PLATFORM, source_addr=addr, failures=1, window_start=now),
            )
        else:
            fresh = stored_utc(th.window_start) + FAILURE_WINDOW < now
            failures = 1 if fresh else th.failures + 1
            u.execute(
                PLATFORM,
                update(t.login_throttle)
                .where(t.login_throttle.c.tenant_id == PLATFORM, t.login_throttle.c.source_addr == addr)
                .values(
                    failures=failures,
                    window_start=now if fresh else th.window_start,
                    locked_until=now + LOCK_FOR if failures >= ADDR_LOCK_AFTER else th.locked_until,
                ),
            )
    if tenant_id is not None:
        where = (t.account.c.tenant_id == tenant_id, t.account.c.account_id == account_id)
        u.execute(tenant_id, update(t.account).where(*where).values(failed_logins=t.account.c.failed_logins + 1))
        failures = u.execute(tenant_id, select(t.account.c.failed_logins).where(*where)).scalar_one()
        if failures >= ACCOUNT_LOCK_AFTER:
            u.execute(tenant_id, update(t.account).where(*where).values(locked_until=now + LOCK_FOR))
            # a login half-way through MFA ends with the lock
            u.execute(
                tenant_id,
                update(t.login_session)
                .where(
                    t.login_session.c.tenant_id == tenant_id,
                    t.login_session.c.account_id == account_id,
                    t.login_session.c.mfa_passed == 0,
                    t.login_session.c.revoked_at.is_(None),
                )
                .values(revoked_at=now),
            )
    # This unit runs after the refused one ended (``Unit.after``): its refusal is written at once.
    u.audit(
        tenant_id or PLATFORM, action, "account", 1, outcome="denied", refs=None if account_id is None else [account_id]
    )


def login(u, email: str, password: str, *, addr: str | None, user_agent: str | None) -> Login:
    """Check a password. Locked accounts and addresses are refused before any check."""
    _throttle(u, addr)
    row = _account_by_email(u, email)
    if row is not None and row.locked_until is not None and stored_utc(row.locked_until) > utcnow():
        _fail(u, row, addr)
        raise LockedOut(
            "this account is locked after repeated failures: try again later",
            int((stored_utc(row.locked_until) - utcnow()).total_seconds()) + 1,
        )
    ok = passwords.verify_password(row.password_hash if row is not None else None, password)
    if row is None or not ok or not row.active or row.kind != "person":
        _fail(u, row if row is not None and row.kind == "person" else None, addr)
        raise AuthenticationFailed("wrong e-mail address or password")
    needs_mfa = bool(set(row.roles.split(",")) & policy.MFA_REQUIRED)
    if needs_mfa and not row.mfa_enabled:
        raise AccessDenied("this account must finish its MFA enrolment before logging in")
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(failed_logins=0),
    )
    session = _new_session(u, row, mfa_passed=not needs_mfa, addr=addr, user_agent=user_agent)
    principal = principal_of(row, source_addr=addr, user_agent=user_agent)
    if not needs_mfa:
        u.audit(row.tenant_id, "account:login", "account", 1, refs=[row.account_id])
        _detect_shared_use(u, row, addr, user_agent)
    return Login(session, needs_mfa, principal)


def _new_session(u, row, *, mfa_passed: bool, addr, user_agent, totp_checked: bool = False) -> str:
    secret = tokens.new_token()
    now = utcnow()
    u.execute(
        row.tenant_id,
        insert(t.login_session).values(
            tenant_id=row.tenant_id,
            session_hash=digest(secret),
            account_id=row.account_id,
            created_at=now,
            expires_at=now + (SESSION_TTL if mfa_passed else PREAUTH_TTL),
            last_seen=now,
            mfa_passed=int(mfa_passed),
            source_addr=addr,
            user_agent=(user_agent or "")[:300] or None,
            totp_at=now if totp_checked else None,
        ),
    )
    return secret


def _session_row(u, secret: str):
    return u.execute("*", select(t.login_session).where(t.login_session.c.session_hash == digest(secret))).first()


def verify_mfa(u, pre_session: str, code: str, *, addr: str | None, user_agent: str | None) -> Login:
    """Second step of a login: the TOTP code turns the short pre-session into a full one."""
    _throttle(u, addr)
    s = _session_row(u, pre_session)
    if s is None or s.mfa_passed or s.revoked_at is not None or stored_utc(s.expires_at) < utcnow():
        raise AuthenticationFailed("no login in progress: start again")
    row = _account(u, s.tenant_id, s.account_id)
    if row is None or not row.active or row.totp_secret_wrapped is None:
        raise AuthenticationFailed("no login in progress: start again")
    if row.locked_until is not None and stored_utc(row.locked_until) > utcnow():
        raise LockedOut(
            "this account is locked after repeated failures: try again later",
            int((stored_utc(row.locked_until) - utcnow()).total_seconds()) + 1,
        )
    if not _consume_totp(u, row, code):
        _fail(u, row, addr, "account:mfa:failure")
        raise AuthenticationFailed("the code does not match, or was already used")
    u.execute(
        s.tenant_id,
        update(t.login_session)
        .where(t.login_session.c.tenant_id == s.tenant_id, t.login_session.c.session_hash == s.session_hash)
        .values(revoked_at=utcnow()),
    )
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(failed_logins=0),
    )
    session = _new_session(u, row, mfa_passed=True, addr=addr, user_agent=user_agent, totp_checked=True)
    u.audit(row.tenant_id, "account:login", "account", 1, refs=[row.account_id])
    _detect_shared_use(u, row, addr, user_agent)
    return Login(session, False, principal_of(row, source_addr=addr, user_agent=user_agent))


def _detect_shared_use(u, row, addr: str | None, user_agent: str | None) -> None:
    """Another live session of the same account from elsewhere within minutes: a security event."""
    since = utcnow() - SHARED_USE_WINDOW
    others = u.execute(
        row.tenant_id,
        select(t.login_session.c.source_addr, t.login_session.c.user_agent).where(
            t.login_session.c.tenant_id == row.tenant_id,
            t.login_session.c.account_id == row.account_id,
            t.login_session.c.revoked_at.is_(None),
            t.login_session.c.mfa_passed == 1,
            t.login_session.c.last_seen >= since,
        ),
    ).all()
    ua = (user_agent or "")[:300] or None
    if any(o.source_addr != addr or o.user_agent != ua for o in others):
        u.audit(row.tenant_id, "account:concurrent-use", "account", 1, outcome="alert", refs=[row.account_id])


def _live_session(u, secret: str):
    """The session row and its account for a session cookie, or refused (as ``principal_for_session``)."""
    s = _session_row(u, secret)
    now = utcnow()
    if (
        s is None
        or not s.mfa_passed
        or s.revoked_at is not None
        or stored_utc(s.expires_at) < now
        or stored_utc(s.last_seen) + SESSION_IDLE < now
    ):
        raise AuthenticationFailed("not logged in, or the session has ended")
    row = _account(u, s.tenant_id, s.account_id)
    if row is None or not row.active:
        raise AuthenticationFailed("not logged in, or the session has ended")
    return s, row


def principal_for_session(u, secret: str, *, addr: str | None, user_agent: str | None) -> Principal:
    """The principal behind a session cookie; expired, idle, revoked or deactivated: refused."""
    s, row = _live_session(u, secret)
    now = utcnow()
    if stored_utc(s.last_seen) + timedelta(seconds=30) < now:  # keep writes rare on the hot path
        u.execute(
            s.tenant_id,
            update(t.login_session)
            .where(t.login_session.c.tenant_id == s.tenant_id, t.login_session.c.session_hash == s.session_hash)
            .values(last_seen=now),
        )
    return principal_of(row, source_addr=addr, user_agent=user_agent)


def step_up(u, secret: str, code: str, *, addr: str | None, user_agent: str | None) -> None:
    """Check a TOTP code again for a live session and record when (the session may then approve
    for ``STEP_UP_WINDOW``). A wrong code counts as a failed login: the account and the address
    lock after as many failures as a login's."""
    _throttle(u, addr)
    s, row = _live_session(u, secret)
    if row.locked_until is not None and stored_utc(row.locked_until) > utcnow():
        _fail(u, row, addr, "account:step-up:failure")
        raise LockedOut(
            "this account is locked after repeated failures: try again later",
            int((stored_utc(row.locked_until) - utcnow()).total_seconds()) + 1,
        )
    if not row.mfa_enabled or row.totp_secret_wrapped is None:
        u.audit(row.tenant_id, "account:step-up", "account", 1, outcome="denied", refs=[row.account_id])
        raise AccessDenied("this account has no TOTP authenticator: a step-up needs one (enrol it first)")
    if not _consume_totp(u, row, code):  # single use, like every check of a code
        _fail(u, row, addr, "account:step-up:failure")
        raise AuthenticationFailed("the code does not match")
    now = utcnow()
    u.execute(
        s.tenant_id,
        update(t.login_session)
        .where(t.login_session.c.tenant_id == s.tenant_id, t.login_session.c.session_hash == s.session_hash)
        .values(totp_at=now, last_seen=now),
    )
    u.execute(
        s.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(failed_logins=0),
    )
    u.audit(row.tenant_id, "account:step-up", "account", 1, refs=[row.account_id])


def require_step_up(u, secret: str) -> None:
    """Refuse (and record the refusal) unless this session's TOTP code was checked within
    ``STEP_UP_WINDOW``. ``u`` is a unit of the session's own principal."""
    s, row = _live_session(u, secret)
    if s.totp_at is not None and stored_utc(s.totp_at) + STEP_UP_WINDOW >= utcnow():
        return
    minutes = int(STEP_UP_WINDOW.total_seconds() // 60)
    u.audit(row.tenant_id, "account:step-up:required", "account", 0, outcome="denied", refs=[row.account_id])
    raise StepUpRequired(
        f"step-up required: this approval needs your TOTP code checked in the last {minutes} "
        "minutes; send it to POST /api/v1/auth/step-up, then retry"
    )


def logout(u, secret: str) -> None:
    s = _session_row(u, secret)
    if s is None:
        return
    u.execute(
        s.tenant_id,
        update(t.login_session)
        .where(t.login_session.c.tenant_id == s.tenant_id, t.login_session.c.session_hash == s.session_hash)
        .values(revoked_at=utcnow()),
    )
    u.audit(s.tenant_id, "account:logout", "account", 1, refs=[s.account_id])


def csrf_token(secret: str) -> str:
    """The CSRF token that goes with a session (double submit: a readable cookie and a header)."""
    return tokens.csrf_token(secret)


# -- API tokens ---------------------------------------------------------------------------------
def create_token(u, email: str | None, *, scopes: list[str], days: int, authenticated: bool = True) -> tuple[str, str]:
    """A bearer token: (token id, the token, shown once).

    Nobody mints a token for another person. An account mints its own (``email`` None or its
    own), from a session it authenticated itself (``authenticated``: a password and, where the
    role needs it, TOTP login); a lab's ``lab_admin`` mints tokens for its lab's service accounts."""
    me = u.principal
    row = _account(u, me.tenant_id, me.account_id) if email is None else _account_by_email(u, email)
    if row is None or not row.active:
        raise NotFound("no active account with this e-mail address")
    if row.account_id == me.account_id and row.tenant_id == me.tenant_id:
        if u.checked and not authenticated:
            u.refuse(
                row.tenant_id,
                "token:create",
                "a token is minted from your own logged-in session: log in (CLI: --as EMAIL, with your password "
                "and TOTP code)",
            )
        return _create_token(u, row, scopes=scopes, days=days)
    if u.checked:
        if me.is_platform:
            u.refuse(
                row.tenant_id,
                "token:create",
                "nobody mints a token for another account: vendor accounts mint tokens for themselves only",
            )
        if row.kind != "service":
            u.refuse(
                row.tenant_id,
                "token:create",
                "nobody mints a token for another person: each person mints their own from their own session",
            )
        u.authorise(row.tenant_id, "token:manage")  # the lab's own lab_admin, for its service accounts
        if not authenticated:
            u.refuse(row.tenant_id, "token:create", "tokens are minted from a logged-in session (CLI: --as EMAIL)")
    return _create_token(u, row, scopes=scopes, days=days)


def create_token_for(u, principal: Principal, *, scopes: list[str], days: int) -> tuple[str, str]:
    """A bearer token for the calling account itself (from its logged-in session)."""
    row = _account(u, principal.tenant_id, principal.account_id)
    if row is None or not row.active:
        raise NotFound("no active account")
    return _create_token(u, row, scopes=scopes, days=days)


def _create_token(u, row, *, scopes: list[str], days: int) -> tuple[str, str]:
    if not 1 <= days <= TOKEN_MAX_DAYS:
        raise InvalidInput(f"a token lasts from 1 to {TOKEN_MAX_DAYS} days")
    bad = set(scopes) - set(TOKEN_SCOPES)
    if not scopes or bad:
        raise InvalidInput(f"token scopes are among: {', '.join(TOKEN_SCOPES)}")
    if u.principal.account_id != row.account_id:
        u.authorise(row.tenant_id, "token:manage")
    token_id = new_id()
    secret = tokens.new_token()
    u.execute(
        row.tenant_id,
        insert(t.api_token).values(
            tenant_id=row.tenant_id,
            token_id=token_id,
            account_id=row.account_id,
            secret_hash=digest(secret),
            scopes=",".join(sorted(set(scopes))),
            created_at=utcnow(),
            expires_at=utcnow() + timedelta(days=days),
        ),
    )
    u.audit(row.tenant_id, "token:create", "token", 1, refs=[token_id])
    return token_id, f"lvt_{token_id}_{secret}"


def principal_for_token(u, token: str, *, addr: str | None, user_agent: str | None) -> tuple[Principal, frozenset[str]]:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "lvt":
        raise AuthenticationFailed("invalid token")
    tok = u.execute("*", select(t.api_token).where(t.api_token.c.token_id == parts[1])).first()
    if (
        tok is None
        or not tokens.digests_equal(tok.secret_hash, digest(parts[2]))
        or tok.revoked_at is not None
        or stored_utc(tok.expires_at) < utcnow()
    ):
        raise AuthenticationFailed("invalid, expired or revoked token")
    row = _account(u, tok.tenant_id, tok.account_id)
    if row is None or not row.active:
        raise AuthenticationFailed("invalid, expired or revoked token")
    return principal_of(row, source_addr=addr, user_agent=user_agent), frozenset(tok.scopes.split(","))


def revoke_token(u, token_id: str) -> None:
    tok = u.execute("*", select(t.api_token).where(t.api_token.c.token_id == token_id)).first()
    if tok is None:
        raise NotFound("no such token")
    if tok.account_id != u.principal.account_id:
        u.authorise(tok.tenant_id, "token:manage")
    u.execute(
        tok.tenant_id,
        update(t.api_token)
        .where(t.api_token.c.tenant_id == tok.tenant_id, t.api_token.c.token_id == token_id)
        .values(revoked_at=utcnow()),
    )
    u.audit(tok.tenant_id, "token:revoke", "token", 1, refs=[token_id])


def list_tokens(u, tenant_id: str) -> list[dict]:
    """The tokens of a lab's service accounts, for the lab's own lab_admin: id, account, scopes,
    dates; never a secret (only its hash is stored)."""
    u.authorise(tenant_id, "token:manage")
    a, k = t.account, t.api_token
    rows = u.execute(
        tenant_id,
        select(k, a.c.name, a.c.email)
        .select_from(k.join(a, (a.c.tenant_id == k.c.tenant_id) & (a.c.account_id == k.c.account_id)))
        .where(k.c.tenant_id == tenant_id, a.c.kind == "service")
        .order_by(a.c.email, k.c.created_at),
    ).all()
    now = utcnow()
    return [
        {
            "token_id": r.token_id,
            "name": r.name,
            "email": r.email,
            "scopes": r.scopes,
            "created_at": stored_utc(r.created_at),
            "expires_at": stored_utc(r.expires_at),
            "state": "revoked"
            if r.revoked_at is not None
            else ("expired" if stored_utc(r.expires_at) < now else "active"),
        }
        for r in rows
    ]


# -- administration -----------------------------------------------------------------------------
# A lab's accounts are the lab's: only its own lab_admin adds, changes, deactivates and re-enables
# them (the gateway refuses ``account:manage`` and ``token:manage`` on a lab to vendor accounts).
# The vendor may only suspend one for security, with a reason the lab's admins see.


def _target(u, email: str):
    row = _account_by_email(u, email)
    if row is None:
        raise NotFound("no account with this e-mail address")
    return row


def _revoke_all(u, row, now) -> None:
    u.execute(
        row.tenant_id,
        update(t.login_session)
        .where(
            t.login_session.c.tenant_id == row.tenant_id,
            t.login_session.c.account_id == row.account_id,
            t.login_session.c.revoked_at.is_(None),
        )
        .values(revoked_at=now),
    )
    u.execute(
        row.tenant_id,
        update(t.api_token)
        .where(
            t.api_token.c.tenant_id == row.tenant_id,
            t.api_token.c.account_id == row.account_id,
            t.api_token.c.revoked_at.is_(None),
        )
        .values(revoked_at=now),
    )


def _keep_a_lab_admin(u, row, action: str) -> None:
    """A lab never loses its last active lab_admin (nobody else may manage its accounts)."""
    if row.tenant_id == PLATFORM:
        return
    others = [r for r in _lab_admins(u, row.tenant_id) if r.account_id != row.account_id and r.active and _enrolled(r)]
    if not others:
        u.refuse(row.tenant_id, action, "this is the lab's last active lab_admin: add another lab_admin first")


def deactivate(u, email: str) -> None:
    """Deactivate an account: every session and token of it stops working at once."""
    row = _target(u, email)
    u.authorise(
        row.tenant_id,
        "account:manage",
        vendor_refusal="only the lab's own lab_admin deactivates its accounts: the vendor may only suspend "
        "one for security (labvault user suspend EMAIL --reason ...)",
    )
    if "lab_admin" in row.roles.split(",") and row.active:
        _keep_a_lab_admin(u, row, "account:manage")
    now = utcnow()
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(active=0, deactivated_at=now),
    )
    _revoke_all(u, row, now)
    u.audit(row.tenant_id, "account:deactivate", "account", 1, refs=[row.account_id])


SUSPEND_REASON_MAX = 500


def suspend(u, email: str, reason: str) -> None:
    """A vendor's security suspension of an account (a lab's or the vendor's own): it stops
    working at once (sessions and tokens revoked); the reason is kept on the account for the lab's
    admins, and the event goes to the account's own audit trail (the lab's, for a lab account).
    Only the lab's lab_admin re-enables a lab account."""
    reason = " ".join(reason.split())
    if not reason or len(reason) > SUSPEND_REASON_MAX:
        raise InvalidInput(f"a suspension needs a reason (1 to {SUSPEND_REASON_MAX} characters)")
    row = _target(u, email)
    u.authorise(row.tenant_id, "account:suspend")
    if row.account_id == u.principal.account_id:
        u.refuse(row.tenant_id, "account:suspend", "an account cannot suspend itself")
    now = utcnow()
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(active=0, suspended_at=now, suspended_by=u.principal.account_id, suspended_reason=reason),
    )
    _revoke_all(u, row, now)
    u.audit(row.tenant_id, "account:suspend", "account", 1, outcome="alert", refs=[row.account_id])


def reactivate(u, email: str) -> None:
    """Re-enable a deactivated or suspended account: a lab's by its own lab_admin only (a vendor
    never re-enables a lab account); a vendor account by the platform admin."""
    row = _target(u, email)
    u.authorise(row.tenant_id, "account:manage", vendor_refusal="only the lab's own lab_admin re-enables its accounts")
    if row.active:
        raise InvalidInput("this account is active")
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(
            active=1,
            deactivated_at=None,
            suspended_at=None,
            suspended_by=None,
            suspended_reason=None,
            failed_logins=0,
            locked_until=None,
        ),
    )
    u.audit(row.tenant_id, "account:reactivate", "account", 1, refs=[row.account_id])


def set_roles(u, email: str, roles: list[str]) -> None:
    row = _target(u, email)
    roles_ = sorted({policy.valid_role(r).value for r in roles})
    scope = policy.LAB_ROLES if row.tenant_id != PLATFORM else policy.VENDOR_ROLES
    if not roles_ or not set(roles_) <= scope:
        raise InvalidInput("roles must all belong to the account's side (lab or vendor)")
    if (row.kind == "service") != (roles_ == ["service"]):
        raise InvalidInput("the role 'service' is for service accounts, and theirs only")
    u.authorise(
        row.tenant_id, "account:manage", vendor_refusal="only the lab's own lab_admin changes the roles of its accounts"
    )
    if "lab_admin" in row.roles.split(",") and "lab_admin" not in roles_ and row.active:
        _keep_a_lab_admin(u, row, "account:manage")
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(roles=",".join(roles_)),
    )
    u.audit(row.tenant_id, "account:roles:change", "account", 1, refs=[row.account_id])


def list_accounts(u, tenant_id: str | None) -> list[dict]:
    if tenant_id is None:
        if not u.principal.is_platform:
            tenant_id = u.principal.tenant_id
        elif u.checked and not policy.allowed(u.principal.roles, "account:list"):
            raise AccessDenied("listing accounts is not allowed for this account")
    if tenant_id is not None:
        u.authorise(tenant_id, "account:list")
        q = select(t.account).where(t.account.c.tenant_id == tenant_id)
    else:
        q = select(t.account)
    rows = u.execute(tenant_id or "*", q.order_by(t.account.c.tenant_id, t.account.c.email)).all()
    return [
        {
            "account_id": r.account_id,
            "tenant": r.tenant_id,
            "name": r.name,
            "email": r.email,
            "kind": r.kind,
            "roles": r.roles,
            "active": bool(r.active),
            "mfa": bool(r.mfa_enabled),
            "commitment": r.commitment_at is not None,
            "suspended": None
            if r.suspended_at is None
            else {"at": stored_utc(r.suspended_at).isoformat(), "by": r.suspended_by, "reason": r.suspended_reason},
        }
        for r in rows
    ]


def enrol_directly(u, email: str, password: str) -> str | None:
    """For demos and tests: complete an account's enrolment at once; returns its TOTP secret if any."""
    row = _account_by_email(u, email)
    if row is None or row.enrolment_hash is None:
        raise NotFound("no account awaiting enrolment with this e-mail address")
    token = tokens.new_token()
    u.execute(
        row.tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == row.tenant_id, t.account.c.account_id == row.account_id)
        .values(enrolment_hash=digest(token)),
    )
    e = enrol(u, token, password, accept_commitment=True)
    if not e.mfa_required:
        return None
    secret = _totp_secret(u, _account(u, row.tenant_id, row.account_id))
    import pyotp

    confirm_enrolment(u, token, pyotp.TOTP(secret).at(totp.clock()))
    return secret
