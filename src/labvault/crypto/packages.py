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
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage
from pyrage import x25519

from labvault.errors import InvalidInput, PackageError


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
    except Exception:  # pyrage raises its own RecipientError; never echo the text
        raise InvalidInput("not an age X25519 recipient (age1...)") from None


def identity(text: str) -> x25519.Identity:
    try:
        return x25519.Identity.from_str(text.strip())
    except Exception:
        raise InvalidInput("not an age X25519 identity (AGE-SECRET-KEY-1...)") from None


class _Pull(io.RawIOBase):
    """A readable file over an iterator of byte chunks (what pyrage's ``encrypt_io`` pulls from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
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

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self.hash.update(data)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.size += len(data)
        return len(data)


class _PushSink(io.RawIOBase):
    def __init__(self, push: Callable[[bytes], None]) -> None:
        self._push = push

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._push(bytes(b))
        return len(b)


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
    ident = identity(identity_text)
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
