"""Shared fixtures: real SQLite files, a real throwaway PostgreSQL 15 cluster, real keyrings.

PostgreSQL tests skip with a one-line reason where the server binaries are missing, except when
CI=true, where they fail instead.
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from labvault.access import Gateway, Principal, Purpose
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.store.engine import make_engine, migrate
from labvault.testing.pg import PgCluster, pg_bindir

IN_CI = os.environ.get("CI") == "true"
PASSPHRASE = "correct horse battery staple"


def _bytecode_cache_for_child_processes() -> None:
    """Many tests run the CLI or a server in processes of their own, each importing the whole app.
    Under PYTHONDONTWRITEBYTECODE every such process compiles every module again (about 1.5 s of
    its 2.5 s start-up): the children (and this process) keep their bytecode in a private cache
    outside the tree instead, so only the first start compiles."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE") or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = Path(tempfile.gettempdir()) / f"labvault-test-pycache-{os.getuid()}"
    cache.mkdir(mode=0o700, exist_ok=True)
    if cache.is_symlink() or cache.stat().st_uid != os.getuid() or cache.stat().st_mode & 0o077:
        return  # not ours alone: no shared bytecode
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    sys.pycache_prefix = str(cache)
    sys.dont_write_bytecode = False


_bytecode_cache_for_child_processes()


def need(condition: bool, reason: str) -> None:
    """Skip a test whose real dependency is missing; under CI=true, fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def wired_hooks():
    """The domains' hooks, installed as ``labvault.runtime.open_runtime`` installs them at start-up."""
    from labvault.runtime import install_hooks

    install_hooks()


@pytest.fixture(scope="session")
def pg_cluster():
    need(pg_bindir() is not None, "PostgreSQL server binaries not found: apt-get install postgresql-15")
    cluster = PgCluster()
    cluster.start()
    yield cluster
    cluster.stop()


_dbs = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labvault.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.createdb(f"t{os.getpid()}_{next(_dbs)}")


@pytest.fixture
def raw_engine(db_url, request):
    """The same database with no gateway in the way (superuser on PostgreSQL: bypasses RLS),
    for tests that play an attacker or a broken backup."""
    if db_url.startswith("sqlite"):
        engine = make_engine(db_url)
    else:
        engine = make_engine(request.getfixturevalue("pg_cluster").superuser_url(db_url))
    yield engine
    engine.dispose()


@pytest.fixture
def keyring(tmp_path) -> LocalKeyring:
    ring = LocalKeyring.create(tmp_path / "keyring.json", PASSPHRASE, scrypt_n=2**14)
    yield ring
    ring.close()


ADMIN = Principal("admin-test", "Test Admin", PLATFORM, frozenset({"platform_admin"}))


@pytest.fixture
def gateway(db_url, keyring, request, tmp_path) -> Gateway:
    engine = make_engine(db_url)
    migrate(engine)
    gw = Gateway(engine, keyring, pin_path=tmp_path / "platform-pin.json")  # G4: pinned as 'init' does
    with gw.bootstrap(ADMIN) as u:
        u.ensure_account(PLATFORM, ADMIN.account_id, ADMIN.name, "admin@test.invalid", ADMIN.roles, commitment="test")
        u.ensure_platform_keys()
    yield gw
    engine.dispose()
    scan_audit_events(
        db_url if db_url.startswith("sqlite") else request.getfixturevalue("pg_cluster").superuser_url(db_url)
    )


_NIR_LIKE = re.compile(r"(?<![0-9a-f])[12][0-9]{4}(?:[0-9]{2}|2[AB])[0-9]{8}(?![0-9a-f])")
_DATE_LIKE = re.compile(r"(?:19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]")
_TOKEN = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_ACTION = re.compile(r"^[a-z]+(:[a-z-]+)+$")
_ID_LIST = re.compile(r'^\[("[A-Za-z0-9_.:-]{1,64}"(, )?)*\]$')


def scan_audit_events(url: str) -> None:
    """After every test that used a store: its audit events hold no NIR, no date but their own
    time, and object references that are ids only (never a personal value)."""
    from sqlalchemy import select

    from labvault.store import schema as t

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(t.audit_event)).all()
    finally:
        engine.dispose()
    for row in rows:
        for name, value in row._mapping.items():
            if not isinstance(value, str) or name == "at":
                continue
            assert not _NIR_LIKE.search(value), f"audit_event.{name} holds a NIR-like value"
            assert not _DATE_LIKE.search(value), f"audit_event.{name} holds a date"
        if row.object_refs is not None:
            assert _ID_LIST.match(row.object_refs), "audit_event.object_refs holds more than ids"
        assert _TOKEN.match(row.actor) and _ACTION.match(row.action), "actor and action are ids and tags"
        for name in ("object_type", "purpose", "outcome", "grant_id"):
            value = getattr(row, name)
            assert value is None or _TOKEN.match(value), f"audit_event.{name} is not a plain tag"
        assert row.actor_roles is None or re.fullmatch(r"[a-z_,]*", row.actor_roles)


