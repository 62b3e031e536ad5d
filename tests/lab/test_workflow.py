"""The lab's daily work through the gateway: a request entered by hand, its specimens received or
rejected, results entered by a technician, validated technically then biologically by another
person, critical values' call-back tasks; vendor accounts and other labs refused, audited."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.domain.models import (
    Identity,
    IdentityStatus,
    OrderedTest,
    RequestStatus,
    ResultStatus,
    SpecimenStatus,
    Workflow,
)
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.lab import work
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab

TENANT = "lab-w"
OTHER = "lab-x"
CLINICAL = "Suspicion de thrombose veineuse profonde"
COLLECTOR = "IDE Claire Fontaine"
K = OrderedTest("http://loinc.org", "2823-3", "Potassium", "mmol/L", "SER", "SST gold")
NA = OrderedTest("http://loinc.org", "2951-2", "Sodium", "mmol/L", "SER", "SST gold")
HB = OrderedTest("http://loinc.org", "718-7", "Hemoglobin", "g/dL", "BLD", "EDTA lavender")
COLLECTED = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)


@pytest.fixture
def lab(gateway):
    make_lab(gateway, TENANT)
    make_lab(gateway, OTHER, "690000025")
    people = {
        "tech": lab_user(gateway, TENANT, "technician", name="Tech"),
        "bio": lab_user(gateway, TENANT, "biologist", name="Bio"),
        "bio2": lab_user(gateway, TENANT, "biologist", name="Second"),
        "admin": lab_user(gateway, TENANT, "lab_admin", name="Admin"),
        "other": lab_user(gateway, OTHER, "biologist", name="Other"),
    }
    with gateway.unit(people["bio"], Purpose.CARE) as u:
        u.add_patients(
            TENANT,
            [Identity("pat-w1", None, IdentityStatus.PROVISIONAL, "ROUX", "Anna", date(1970, 3, 4), "F")],
        )
    return gateway, people


def enter(gw, who, tests=(K, NA, HB)):
    with gw.unit(who, Purpose.CARE) as u:
        return work.enter_request(
            u,
            TENANT,
            "pat-w1",
            list(tests),
            collected_at=COLLECTED,
            collector=COLLECTOR,
            urgent=True,
            clinical=CLINICAL,
            pregnant=False,
        )


def result_row(raw_engine, result_id):
    with raw_engine.connect() as conn:
        return conn.execute(select(t.result).where(t.result.c.result_id == result_id)).one()


def request_status(raw_engine, request_id):
    with raw_engine.connect() as conn:
        return conn.execute(select(t.request.c.status).where(t.request.c.request_id == request_id)).scalar_one()


def events(raw_engine, prefix):
    ev = t.audit_event
    with raw_engine.connect() as conn:
        return [
            (r.action, r.outcome, json.loads(r.object_refs or "[]"), r.actor)
            for r in conn.execute(select(ev).where(ev.c.action.like(f"{prefix}%")).order_by(ev.c.seq)).all()
        ]


def test_end_to_end_request_to_biological_validation(lab, raw_engine):
    """End to end: a request entered by hand (one specimen per container), the specimen received by
    its barcode, a value entered by a technician, technical then biological validation by another
    biologist; the biologist who entered a value cannot validate it biologically (refused, audited)."""
    gw, p = lab
    entered = enter(gw, p["tech"])
    assert len(entered.specimens) == 2  # SST gold (K, Na) and EDTA (Hb)
    by_container = {c: sid for sid, c, _ in entered.specimens}
    assert set(by_container) == {"SST gold", "EDTA lavender"}
    k_id, na_id, hb_id = (rid for rid, _ in entered.results)
    assert result_row(raw_engine, k_id).workflow == "ordered"
    assert result_row(raw_engine, k_id).specimen_id == by_container["SST gold"]
    assert result_row(raw_engine, hb_id).specimen_id == by_container["EDTA lavender"]
    assert request_status(raw_engine, entered.request_id) == "registered"

    serum = by_container["SST gold"]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        sp = work.receive(u, TENANT, f" {serum}\n")
        assert sp.status is SpecimenStatus.RECEIVED and sp.received_at is not None
        assert sp.container == "SST gold"
        res, judged = work.enter_result(u, TENANT, k_id, "4,7")
        assert judged.result == res and judged.callback_task_id is None
        assert (res.value_num, res.value_repr, res.unit) == (4.7, "4,7", "mmol/L")
        assert (res.flag, res.ref_low, res.ref_high, res.catalogue_version) == ("N", 3.5, 5.1, 0)
        work.enter_result(u, TENANT, na_id, 139, "mmol/L")
    row = result_row(raw_engine, k_id)
    assert (row.workflow, row.entered_by, row.status, row.version) == (
        "entered",
        p["tech"].account_id,
        "preliminary",
        2,
    )
    assert request_status(raw_engine, entered.request_id) == "partial"

    with gw.unit(p["tech"], Purpose.CARE) as u:
        done = work.validate_technical(u, TENANT, [k_id, na_id])
    assert [r.workflow for r in done] == [Workflow.TECHNICAL, Workflow.TECHNICAL]
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(AccessDenied):
        work.validate_biological(u, TENANT, [k_id])  # a technician never validates biologically
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        final = work.validate_biological(u, TENANT, [k_id, na_id])
    assert [r.status for r in final] == [ResultStatus.FINAL, ResultStatus.FINAL]
    row = result_row(raw_engine, k_id)
    assert (row.workflow, row.technical_by, row.biological_by) == (
        "biological",
        p["tech"].account_id,
        p["bio2"].account_id,
    )
    with gw.unit(p["bio"], Purpose.CARE) as u:
        history = u.result_history(TENANT, k_id)
    assert [h.status for h in history] == [ResultStatus.PENDING, ResultStatus.FINAL]
    assert history[-1].validated_by == p["bio2"].name and history[-1].value_num == 4.7

    # Self-validation: the biologist who entered the haemoglobin cannot validate it biologically.
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, by_container["EDTA lavender"])
    with gw.unit(p["bio"], Purpose.CARE) as u:
        work.enter_result(u, TENANT, hb_id, "13.2")
        work.validate_technical(u, TENANT, [hb_id])
    with gw.unit(p["bio"], Purpose.CARE) as u, pytest.raises(AccessDenied, match="person who entered it"):
        work.validate_biological(u, TENANT, [hb_id])
    assert ("result:validate:biological", "denied", [], p["bio"].account_id) in [
        (a, o, [], who) for a, o, _, who in events(raw_engine, "result:validate:biological")
    ]
    assert result_row(raw_engine, hb_id).workflow == "technical"
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        work.validate_biological(u, TENANT, [hb_id])
    assert request_status(raw_engine, entered.request_id) == "final"

    # The specimen's timeline, from the audit trail.
    with gw.unit(p["bio"], Purpose.CARE) as u:
        timeline = u.specimen_timeline(TENANT, serum)
    assert [e.action for e in timeline][:2] == ["request:enter", "specimen:received"]


def test_rejected_specimen_cancels_its_results_with_the_reason(lab, raw_engine):
    """A specimen rejected with its non-conformity cancels the results it carries (the reason kept
    with them), the request is told (its status), the other specimen's results untouched."""
    gw, p = lab
    entered = enter(gw, p["tech"])
    serum = next(sid for sid, c, _ in entered.specimens if c == "SST gold")
    k_id, na_id, hb_id = (rid for rid, _ in entered.results)
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="non-conformity"):
        u.specimen_event(TENANT, serum, "rejected")
    with gw.unit(p["tech"], Purpose.CARE) as u:
        sp = work.reject(u, TENANT, serum, "haemolysed")
    assert sp.status is SpecimenStatus.REJECTED and str(sp.nonconformity) == "haemolysed"
    for rid in (k_id, na_id):
        assert result_row(raw_engine, rid).status == "cancelled"
    assert result_row(raw_engine, hb_id).status == "pending"
    with gw.unit(p["bio"], Purpose.CARE) as u:
        results = {r.result_id: r for r in u.results_of_request(TENANT, entered.request_id)}
    assert results[k_id].comment == "specimen rejected: haemolysed"
    assert request_status(raw_engine, entered.request_id) == "registered"
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(AccessDenied, match="cancelled"):
        u.enter_result(TENANT, k_id, "4.2")
    ev = events(raw_engine, "specimen:rejected")
    assert ev[-1][1] == "allowed" and serum in ev[-1][2] and k_id in ev[-1][2]


