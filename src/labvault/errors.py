"""Labvault's errors: one tree, each class carrying how it is answered.

Every error Labvault reports (bad input, wrong passphrase, unknown lab, a refusal) is a
``LabvaultError``, defined here or in its domain's ``errors`` module. Its ``diagnostics()`` is one
line meant for a person; messages never carry a personal value. Each class says, as class
attributes, how it is answered, and two places read them and nothing else:

* ``http_status`` (and ``http_headers()``, ``public_reason``): ``labvault.api.errors`` turns the
  error into a JSON error body under ``/api`` or an OperationOutcome under ``/fhir``. A 5xx answer
  never repeats the message (it may name a path of the server): it says ``public_reason`` and the
  traceback goes to the log.
* ``exit_code``: ``labvault.cli`` prints ``labvault: error: <diagnostics>`` on one line and exits
  with it: ``EXIT_REFUSED`` for a refusal, ``EXIT_FAILURE`` for any other error. ``EXIT_USAGE`` is
  Typer's (a wrong option or argument), ``EXIT_INTERNAL`` an unexpected error (a bug).

The tree (HTTP status, exit code; a class not marked inherits its parent's)::

    LabvaultError                   500  1
    ├── ConfigError                         a setting, option or file the operator gave
    │   └── CannotListen                    the address or port is taken, or not allowed
    ├── KeyringError                503     the platform's keys cannot be opened
    │   ├── KeyringMissing
    │   ├── KeyringCorrupt
    │   ├── WrongPassphrase
    │   └── TenantKeyMissing        410     the lab's key was destroyed (or never made)
    ├── DecryptionError             500     tampered, moved or unreadable ciphertext
    ├── SignatureInvalid            400     an Ed25519 signature that does not verify
    │   └── instructions.errors: InstructionSignatureInvalid, UnknownSigner
    ├── PackageError                500     an age package that cannot be written or read
    ├── StoreError                  503     the database is not ready for this version
    │   ├── NotInitialised
    │   └── SchemaOutdated
    ├── TenantError                 400
    │   ├── UnknownTenant           404
    │   ├── TenantExists            409
    │   └── TenantShredded          410
    ├── InvalidInput                400
    │   ├── api.errors: UnsupportedMediaType (415)
    │   ├── ingest.errors: NotALabMessage (415)
    │   ├── interop.errors: LocatedInputError > Hl7Error, HprimError, FhirError, CsvError
    │   ├── instructions.errors: InstructionInvalid, InstructionUnsigned
    │   └── migration.errors: StateError, ReceiptInvalid
    ├── NotFound                    404
    ├── AccessDenied                403  3  a refusal: not allowed, or not covered
    │   ├── access.errors: ScopeExceeded > migration.errors: VolumeExceeded
    │   ├── accounts.errors: StepUpRequired
    │   └── instructions.errors: InstructionRefused > WrongTenant, NotYetValid, Expired,
    │       DeadlinePassed, WrongKind, MissingFields
    ├── accounts.errors: AuthenticationFailed (401, 3), LockedOut (429, 3)
    ├── audit.errors: PinInvalid (500)
    └── migration.errors: ReconciliationFailed (409)
"""

from __future__ import annotations

import errno
import os

# Exit codes of the ``labvault`` command (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILURE = 1  # a Labvault error other than a refusal; or a run that ended with refused messages
EXIT_USAGE = 2  # Typer's: an unknown option, a missing argument, a value out of range
EXIT_REFUSED = 3  # access refused: not allowed, not authenticated, locked out, outside an instruction
EXIT_INTERNAL = 70  # an unexpected error (a bug): nothing of the failed step is committed
EXIT_INTERRUPTED = 130  # Ctrl-C


class LabvaultError(Exception):
    """Base of every error Labvault reports to a person."""

    http_status: int = 500
    exit_code: int = EXIT_FAILURE
    # What a 5xx answer says instead of the message (which may name a path of the server).
    public_reason: str = "internal error"

    def diagnostics(self) -> str:
        return str(self) or self.__class__.__name__

    def http_headers(self) -> dict[str, str]:
        """Headers the HTTP answer carries (``Retry-After``, ``WWW-Authenticate``)."""
        return {}


class ConfigError(LabvaultError):
    pass


class CannotListen(ConfigError):
    """``serve`` or ``mllp`` cannot listen on the address and port asked for."""

    @classmethod
    def on(cls, host: str, port: int, exc: OSError) -> CannotListen:
        if exc.errno == errno.EADDRINUSE:
            why = "the port is already in use (another process listens there: choose another --port)"
        elif exc.errno == errno.EACCES:
            why = "permission denied (ports below 1024 need privileges)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = "no such address on this machine (check --host)"
        else:
            why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        where = f"[{host}]" if ":" in host else host
        return cls(f"cannot listen on {where}:{port}: {why}")


class KeyringError(LabvaultError):
    http_status = 503
    public_reason = "the platform's keys are not available: see the server's log"


class KeyringMissing(KeyringError):
    pass


class KeyringCorrupt(KeyringError):
    pass


class WrongPassphrase(KeyringError):
    pass


class TenantKeyMissing(KeyringError):
    """The lab's key is not in the key provider: destroyed (crypto-shredded), or never made."""

    http_status = 410


class DecryptionError(LabvaultError):
    """A ciphertext could not be opened: tampered, moved to another place, or its key is gone."""

    public_reason = "stored data failed its integrity check"


class SignatureInvalid(LabvaultError):
    http_status = 400


class PackageError(LabvaultError):
    """A package could not be written or read (the message names the file, never its content)."""

    public_reason = "a package could not be written or read: see the server's log"


class StoreError(LabvaultError):
    http_status = 503
    public_reason = "the database is not ready for this version of Labvault: see the server's log"


class NotInitialised(StoreError):
    pass


class SchemaOutdated(StoreError):
    pass


class TenantError(LabvaultError):
    http_status = 400


class UnknownTenant(TenantError):
    http_status = 404


class TenantExists(TenantError):
    http_status = 409


class TenantShredded(TenantError):
    http_status = 410


class InvalidInput(LabvaultError):
    http_status = 400


class NotFound(LabvaultError):
    http_status = 404


class AccessDenied(LabvaultError):
    http_status = 403
    exit_code = EXIT_REFUSED
