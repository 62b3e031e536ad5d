"""What the lab's daily work reads, and only that: worklists open the results waiting in the
workflow (a partial index), not the lab's whole history; a request's patient is found by the id
sealed in its row (bound to the row: a copied ciphertext does not open), and follows a merge;
worklists per section of the catalogue; two catalogue loads at once get two versions."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import event, select, update

from labvault.access import Purpose
from labvault.domain.models import Identity, IdentityStatus, Request, Result, ResultStatus, Workflow
from labvault.errors import AccessDenied, InvalidInput
from labvault.identity import service as identity
from labvault.lab import service, work
from labvault.lab.catalogue import default_catalogue, parse_catalogue
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.lab.test_workflow import HB, NA, TENANT, K, enter, lab  # noqa: F401 (fixture)


def _ingested(gw, who, n: int) -> list[str]:
    """``n`` results received through ingest (outside the workflow) for the lab's patient."""
    req = Request(request_id="req-ingest", patient_id="pat-w1", prescriber_id=None, requested_at=datetime.now(UTC))
    results = [
        Result(
            result_id=f"ing-{i}",
            request_id="req-ingest",
            code="2823-3",
            label="Potassium",
            code_system="http://loinc.org",
            value_num=4.0 + i / 100,
            unit="mmol/L",
            status=ResultStatus.FINAL,
            observation_key=f"k{i}",
        )
        for i in range(n)
    ]
    with gw.unit(who, Purpose.INGEST) as u:
        u.add_requests(TENANT, [req])
        u.add_results(TENANT, results)
    return [r.result_id for r in results]


def test_worklist_reads_waiting_results_only(lab, raw_engine):
    """Audit (G1) and minimisation (A2): the worklist's read is audited with the number of results it
    opened, which is the waiting ones (3 ordered), not the 40 results the lab received through ingest;
    a result validated biologically leaves the list; a support account gets nothing."""
    gw, p = lab
    _ingested(gw, p["bio"], 40)
    entered = enter(gw, p["tech"])
    with gw.unit(p["tech"], Purpose.CARE) as u:
        waiting = u.waiting_results(TENANT, (Workflow.ORDERED, Workflow.ENTERED, Workflow.TECHNICAL))
    assert sorted(r.result_id for r in waiting) == sorted(rid for rid, _ in entered.results)
    ev = t.audit_event
    with raw_engine.connect() as conn:
        last = conn.execute(
            select(ev.c.record_count, ev.c.object_refs)
            .where(ev.c.tenant_id == TENANT, ev.c.action == "patient:result:read")
            .order_by(ev.c.seq.desc())
            .limit(1)
        ).one()
    assert last.record_count == 3 and json.loads(last.object_refs) == [entered.request_id]
    k_id = entered.results[0][0]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.enter_result(u, TENANT, k_id, "4,1")
        work.validate_technical(u, TENANT, [k_id])
    with gw.unit(p["bio"], Purpose.CARE) as u:
        work.validate_biological(u, TENANT, [k_id])
        left = u.waiting_results(TENANT, (Workflow.ORDERED, Workflow.TECHNICAL))
    assert k_id not in {r.result_id for r in left} and len(left) == 2
    support = vendor_user(gw, "support")
    with gw.unit(support, Purpose.SUPPORT) as u, pytest.raises(AccessDenied):
        u.waiting_results(TENANT, (Workflow.ORDERED,))


def test_waiting_index_is_partial_and_used(lab, raw_engine):
    """The partial index names exactly the waiting states of the workflow, and SQLite's planner
    reads the worklist through it."""
    states = ", ".join(f"'{w.value}'" for w in (Workflow.ORDERED, Workflow.ENTERED, Workflow.TECHNICAL))
    assert f"workflow IN ({states})" == t.WAITING_SQL
    if raw_engine.dialect.name != "sqlite":
        pytest.skip("the query plan is checked on SQLite")
    gw, p = lab
    seen: list[str] = []

    def capture(conn, cursor, statement, *args):
        if "FROM result" in statement and "workflow IN" in statement:
            seen.append(statement)

    event.listen(gw.engine, "before_cursor_execute", capture)
    try:
        with gw.unit(p["tech"], Purpose.CARE) as u:
            u.waiting_results(TENANT, (Workflow.ENTERED,))
    finally:
        event.remove(gw.engine, "before_cursor_execute", capture)
    assert len(seen) == 1
    with raw_engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + seen[0], (TENANT,)).all()
    assert any("ix_result_waiting" in str(row) for row in plan), plan


