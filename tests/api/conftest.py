"""The HTTP API over a real gateway: two generated labs, enrolled accounts, logged-in clients.

Every fixture here is function-scoped (each test gets a fresh database), and the API tests run on
SQLite only unless a test asks for PostgreSQL too, with
``pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)``.

Accounts are real: the platform admin creates the vendor's and invites each lab's first
lab_admin, who adds the lab's other accounts; enrolled (argon2 password, TOTP for the roles
that need MFA), and logged in over HTTP (``POST /api/v1/auth/login``, then ``/auth/mfa``).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI

from labvault.access import Gateway, Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.crypto.keys import PLATFORM
from labvault.runtime import Runtime
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from labvault.web import create_app
from tests.conftest import ADMIN, first_lab_admin, make_lab, totp_code

# starlette warns, when its test client is imported, that it would rather use ``httpx2`` (not
# installed here). The filter covers this one import only, never a test.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    from fastapi.testclient import TestClient

LAB_A, LAB_B = "lab-a", "lab-b"
FINESS = {LAB_A: "690000017", LAB_B: "440000018"}
PATIENTS, SEED = 15, 3
HTTPS, HTTP = "https://testserver", "http://testserver"
ADDR, UA = "203.0.113.10", "pytest-api/1.0"
LOGIN, MFA = "/api/v1/auth/login", "/api/v1/auth/mfa"

ROLES_PER_LAB = ("biologist", "technician", "lab_admin")
PLATFORM_ROLES = ("support", "operator", "security_officer", "platform_admin")
ACCOUNT_KEYS = tuple(f"{role}@{lab}" for lab in (LAB_A, LAB_B) for role in ROLES_PER_LAB) + PLATFORM_ROLES
NAMES = ("Claire Moreau", "Paul Lefebvre", "Ines Roussel", "Sami Haddad", "Lea Garnier")

_dbs = itertools.count()


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """Argon2id with minimal cost for the accounts made here (the production profile takes ~0.2 s
    per hash, and every enrolment and login pays it): same algorithm and checks, less time."""
    from argon2 import PasswordHasher

    from labvault.accounts import passwords

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_HASHER", cheap)
    monkeypatch.setattr(passwords, "_DUMMY", cheap.hash("labvault-dummy-password-for-timing"))


@pytest.fixture
def db_url(request, tmp_path):
    """SQLite, unless a test parametrises ``db_url`` indirectly with "postgresql"."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'labvault.db'}"
    cluster = request.getfixturevalue("pg_cluster")
    return cluster.createdb(f"api{os.getpid()}_{next(_dbs)}")


@dataclass(frozen=True)
class Account:
    key: str  # "biologist@lab-a", ..., "support", "operator", "security_officer"
    tenant: str
    role: str
    email: str
    password: str
    totp: str | None  # the TOTP secret, for the roles that need MFA

    @property
    def mfa(self) -> bool:
        return self.totp is not None

    def code(self) -> str:
        """A code of a time step this account has not used yet (codes are single-use)."""
        assert self.totp is not None
        return totp_code(self.totp)


