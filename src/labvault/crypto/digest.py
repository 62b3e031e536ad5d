"""Digests of records that are not secret, for the evidence that names them: a plan an approval
signs, a manifest or an instruction a certificate names, a message's idempotency key.

SHA-256, as lower-case hex. No key: a digest identifies a record, it does not authenticate it
(``labvault.crypto.signing`` and the receipt MACs of ``labvault.crypto.packages`` do that).
"""

from __future__ import annotations

import hashlib
import os


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as 64 lower-case hexadecimal characters."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes, read in chunks (memory flat in the file's size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
