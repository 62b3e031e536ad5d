"""The hash chain of a lab's audit events.

    hash(event) = SHA-256("labvault/audit/v1" || prev_hash || len-prefixed fields)

Fields, in order: tenant, seq, at (UTC, microseconds), actor, actor_roles, action, object_type,
object_refs, record_count, purpose, grant_id, source_addr, user_agent, outcome. Each is UTF-8,
prefixed by its length (4 bytes, big-endian), absent ones as length 0xFFFFFFFF, so that no
choice of values can shift a boundary. The first event of a lab chains from 32 zero bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any

GENESIS = bytes(32)
FIELDS = (
    "tenant_id",
    "seq",
    "at",
    "actor",
    "actor_roles",
    "action",
    "object_type",
    "object_refs",
    "record_count",
    "purpose",
    "grant_id",
    "source_addr",
    "user_agent",
    "outcome",
)
_NONE = b"\xff\xff\xff\xff"
_LEN = struct.Struct(">I").pack


def at_text(at: datetime) -> str:
    """The canonical text of an event time: UTC, naive form, microseconds (as SQLite returns it)."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at.isoformat(sep=" ", timespec="microseconds")


def event_hash(prev_hash: bytes, event: Mapping[str, Any]) -> bytes:
    at = event.get("at")
    values = [event.get(name) for name in FIELDS]
    values[2] = at_text(at) if isinstance(at, datetime) else at
    return event_hash_values(prev_hash, values)


def event_hash_values(prev_hash: bytes, values: Iterable[Any]) -> bytes:
    """``event_hash`` over the field values in ``FIELDS`` order, the time already as text."""
    parts = [b"labvault/audit/v1", prev_hash]
    append = parts.append
    for value in values:
        if value is None:
            append(_NONE)
            continue
        data = (value if value.__class__ is str else str(value)).encode()
        append(_LEN(len(data)))
        append(data)
    return sha256(b"".join(parts)).digest()
