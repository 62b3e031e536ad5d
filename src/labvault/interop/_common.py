"""Pieces shared by the readers: the located error, field access, and the check of a number."""

from __future__ import annotations

import math

# A numeric value: at most MAX_SIGNIFICANT_DIGITS significant digits (a double holds 17, a lab value
# far fewer) and MAX_NUMBER_CHARS characters in all (any finite double written out without an
# exponent, as the writers of this package do, fits). More is refused, never rounded.
MAX_NUMBER_CHARS = 400
MAX_SIGNIFICANT_DIGITS = 40
NUMBER_TOO_LONG = f"number of more than {MAX_NUMBER_CHARS} characters refused"
NUMBER_TOO_PRECISE = f"number of more than {MAX_SIGNIFICANT_DIGITS} significant digits refused"
NUMBER_NOT_FINITE = "number out of range (not finite once read: overflow, infinity or NaN)"
NUMBER_UNDERFLOW = "number out of range (too close to zero: it would read as 0)"


def number_fault(text: str) -> str | None:
    """Why a numeric text a sender wrote cannot be stored, or None. The text already matched the
    reader's number pattern (digits, one separator, an optional exponent); this refuses what is
    absurdly long or precise, what reads as infinity or NaN (an overflow such as a 900,000-digit
    value) and a non-zero value that reads as 0. The reason names no value."""
    if len(text) < 18 and "e" not in text and "E" not in text:
        return None  # the common case: at most 17 digits and no exponent is always a finite double
    if len(text) > MAX_NUMBER_CHARS:
        return NUMBER_TOO_LONG
    mantissa = text.replace(",", ".").lower().partition("e")[0]
    digits = "".join(c for c in mantissa if c.isdigit()).strip("0")
    if len(digits) > MAX_SIGNIFICANT_DIGITS:
        return NUMBER_TOO_PRECISE
    try:
        x = float(text.replace(",", "."))
    except (ValueError, OverflowError):
        return NUMBER_NOT_FINITE
    if not math.isfinite(x):
        return NUMBER_NOT_FINITE
    if x == 0 and digits:
        return NUMBER_UNDERFLOW
    return None


def is_finite(x: object) -> bool:
    """True for a finite int or float (a bool is not a number here)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


class FieldAccess:
    """``raw``/``value`` over ``fields`` and ``repetitions(n)`` (repetitions -> components -> subs)."""

    __slots__ = ()
    # Given by each reader's segment or record class (slots there).
    name: str
    occurrence: int
    fields: list[str]

    def repetitions(self, n: int) -> list[list[list[str]]]:
        raise NotImplementedError

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
