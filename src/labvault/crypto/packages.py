"""age-encrypted packages (pyrage), written without any clear byte reaching the disk.

``write`` encrypts a stream of byte chunks to one or more age X25519 recipients while it is
produced: pyrage pulls the chunks through a reader, encrypts them in 64 KiB STREAM chunks and
pushes ciphertext to the file. The file is created unnamed (``O_TMPFILE``) and linked under its
name only when complete and synced, so a crash or a ``kill -9`` leaves no partial package
behind: the kernel reclaims the unnamed file. Where the file system has no ``O_TMPFILE`` the
package is written as ``<name>.partial`` (ciphertext all the same) and ``discard_partial``
removes it before a retry.

``read`` decrypts a package with an age identity and pushes the clear bytes to a callback, in
memory only: for the platform's own reconciliation (with the package key) and for a recipient's
acknowledgement (with its identity).

``PackageKeys`` holds a migration's keys through the key provider: the package key (an age
identity the platform reads its own package back with), the receipt key (a MAC key that travels
inside the package, in its header, to the recipient: its receipt MAC proves the package was
opened) and the export's fingerprint key (``labvault.crypto.fingerprint``). Callers get wrapped
blobs to store, the age recipient, a written package, the clear bytes of a read, a MAC check and
an id derivation: never a key's bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pyrage
from pyrage import x25519

from labvault.crypto import fingerprint
from labvault.crypto.keys import KeyProvider
from labvault.crypto.signing import canonical
from labvault.errors import InvalidInput, PackageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer


@dataclass(frozen=True)
class Written:
    path: Path
    sha256: str
    size: int


def new_identity() -> tuple[str, str]:
    """A new age X25519 key pair: (identity "AGE-SECRET-KEY-1...", recipient "age1...")."""
    ident = x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def recipient(text: str) -> x25519.Recipient:
    try:
        return x25519.Recipient.from_str(text)
    except (pyrage.RecipientError, TypeError, ValueError):  # never echo the text
        raise InvalidInput("not an age X25519 recipient (age1...)") from None


def identity(text: str) -> x25519.Identity:
    try:
        return x25519.Identity.from_str(text.strip())
    except (pyrage.IdentityError, TypeError, ValueError, AttributeError):
        raise InvalidInput("not an age X25519 identity (AGE-SECRET-KEY-1...)") from None


class _Pull(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what pyrage's ``encrypt_io`` pulls from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        b = memoryview(buffer).cast("B")
        while not self._buf:
            try:
                nxt = next(self._chunks, None)
            except BaseException as exc:
                self.error = exc
                raise
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class _HashingSink(io.RawIOBase):
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        data = bytes(b)
        self.hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)
        return len(data)


class _PushSink(io.RawIOBase):
    def __init__(self, push: Callable[[bytes], None]) -> None:
        self._push = push

    def writable(self) -> bool:
        return True

    def write(self, b: ReadableBuffer, /) -> int:
        data = bytes(b)
        self._push(data)
        return len(data)


def _open_unnamed(directory: Path) -> int:
    """An unnamed file in ``directory``, or -1 where the file system cannot make one."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except (AttributeError, OSError):
        return -1


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def discard_partial(path: Path) -> bool:
    """Remove what an interrupted ``write`` may have left (the ``.partial`` fallback); True if any."""
    p = partial_path(path)
    if p.exists():
        p.unlink()
        return True
    return False


def write(path: Path, chunks: Iterable[bytes], recipients: Iterable[str]) -> Written:
    """Encrypt ``chunks`` to every recipient into ``path``, which must not exist yet."""
    keys = [recipient(r) for r in recipients]
    if not keys:
        raise InvalidInput("a package needs at least one recipient")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        raise PackageError(f"package {path.name} already exists")
    fd = _open_unnamed(path.parent)
    partial = None
    if fd < 0:
        partial = partial_path(path)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        sink = _HashingSink(fd)
        source = _Pull(iter(chunks))
        try:
            pyrage.encrypt_io(io.BufferedReader(source, 1 << 16), sink, keys)
        except pyrage.EncryptError:
            if source.error is not None:  # the producer failed: its own error, not pyrage's wrapper
                raise source.error from None
            raise PackageError(f"package {path.name}: encryption failed") from None
        os.fsync(fd)
        if partial is None:
            # linkat(..., AT_SYMLINK_FOLLOW): Python uses linkat only when given a directory fd.
            proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
            finally:
                os.close(proc)
        else:
            os.replace(partial, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if partial is not None:
            partial.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return Written(path, sink.hash.hexdigest(), sink.size)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read(path: Path, identity_text: str, push: Callable[[bytes], None]) -> None:
    """Decrypt ``path`` with an age identity, pushing the clear bytes to ``push`` (never to disk)."""
    _decrypt(path, identity(identity_text), push)


def _decrypt(path: Path, ident: x25519.Identity, push: Callable[[bytes], None]) -> None:
    try:
        with open(path, "rb") as f:
            pyrage.decrypt_io(f, _PushSink(push), [ident])
    except FileNotFoundError:
        raise PackageError(f"package {path.name} does not exist") from None
    except pyrage.DecryptError:
        raise PackageError(f"package {path.name} does not decrypt with this identity (wrong key, or damaged)") from None


def lines(chunks: Iterable[bytes], batch: int = 1 << 16) -> Iterator[bytes]:
    """Group small byte strings into chunks of about ``batch`` bytes (fewer calls into pyrage)."""
    buf: list[bytes] = []
    size = 0
    for c in chunks:
        buf.append(c)
        size += len(c)
        if size >= batch:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def shred(path: Path) -> bool:
    """Delete a package file (its content is ciphertext; the key's destruction is what shreds it)."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# -- a migration's keys, through the key provider -------------------------------------------------
_PACKAGE_KEY = b"package-key"
_RECEIPT_KEY = b"receipt-key"
RECEIPT_KEY_FIELD = "receipt_key"  # the package header's field carrying the receipt key (hex)


@dataclass(frozen=True)
class SealedKeys:
    """One attempt's keys as the store keeps them: wrapped by the key provider (opaque bytes),
    in the attempt's own scope (the fingerprint key in the lab's), and the fingerprint key's id."""

    scope: str
    package_key: bytes
    receipt_key: bytes
    fingerprint_key: bytes
    fingerprint_key_id: str


