"""A support grant naming patients covers their specimens and results, and no other patient's.

The lab's daily-work reads (one specimen, its timeline, one result with its workflow fields) are
reached by id; under a grant they must keep to the grant's patients as the patient-level reads do.
"""

from __future__ import annotations

import pytest

from labvault.access import Purpose
from labvault.domain.models import Sensitivity
from labvault.errors import AccessDenied
from tests.access.conftest import DATA
from tests.access.test_grants import ALL_FIELDS, granted, support_account


def test_a_grant_for_one_patient_opens_no_other_patients_specimen_or_result(world):
    """F2: a support account granted patient P1 is refused P2's result and specimen, by id, and
    each refusal is recorded; P1's result stays readable."""
    sup = support_account(world)
    a = DATA["lab-a"]
    p1, p2 = list(a.identities)[:2]
    granted(world, sup, patients=[p1], fields=ALL_FIELDS)
    theirs = [a.results[x] for x in a.results_of[p2] if a.results[x].sensitivity is Sensitivity.OTHER]
    mine = [a.results[x] for x in a.results_of[p1] if a.results[x].sensitivity is Sensitivity.OTHER]
    assert theirs and mine
    with world.gw.unit(sup, Purpose.SUPPORT) as u:
        assert u.work_result("lab-a", mine[0].result_id).result_id == mine[0].result_id
    with pytest.raises(AccessDenied, match="outside the grant"):
        with world.gw.unit(sup, Purpose.SUPPORT) as u:
            u.work_result("lab-a", theirs[0].result_id)
    with_specimen = [r for r in theirs if r.specimen_id]
    assert with_specimen, "the generated results name their specimens"
    if with_specimen:
        for read in ("specimen", "specimen_timeline"):
            with pytest.raises(AccessDenied, match="outside the grant"):
                with world.gw.unit(sup, Purpose.SUPPORT) as u:
                    getattr(u, read)("lab-a", with_specimen[0].specimen_id)
