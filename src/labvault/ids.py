"""Row identifiers: 128-bit, time-ordered (48-bit milliseconds, 80 random bits), 32 hex digits.

Time order keeps B-tree inserts appending; the random part makes them unguessable.
"""

from __future__ import annotations

import os
import time


def new_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def utcnow():
    from datetime import UTC, datetime

    return datetime.now(UTC)