def test_state_machine_refuses_impossible_moves(lab, raw_engine):
    """A specimen moves only as its life allows: not stored before it is received, not received
    twice, nothing after it is discarded; each refused move is audited."""
    gw, p = lab
    entered = enter(gw, p["tech"], (HB,))
    sid = entered.specimens[0][0]
    for status in ("stored", "in-analysis", "discarded"):
        with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="collected specimen cannot"):
            u.specimen_event(TENANT, sid, status)
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.specimen_event(TENANT, sid, "received")
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="received specimen cannot"):
        u.specimen_event(TENANT, sid, "received")
    with gw.unit(p["tech"], Purpose.CARE) as u:
        for status in ("in-analysis", "stored", "discarded"):
            assert u.specimen_event(TENANT, sid, status).status == SpecimenStatus(status)
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="discarded specimen cannot"):
        u.specimen_event(TENANT, sid, "in-analysis")
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput):
        u.specimen_event(TENANT, sid, "lost")
    assert [o for _, o, refs, _ in events(raw_engine, "specimen:") if sid in refs].count("error") == 5
    with gw.unit(p["bio"], Purpose.CARE) as u:
        timeline = u.specimen_timeline(TENANT, sid)
    assert [e.action for e in timeline if e.outcome == "allowed"] == [
        "request:enter",
        "specimen:received",
        "specimen:in-analysis",
        "specimen:stored",
        "specimen:discarded",
    ]


