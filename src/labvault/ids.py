"""Row identifiers: 128-bit, time-ordered (48-bit milliseconds, 80 random bits), 32 hex digits.

Time order keeps B-tree inserts appending; the random part makes them unguessable.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime


def new_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def utcnow() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def stored_utc(value):
    """A time read back from the store, with its zone: SQLite keeps none, and every time the
    platform stores is UTC. None stays None; an aware time is returned as it is."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
