"""A unit's row-level-security scope: appending an event to another trail does not move it.

On PostgreSQL a unit names the lab it works on (``labvault.tenant``) before each read, and the
database's policies show that lab's rows only. Appending an audit event to another lab's trail (the
platform's, as the schedulers and platform key rotations do) scopes the unit to that trail for the
append; the unit's own lab must be its scope again afterwards, or its next read silently finds
nothing (a legal hold, say, that is then not seen).
"""

from __future__ import annotations

from labvault.access import Purpose
from labvault.crypto.keys import PLATFORM
from labvault.retention import records
from tests.conftest import ADMIN, lab_user, make_lab


def test_an_event_in_the_platform_trail_leaves_the_unit_on_its_lab(gateway):
    make_lab(gateway, "lab-a")
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Adm")
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        hold = records.place_hold(u, "lab-a", basis="a court order (test)")
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        before = records.holds(u, "lab-a")  # authorises retention:read on lab-a: the unit works on lab-a
        u.audit(PLATFORM, "scheduler:retention", "scheduler", 0)  # an event in the platform's own trail
        after = records.holds(u, "lab-a", action=None)  # the same lab, already authorised
    assert [h.hold_id for h in before] == [hold.hold_id]
    assert [h.hold_id for h in after] == [hold.hold_id], "the unit left its lab's scope after an event elsewhere"
