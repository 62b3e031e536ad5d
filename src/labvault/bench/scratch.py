"""A throwaway home for a benchmark: a migrated store, a keyring, a gateway, one scratch lab and a
named account of it. Everything is deleted afterwards (the lab's rows, then the folder)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labvault.access import Gateway, Principal, Purpose
from labvault.crypto.keys import PLATFORM, LocalKeyring
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
def scratch(name: str, *, roles: tuple[str, ...], database_url: str | None = None,
            durable: bool = False) -> Iterator[Scratch]:
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
                u.ensure_account(PLATFORM, admin.account_id, admin.name, f"{admin.account_id}@bench.invalid",
                                 admin.roles, commitment="benchmark runner")
                u.ensure_platform_keys()
            with gw.unit(admin, Purpose.BENCHMARK) as u:
                if lab in {t.id for t in u.list_tenants()}:
                    u.drop_tenant_rows(lab)
                else:
                    u.create_tenant(lab, "Benchmark lab", "690000000", retention=SYNTHETIC_RETENTION)
                u.ensure_account(lab, user.account_id, user.name, f"{user.account_id}@bench.invalid", roles,
                                 commitment="benchmark account")
            yield Scratch(Path(tmp), gw, admin, lab, user)
        finally:
            try:
                with gw.unit(admin, Purpose.BENCHMARK) as u:
                    u.drop_tenant_rows(lab)
            finally:
                gw.close()
                engine.dispose()
                keys.close()
