"""A throwaway home for a benchmark: a migrated store, a keyring, a gateway, one scratch lab and a
named account of it. Everything is deleted afterwards (the lab's rows, then the folder)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path

from labvault.access import Gateway, Principal, Purpose
from labvault.crypto.keys import PLATFORM, LocalKeyring
from labvault.domain.models import Request, Specimen
from labvault.store.engine import make_engine, migrate
from labvault.synth.load import SYNTHETIC_RETENTION


@dataclass(frozen=True)
class Scratch:
    folder: Path
    gateway: Gateway
    admin: Principal  # a platform_admin: creates and drops the lab
    lab: str  # "bench-<name>"
    user: Principal  # an account of the lab, with the roles asked for

    @property
    def dialect(self) -> str:
        return self.gateway.engine.dialect.name


@contextmanager
def scratch(
    name: str, *, roles: tuple[str, ...], database_url: str | None = None, durable: bool = False
) -> Iterator[Scratch]:
    with tempfile.TemporaryDirectory(prefix="labvault-bench-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url, durable=durable)
        migrate(engine)
        keys = LocalKeyring.create(Path(tmp) / "keyring.json", "bench-passphrase", scrypt_n=2**14)
        gw = Gateway(engine, keys)
        admin = Principal(f"bench-{name}-admin", "Benchmark runner", PLATFORM, frozenset({"platform_admin"}))
        lab = f"bench-{name}"
        user = Principal(f"bench-{name}-user", "Benchmark account", lab, frozenset(roles))
        try:
            with gw.bootstrap(admin) as u:
                u.ensure_account(
                    PLATFORM,
                    admin.account_id,
                    admin.name,
                    f"{admin.account_id}@bench.invalid",
                    admin.roles,
                    commitment="benchmark runner",
                )
                u.ensure_platform_keys()
            with gw.unit(admin, Purpose.BENCHMARK) as u:
                if lab in {t.id for t in u.list_tenants()}:
                    u.drop_tenant_rows(lab)
                else:
                    u.create_tenant(lab, "Benchmark lab", "690000000", retention=SYNTHETIC_RETENTION, synthetic=True)
                u.ensure_account(
                    lab,
                    user.account_id,
                    user.name,
                    f"{user.account_id}@bench.invalid",
                    roles,
                    commitment="benchmark account",
                )
            yield Scratch(Path(tmp), gw, admin, lab, user)
        finally:
            try:
                with gw.unit(admin, Purpose.BENCHMARK) as u:
                    u.drop_tenant_rows(lab)
            finally:
                gw.close()
                engine.dispose()
                keys.close()


_NO_DATE = datetime(2020, 1, 1, 8, 0)
PATIENTS = 500


def load_results(
    sc: Scratch, n: int, seed: int, on_progress: Callable[[str, int], None] | None = None, *, specimens: bool = False
) -> int:
    """N generated results in the scratch lab, with their requests spread over 500 generated
    patients (and, with ``specimens``, one specimen per synthetic specimen id, collected when
    its request was made), in transactions of 5,000 results. Returns how many were stored."""
    from labvault.synth import LabGenerator, results_stream

    gw, bio, lab = sc.gateway, sc.user, sc.lab
    gen = LabGenerator(lab, seed)
    identities = [gen.patient(i).identity for i in range(PATIENTS)]
    with gw.unit(bio, Purpose.CARE) as u:
        u.add_patients(lab, identities)
    pids = [i.patient_id for i in identities]
    stream = results_stream(lab, seed, n)
    loaded = k = 0
    last_request: str | None = None  # a request's results are consecutive: one may span two chunks
    last_specimens: set[str] = set()
    while chunk := list(islice(stream, 5000)):
        reqs: dict[str, Request] = {}
        specs: dict[str, Specimen] = {}
        for r in chunk:
            when = r.validated_at or _NO_DATE
            if r.request_id not in reqs and r.request_id != last_request:
                k += 1
                reqs[r.request_id] = Request(r.request_id, pids[k * 7919 % PATIENTS], None, when)
            if specimens and r.specimen_id and r.specimen_id not in last_specimens and r.specimen_id not in specs:
                specs[r.specimen_id] = Specimen(r.specimen_id, r.request_id, "SER", when)
        last_request, last_specimens = chunk[-1].request_id, set(specs)
        with gw.unit(bio, Purpose.CARE) as u:
            u.add_requests(lab, list(reqs.values()))
            if specs:
                u.add_specimens(lab, list(specs.values()))
            u.add_results(lab, chunk)
        loaded += len(chunk)
        if on_progress:
            on_progress("load", len(chunk))
    return loaded
