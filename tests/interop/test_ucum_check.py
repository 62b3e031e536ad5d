"""Units are labelled UCUM only when they are UCUM, checked by the UCUM grammar (``ucumvert``); the
check is memoised and never parses what no lab writes (long or deeply nested expressions), so a
sender cannot spend the server's time with crafted units."""

from __future__ import annotations

import pytest

from labvault.interop import _common
from labvault.interop._common import UCUM, is_ucum, unit_system


@pytest.mark.parametrize(
    ("unit", "ucum"),
    [
        ("mmol/L", True),
        ("10*9/L", True),
        ("[IU]/L", True),
        ("mL/min/{1.73_m2}", True),
        ("g/(24.h)", True),
        ("umol/L", True),
        ("UI/l", False),  # the French abbreviation: not UCUM
        ("µmol/L", False),  # UCUM writes the micro prefix u
        ("cells/uL", False),
        (" mmol/L", False),
        ("", False),
    ],
)
def test_ucum_or_not(unit, ucum):
    assert is_ucum(unit) is ucum
    assert unit_system(unit) == (UCUM if ucum else None)
    assert unit_system(unit, UCUM) == (UCUM if ucum else None)  # a claim of UCUM is checked
    assert unit_system(unit, "urn:hl7v2:units:ISO+") == ("urn:hl7v2:units:ISO+" if unit else None)


class _Counting:
    """Stands for the grammar: counts what it is asked to parse (a refusal of the real grammar is
    an exception the check catches, so a call is what shows)."""

    def __init__(self) -> None:
        self.calls = 0

    def parse(self, text: str) -> None:
        self.calls += 1


@pytest.mark.parametrize(
    "unit",
    [
        "m" * 33,  # longer than any lab's unit
        "(((m)))",  # nested deeper than any lab's unit
        "m/m/m/m/m/m",  # more operators than any lab's unit
    ],
)
def test_what_no_lab_writes_is_not_parsed(unit, monkeypatch):
    grammar = _Counting()
    monkeypatch.setattr(_common, "_parser", grammar)
    monkeypatch.setattr(_common, "_UCUM_KNOWN", {})
    assert is_ucum(unit) is False
    assert grammar.calls == 0
    assert is_ucum("mmol/L") is True and grammar.calls == 1  # what a lab writes is parsed, once
    assert is_ucum("mmol/L") is True and grammar.calls == 1
