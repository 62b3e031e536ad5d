"""Canaries on PostgreSQL, under row-level security: the canary table is one lab's only (F1), and
a unit that reads a lab's patients finds that lab's markers (H1)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.errors import AccessDenied, NotFound
from labvault.monitoring.canaries import seed
from labvault.store import schema as t
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_canaries_under_row_level_security(gateway, raw_engine):
    """H1, F1: on PostgreSQL a lab's admin seeds, a read of a canary is touched with its marker,
    searches leave it out, and another lab's admin sees no canary of it."""
    make_lab(gateway, "lab-a")
    make_lab(gateway, "lab-b", "440000018")
    load_lab(gateway, ADMIN, "lab-a", patients=3, seed=7)
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    bio = lab_user(gateway, "lab-a", "biologist", name="Bio")
    with gateway.unit(admin, Purpose.MONITORING) as u:
        (c,) = seed(u, "lab-a", 1)
    with gateway.unit(bio, Purpose.CARE) as u:
        ident = u.get_patient("lab-a", c.patient_id)
        assert u.find_patients_by_nir("lab-a", ident.nir) == []
        assert {r.request_id for r in u.iter_results("lab-a")}.isdisjoint(
            q.request_id for q in u.requests_of("lab-a", c.patient_id)
        )
    with raw_engine.connect() as conn:  # superuser: sees every row
        ev = t.audit_event
        touches = conn.execute(select(ev).where(ev.c.action == "canary:touch")).all()
        assert [json.loads(e.object_refs) for e in touches] == [[c.marker]]  # one per canary per unit
        assert conn.execute(select(t.canary.c.tenant_id)).scalars().all() == ["lab-a"]
    other = lab_user(gateway, "lab-b", "lab_admin", name="Other")
    with gateway.unit(other, Purpose.MONITORING) as u:
        assert u.canaries("lab-b") == []
    with pytest.raises((AccessDenied, NotFound)), gateway.unit(other, Purpose.MONITORING) as u:
        u.canaries("lab-a")