class Accounts(Mapping[str, Account]):
    """The enrolled accounts by key. Each is created and enrolled the first time a test asks for
    it (argon2 and TOTP enrolment cost time), so a test pays only for the accounts it uses."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._made: dict[str, Account] = {}

    def __getitem__(self, key: str) -> Account:
        if key not in ACCOUNT_KEYS:
            raise KeyError(key)
        if key not in self._made:
            self._made[key] = self._enrol(key)
        return self._made[key]

    def __iter__(self) -> Iterator[str]:
        return iter(ACCOUNT_KEYS)

    def __len__(self) -> int:
        return len(ACCOUNT_KEYS)

    def creator(self, lab: str, role: str = "biologist"):
        """Who adds an account: the platform admin for vendor accounts and for a lab's first
        lab_admin (an invitation); the lab's own lab_admin for the lab's other accounts."""
        if not lab or (role == "lab_admin" and f"lab_admin@{lab}" not in self._made):
            return ADMIN
        self[f"lab_admin@{lab}"]
        return first_lab_admin(self._gw, ADMIN, lab)

    def _enrol(self, key: str) -> Account:
        role, _, lab = key.partition("@")
        tenant = lab or PLATFORM
        k = ACCOUNT_KEYS.index(key) + 1
        email = f"{role.replace('_', '-')}@{lab or 'vendor'}.api.invalid"
        password = f"Api-tests-pass-{k:02d}!"
        with self._gw.unit(self.creator(lab, role), Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id=tenant, name=NAMES[k % len(NAMES)], email=email, roles=[role])
        with self._gw.auth_unit(source_addr="setup", user_agent="setup") as u:
            secret = service.enrol_directly(u, email, password)
        assert (secret is not None) == (role in ("lab_admin", "lab_dpo", *PLATFORM_ROLES))
        return Account(key, tenant, role, email, password, secret)


@dataclass
class Api:
    app: FastAPI
    gateway: Gateway
    accounts: Accounts
    patients: dict[str, list[str]]  # lab -> its patient ids, as loaded
    requests: dict[str, list[str]]  # lab -> its request ids
    nirs: dict[str, list[str]]  # lab -> its patients' NIRs
    results: dict[str, list[str]] = field(default_factory=dict)  # lab -> its result ids
    _clients: list[TestClient] = field(default_factory=list)

    def client(self, *, base_url: str = HTTPS, addr: str = ADDR, ua: str = UA) -> TestClient:
        """A client with no credentials, from one address and user agent."""
        c = TestClient(
            self.app, base_url=base_url, client=(addr, 50000), headers={"user-agent": ua}, raise_server_exceptions=False
        )
        self._clients.append(c)
        return c

    def login(self, key: str, *, base_url: str = HTTPS, addr: str = ADDR, ua: str = UA) -> TestClient:
        """A client holding a full session of an account, X-CSRF-Token set for unsafe methods."""
        acct = self.accounts[key]
        c = self.client(base_url=base_url, addr=addr, ua=ua)
        r = c.post(LOGIN, json={"email": acct.email, "password": acct.password})
        assert r.status_code == 200, (key, r.status_code, r.text)
        assert r.json()["mfa_required"] is acct.mfa
        if acct.mfa:
            r = c.post(MFA, json={"code": acct.code()})
            assert r.status_code == 200, (key, r.status_code, r.text)
        body = r.json()
        assert body["mfa_required"] is False and body["csrf_token"]
        assert c.cookies.get("lv_csrf") == body["csrf_token"]
        c.headers["x-csrf-token"] = body["csrf_token"]
        return c

    def token(self, c: TestClient, scopes: list[str], days: int = 1) -> tuple[str, str]:
        """A bearer token of the account logged in on ``c``: (token id, token)."""
        r = c.post("/api/v1/tokens", json={"scopes": scopes, "days": days})
        assert r.status_code == 201, r.text
        return r.json()["token_id"], r.json()["token"]

    def bearer(self, token: str, **kw) -> TestClient:
        c = self.client(**kw)
        c.headers["authorization"] = f"Bearer {token}"
        return c

    def deactivate(self, key: str) -> None:
        acct = self.accounts[key]  # enrols first if needed: units do not nest
        email, who = acct.email, self.accounts.creator("" if acct.tenant == PLATFORM else acct.tenant)
        with self.gateway.unit(who, Purpose.ADMINISTRATION) as u:
            service.deactivate(u, email)


@pytest.fixture
def api(gateway, tmp_path) -> Iterator[Api]:
    patients, requests, nirs, results = {}, {}, {}, {}
    for lab in (LAB_A, LAB_B):
        make_lab(gateway, lab, FINESS[lab])
        load_lab(gateway, ADMIN, lab, patients=PATIENTS, seed=SEED)
        records = list(LabGenerator(lab, SEED).patients(PATIENTS))
        patients[lab] = [r.identity.patient_id for r in records]
        requests[lab] = [q.request_id for r in records for q in r.requests]
        nirs[lab] = [r.identity.nir for r in records]
        results[lab] = [x.result_id for r in records for x in r.results]
    app = create_app(runtime=Runtime(Settings(home=tmp_path), gateway, ADMIN))
    api = Api(app, gateway, Accounts(gateway), patients, requests, nirs, results=results)
    yield api
    for c in api._clients:
        c.close()


@pytest.fixture
def bio_a(api) -> TestClient:
    return api.login(f"biologist@{LAB_A}")


@pytest.fixture
def tech_a(api) -> TestClient:
    return api.login(f"technician@{LAB_A}")


@pytest.fixture
def admin_a(api) -> TestClient:
    return api.login(f"lab_admin@{LAB_A}")


@pytest.fixture
def bio_b(api) -> TestClient:
    return api.login(f"biologist@{LAB_B}")


@pytest.fixture
def tech_b(api) -> TestClient:
    return api.login(f"technician@{LAB_B}")


@pytest.fixture
def admin_b(api) -> TestClient:
    return api.login(f"lab_admin@{LAB_B}")


@pytest.fixture
def support(api) -> TestClient:
    return api.login("support")


@pytest.fixture
def operator(api) -> TestClient:
    return api.login("operator")


@pytest.fixture
def security_officer(api) -> TestClient:
    return api.login("security_officer")
