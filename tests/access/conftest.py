"""A shared world for the access tests: three labs with generated patients, accounts of every
lab role in every lab and of every vendor role, on SQLite and on a real PostgreSQL 15.

The data is generated deterministically, so the expected per-lab sets of ids are computed from
the generator alone (``LabGenerator(lab, SEED).patient(i)``), never read back from the store.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field

import pytest

from labvault.access import Gateway, Principal, Purpose, policy
from labvault.crypto.blind import first_given_name, normalise_name
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.domain.identifiers import normalise_nir
from labvault.domain.models import Identity, Request, Result, Sensitivity
from labvault.store.engine import make_engine, migrate
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, PASSPHRASE, lab_user, make_lab

LABS = ("lab-a", "lab-b", "lab-c")
FINESS = {"lab-a": "690000017", "lab-b": "440000018", "lab-c": "590000019"}
SEED = 7
PATIENTS = 10
LAB_ROLES = ("biologist", "technician", "lab_admin", "lab_dpo", "service")
VENDOR_ROLES = ("operator", "support", "security_officer", "platform_admin")
READERS = frozenset({"biologist", "technician", "lab_admin"})  # lab roles reading personal data


def name_key(family: str, given: str, birth) -> tuple[str, str, str]:
    return normalise_name(family), normalise_name(first_given_name(given)), birth.isoformat()


def readable(role: str) -> frozenset[str]:
    """Sensitive categories a lab role reads by default (no lab-specific setting in these tests)."""
    return frozenset(cat for cat, roles in policy.DEFAULT_SENSITIVE_ACCESS.items() if role in roles)


def visible(results, categories: frozenset[str]) -> list[Result]:
    return [r for r in results if r.sensitivity is Sensitivity.OTHER or r.sensitivity in categories]


@dataclass
class LabData:
    """What the generator put in one lab (the oracle)."""

    tenant_id: str
    identities: dict[str, Identity] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    requests_of: dict[str, list[str]] = field(default_factory=dict)  # patient id -> request ids
    results_of: dict[str, list[str]] = field(default_factory=dict)  # patient id -> result ids
    results_of_request: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def nirs(self) -> set[str]:
        return {normalise_nir(i.nir) for i in self.identities.values()}

    def by_nir(self, nir: str) -> set[str]:
        return {i.patient_id for i in self.identities.values() if normalise_nir(i.nir) == normalise_nir(nir)}

    def by_name(self, family: str, given: str, birth) -> set[str]:
        key = name_key(family, given, birth)
        return {
            i.patient_id
            for i in self.identities.values()
            if name_key(i.family_name, i.given_names, i.birth_date) == key
        }


def lab_data(tenant_id: str) -> LabData:
    gen = LabGenerator(tenant_id, SEED)
    d = LabData(tenant_id)
    n_req = n_spec = 0
    for rec in gen.patients(PATIENTS):
        pid = rec.identity.patient_id
        d.identities[pid] = rec.identity
        d.requests_of[pid] = [q.request_id for q in rec.requests]
        d.results_of[pid] = [r.result_id for r in rec.results]
        for q in rec.requests:
            d.requests[q.request_id] = q
            d.results_of_request[q.request_id] = []
        for r in rec.results:
            d.results[r.result_id] = r
            d.results_of_request[r.request_id].append(r.result_id)
        n_req += len(rec.requests)
        n_spec += len(rec.specimens)
    d.counts = {
        "patient_identity": PATIENTS,
        "prescriber": len(gen.prescribers),
        "request": n_req,
        "specimen": n_spec,
        "result": len(d.results),
    }
    return d


# Computed at import: hypothesis strategies draw from these.
DATA: dict[str, LabData] = {lab: lab_data(lab) for lab in LABS}


def owner_of(object_id: str) -> str | None:
    for lab, d in DATA.items():
        if object_id in d.identities or object_id in d.requests or object_id in d.results:
            return lab
    return None


@dataclass
class World:
    backend: str
    url: str
    gw: Gateway
    raw: object  # an Engine: superuser on PostgreSQL (bypasses RLS), the same file on SQLite
    keyring: LocalKeyring
    users: dict[tuple[str, str], Principal]  # (lab or 'platform', role) -> principal
    _unfiltered: Gateway | None = None

    def principal(self, lab: str, role: str) -> Principal:
        return self.users[(lab, role)]

    def unfiltered(self) -> Gateway:
        """A second gateway on the same database, with the application's tenant filter off."""
        if self._unfiltered is None:
            self._unfiltered = Gateway(self.gw.engine, self.keyring, tenant_filter=False)
        return self._unfiltered


_dbs = itertools.count()


def vendor_user(gw: Gateway, role: str, name: str = "Vendor") -> Principal:
    account_id = f"{name.lower()}-{role}".replace("_", "-")[:64]
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            PLATFORM, account_id, f"{name} {role}", f"{account_id}@vendor.invalid", [role], commitment="test"
        )
    return Principal(account_id, f"{name} {role}", PLATFORM, frozenset({role}))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory) -> World:
    tmp = tmp_path_factory.mktemp("access")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'labvault.db'}"
        raw_url = url
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.createdb(f"access{os.getpid()}_{next(_dbs)}")
        raw_url = cluster.superuser_url(url)
    keyring = LocalKeyring.create(tmp / "keyring.json", PASSPHRASE, scrypt_n=2**14)
    engine = make_engine(url)
    migrate(engine)
    gw = Gateway(engine, keyring)
    with gw.bootstrap(ADMIN) as u:
        u.ensure_account(PLATFORM, ADMIN.account_id, ADMIN.name, "admin@test.invalid", ADMIN.roles, commitment="test")
        u.ensure_platform_keys()
    users: dict[tuple[str, str], Principal] = {}
    for lab in LABS:
        make_lab(gw, lab, FINESS[lab])
        counts = load_lab(gw, ADMIN, lab, patients=PATIENTS, seed=SEED)
        assert counts.results == len(DATA[lab].results)
        for role in LAB_ROLES:
            users[(lab, role)] = lab_user(gw, lab, role, name="U")
    for role in VENDOR_ROLES:
        users[(PLATFORM, role)] = vendor_user(gw, role)
    raw = make_engine(raw_url)
    w = World(request.param, url, gw, raw, keyring, users)
    yield w
    raw.dispose()
    if w._unfiltered is not None:
        w._unfiltered.close()
    gw.close()
    engine.dispose()
    keyring.close()
