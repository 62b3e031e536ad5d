"""The 72-hour clock against a lab that would dodge it and against two monitoring processes at once
(I3): a notification dated before the lab's own awareness does not escape the reason for the
delay; a reminder already sent by another pass is not sent (nor recorded) twice."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labvault.access import Purpose
from labvault.breach import incidents
from labvault.errors import InvalidInput
from tests.breach.test_incidents import LAB_A, _admin_conn, _sim, world  # noqa: F401  (fixture)


def test_a_notification_dated_before_the_labs_awareness_is_refused(world):
    """I3 (GDPR Art. 33(1)): 80 hours after its awareness, a lab records the authority's notification
    dated the day before it became aware: refused (a notification cannot precede the awareness),
    so the reason for the delay cannot be dodged by the date; dated now it still needs the reason."""
    gw, p = world
    from labvault.ids import utcnow

    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        own = incidents.open_incident(u, title="Poste volé", aware_at=utcnow() - timedelta(hours=80), tenant=LAB_A)
    aware = own.part(LAB_A).aware_at
    with pytest.raises(InvalidInput, match="awareness"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_notified(own.incident_id, LAB_A, at=aware - timedelta(days=1), reference="CNIL-X")
    with pytest.raises(InvalidInput, match="reason for the delay"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_notified(own.incident_id, LAB_A, at=utcnow(), reference="CNIL-X")
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        assert u.incident(own.incident_id, LAB_A).part(LAB_A).state == "open"
