"""Canaries seen from a copy of the database, and the work's read paths: entering a value on a
canary's result is a touch; a canary's request rows are written as the lab's own latest are."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.monitoring.canaries import seed
from labvault.store import schema as t
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

LAB = "lab-a"


@pytest.fixture
def world(gateway):
    make_lab(gateway, LAB)
    load_lab(gateway, ADMIN, LAB, patients=40, seed=3)
    admin = lab_user(gateway, LAB, "lab_admin", name="Admin")
    bio = lab_user(gateway, LAB, "biologist", name="Bio")
    with gateway.unit(admin, Purpose.MONITORING) as u:
        planted = seed(u, LAB, 3)
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:  # the test's own look at the keys
        index = u._crypto(LAB).index
        pseudonyms = {index.pseudonym(c.patient_id) for c in planted}
    return {"gw": gateway, "admin": admin, "bio": bio, "planted": planted, "pseudonyms": pseudonyms}


def _touches(gw) -> int:
    ev = t.audit_event
    with gw.engine.connect() as conn:
        return len(conn.execute(select(ev.c.seq).where(ev.c.tenant_id == LAB, ev.c.action == "canary:touch")).all())


def test_entering_a_value_on_a_canarys_result_is_a_touch(world):
    """H1: ``enter_result`` opens a canary's result by its id (its code, unit, reference text and
    comment come back decrypted) and writes over it: that is a touch, recorded."""
    gw, bio = world["gw"], world["bio"]
    pseudonym = sorted(world["pseudonyms"])[0]
    r = t.result
    with gw.engine.connect() as conn:
        result_id = conn.execute(select(r.c.result_id).where(r.c.tenant_id == LAB, r.c.pseudonym == pseudonym)).scalar()
    before = _touches(gw)
    with gw.unit(bio, Purpose.CARE) as u:
        u.enter_result(LAB, result_id, "5.2")
    assert _touches(gw) == before + 1, "a canary's result opened and rewritten without canary:touch"


def test_in_a_lab_working_through_the_platform_canary_requests_stand_out(gateway):
    """C1, H1: from a database copy, without keys: in a lab whose requests are entered in the
    platform, every request row carries ``entered_by`` and a ``status``; the canaries' rows carry
    them too (and their results a workflow), so those plain columns do not single them out."""
    from datetime import UTC, date, datetime

    from labvault.domain.models import Identity, IdentityStatus, OrderedTest
    from labvault.lab import work

    gw = gateway
    make_lab(gw, LAB)
    admin = lab_user(gw, LAB, "lab_admin", name="Admin")
    bio = lab_user(gw, LAB, "biologist", name="Bio")
    k = OrderedTest("http://loinc.org", "2823-3", "Potassium", "mmol/L", "SER", "SST gold")
    with gw.unit(bio, Purpose.CARE) as u:
        u.add_patients(
            LAB,
            [
                Identity(f"pat-{i}", None, IdentityStatus.PROVISIONAL, f"NOM{i}", "Anna", date(1970, 3, 4), "F")
                for i in range(5)
            ],
        )
    for i in range(5):
        with gw.unit(bio, Purpose.CARE) as u:
            work.enter_request(
                u,
                LAB,
                f"pat-{i}",
                [k],
                collected_at=datetime(2026, 12, 7, 7, 30, tzinfo=UTC),
                collector="IDE",
                urgent=False,
                clinical=None,
                pregnant=False,
            )
    with gw.unit(admin, Purpose.MONITORING) as u:
        planted = seed(u, LAB, 2)
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        index = u._crypto(LAB).index
        canaries = {index.pseudonym(c.patient_id) for c in planted}
    q = t.request
    with gw.engine.connect() as conn:
        odd = {
            r.pseudonym
            for r in conn.execute(select(q).where(q.c.tenant_id == LAB))
            if r.entered_by is None or r.status is None
        }
    assert not odd & canaries, "canary requests without entered_by/status stand out"
    r = t.result
    with gw.engine.connect() as conn:
        bare = {x.pseudonym for x in conn.execute(select(r).where(r.c.tenant_id == LAB)) if x.workflow is None}
    assert not bare & canaries
