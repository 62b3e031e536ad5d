"""The gateway's part for monitoring: the consumer's reads (a lab's audit events after a cursor,
the cursors) and the state the sweeps check."""

from __future__ import annotations

from labvault.access.state import UnitState


class Watch(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""
