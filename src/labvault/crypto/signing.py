"""Ed25519 signatures over canonical JSON records (shredding records; later checkpoints, certificates)."""

from __future__ import annotations

import base64
import json
from typing import Any, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from labvault.errors import SignatureInvalid


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Signer:
    def __init__(self, private_bytes: bytes) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private_bytes)

    @staticmethod
    def generate() -> tuple[bytes, bytes]:
        """(private raw bytes, public raw bytes) of a new key."""
        key = Ed25519PrivateKey.generate()
        priv = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return priv, public_bytes_of(key)

    @property
    def public_key(self) -> bytes:
        return public_bytes_of(self._key)

    def sign(self, record: dict[str, Any]) -> str:
        return base64.b64encode(self._key.sign(canonical(record))).decode()

    def __reduce__(self) -> NoReturn:
        raise TypeError("a signer holds key material and cannot be pickled")


def public_bytes_of(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def verify(record: dict[str, Any], signature: str, public_key: bytes) -> None:
    """Raises ``SignatureInvalid`` unless ``signature`` is the key's signature of ``record``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(base64.b64decode(signature), canonical(record))
    except (InvalidSignature, ValueError):
        raise SignatureInvalid("signature does not verify") from None
