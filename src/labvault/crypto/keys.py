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
import copy
import fcntl
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

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

    Concurrency (C1, C3): many processes (``serve``, ``mllp``, the CLI) open one keyring file and
    keep it open. So that none undoes another's change:

    * every change (``create_scope``, ``destroy_scope``) takes an exclusive ``flock`` on the lock
      file beside the keyring (``<name>.lock``, mode 0600), re-reads the file, applies the change
      to that fresh copy and writes it atomically (temp file in the same directory, fsync,
      ``os.replace``, fsync of the directory); nothing is ever written from the copy in memory;
    * destroying a scope that is not in the fresh copy raises ``TenantKeyMissing``;
    * the process holds the file it read open, so ``stat`` tells exactly whether the file was
      replaced since (the held inode cannot be reused): every use of a KEK, and ``has_scope``,
      re-read the file first when it was, and a KEK destroyed (or re-made) by another process is
      dropped from memory before it is used again; a scope not in memory is always re-read.
    """

    name = "local"

    def __init__(self, path: Path, passphrase: str) -> None:
        self.path = Path(path)
        self._mutex = threading.RLock()  # one change or re-read at a time within the process
        self._fd: int | None = None  # the file version ``_doc`` was read from, held open
        self._doc, self._fd, self._seen = self._read()
        try:
            self._master = self._unlock(passphrase)
        except BaseException:
            self._release_fd()
            raise
        self._keks: dict[str, tuple[str, AESGCM]] = {}  # scope -> (sealed entry, KEK)

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, passphrase: str, *, scrypt_n: int = 2**15) -> LocalKeyring:
        if len(passphrase) < 8:
            raise KeyringError("the keyring passphrase must have at least 8 characters")
        path = Path(path)
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
        with _file_lock(path.with_name(path.name + ".lock")):
            if path.exists():  # another process made one meanwhile: never overwrite a keyring
                raise KeyringError(f"a keyring already exists at {path}")
            atomic_write(path, json.dumps(doc, indent=1).encode())
        return cls(path, passphrase)

    # -- loading --------------------------------------------------------------------------------
    def _read(self) -> tuple[dict[str, Any], int, tuple[int, ...]]:
        """Open the keyring file, read and check it; returns the document, the open descriptor
        (kept open: its inode cannot be reused while held) and the file's identity."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyringMissing(
                f"no keyring at {self.path}: run 'labvault init' first (or set LABVAULT_HOME)"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot read the keyring at {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            doc = self._parse(b"".join(chunks))
        except OSError as exc:
            os.close(fd)
            raise KeyringError(f"cannot read the keyring at {self.path}: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        return doc, fd, _identity(st)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(raw)
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

    def _release_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _changed(self) -> bool:
        """Whether the file was replaced (or edited) since this process last read it."""
        try:
            return _identity(os.stat(self.path)) != self._seen
        except OSError:
            return True

    def _reload(self) -> None:
        """Re-read the file; forget every KEK that is gone or no longer the same."""
        doc, fd, seen = self._read()
        if doc["master"] != self._doc["master"] or doc["kdf"] != self._doc["kdf"]:
            os.close(fd)
            raise KeyringError(
                f"the keyring at {self.path} was replaced by another keyring since this process opened it:"
                " restart the process"
            )
        self._release_fd()
        self._doc, self._fd, self._seen = doc, fd, seen
        scopes = doc["scopes"]
        for scope, (sealed, _) in list(self._keks.items()):
            entry = scopes.get(scope)
            if entry is None or entry["kek"] != sealed:
                del self._keks[scope]

    def _refresh(self) -> None:
        if self._changed():
            self._reload()

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

    @contextmanager
    def _change(self) -> Iterator[dict[str, Any]]:
        """Exclusive lock, fresh copy; the block edits it; written atomically when it ends."""
        with self._mutex, _file_lock(self.lock_path):
            self._reload()
            doc = copy.deepcopy(self._doc)
            yield doc
            atomic_write(self.path, json.dumps(doc, indent=1).encode())
            self._reload()  # still under the lock: exactly the file just written

    # -- KeyProvider ----------------------------------------------------------------------------
    def has_scope(self, scope: str) -> bool:
        with self._mutex:
            self._refresh()
            return scope in self._doc["scopes"]

    def create_scope(self, scope: str) -> None:
        with self._change() as doc:
            if scope in doc["scopes"]:
                return
            kek = AESGCM.generate_key(256)
            nonce = secrets.token_bytes(12)
            sealed = nonce + AESGCM(self._master).encrypt(nonce, kek, _aad(scope, b"kek"))
            doc["scopes"][scope] = {"kek": _b64(sealed), "created": datetime.now(UTC).isoformat()}

    def _kek(self, scope: str) -> AESGCM:
        with self._mutex:
            self._refresh()
            cached = self._keks.get(scope)
            if cached is not None:
                return cached[1]
            entry = self._doc["scopes"].get(scope)
            if entry is None:  # not in memory: read the file again before saying so
                self._reload()
                entry = self._doc["scopes"].get(scope)
            if entry is None:
                raise TenantKeyMissing(f"no key for '{scope}' in the keyring (destroyed or never created)")
            blob = _unb64(entry["kek"])
            try:
                kek = AESGCM(AESGCM(self._master).decrypt(blob[:12], blob[12:], _aad(scope, b"kek")))
            except InvalidTag:
                raise KeyringCorrupt(f"the keyring entry for '{scope}' is corrupt") from None
            self._keks[scope] = (entry["kek"], kek)
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
        """Destroy the scope's KEK; ``TenantKeyMissing`` if the keyring file has none (C3)."""
        with self._change() as doc:
            self._keks.pop(scope, None)
            if doc["scopes"].pop(scope, None) is None:
                raise TenantKeyMissing(
                    f"no key for '{scope}' in the keyring to destroy (destroyed already, or never created)"
                )

    def close(self) -> None:
        with self._mutex:
            self._keks.clear()
            self._release_fd()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __reduce__(self) -> NoReturn:  # key material must not travel through pickle
        raise TypeError("a keyring cannot be pickled")


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created mode 0600), held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
