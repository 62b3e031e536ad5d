"""Pieces shared by the readers: field access, the check of a number, numbers as written, UCUM."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from labvault.interop.errors import NumberFault

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


# -- values as written ----------------------------------------------------------------------------

UCUM = "http://unitsofmeasure.org"
COMPARATORS = ("<=", ">=", "<", ">")
# A decimal number as labs write it: sign, digits, a point or a comma, an optional exponent.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?\Z")
_BOUNDED = re.compile(r"(<=|>=|<|>|=)?\s*(\S.*?)\s*\Z", re.S)


@dataclass(frozen=True, slots=True)
class Number:
    """A number read from a message: its value, its text as written (``105600``, ``12,50``: the
    digits the sender wrote, for the writers to give back) and its comparator (``<0.5``) or None."""

    value: float
    text: str
    comparator: str | None = None


def read_number(raw: str, *, comparator: bool = True) -> Number | None:
    """The number ``raw`` is (decimal point or comma; with ``comparator``, an optional ``<``, ``<=``,
    ``>=``, ``>`` or ``=`` before it), or None when it is no number. ``NumberFault`` when it is one
    that cannot be stored (non-finite, absurdly long or precise)."""
    text = raw.strip()
    if not text:
        return None
    cmp: str | None = None
    if comparator and text[0] in "<>=":
        m = _BOUNDED.match(text)
        if m is None:
            return None
        cmp, text = m.group(1), m.group(2)
        if cmp == "=":
            cmp = None
    if not _DECIMAL.match(text):
        return None
    if fault := number_fault(text):
        raise NumberFault(fault)
    return Number(float(text.replace(",", ".")), text, cmp)


_UCUM_KNOWN: dict[str, bool] = {}


def is_ucum(unit: str) -> bool:
    """True when ``unit`` is a valid UCUM expression (case-sensitive UCUM, checked by the ``ucumvert``
    grammar); ``UI/l`` or ``µmol/L`` are not. Memoised: a lab uses few units."""
    known = _UCUM_KNOWN.get(unit)
    if known is None:
        known = _check_ucum(unit)
        if len(_UCUM_KNOWN) >= 4096:
            _UCUM_KNOWN.clear()
        _UCUM_KNOWN[unit] = known
    return known


_parser: object = None
_UCUM_MAX_CHARS = 32


def _check_ucum(unit: str) -> bool:
    global _parser
    # A lab's units are short and shallow ("mL/min/{1.73_m2}", "g/(24.h)"); the UCUM grammar's parser
    # is not linear, so anything longer or deeper is kept as text without being parsed (a sender
    # cannot spend the server's time with crafted units).
    if not unit or unit != unit.strip() or len(unit) > _UCUM_MAX_CHARS or unit.count("(") > 2:
        return False
    if sum(unit.count(c) for c in "/.") > 4:
        return False
    if _parser is None:
        from ucumvert import get_ucum_parser

        _parser = get_ucum_parser()
    try:
        _parser.parse(unit)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - lark's errors: any of them means "not UCUM"
        return False
    return True


def unit_system(unit: str | None, claimed: str | None = None) -> str | None:
    """The system a result's unit is recorded with. ``claimed``: the system the message names for it
    (``http://unitsofmeasure.org``, or another URI; None when the format names none). UCUM only when
    the unit is valid UCUM: a claim of UCUM for ``UI/l`` keeps the unit as text with no system; a
    format that names none gets UCUM for a valid UCUM unit; another named system is kept."""
    if not unit:
        return None
    if claimed and claimed != UCUM:
        return claimed
    return UCUM if is_ucum(unit) else None
