"""Turning field values into bytes for sealing, and back.

Compound fields (a prescriber's name, a result's observation) are msgpack arrays: a documented,
language-neutral format that keeps floats as IEEE 754 doubles (exact round trip), ``None`` as
nil, and is several times faster than JSON on the hottest path of every ingest. Times are
ISO 8601 strings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, overload

import msgpack

if TYPE_CHECKING:
    from labvault.domain.models import Result


def pack(items: tuple[object, ...]) -> bytes:
    packed: bytes = msgpack.packb(items, use_bin_type=True)
    return packed


def unpack(data: bytes) -> list[Any]:
    items = msgpack.unpackb(data, use_list=True)
    if not isinstance(items, list):
        raise ValueError("a packed field is an array")
    return items


@overload
def dt(value: datetime) -> str: ...
@overload
def dt(value: None) -> None: ...
def dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@overload
def to_dt(text: str) -> datetime: ...
@overload
def to_dt(text: None) -> None: ...
def to_dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _float(value: float | None) -> float | None:
    return value if value is None or value.__class__ is float else float(value)


# The items of a result's ``observation_enc``, in order.
RESULT_ITEMS = (
    "code_system",
    "code",
    "label",
    "value_num",
    "value_text",
    "unit",
    "ref_low",
    "ref_high",
    "ref_text",
    "flag",
    "validated_by",
    "validated_at",
    "comment",
    "value_repr",
    "comparator",
    "unit_system",
    "observation_key",
    "message_at",
)
_FIRST_SHAPE = 13  # observations sealed before revision 0014 hold the first 13 items
# An observation received through ingest also holds, after ``RESULT_ITEMS``, the key of the message
# that said it (``ingest_message.message_key``, 32 bytes) and the time versions are ordered by (its
# message's time, else when it was received): when a later message replaces the value, the version
# kept names its message. Neither is a field of ``Result``; neither is exported.
_SAID_SHAPE = len(RESULT_ITEMS) + 2


def result_packer() -> Callable[..., bytes]:
    """A function packing a ``Result``'s personal and health fields (an array of ``RESULT_ITEMS``),
    followed by the key of the message that said them when one is given (``pack(r, key)``).

    Each call returns a function with its own msgpack ``Packer`` (reused across rows, which is
    faster than ``packb``; a packer is not shared between threads).
    """
    pack = msgpack.Packer(use_bin_type=True).pack
    last: list[Any] = [None, None, None, None]  # the last message key and time, and their packed forms

    def pack_result(r: Result, message_key: str | None = None, said_at: datetime | None = None) -> bytes:
        at = r.validated_at
        items: tuple[object, ...] = (
            r.code_system,
            r.code,
            r.label,
            _float(r.value_num),
            r.value_text,
            r.unit,
            _float(r.ref_low),
            _float(r.ref_high),
            r.ref_text,
            r.flag,
            r.validated_by,
            None if at is None else at.isoformat(),
            r.comment,
            r.value_repr,
            r.comparator,
            r.unit_system,
            r.observation_key,
            None if r.message_at is None else r.message_at.isoformat(),
        )
        if message_key is not None or said_at is not None:
            if last[0] != message_key or last[1] != said_at:  # a message's results share both
                last[:] = message_key, said_at, None if message_key is None else bytes.fromhex(message_key), dt(said_at)
            items = (*items, last[2], last[3])
        packed: bytes = pack(items)
        return packed

    return pack_result


def unpack_observation(data: bytes) -> tuple[dict[str, Any], str | None, datetime | None]:
    """The fields of a sealed observation, the key of the message that said it and the time its
    versions are ordered by (None for either when it was not stored through ingest)."""
    items = unpack(data)
    key: str | None = None
    said_at: datetime | None = None
    if len(items) == _SAID_SHAPE:
        raw, at = items[-2:]
        del items[-2:]
        key = raw.hex() if isinstance(raw, bytes) else None
        said_at = to_dt(at)
    if len(items) == _FIRST_SHAPE:
        items += [None] * (len(RESULT_ITEMS) - _FIRST_SHAPE)
    if len(items) != len(RESULT_ITEMS):
        raise ValueError("observation has the wrong shape")
    out: dict[str, Any] = dict(zip(RESULT_ITEMS, items, strict=True))
    out["validated_at"] = to_dt(out["validated_at"])
    out["message_at"] = to_dt(out["message_at"])
    return out, key, said_at


def unpack_result(data: bytes) -> dict[str, Any]:
    return unpack_observation(data)[0]
