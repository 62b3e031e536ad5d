"""The gateway's part for monitoring: canaries: each lab's planted synthetic patients, and what touching one does."""

from __future__ import annotations

from labvault.access.state import UnitState


class Canaries(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""
