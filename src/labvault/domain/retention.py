"""A lab's retention categories and the checks of its rules (pure: no store, no unit).

Categories: ``results`` (every result: the default rule), each sensitive category of
``Sensitivity`` but ``other`` (an override for the results of that category) and ``quarantine``
(refused messages). A legal hold's scope is one of them or ``*`` (everything).
"""

from __future__ import annotations

from collections.abc import Mapping

from labvault.domain.models import Sensitivity
from labvault.errors import InvalidInput

RESULTS = "results"
SENSITIVE = tuple(s.value for s in Sensitivity if s is not Sensitivity.OTHER)
QUARANTINE = "quarantine"
CATEGORIES = (RESULTS, *SENSITIVE, QUARANTINE)
EVERYTHING = "*"
MAX_DAYS = 200 * 366  # a sanity bound on what a lab can type, not a policy


def check_rule(category: str, days: int, legal_reference: str) -> tuple[str, int, str]:
    """A rule as the lab gave it, checked: a known category, whole days > 0, a legal reference."""
    if category not in CATEGORIES:
        raise InvalidInput(f"unknown retention category '{category}': one of {', '.join(CATEGORIES)}")
    if isinstance(days, bool) or not isinstance(days, int) or not 0 < days <= MAX_DAYS:
        raise InvalidInput(f"a retention period is a whole number of days between 1 and {MAX_DAYS}")
    ref = (legal_reference or "").strip()
    if not ref or len(ref) > 1000:
        raise InvalidInput("a retention rule needs its legal reference (1-1000 characters)")
    return category, days, ref


def check_rules(retention: Mapping[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    """A lab's initial rules: at least ``results``, each one checked."""
    rules = {}
    for category, value in retention.items():
        if not isinstance(value, tuple) or len(value) != 2:
            raise InvalidInput("a retention rule is (days, legal reference)")
        cat, days, ref = check_rule(category, *value)
        rules[cat] = (days, ref)
    if RESULTS not in rules:
        raise InvalidInput("a lab needs a retention rule for 'results' (every result) before it can be created")
    return rules