def lab_user(gw: Gateway, tenant_id: str, *roles: str, name: str = "Bio") -> Principal:
    """A lab account with its confidentiality commitment recorded (no password: used in-process)."""
    roles = roles or ("biologist",)
    account_id = f"{name.lower()}-{tenant_id}-{'-'.join(roles)}"[:64]
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            tenant_id, account_id, f"{name} {tenant_id}", f"{account_id}@lab.invalid", roles, commitment="test"
        )
    return Principal(account_id, f"{name} {tenant_id}", tenant_id, frozenset(roles))


# The retention rule test labs are created with (a lab cannot be created without one).
TEST_RETENTION = {"results": (3650, "test rule: CSP art. R.1112-7 (test only)")}


def make_lab(gw: Gateway, tenant_id: str, finess: str = "690000017", *, retention=None, synthetic: bool = True) -> None:
    """A test lab. Synthetic by default (test labs hold generated data: vendor accounts may load
    them, and delete them without a deletion instruction); ``synthetic=False``: a real lab."""
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.create_tenant(
            tenant_id, f"Lab {tenant_id}", finess, retention=retention or TEST_RETENTION, synthetic=synthetic
        )


def sqlite_path(url: str) -> Path | None:
    return Path(url.split("///", 1)[1]) if url.startswith("sqlite") else None


class TotpClock:
    """The time TOTP codes are checked at, for tests that log in with MFA many times a minute:
    a code is accepted once per time step, so each code this clock gives moves it one step on.
    It starts far in the past, so a real process checking a code at the real time (a CLI run as a
    subprocess) still finds its step unused; ``real_code`` gives such a code and moves past it."""

    def __init__(self) -> None:
        import time

        self.t = float(int(time.time() // 30) * 30 - 30 * 100_000)

    def now(self) -> float:
        return self.t

    def code(self, secret: str) -> str:
        import pyotp

        self.t += 30
        return pyotp.TOTP(secret).at(self.t)

    def real_code(self, secret: str) -> str:
        import time

        import pyotp

        now = time.time()
        self.t = max(self.t, now) + 60
        return pyotp.TOTP(secret).at(now)


@pytest.fixture(autouse=True)
def totp_clock(monkeypatch) -> TotpClock:
    from labvault.accounts import totp

    clock = TotpClock()
    monkeypatch.setattr(totp, "clock", clock.now, raising=False)
    return clock


def totp_code(secret: str) -> str:
    """A code of a time step this account has not used: with ``totp_clock`` installed, the next
    step; otherwise the current one (a second call within 30 seconds is then a replay)."""
    import pyotp

    from labvault.accounts import totp

    clock = getattr(totp.clock, "__self__", None)
    if isinstance(clock, TotpClock):
        return clock.code(secret)
    return pyotp.TOTP(secret).now()


def totp_real_code(secret: str) -> str:
    """A code for a process of its own (which checks codes at the real time), and the test clock
    moved past it, so that the codes given in this process after it are not replays."""
    import pyotp

    from labvault.accounts import totp

    clock = getattr(totp.clock, "__self__", None)
    return clock.real_code(secret) if isinstance(clock, TotpClock) else pyotp.TOTP(secret).now()


def first_lab_admin(
    gw: Gateway, platform: Principal, tenant_id: str, *, email: str | None = None, name: str = "Paul Lefebvre"
) -> Principal:
    """The lab's lab_admin, in process (no login: MFA login is tested elsewhere). The platform
    invites the lab's first lab_admin (the only lab account it may create); once it exists, it is
    the one returned, and it is that admin who adds the lab's other accounts."""
    from sqlalchemy import select

    from labvault.accounts import service
    from labvault.store import schema as t

    with gw.unit(platform, Purpose.ADMINISTRATION) as u:
        u._scope(tenant_id)  # row-level security on PostgreSQL: this lab's rows
        rows = u.conn.execute(
            select(t.account).where(
                t.account.c.tenant_id == tenant_id, t.account.c.kind == "person", t.account.c.active == 1
            )
        ).all()
    for r in rows:
        if "lab_admin" in r.roles.split(","):
            return Principal(r.account_id, r.name, tenant_id, frozenset(r.roles.split(",")))
    with gw.unit(platform, Purpose.ADMINISTRATION) as u:
        new = service.create_account(
            u, tenant_id=tenant_id, name=name, email=email or f"admin@{tenant_id}.invalid", roles=["lab_admin"]
        )
    return Principal(new.account_id, name, tenant_id, frozenset({"lab_admin"}))
