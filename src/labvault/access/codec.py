"""Turning field values into bytes for sealing, and back.

Compound fields (a result's code, its value) pack several scalars: each present item is written
as ``=text``, a missing one as empty, joined by the unit separator 0x1F; an item that itself
contains 0x1F makes the whole field fall back to JSON (first byte ``[``).
"""

from __future__ import annotations

import json
from datetime import date, datetime

_US = "\x1f"


def pack(items: tuple[str | None, ...]) -> bytes:
    parts = []
    for item in items:
        if item is None:
            parts.append("")
        elif _US in item:
            return json.dumps(list(items), ensure_ascii=False).encode()
        else:
            parts.append("=" + item)
    return _US.join(parts).encode()


def unpack(data: bytes) -> list[str | None]:
    text = data.decode()
    if text.startswith("["):
        return json.loads(text)
    return [p[1:] if p else None for p in text.split(_US)]


def num(value: float | None) -> str | None:
    return None if value is None else repr(float(value))


def to_num(text: str | None) -> float | None:
    return None if text is None else float(text)


def dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def to_dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def d(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def to_d(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)
