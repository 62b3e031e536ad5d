"""The synthetic mark cannot be set by editing the database: a lab is synthetic (deleted without
its signed deletion instruction, generated into by vendor accounts) only when the mark made at its
creation opens under the lab's own key-encryption key. Someone with write access to the database
who flips ``tenant.synthetic`` on a real lab gains nothing. On SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from labvault.access import Purpose
from labvault.errors import AccessDenied
from labvault.store import schema as t
from labvault.synth import LabGenerator
from tests.conftest import ADMIN
from tests.retention.test_deletion import LAB, OTHER, denials, end, real_lab, shred, state, synthetic_lab


def flip_synthetic(raw_engine, lab: str) -> None:
    """The attacker's one statement: mark a real lab synthetic in the database."""
    with raw_engine.begin() as conn:
        conn.execute(update(t.tenant).where(t.tenant.c.tenant_id == lab).values(synthetic=1))


def test_a_real_lab_marked_synthetic_in_the_database_is_not_deleted(gateway, raw_engine):
    """D2, A1, A8: `tenant.synthetic` set to 1 by an UPDATE on a real lab: shredding or ending it
    without the lab's deletion instruction is still refused (audited), and nothing changes."""
    real_lab(gateway)
    before = state(gateway)
    flip_synthetic(raw_engine, LAB)
    for op in (shred, end):
        with pytest.raises(AccessDenied) as e:
            op(gateway, ADMIN)
        assert "not a synthetic lab" in str(e.value)
    assert state(gateway) == before and before["keyring_scope"]
    assert denials(gateway, LAB, ADMIN.account_id) == [("tenant:shred", "denied"), ("tenant:end", "denied")]


def test_a_real_lab_marked_synthetic_in_the_database_takes_no_generated_data(gateway, raw_engine):
    """A8: a vendor naming the generate purpose cannot write into a real lab whose mark was set
    in the database."""
    real_lab(gateway)
    before = state(gateway)
    flip_synthetic(raw_engine, LAB)
    record = LabGenerator(LAB, 9).patient(0)
    with pytest.raises(AccessDenied) as e, gateway.unit(ADMIN, Purpose.GENERATE) as u:
        u.add_patients(LAB, [record.identity])
    assert "not a synthetic lab" in str(e.value)
    assert state(gateway) == before


def test_a_lab_created_synthetic_still_goes_without_an_instruction(gateway):
    """D2: the mark made at creation still lets a synthetic lab be generated into and shredded."""
    synthetic_lab(gateway, OTHER)
    record = shred(gateway, ADMIN, lab=OTHER)
    assert record["body"]["synthetic"] is True and record["body"]["instruction"] is None
    assert not gateway.keys.has_scope(OTHER)
