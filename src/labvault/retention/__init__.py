"""Retention: per-lab, per-category periods set by the lab, legal holds, purge runs and the end
of a contract by deletion. See ``docs/design/retention.md``."""

from labvault.retention.policy import (
    CATEGORIES,
    list_holds,
    list_rules,
    parse_duration,
    parse_rules,
    place_hold,
    release_hold,
    set_rule,
)
from labvault.retention.purge import END_HOOKS, HOOKS, Report, end_delete, run

__all__ = [
    "CATEGORIES",
    "END_HOOKS",
    "HOOKS",
    "Report",
    "end_delete",
    "list_holds",
    "list_rules",
    "parse_duration",
    "parse_rules",
    "place_hold",
    "release_hold",
    "run",
    "set_rule",
]
