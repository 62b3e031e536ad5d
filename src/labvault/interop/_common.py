"""Pieces shared by the HL7 v2 and HPRIM readers: the located error, and field access."""

from __future__ import annotations

from labvault.errors import InvalidInput


class LocatedInputError(InvalidInput):
    """An input that cannot be read or mapped; ``str()`` is one line naming where, never a value.

    Subclasses name their locations in ``_LOCATION`` as (attribute, prefix) pairs, in order.
    """

    _LOCATION: tuple[tuple[str, str], ...] = ()

    def __init__(self, reason: str, *, file: str | None = None, field: str | None = None, **where: object) -> None:
        self.reason = reason.replace("\r", " ").replace("\n", " ")
        self.file = file
        self.field = field
        for name, _ in self._LOCATION:
            setattr(self, name, where.pop(name, None))
        if where:
            raise TypeError(f"unknown location {', '.join(where)}")
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.file] if self.file else []
        for name, prefix in self._LOCATION:
            value = getattr(self, name)
            if value is not None and value != "":
                parts.append(f"{prefix}{value}")
        if self.field:
            parts.append(self.field)
        return f"{', '.join(parts)}: {self.reason}" if parts else self.reason

    def __str__(self) -> str:
        return self._render()


class FieldAccess:
    """``raw``/``value`` over ``fields`` and ``repetitions(n)`` (repetitions -> components -> subs)."""

    __slots__ = ()

    @property
    def label(self) -> str:
        return f"{self.name}[{self.occurrence}]"

    def raw(self, n: int) -> str:
        return self.fields[n] if 0 <= n < len(self.fields) else ""

    def value(self, n: int, component: int = 1, sub: int = 1, rep: int = 1) -> str:
        reps = self.repetitions(n)
        if rep > len(reps):
            return ""
        comps = reps[rep - 1]
        if component > len(comps):
            return ""
        subs = comps[component - 1]
        return subs[sub - 1] if sub <= len(subs) else ""