def receipt_mac(header: Mapping[str, Any], receipt: dict[str, Any]) -> str:
    """The recipient's side: the MAC of ``receipt`` under the receipt key found in the header of
    the package it opened (HMAC-SHA256 over the canonical JSON, hex)."""
    key = bytes.fromhex(str(header[RECEIPT_KEY_FIELD]))
    return hmac.new(key, canonical(receipt), hashlib.sha256).hexdigest()


class PackageKeys:
    """The package keys of one lab's migrations, held by ``provider`` (see the module docstring)."""

    def __init__(self, provider: KeyProvider, tenant_id: str) -> None:
        self._keys = provider
        self._tenant = tenant_id

    @staticmethod
    def scope(migration_id: str) -> str:
        """The key provider scope of a migration's package and receipt keys."""
        return f"package-{migration_id}"

    def destroy(self, scope: str) -> bool:
        """Destroy a package scope (crypto-shredding every copy of its package); False when it was
        not there (never made, or destroyed already)."""
        if not self._keys.has_scope(scope):
            return False
        self._keys.destroy_scope(scope)
        return True

    def start(self, migration_id: str) -> SealedKeys:
        """New keys for a new attempt (whatever scope an earlier attempt left is destroyed first)."""
        scope = self.scope(migration_id)
        self.destroy(scope)
        self._keys.create_scope(scope)
        package_identity, _ = new_identity()
        fp_key = fingerprint.new_key()
        return SealedKeys(
            scope=scope,
            package_key=self._keys.wrap(scope, package_identity.encode(), _PACKAGE_KEY),
            receipt_key=self._keys.wrap(scope, secrets.token_bytes(32), _RECEIPT_KEY),
            fingerprint_key=self._keys.wrap(self._tenant, fp_key, self._fingerprint_context(migration_id)),
            fingerprint_key_id=fingerprint.key_id(fp_key),
        )

    def _fingerprint_context(self, migration_id: str) -> bytes:
        return f"fingerprint:{migration_id}".encode()

    def _identity(self, sealed: SealedKeys) -> x25519.Identity:
        return identity(self._keys.unwrap(sealed.scope, sealed.package_key, _PACKAGE_KEY).decode())

    def ids(self, migration_id: str, sealed: SealedKeys) -> Callable[[str, str], str]:
        """The export's id derivation (``fingerprint.id_map``) under its fingerprint key."""
        key = self._keys.unwrap(self._tenant, sealed.fingerprint_key, self._fingerprint_context(migration_id))
        return fingerprint.id_map(key)

    def write(
        self, sealed: SealedKeys, path: Path, header: dict[str, Any], records: Iterable[bytes], recipient: str
    ) -> Written:
        """Write the package: ``header`` (with the receipt key added as its last field) as its first
        line, then ``records`` (JSON lines), encrypted to ``recipient`` and to the package key."""
        receipt = self._keys.unwrap(sealed.scope, sealed.receipt_key, _RECEIPT_KEY)
        head = orjson.dumps({**header, RECEIPT_KEY_FIELD: receipt.hex()}, option=orjson.OPT_APPEND_NEWLINE)
        own = str(self._identity(sealed).to_public())
        return write(path, lines(itertools.chain((head,), records)), [recipient, own])

    def read(self, sealed: SealedKeys, path: Path, push: Callable[[bytes], None]) -> None:
        """Decrypt the platform's own package with its package key (``read``: memory only)."""
        ident = self._identity(sealed)
        _decrypt(path, ident, push)

    def receipt_valid(self, sealed: SealedKeys, receipt: dict[str, Any], mac: str) -> bool:
        """Whether ``mac`` is the receipt key's MAC of ``receipt`` (compared in constant time)."""
        key = self._keys.unwrap(sealed.scope, sealed.receipt_key, _RECEIPT_KEY)
        return hmac.compare_digest(hmac.new(key, canonical(receipt), hashlib.sha256).hexdigest(), mac)
