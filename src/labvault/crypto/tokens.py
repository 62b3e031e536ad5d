"""Secrets handed out and what is stored in their place, fresh key bytes, digests of records.

- ``new_token``: a random secret for a person or a machine (an enrolment link, a session cookie,
  an API token): 32 random bytes, URL-safe text.
- ``token_digest``: what the store keeps of such a secret (SHA-256, hex): a stolen copy of the
  database opens no session; ``digests_equal`` compares two in constant time.
- ``csrf_token``: the CSRF token that goes with a session secret (HMAC-SHA256 under the secret).
- ``new_key``: 32 fresh random bytes for a lab's data or index key, wrapped at once by the caller's
  key provider.
- ``sha256_hex``: the SHA-256 of bytes (a wrapped key, a canonical record), hex, for a record
  that names them without holding them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from labvault.crypto.digest import sha256_hex

__all__ = ["csrf_token", "digests_equal", "new_key", "new_token", "random_id", "sha256_hex", "token_digest"]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def digests_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a, b)


def csrf_token(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"labvault-csrf", hashlib.sha256).hexdigest()


def new_key() -> bytes:
    return secrets.token_bytes(32)


def random_id(bits: int = 62) -> int:
    """A random positive integer below 2**bits (a process's id in a lease, say)."""
    return secrets.randbits(bits) + 1
