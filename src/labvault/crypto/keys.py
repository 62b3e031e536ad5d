"""Key providers: where the key-encryption keys (KEKs) live.

Key hierarchy::

    passphrase --scrypt--> unlock key --AES-GCM--> master KEK          (LocalKeyring)
                                                   └─> tenant KEK, one per lab
    HSM token object "labvault-kek-<scope>" (AES-256, not extractable) (Pkcs11Keyring)

    tenant KEK --wrap--> data keys (DEKs, versioned) and the index root key, stored in the database
    platform KEK --wrap--> the platform's Ed25519 signing key, stored in the database

Only wrapped keys ever reach the database. Destroying a tenant KEK (``destroy_tenant``) makes
every wrapped DEK of that lab, in the database and in every backup of it, unopenable: that is
crypto-shredding. A provider never hands out a KEK; it only wraps and unwraps.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from labvault.errors import KeyringCorrupt, KeyringError, KeyringMissing, TenantKeyMissing, WrongPassphrase

PLATFORM = "platform"  # the key scope of vendor-side secrets (signing key), not a lab
KEYRING_FORMAT = "labvault-keyring/1"


@runtime_checkable
class KeyProvider(Protocol):
    """Holds KEKs; wraps and unwraps small secrets (DEKs) under them."""

    name: str

    def create_scope(self, scope: str) -> None:
        """Make a KEK for ``scope`` (a tenant id or ``PLATFORM``); no-op if it exists."""

    def has_scope(self, scope: str) -> bool: ...

    def wrap(self, scope: str, secret: bytes, context: bytes) -> bytes:
        """Encrypt ``secret`` under the scope's KEK, bound to ``context``."""

    def unwrap(self, scope: str, blob: bytes, context: bytes) -> bytes:
        """Reverse of ``wrap``; raises ``TenantKeyMissing`` or ``DecryptionError``."""

    def destroy_scope(self, scope: str) -> None:
        """Destroy the scope's KEK for good."""

    def close(self) -> None: ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _aad(scope: str, context: bytes) -> bytes:
    return b"labvault/wrap/v1\x00" + scope.encode() + b"\x00" + context


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


class LocalKeyring:
    """A keyring file: a master KEK wrapped by a passphrase (scrypt), and per-scope KEKs under it.

    File layout (JSON, written atomically, mode 0600)::

        {"format": "labvault-keyring/1",
         "kdf": {"name": "scrypt", "salt": b64, "n": 32768, "r": 8, "p": 1},
         "master": b64(nonce12 || AES-GCM(unlock key, master KEK, aad="labvault/keyring/master")),
         "scopes": {"<scope>": {"kek": b64(nonce12 || AES-GCM(master KEK, KEK, aad=scope)),
                                "created": iso8601}}}
    """

    name = "local"

    def __init__(self, path: Path, passphrase: str) -> None:
        self.path = Path(path)
        self._doc = self._load()
        self._master = self._unlock(passphrase)
        self._keks: dict[str, AESGCM] = {}

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, passphrase: str, *, scrypt_n: int = 2**15) -> LocalKeyring:
        if len(passphrase) < 8:
            raise KeyringError("the keyring passphrase must have at least 8 characters")
        salt = secrets.token_bytes(16)
        unlock = Scrypt(salt=salt, length=32, n=scrypt_n, r=8, p=1).derive(passphrase.encode())
        master = AESGCM.generate_key(256)
        nonce = secrets.token_bytes(12)
        doc = {
            "format": KEYRING_FORMAT,
            "kdf": {"name": "scrypt", "salt": _b64(salt), "n": scrypt_n, "r": 8, "p": 1},
            "master": _b64(nonce + AESGCM(unlock).encrypt(nonce, master, b"labvault/keyring/master")),
            "scopes": {},
        }
        atomic_write(Path(path), json.dumps(doc, indent=1).encode())
        return cls(path, passphrase)

    # -- loading --------------------------------------------------------------------------------
    def _load(self) -> dict:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raise KeyringMissing(
                f"no keyring at {self.path}: run 'labvault init' first (or set LABVAULT_HOME)"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read the keyring at {self.path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
            if doc.get("format") != KEYRING_FORMAT:
                raise ValueError("format")
            kdf = doc["kdf"]
            if kdf["name"] != "scrypt":
                raise ValueError("kdf")
            _unb64(kdf["salt"])
            _unb64(doc["master"])
            for entry in doc["scopes"].values():
                _unb64(entry["kek"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyringCorrupt(f"the keyring at {self.path} is corrupt or not a Labvault keyring") from None
        return doc

    def _unlock(self, passphrase: str) -> bytes:
        kdf = self._doc["kdf"]
        try:
            unlock = Scrypt(
                salt=_unb64(kdf["salt"]), length=32, n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"])
            ).derive(passphrase.encode())
        except (ValueError, TypeError):
            raise KeyringCorrupt(f"the keyring at {self.path} has invalid key-derivation parameters") from None
        blob = _unb64(self._doc["master"])
        try:
            master = AESGCM(unlock).decrypt(blob[:12], blob[12:], b"labvault/keyring/master")
        except InvalidTag:
            raise WrongPassphrase("wrong keyring passphrase") from None
        if len(master) != 32:
            raise KeyringCorrupt(f"the keyring at {self.path} is corrupt")
        return master

    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self._doc, indent=1).encode())

    # -- KeyProvider ----------------------------------------------------------------------------
    def has_scope(self, scope: str) -> bool:
        return scope in self._doc["scopes"]

    def create_scope(self, scope: str) -> None:
        if self.has_scope(scope):
            return
        kek = AESGCM.generate_key(256)
        nonce = secrets.token_bytes(12)
        sealed = nonce + AESGCM(self._master).encrypt(nonce, kek, _aad(scope, b"kek"))
        self._doc["scopes"][scope] = {"kek": _b64(sealed), "created": datetime.now(UTC).isoformat()}
        self._save()

    def _kek(self, scope: str) -> AESGCM:
        cached = self._keks.get(scope)
        if cached is not None:
            return cached
        entry = self._doc["scopes"].get(scope)
        if entry is None:
            raise TenantKeyMissing(f"no key for '{scope}' in the keyring (destroyed or never created)")
        blob = _unb64(entry["kek"])
        try:
            kek = AESGCM(AESGCM(self._master).decrypt(blob[:12], blob[12:], _aad(scope, b"kek")))
        except InvalidTag:
            raise KeyringCorrupt(f"the keyring entry for '{scope}' is corrupt") from None
        self._keks[scope] = kek
        return kek

    def wrap(self, scope: str, secret: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._kek(scope).encrypt(nonce, secret, _aad(scope, context))

    def unwrap(self, scope: str, blob: bytes, context: bytes) -> bytes:
        from labvault.errors import DecryptionError

        try:
            return self._kek(scope).decrypt(blob[:12], blob[12:], _aad(scope, context))
        except InvalidTag:
            raise DecryptionError(f"a wrapped key of '{scope}' does not open (tampered or moved)") from None

    def destroy_scope(self, scope: str) -> None:
        self._keks.pop(scope, None)
        if self._doc["scopes"].pop(scope, None) is not None:
            self._save()

    def close(self) -> None:
        self._keks.clear()

    def __reduce__(self):  # key material must not travel through pickle
        raise TypeError("a keyring cannot be pickled")
