"""Wiring: settings -> key provider + engine -> gateway. Nothing happens at import."""

from __future__ import annotations

import getpass
import os
import pwd
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from labvault.access import Gateway, Principal, Purpose
from labvault.access.principal import MONITOR
from labvault.audit.pin import FILE_NAME as PIN_FILE
from labvault.audit.pin import PinStore
from labvault.config import Settings
from labvault.crypto.keys import PLATFORM, KeyProvider, LocalKeyring
from labvault.errors import ConfigError, KeyringError
from labvault.store.engine import check_schema, make_engine, migrate

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def passphrase(settings: Settings, *, confirm: bool = False) -> str:
    """The keyring passphrase: LABVAULT_PASSPHRASE, else a prompt when a terminal is there."""
    if settings.passphrase:
        return settings.passphrase
    if not sys.stdin.isatty():
        raise KeyringError("no keyring passphrase: set LABVAULT_PASSPHRASE (no terminal to ask on)")
    first = getpass.getpass("Keyring passphrase: ")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise KeyringError("the two passphrases differ")
    return first


def open_keys(settings: Settings, *, create: bool = False) -> KeyProvider:
    if settings.key_provider == "pkcs11":
        from labvault.crypto.pkcs11 import Pkcs11Keyring

        pin = settings.pkcs11_pin
        if not pin:
            raise ConfigError("the PKCS#11 provider needs LABVAULT_PKCS11_PIN")
        return Pkcs11Keyring(settings.pkcs11_module, settings.pkcs11_token, pin)
    if create and not settings.keyring_path.exists():
        return LocalKeyring.create(settings.keyring_path, passphrase(settings, confirm=True))
    return LocalKeyring(settings.keyring_path, passphrase(settings))


def pin_path(settings: Settings) -> Path:
    """G4: where the platform key pinned at ``init`` lives (sealed under the platform KEK)."""
    return settings.home / PIN_FILE


def system_user() -> tuple[str, str]:
    """(name, email) of the person running the CLI, from the system account."""
    try:
        entry = pwd.getpwuid(os.getuid())
        login = entry.pw_name
        name = entry.pw_gecos.split(",")[0].strip() or login
    except KeyError:
        login = name = getpass.getuser()
    return name, f"{login}@localhost"


def account_id_for(email: str) -> str:
    return re.sub(r"[^a-z0-9._-]", "-", email.lower())[:64]


@dataclass
class Runtime:
    settings: Settings
    gateway: Gateway
    operator: Principal

    def unit(self, purpose: Purpose):
        return self.gateway.unit(self.operator, purpose)

    @property
    def monitor(self) -> Principal:
        """The platform's monitoring process (``labvault.access.principal.MONITOR``): what the
        audit stream's consumer and the alerts' dispatcher act as, never the operator's account."""
        return MONITOR

    def close(self) -> None:
        self.gateway.keys.close()
        self.gateway.engine.dispose()


def init_home(settings: Settings, admin_name: str | None, admin_email: str | None) -> dict[str, object]:
    """Create (or check) the home: keyring, database schema, platform signing key, named admin."""
    default_name, default_email = system_user()
    name = (admin_name or default_name).strip()
    email = (admin_email or default_email).strip()
    if not name:
        raise ConfigError("the admin account needs a name (--admin-name)")
    if not _EMAIL.match(email):
        raise ConfigError("the admin e-mail address is not valid (--admin-email)")
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _private_home(settings)
    created_keyring = settings.key_provider == "local" and not settings.keyring_path.exists()
    keys = open_keys(settings, create=True)
    engine = make_engine(settings.url)
    try:
        migrate(engine)
        gw = Gateway(engine, keys, pin_path=pin_path(settings))
        admin = Principal(account_id_for(email), name, PLATFORM, frozenset({"platform_admin"}))
        with gw.bootstrap(admin) as u:
            new_account = u.ensure_account(
                PLATFORM,
                admin.account_id,
                name,
                email,
                admin.roles,
                commitment="confidentiality commitment recorded by 'labvault init' for the CLI operator",
            )
            public = u.ensure_platform_keys()
        pin = cast(PinStore, gw.pin)  # the gateway was made with a pin path just above
        pinned = pin.read()["keys"]  # G4: the key pinned at the first init, checked at every one
        if pinned[0]["public"] != public.hex():
            raise ConfigError(
                f"the platform key pinned in {pin.path} is not this database's signing key: "
                "the database or the pin was replaced"
            )
    finally:
        engine.dispose()
        keys.close()
    return {
        "home": str(settings.home),
        "database": settings.url if not settings.is_sqlite else str(settings.home / "labvault.db"),
        "keyring_created": created_keyring,
        "admin": admin.account_id,
        "admin_name": name,
        "admin_email": email,
        "admin_created": new_account,
        "signing_key": public.hex(),
        "fingerprint": pinned[-1]["fingerprint"],
        "pin": str(settings.home / PIN_FILE),
    }


def _private_home(settings: Settings) -> None:
    """C1: the home is 0700 and its database file 0600 from the start (SQLite creates -wal and
    -shm with the database file's mode), whatever the umask of the process."""
    home = settings.home
    if home.stat().st_uid == os.getuid():
        os.chmod(home, 0o700)
    if settings.is_sqlite and not settings.database_url:
        db = home / "labvault.db"
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for f in (db, home / "labvault.db-wal", home / "labvault.db-shm"):  # a home made before: tightened
            if f.exists() and f.stat().st_uid == os.getuid():
                os.chmod(f, 0o600)


def install_hooks() -> None:
    """Wire the domains together once, at start-up (never by an import's side effect): packages
    made under a lab's instructions die at their deadline in every retention run, and with the lab
    at the end of its contract; a notification channel's target is checked by the monitoring."""
    from labvault.access import alerts as channels
    from labvault.migration import service as packages
    from labvault.monitoring import targets
    from labvault.retention import purge

    for registry, hook in ((purge.HOOKS, packages.deadline_hook), (purge.END_HOOKS, packages.end_hook)):
        if hook not in registry:
            registry.append(hook)
    if targets.check_channel_target not in channels.TARGET_CHECKS:  # channels send to public addresses only
        channels.TARGET_CHECKS.append(targets.check_channel_target)


def open_runtime(settings: Settings, operator_email: str | None = None, *, durable: bool = False) -> Runtime:
    """Open an initialised home as its operator (the account ``init`` recorded, or a named one)."""
    install_hooks()
    engine = make_engine(settings.url, durable=durable)
    check_schema(engine)
    keys = open_keys(settings)
    gw = Gateway(engine, keys, pin_path=pin_path(settings))
    try:
        operator = gw.platform_operator(operator_email)
    except BaseException:
        keys.close()
        raise
    return Runtime(settings, gw, operator)