def test_request_holds_its_patient_sealed_and_bound_to_the_row(lab, raw_engine):
    """Encryption at rest (C1) and separation of identities (C2): the request row holds the patient id
    sealed (not in clear); copied onto another request it does not open there, and the patient is
    still found by pseudonym; after a merge the sealed id names the kept patient."""
    gw, p = lab
    with gw.unit(p["bio"], Purpose.CARE) as u:
        u.add_patients(
            TENANT, [Identity("pat-w2", None, IdentityStatus.PROVISIONAL, "ROUX", "Anna", date(1970, 3, 4), "F")]
        )
    first = enter(gw, p["tech"], (K,))
    second = enter(gw, p["tech"], (NA,))
    q = t.request
    with raw_engine.connect() as conn:
        sealed = conn.execute(select(q.c.patient_enc).where(q.c.request_id == first.request_id)).scalar_one()
    assert sealed is not None and b"pat-w1" not in bytes(sealed)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        assert u.patient_of_result(TENANT, first.results[0][0]) == "pat-w1"
    # A ciphertext copied from another row: refused by its binding, the pseudonym decides.
    with raw_engine.begin() as conn:
        other = conn.execute(select(q.c.patient_enc).where(q.c.request_id == second.request_id)).scalar_one()
        conn.execute(update(q).where(q.c.request_id == first.request_id).values(patient_enc=other))
    with gw.unit(p["bio"], Purpose.CARE) as u:
        assert u.patient_of_result(TENANT, first.results[0][0]) == "pat-w1"
    # A merge moves the requests of pat-w1 to pat-w2: their sealed id follows.
    with gw.unit(p["bio"], Purpose.CARE) as u:
        identity.merge(u, TENANT, "pat-w2", "pat-w1")
    with gw.unit(p["bio"], Purpose.CARE) as u:
        assert u.patient_of_result(TENANT, second.results[0][0]) == "pat-w2"
        assert u.patient_of_result(TENANT, first.results[0][0]) == "pat-w2"
    with raw_engine.connect() as conn:
        moved = conn.execute(select(q.c.patient_enc).where(q.c.request_id == second.request_id)).scalar_one()
    assert bytes(moved) != bytes(other)


def test_catalogue_sections(lab):
    """Worklists per section: the default catalogue puts each test on a bench; a lab's catalogue
    without sections puts them in "general"; a malformed section is refused with its place."""
    cat = default_catalogue()
    assert {"biochimie", "hematologie", "hemostase", "immunoanalyse", "serologie", "urines"} <= set(cat.sections)
    assert cat.section_of("2823-3") == "biochimie" and cat.section_of("718-7") == "hematologie"
    assert cat.section_of("0000-0") is None
    body = 'version = "s1"\n[[test]]\ncode = "K"\nloinc = "2823-3"\nlabel_fr = "K"\nlabel_en = "K"\n'
    body += 'specimen = "SER"\ncontainer = "tube sec"\nunit = "mmol/L"\n'
    assert parse_catalogue(body).sections == ("general",)
    with pytest.raises(InvalidInput, match="test K: field section"):
        parse_catalogue(body + 'section = "Bio Chimie"\n')


def test_two_catalogue_loads_at_once_get_two_versions(lab, raw_engine):
    """Versioning (the lab's catalogue): two loads at the same moment from two threads each get their
    own version number; neither fails with a database error."""
    gw, p = lab
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def load(version: str) -> None:
        text = (
            'version = "' + version + '"\n[[test]]\ncode = "K"\nloinc = "2823-3"\nlabel_fr = "K"\n'
            'label_en = "K"\nspecimen = "SER"\ncontainer = "tube sec"\nunit = "mmol/L"\n'
        )
        try:
            go.wait()
            with gw.unit(p["admin"], Purpose.ADMINISTRATION) as u:
                service.load_catalogue(u, TENANT, text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(v,)) for v in ("c1", "c2")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    c = t.lab_catalogue
    with raw_engine.connect() as conn:
        numbers = sorted(conn.execute(select(c.c.version).where(c.c.tenant_id == TENANT)).scalars())
    assert numbers == [1, 2]
