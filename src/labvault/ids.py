"""Row identifiers: 128-bit, time-ordered (48-bit milliseconds, 80 random bits), 32 hex digits.

Time order keeps B-tree inserts appending; the random part makes them unguessable.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:
    from datetime import datetime

# The file ``labvault simulate`` writes in the home it creates (``labvault.cli.week``); the
# simulated clock runs only on a home that holds it.
SIMULATION_MARKER = ".labvault-simulation"


def new_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def utcnow() -> datetime:
    """Now, in UTC: the audit trail's, the work's and the monitoring's time. Inside
    ``simulated_clock`` (``labvault simulate`` only), the simulated time."""
    clock = _SIMULATED.get()
    if clock is not None:
        return clock.now
    from datetime import UTC, datetime

    return datetime.now(UTC)


class SimulatedClock:
    """A time that moves only forward, and only when told (``advance``, ``move_to``)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a simulated clock starts at an aware time")
        self._now = start

    @property
    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("a simulated clock never goes back")
        self._now += delta
        return self._now

    def move_to(self, at: datetime) -> datetime:
        """To ``at``, or nowhere when ``at`` is earlier (the clock never goes back)."""
        if at > self._now:
            self._now = at
        return self._now


_SIMULATED: ContextVar[SimulatedClock | None] = ContextVar("labvault_simulated_clock", default=None)


@contextmanager
def simulated_clock(start: datetime, *, home: Path) -> Iterator[SimulatedClock]:
    """``utcnow`` reads ``start``, then wherever the returned clock is moved, until the block ends.

    For ``labvault simulate`` alone, and safe because it is narrow: the clock is a context
    variable (this thread or task only, nothing else in the process sees it, and it is gone when
    the block ends); it refuses to run unless ``home`` holds ``SIMULATION_MARKER``, which only the
    simulation writes, into a home directory it has just created (``labvault.cli.week``
    refuses a directory that exists); and the clock only moves forward, so each lab's chain
    keeps non-decreasing times. A real home's trail is never written under it."""
    if not (Path(home) / SIMULATION_MARKER).is_file():
        raise ValueError("the simulated clock runs only in a home created by 'labvault simulate'")
    clock = SimulatedClock(start)
    token = _SIMULATED.set(clock)
    try:
        yield clock
    finally:
        _SIMULATED.reset(token)


@overload
def stored_utc(value: datetime) -> datetime: ...
@overload
def stored_utc(value: None) -> None: ...
def stored_utc(value: datetime | None) -> datetime | None:
    """A time read back from the store, with its zone: SQLite keeps none, and every time the
    platform stores is UTC. None stays None; an aware time is returned as it is."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
