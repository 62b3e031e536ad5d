"""A lab's retention rules and legal holds, as the lab (its ``lab_admin``) sets them.

Durations are the lab's: nothing here has a default. ``parse_duration`` reads ``3650d`` or
``10y`` (a year is counted as 365 days: ``10y`` is 3650 days; give days for an exact period).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from labvault.errors import InvalidInput
from labvault.retention import records as store
from labvault.retention.records import CATEGORIES, EVERYTHING, Hold, Rule

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = [
    "CATEGORIES",
    "EVERYTHING",
    "Hold",
    "Rule",
    "list_holds",
    "list_rules",
    "parse_duration",
    "parse_rules",
    "place_hold",
    "release_hold",
    "set_rule",
]

DAYS_PER_YEAR = 365
_DURATION = re.compile(r"^\s*([0-9]{1,6})\s*([dy])\s*$")


def parse_duration(text: str) -> int:
    """Days in ``Nd`` or ``Ny`` (y = 365 days)."""
    m = _DURATION.match(text or "")
    if not m:
        raise InvalidInput(f"a retention period is written like 3650d or 10y (days or years of 365 days), not {text!r}")
    days = int(m.group(1)) * (DAYS_PER_YEAR if m.group(2) == "y" else 1)
    if days < 1:
        raise InvalidInput("a retention period is at least one day")
    return days


def parse_rules(items: Iterable[str], legal_reference: str) -> dict[str, tuple[int, str]]:
    """``CATEGORY=DURATION`` items (``--retention``) with one legal reference, checked as a lab's
    initial rules (``results`` required)."""
    rules: dict[str, tuple[int, str]] = {}
    for item in items:
        category, sep, duration = item.partition("=")
        if not sep:
            raise InvalidInput(f"--retention takes CATEGORY=DURATION (e.g. results=10y), not {item!r}")
        rules[category.strip()] = (parse_duration(duration), legal_reference)
    return store.check_rules(rules)


def set_rule(u: Unit, tenant_id: str, category: str, days: int, legal_reference: str) -> Rule:
    """Set (or change) how long the lab keeps a category, with the legal reference it relies on."""
    return store.set_rule(u, tenant_id, category, days, legal_reference)


def list_rules(u: Unit, tenant_id: str) -> list[Rule]:
    return store.rules(u, tenant_id)


def place_hold(u: Unit, tenant_id: str, *, basis: str, category: str = EVERYTHING) -> Hold:
    """Stop retention deleting anything in ``category`` ('*': everything) until released; ``basis``
    is required and recorded (it is kept for the lab, never copied into the audit trail)."""
    return store.place_hold(u, tenant_id, basis=basis, scope=category)


def release_hold(u: Unit, tenant_id: str, hold_id: str) -> None:
    store.release_hold(u, tenant_id, hold_id)


def list_holds(u: Unit, tenant_id: str, *, active_only: bool = False) -> list[Hold]:
    return [h for h in store.holds(u, tenant_id) if h.active or not active_only]