def test_callback_tasks_open_close_overdue(lab, raw_engine, monkeypatch):
    """Critical values: a call-back task opened on a result, listed overdue (and audited as such)
    once past its due time, closed with who was called and the read-back confirmed (sealed)."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K,))
    k_id = entered.results[0][0]
    with gw.unit(p["bio"], Purpose.CARE) as u:
        task = u.open_callback(TENANT, k_id, 30)
        late = u.open_callback(TENANT, k_id, 1)
        assert u.callbacks(TENANT, overdue_only=True) == []
    from labvault.access import work as access_work

    monkeypatch.setattr(access_work, "utcnow", lambda: datetime.now(UTC) + timedelta(minutes=5))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        overdue = u.callbacks(TENANT, overdue_only=True)
    assert [x.task_id for x in overdue] == [late]
    ev = events(raw_engine, "callback:overdue")
    assert ev[-1][1] == "alert" and ev[-1][2] == [late]
    with gw.unit(p["bio"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="read-back"):
        u.close_callback(TENANT, late, "Dr House", False)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        done = u.close_callback(TENANT, late, "Dr House", True)
    assert (done.state, done.called, done.read_back, done.closed_by) == ("done", "Dr House", True, p["bio"].account_id)
    with gw.unit(p["admin"], Purpose.CARE) as u:
        tasks = u.callbacks(TENANT)
    assert [(x.task_id, x.state, x.overdue) for x in tasks] == [(task, "open", False), (late, "done", False)]
    with raw_engine.connect() as conn:
        blob = conn.execute(select(t.callback_task.c.detail_enc).where(t.callback_task.c.task_id == late)).scalar_one()
    assert b"House" not in bytes(blob)


@pytest.mark.parametrize("role", ["support", "operator", "security_officer", "platform_admin"])
def test_what_can_a_vendor_account_do_with_this(lab, raw_engine, role):
    """F2: what can a vendor account do with this? Nothing: entering a request, moving a specimen,
    entering or validating a result, opening or reading call-back tasks are refused to every vendor
    role, and each attempt is audited in the lab's trail."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K,))
    sid, rid = entered.specimens[0][0], entered.results[0][0]
    vendor = vendor_user(gw, role)
    attempts = {
        "request:enter": lambda u: u.enter_request(
            TENANT, "pat-w1", [K], collected_at=COLLECTED, urgency="routine", collector=None
        ),
        "specimen:event": lambda u: u.specimen_event(TENANT, sid, "received"),
        "result:enter": lambda u: u.enter_result(TENANT, rid, "4.2"),
        "result:validate:technical": lambda u: u.validate(TENANT, [rid], "technical"),
        "result:validate:biological": lambda u: u.validate(TENANT, [rid], "biological"),
        "callback:manage": lambda u: u.open_callback(TENANT, rid, 30),
        "callback:read": lambda u: u.callbacks(TENANT),
    }
    for action, attempt in attempts.items():
        with gw.unit(vendor, Purpose.SUPPORT) as u, pytest.raises(AccessDenied):
            attempt(u)
        _, outcome, _, actor = events(raw_engine, action)[-1]
        assert (outcome, actor) == ("denied", vendor.account_id), action
    assert result_row(raw_engine, rid).workflow == "ordered"


def test_another_lab_is_refused(lab, raw_engine):
    """F1: a biologist of another lab can do nothing on this lab's specimens and results: refused
    and audited; on its own lab, the ids of this one name nothing."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K,))
    sid, rid = entered.specimens[0][0], entered.results[0][0]
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises(AccessDenied):
        u.specimen_event(TENANT, sid, "received")
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises(AccessDenied):
        u.enter_result(TENANT, rid, "9.9")
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises(NotFound):
        u.specimen_event(OTHER, sid, "received")
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises(NotFound):
        u.enter_result(OTHER, rid, "9.9")
    assert result_row(raw_engine, rid).workflow == "ordered"


def test_database_holds_no_clear_clinical_value_and_events_ids_only(lab, raw_engine):
    """C1, G1, G2: the clinical information, the collector and the container are sealed (no clear
    byte of them in any row); the events of the workflow name ids only, never a value."""
    gw, p = lab
    entered = enter(gw, p["tech"])
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, entered.specimens[0][0])
        u.enter_result(TENANT, entered.results[0][0], "4.73")
    with gw.unit(p["bio"], Purpose.CARE) as u:
        req = u.requests_of(TENANT, "pat-w1")[0]
    assert (req.clinical, req.collector, req.pregnant, str(req.urgency)) == (CLINICAL, COLLECTOR, False, "urgent")
    assert req.entered_by == p["tech"].account_id and req.status is RequestStatus.PARTIAL
    needles = [CLINICAL.encode(), COLLECTOR.encode(), b"SST gold", b"EDTA", b"4.73"]
    with raw_engine.connect() as conn:
        for table in (t.request, t.specimen, t.result, t.result_version, t.audit_event):
            for row in conn.execute(select(table)).all():
                blob = repr(tuple(row)).encode()
                for n in needles:
                    assert n not in blob, (table.name, n)
    for action, _, refs, _ in events(raw_engine, ""):
        if action.startswith(("request:", "specimen:", "result:", "callback:")):
            assert all(
                r in {entered.request_id, *(s for s, _, _ in entered.specimens), *(x for x, _ in entered.results)}
                for r in refs
            ), action
