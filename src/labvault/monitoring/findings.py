"""What a rule (or a sweep, or a canary, or an overdue outside report) found: the one shape the
rules hand to the alerts. References only: account ids, audit sequence numbers, pseudonymous ids,
rule ids, never a name, a NIR or a result value."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labvault.access.gateway import Unit


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth an alert. ``tenant_id``: the lab concerned, or the platform. ``group``:
    what the rule grouped by (an actor's account id, a source address, a lab); one open alert per
    ``(rule_id, group)`` in a lab: a finding with the same key adds to it."""

    rule_id: str
    severity: Severity
    tenant_id: str
    title: str
    group: str
    refs: tuple[str, ...] = ()
    event_count: int = 1
    first_seq: int | None = None
    last_seq: int | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def dedup_key(self) -> str:
        return f"{self.rule_id}:{self.group}"[:200]


# Where findings go: ``labvault.monitoring.alerts.raise_alert`` in production; returns the alert id.
Sink = Callable[["Unit", Finding], "str | None"]
