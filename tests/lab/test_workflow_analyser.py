"""An analyser's HL7 results matched by the specimen's barcode: they update the ordered results
of that specimen's request instead of creating a request."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from labvault.access import Purpose
from labvault.domain.models import ResultStatus, Workflow
from labvault.store import schema as t
from tests.identity.helpers import ingest
from tests.lab.test_workflow import NA, TENANT, K, enter, lab  # noqa: F401 (the fixture)


def oru(control: str, *, spm: str = "", obr3: str = "", potassium: str = "6,8") -> bytes:
    lines = [
        f"MSH|^~\\&|ANALYSER|LAB1^1.2.3^ISO|LIS|LAB|20261207093000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        "PID|1||||ROUX^Anna^^^^^L||19700304|F",
        f"OBR|1||{obr3}|24326-1^Electrolytes^LN|||20261207083000",
        f"OBX|1|NM|2823-3^Potassium^LN||{potassium}|mmol/L^^UCUM|3.5-5.1|HH|||F",
        "OBX|2|NM|2951-2^Sodium^LN||141|mmol/L^^UCUM|135-145|N|||F",
    ]
    if spm:
        lines.append(f"SPM|1|{spm}||SER^Serum^HL70487")
    return ("\r".join(lines) + "\r").encode()


@pytest.mark.parametrize("where", ["spm", "obr3"])
def test_analyser_results_go_to_the_specimens_request(lab, raw_engine, where):
    """Results from an analyser naming the specimen's barcode (SPM-2, or OBR-3 filler number)
    update the ordered results of the same codes on that specimen's request (entered, by the feed's
    account, the earlier version kept); no request is created. G1: the event names ids only."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K, NA))
    barcode = entered.specimens[0][0]
    k_id, na_id = (rid for rid, _ in entered.results)
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.specimen_event(TENANT, barcode, "received")
    with raw_engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(t.request)).scalar_one()
    msg = oru("A1", spm=barcode) if where == "spm" else oru("A1", obr3=barcode)
    summary = ingest(gw, p["tech"], msg, tenant=TENANT)
    assert summary.accepted == 1, (summary.rejected, summary.reasons)
    with raw_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.request)).scalar_one() == before
        rows = {r.result_id: r for r in conn.execute(select(t.result)).all()}
        events = conn.execute(
            select(t.audit_event.c.object_refs).where(t.audit_event.c.action == "result:enter:analyser")
        ).all()
    assert set(rows) == {k_id, na_id}
    assert (rows[k_id].workflow, rows[k_id].entered_by, rows[k_id].version) == ("entered", p["tech"].account_id, 2)
    assert sorted(e.object_refs for e in events) == sorted([f'["{k_id}"]', f'["{na_id}"]'])
    with gw.unit(p["bio"], Purpose.CARE) as u:
        results = {r.result_id: r for r in u.results_of_request(TENANT, entered.request_id)}
    assert (results[k_id].value_num, results[k_id].value_repr, results[k_id].flag) == (6.8, "6,8", "HH")
    assert results[k_id].status is ResultStatus.PRELIMINARY and results[k_id].workflow is Workflow.ENTERED
    assert results[na_id].value_num == 141.0


def test_an_unknown_barcode_is_stored_as_any_order(lab, raw_engine):
    """A barcode that is no specimen of the lab: the message is stored as any other (a request)."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K, NA))
    summary = ingest(gw, p["tech"], oru("A2", spm="NOT-A-SPECIMEN"), tenant=TENANT)
    assert summary.accepted == 1
    with raw_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.request)).scalar_one() == 2
        assert {
            r.workflow for r in conn.execute(select(t.result).where(t.result.c.request_id == entered.request_id))
        } == {"ordered"}


def test_a_feed_writes_a_sensitive_result_onto_the_lab_specimen(lab, raw_engine):
    """F3, D1: a feed's service account may not read a sensitive category (oncology: PSA), but the
    analyser's PSA value for a hand-entered request is written onto the ordered result all the same
    (the feed writes, it reads nothing back); the lab's admin, who may not read oncology results
    either, still sees nothing of it, and the biologist reads it."""
    from labvault.access import Principal
    from labvault.domain.models import OrderedTest
    from tests.conftest import ADMIN

    gw, p = lab
    psa = OrderedTest("http://loinc.org", "2857-1", "PSA", "ug/L", "SER", "SST gold")
    entered = enter(gw, p["tech"], (K, psa))
    barcode = entered.specimens[0][0]
    psa_id = next(rid for rid, code in entered.results if code == "2857-1")
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.specimen_event(TENANT, barcode, "received")
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(TENANT, "feed-w", "Feed", "feed-w@lab.invalid", ("service",), commitment="test")
    feed = Principal("feed-w", "Feed", TENANT, frozenset({"service"}), kind="service")
    msg = oru("A9", spm=barcode).replace(
        b"OBX|2|NM|2951-2^Sodium^LN||141|mmol/L^^UCUM|135-145|N|||F",
        b"OBX|2|NM|2857-1^PSA^LN||7,2|ug/L^^UCUM|0-4|H|||F",
    )
    summary = ingest(gw, feed, msg, tenant=TENANT)
    assert summary.accepted == 1, (summary.rejected, summary.reasons)
    with raw_engine.connect() as conn:
        row = conn.execute(select(t.result).where(t.result.c.result_id == psa_id)).one()
    assert (row.workflow, row.entered_by) == ("entered", "feed-w")
    with gw.unit(p["bio"], Purpose.CARE) as u:
        got = {r.result_id: r for r in u.results_of_request(TENANT, entered.request_id)}
    assert got[psa_id].value_num == 7.2
    with gw.unit(p["admin"], Purpose.CARE) as u:
        assert psa_id not in {r.result_id for r in u.results_of_request(TENANT, entered.request_id)}
