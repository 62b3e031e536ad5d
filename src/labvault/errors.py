"""Labvault's errors.

Every error a person can cause (bad input, wrong passphrase, unknown lab) is a ``LabvaultError``;
its ``diagnostics()`` is one line meant for that person, and the CLI prints it and exits non-zero
instead of showing a traceback. Messages never carry a personal value.

    LabvaultError
    ├── ConfigError
    ├── KeyringError
    │   ├── KeyringMissing
    │   ├── KeyringCorrupt
    │   ├── WrongPassphrase
    │   └── TenantKeyMissing        (the lab's key was destroyed or never made)
    ├── DecryptionError             (crypto: tampered, moved or unreadable ciphertext)
    ├── StoreError
    │   ├── NotInitialised
    │   └── SchemaOutdated
    ├── TenantError
    │   ├── UnknownTenant
    │   ├── TenantExists
    │   └── TenantShredded
    ├── InvalidInput
    ├── NotFound
    └── AccessDenied
"""

from __future__ import annotations


class LabvaultError(Exception):
    """Base of every error Labvault reports to a person."""

    exit_code = 1

    def diagnostics(self) -> str:
        return str(self) or self.__class__.__name__


class ConfigError(LabvaultError):
    pass


class KeyringError(LabvaultError):
    pass


class KeyringMissing(KeyringError):
    pass


class KeyringCorrupt(KeyringError):
    pass


class WrongPassphrase(KeyringError):
    pass


class TenantKeyMissing(KeyringError):
    pass


class DecryptionError(LabvaultError):
    """A ciphertext could not be opened: tampered, moved to another place, or its key is gone."""


class StoreError(LabvaultError):
    pass


class NotInitialised(StoreError):
    pass


class SchemaOutdated(StoreError):
    pass


class TenantError(LabvaultError):
    pass


class UnknownTenant(TenantError):
    pass


class TenantExists(TenantError):
    pass


class TenantShredded(TenantError):
    pass


class InvalidInput(LabvaultError):
    pass


class NotFound(LabvaultError):
    pass


class AccessDenied(LabvaultError):
    pass
