"""Audit events for the rules' tests, as the consumer reads them (``engine.Event``)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from labvault.monitoring.engine import Event

# A Tuesday, 10:00 in Paris (the lab's default hours: open); and 03:00 the next night (closed).
DAY = datetime(2025, 3, 4, 9, 0, tzinfo=UTC).timestamp()
NIGHT = datetime(2025, 3, 5, 2, 0, tzinfo=UTC).timestamp()

_seq = itertools.count(1)


def ev(
    action: str,
    *,
    at: float = DAY,
    tenant: str = "lab-a",
    actor: str = "bio-1",
    roles: str | None = "biologist",
    outcome: str = "allowed",
    refs: list[str] | None = None,
    addr: str | None = None,
    purpose: str = "care",
    object_type: str = "result",
) -> Event:
    return Event(
        tenant,
        next(_seq),
        at,
        actor,
        action,
        object_type,
        purpose,
        outcome,
        roles,
        json.dumps(refs) if refs else None,
        addr,
    )


def reads(n: int, *, at: float = DAY, step: float = 1.0, **kw) -> list[Event]:
    """``n`` reads of ``n`` distinct patients, ``step`` seconds apart."""
    return [ev("patient:result:read", at=at + i * step, refs=[f"pat-{i:05d}"], **kw) for i in range(n)]


class ListSink:
    """A real sink: keeps the findings it is handed, returns an id for each."""

    def __init__(self) -> None:
        self.findings = []

    def __call__(self, u, finding) -> str:
        self.findings.append(finding)
        return f"alert-{len(self.findings)}"
