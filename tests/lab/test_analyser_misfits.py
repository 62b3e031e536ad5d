"""An analyser's results that cannot be placed on the lab's own specimen.

A message naming one of the lab's specimens updates the results ordered on it. A result it cannot
place (its specimen rejected meanwhile, a result validated already) must neither become a new
order's final result, skipping the lab's validation, nor fail the other messages of the batch.
"""

from __future__ import annotations

from sqlalchemy import func, select

from labvault.access import Purpose
from labvault.store import schema as t
from tests.identity.helpers import ingest
from tests.lab.test_workflow import NA, TENANT, K, enter, lab  # noqa: F401 - the fixture
from tests.lab.test_workflow_analyser import oru


def _requests(raw_engine) -> int:
    with raw_engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(t.request)).scalar_one())


def _analyser_errors(raw_engine, specimen_id: str) -> int:
    with raw_engine.connect() as c:
        rows = c.execute(
            select(t.audit_event.c.object_refs).where(
                t.audit_event.c.action == "result:enter:analyser", t.audit_event.c.outcome == "error"
            )
        ).scalars()
        return sum(1 for refs in rows if refs and specimen_id in refs)


def test_a_result_for_a_rejected_specimen_is_not_stored_and_the_batch_goes_on(lab, raw_engine):
    """G1: the message on the rejected specimen places nothing (an error event names the
    specimen); the other message of the same file is stored."""
    gw, p = lab
    e = enter(gw, p["tech"], (K, NA))
    barcode = e.specimens[0][0]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.specimen_event(TENANT, barcode, "rejected", nonconformity="haemolysed")
    before = _requests(raw_engine)
    summary = ingest(gw, p["tech"], oru("R1", spm=barcode) + oru("R2", spm="UNRELATED-1"), tenant=TENANT)
    assert summary.accepted == 2
    assert _requests(raw_engine) == before + 1  # the unrelated order only
    assert _analyser_errors(raw_engine, barcode) == 1
    with gw.unit(p["bio"], Purpose.CARE) as u:
        mine = list(u.results_of_request(TENANT, e.request_id))
    assert mine and all(str(r.status) == "cancelled" for r in mine)


def test_a_rerun_on_a_validated_result_never_becomes_a_final_result_of_a_new_order(lab, raw_engine):
    """G1: after technical validation of potassium, an analyser re-run naming the same specimen
    stores no new request: no result reaches the patient's record without the lab's validation."""
    gw, p = lab
    e = enter(gw, p["tech"], (K, NA))
    barcode = e.specimens[0][0]
    k_id = next(rid for rid, code in e.results if code == K.code)
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.specimen_event(TENANT, barcode, "received")
        u.enter_result(TENANT, k_id, "4.0")
        u.validate(TENANT, [k_id], "technical")
    before = _requests(raw_engine)
    ingest(gw, p["tech"], oru("V1", spm=barcode, potassium="9,9"), tenant=TENANT)
    assert _requests(raw_engine) == before
    assert _analyser_errors(raw_engine, barcode) == 1
    with gw.unit(p["bio"], Purpose.CARE) as u:
        k = u.work_result(TENANT, k_id)
    assert k.value_num == 4.0 and str(k.workflow) == "technical"
