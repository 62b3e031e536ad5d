"""Digests of records that are not secret, for the evidence that names them: a plan an approval
signs, a manifest or an instruction a certificate names, a message's idempotency key.

SHA-256, as lower-case hex. No key: a digest identifies a record, it does not authenticate it
(``labvault.crypto.signing`` and the receipt MACs of ``labvault.crypto.packages`` do that).
"""

from __future__ import annotations

import hashlib


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as 64 lower-case hexadecimal characters."""
    return hashlib.sha256(data).hexdigest()
