"""An audit search by NIR under a grant bounded by a period (the scope a grant names when it names
no patients): answered within the period, never a crash. On SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import insert

from labvault.access import Principal, Purpose
from labvault.audit import service
from labvault.crypto.keys import PLATFORM
from labvault.ids import utcnow
from labvault.store import schema as t
from labvault.synth import LabGenerator
from tests.audit.test_pinned import lab_account
from tests.audit.test_tamper import LAB, audited  # noqa: F401 (fixture)
from tests.conftest import ADMIN


def vendor_officer(gw) -> Principal:
    so = Principal("so-vendor", "Sam Officer", PLATFORM, frozenset({"security_officer"}))
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(PLATFORM, so.account_id, so.name, "so@vendor.invalid", so.roles, commitment="test")
    return so


def approved_period_grant(gw, account_id: str, start, end) -> None:
    """The grant row as the lab's approval leaves it: identity, bounded by a period, no patients."""
    now = utcnow()
    with gw.unit(lab_account(gw, "lab_admin"), Purpose.ADMINISTRATION) as u:
        u._scope(LAB)
        u.conn.execute(
            insert(t.access_grant).values(
                tenant_id=LAB,
                grant_id="g-period-1",
                account_id=account_id,
                ticket="SEC-8",
                reason="access review",
                scope_patients=None,
                scope_from=start.isoformat(),
                scope_to=end.isoformat(),
                scope_fields=json.dumps(["identity"]),
                requested_at=now,
                hours=2,
                approved_by="admin",
                approved_at=now,
                expires_at=now + timedelta(hours=2),
            )
        )


def test_identity_search_under_a_period_grant(audited):
    """F2, G5: a vendor account's audit search by NIR under a lab-approved grant bounded by a
    period answers the patient with a request in that period, and nothing for a NIR of a patient
    outside it; it does not fail."""
    so = vendor_officer(audited)
    patient = LabGenerator(LAB, 4).patient(1)
    day = min(r.requested_at.date() for r in patient.requests)
    approved_period_grant(audited, so.account_id, day, day + timedelta(days=1))
    with audited.unit(so, Purpose.ADMINISTRATION) as u:
        assert u.patient_id_for_nir(LAB, patient.identity.nir) == patient.identity.patient_id
        assert service.search(u, LAB, patient_id=patient.identity.patient_id)
