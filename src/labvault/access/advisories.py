"""The gateway's part for monitoring: reports from outside: the register (labvault.monitoring.advisories)."""

from __future__ import annotations

from labvault.access.state import UnitState


class Advisories(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""
