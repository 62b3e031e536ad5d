"""A lab's opening hours, as its lab_admin writes them: ``"mon-fri 07:00-19:00; sat 08:00-12:00"``.

Days are ``mon`` .. ``sun``, alone, as a range (``mon-fri``) or a list (``mon,wed``); each day
part has one or more intervals (``07:00-12:00,14:00-19:00``) in the lab's local time. A day not
named is closed. The off-hours monitoring rule reads them (labvault.monitoring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from labvault.errors import InvalidInput

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# When a lab has not said: weekdays 07:00-20:00, Saturday morning (French labs' usual opening).
DEFAULT_HOURS = "mon-fri 07:00-20:00; sat 07:00-13:00"
_INTERVAL = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Hours:
    """Open intervals per weekday (0 = Monday), in minutes since local midnight, end excluded."""

    days: tuple[tuple[tuple[int, int], ...], ...]

    def open_at(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.days[local.weekday()])


def _days(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise InvalidInput(f"opening hours: '{part}' is not a day or a range of days (mon .. sun)")
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        if last < first:
            raise InvalidInput(f"opening hours: the range '{part}' goes backwards")
        out.extend(range(first, last + 1))
    return out


def parse_hours(text: str | None) -> Hours:
    """Read opening hours; an empty text gives the default hours. Malformed: InvalidInput naming the part."""
    text = (text or "").strip().lower() or DEFAULT_HOURS
    if len(text) > 100:
        raise InvalidInput("opening hours: longer than 100 characters")
    days: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    for clause in filter(None, (c.strip() for c in text.split(";"))):
        head, _, spans = clause.partition(" ")
        if not spans.strip():
            raise InvalidInput(f"opening hours: '{clause}' gives days without hours (e.g. 'mon-fri 07:00-19:00')")
        for span in spans.replace(" ", "").split(","):
            m = _INTERVAL.match(span)
            if m is None:
                raise InvalidInput(f"opening hours: '{span}' is not an interval HH:MM-HH:MM")
            start = int(m[1]) * 60 + int(m[2])
            end = int(m[3]) * 60 + int(m[4])
            if end <= start or end > 24 * 60:
                raise InvalidInput(f"opening hours: '{span}' ends before it starts")
            for d in _days(head):
                days[d].append((start, end))
    return Hours(tuple(tuple(sorted(d)) for d in days))
