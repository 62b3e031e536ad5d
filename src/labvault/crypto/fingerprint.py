"""Per-export fingerprints: every resource id in an export derived with a key of that export.

The same patient, request or result gets different ids in two exports, and the ids of one export
say nothing about the internal ids without its key. A leaked file can then be traced to the
export it came from: ``matches`` counts how many of the leaked ids each export's key would have
made. The manifest of an export records ``key_id`` (a hash of the key), never the key.

Outside ``labvault.crypto`` the key itself is never handled: a migration's key is made, wrapped
and turned into its ``id_map`` by ``labvault.crypto.packages.PackageKeys``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable

KEY_BYTES = 32
ID_CHARS = 32  # hex characters of a derived id (128 bits)


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    """What a manifest may say of the key: a hash that identifies it and reveals nothing."""
    return hashlib.sha256(b"labvault-export-key\x00" + key).hexdigest()[:32]


def id_map(key: bytes) -> Callable[[str, str], str]:
    """The ``id_map`` of the writers: (resource type, internal id) -> this export's id.

    Keyed BLAKE2b (a MAC, RFC 7693) truncated to 128 bits: one call into C per id, which matters
    at a million ids per export."""
    if len(key) != KEY_BYTES:
        raise ValueError("an export key has 32 bytes")
    blake = hashlib.blake2b

    def derive(resource_type: str, domain_id: str) -> str:
        return blake(
            f"{resource_type}\x1f{domain_id}".encode(), key=key, digest_size=ID_CHARS // 2, person=b"labvault-fp-id"
        ).hexdigest()

    return derive


def matches(
    leaked: Iterable[tuple[str, str]], candidates: Iterable[tuple[str, bytes, Iterable[tuple[str, str]]]]
) -> list[tuple[str, int]]:
    """Which export a leak comes from.

    ``leaked``: (resource type, id) pairs read from the leaked file. ``candidates``: for each
    export, (export id, its key, the (resource type, internal id) pairs it held). Returns (export
    id, how many leaked ids it made), best first, exports that made none left out.
    """
    seen = set(leaked)
    out = []
    for export_id, key, held in candidates:
        derive = id_map(key)
        hits = sum((rtype, derive(rtype, internal)) in seen for rtype, internal in held)
        if hits:
            out.append((export_id, hits))
    return sorted(out, key=lambda x: -x[1])
