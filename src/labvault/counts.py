"""Counts of what a run did: the one small type for the tallies of loads, exports and listeners."""

from __future__ import annotations

from collections import Counter


class Counts(Counter[str]):
    """Named counts, read and added by attribute (``c.results += n``) or by key (``c["results"]``);
    a name never counted reads 0, and ``dict(c)`` is what was counted. Names starting with ``_`` are
    ordinary attributes."""

    def __getattr__(self, name: str) -> int:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: int) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value
