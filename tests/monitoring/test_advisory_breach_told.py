"""An outside report assessed as a breach of a lab's data does not close without telling that lab."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labvault.access import Purpose
from labvault.errors import InvalidInput
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_an_advisory_assessed_as_a_breach_of_a_lab_cannot_close_without_telling_that_lab(gateway):
    """H2, I2: the vendor's security officer records an outside report naming lab-a (the ANSSI's 56
    lines) and tries to assess it ``breach=yes`` (or ``possible``) without telling lab-a:
    refused; assessed with the decision to tell lab-a, it closes and lab-a sees it."""
    gw = gateway
    make_lab(gw, "lab-a")
    dpo = lab_user(gw, "lab-a", "lab_dpo", name="Dpo")
    so = vendor_user(gw, "security_officer")
    closed = False
    with gw.unit(so, Purpose.MONITORING) as u:
        adv = u.advisory_add(
            source="anssi",
            severity="high",
            owner=so.account_id,
            deadline=T0 + timedelta(days=1),
            summary="56 lines of lab-a's patients found online",
            labs=["lab-a"],
        )
    for breach, reasoning, notify in (
        ("yes", "the 56 lines match lab-a's patients", False),
        ("possible", "the lines may come from lab-a", False),
    ):
        with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
            u.advisory_assess(
                adv.advisory_id,
                breach=breach,
                reasoning=reasoning,
                notify_labs=notify,
                labs=None,
                next_deadline=T0 + timedelta(days=2),
            )
    with gw.unit(so, Purpose.MONITORING) as u:
        u.advisory_assess(
            adv.advisory_id,
            breach="yes",
            reasoning="the 56 lines match lab-a's patients",
            notify_labs=True,
            labs=None,
            next_deadline=T0 + timedelta(days=2),
        )
        u.advisory_close(adv.advisory_id)
        closed = True
    with gw.unit(dpo, Purpose.MONITORING) as u:
        told = [a.advisory_id for a in u.lab_advisories("lab-a")]
    assert closed and told == [adv.advisory_id]


def test_an_employees_report_enters_the_same_register(gateway):
    """H4, H2: an employee's report through the internal channel is an outside report of source
    "employee": owned, with a deadline, refused closing before its assessment; an unknown source is
    refused with the list of sources."""
    gw = gateway
    make_lab(gw, "lab-a")
    so = vendor_user(gw, "security_officer")
    with gw.unit(so, Purpose.MONITORING) as u:
        adv = u.advisory_add(
            source="employee",
            severity="medium",
            owner=so.account_id,
            deadline=T0 + timedelta(days=7),
            summary="a colleague copies lab-a's results to a USB key",
            labs=["lab-a"],
        )
    assert adv.source == "employee" and adv.owner == so.account_id and adv.state == "open"
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(InvalidInput):
        u.advisory_close(adv.advisory_id)
    with gw.unit(so, Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="employee"):
        u.advisory_add(
            source="rumour", severity="low", owner=so.account_id, deadline=T0 + timedelta(days=1), summary="x"
        )
