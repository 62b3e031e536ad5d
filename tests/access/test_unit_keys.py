"""A unit opens a lab's keys once, and reads nothing more once another process shredded the lab.

The gateway loads and checks a lab's keys (status, key versions) once per unit of work; the
key-encryption key's presence is checked at every use. A unit that read before another process
crypto-shredded the lab must be refused at its next read: the data is gone for everyone.
"""

from __future__ import annotations

import pytest

from labvault.access import Purpose
from labvault.access.gateway import Gateway
from labvault.errors import TenantKeyMissing, TenantShredded
from labvault.store.engine import make_engine
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab


def test_a_unit_reads_nothing_more_once_another_process_shredded_the_lab(gateway, db_url, keyring, tmp_path):
    """C3: keys destroyed by another process's shred are not used by a unit opened before it."""
    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=2, seed=3)
    bio = lab_user(gateway, "lab-a")
    patient = LabGenerator("lab-a", 3).patient(0).identity.patient_id
    other = Gateway(make_engine(db_url), keyring, pin_path=tmp_path / "platform-pin.json")
    try:
        with pytest.raises((TenantKeyMissing, TenantShredded)):
            with gateway.unit(bio, Purpose.CARE) as u:
                assert u.results_of("lab-a", patient), "the generated patient has results"
                with other.unit(ADMIN, Purpose.ADMINISTRATION) as o:
                    o.shred_tenant("lab-a")
                u.results_of("lab-a", patient)
    finally:
        other.engine.dispose()
