"""The gateway's part for monitoring: alerts, notification channels and deliveries (labvault.monitoring.alerts)."""

from __future__ import annotations

from labvault.access.state import UnitState


class Alerts(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""
