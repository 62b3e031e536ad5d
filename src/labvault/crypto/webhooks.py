"""The signature of an outgoing webhook (labvault.monitoring.notify): HMAC-SHA256 over
``"<timestamp>." + body`` with the channel's key, written ``sha256=<hex>``; and the receiver's
check, in constant time. A channel's key is made with ``tokens.new_token``."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "valid"]


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def valid(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(key, timestamp, body), signature)
