"""Reports from outside (H2, H4): the register, its deadlines, closing only after the assessment and
the decision on telling the labs, the escalation of overdue items, who may do what, the sealed text."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.access.principal import MONITOR
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.monitoring import advisories
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab

LAB_A, LAB_B = "lab-a", "lab-b"
# A leaked line as the national agency forwards it: a name, a NIR, a free-text comment.
LEAKED = "DUPONT;Jeanne;2690375123456;VIH positif sous traitement"
RECEIVED = datetime(2026, 11, 4, 9, 0, tzinfo=UTC)


class Recorder:
    """A sink standing for the alerts: it keeps the findings it is given."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def __call__(self, u, finding: Finding) -> str:
        self.findings.append(finding)
        return f"alert-{len(self.findings)}"


@pytest.fixture
def world(gateway):
    make_lab(gateway, LAB_A)
    make_lab(gateway, LAB_B, "440000018")
    people = {
        "so": vendor_user(gateway, "security_officer"),
        "support": vendor_user(gateway, "support"),
        "operator": vendor_user(gateway, "operator"),
        "padmin": vendor_user(gateway, "platform_admin"),
        "dpo_a": lab_user(gateway, LAB_A, "lab_dpo", name="Dpo"),
        "admin_a": lab_user(gateway, LAB_A, "lab_admin", name="Admin"),
        "bio_a": lab_user(gateway, LAB_A, "biologist", name="Bio"),
        "dpo_b": lab_user(gateway, LAB_B, "lab_dpo", name="Dpo"),
    }
    return gateway, people


def _add(gw, who, severity="critical", labs=(LAB_A,), received_at=RECEIVED):
    with gw.unit(who, Purpose.MONITORING) as u:
        return advisories.add(
            u,
            source="anssi",
            reference="CERTFR-2026-ALE-001",
            severity=severity,
            owner=who.account_id,
            summary=f"56 lignes en fuite, dont : {LEAKED}",
            received_at=received_at,
            labs=labs,
        )


def _raw(gw, advisory_id):
    with gw.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT set_config('labvault.tenant', '*', false)")
        return conn.execute(select(t.advisory).where(t.advisory.c.advisory_id == advisory_id)).one()


def _events(gw, action):
    ev = t.audit_event
    with gw.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT set_config('labvault.tenant', '*', false)")
        return [
            (r.tenant_id, r.outcome, json.loads(r.object_refs or "[]"))
            for r in conn.execute(select(ev).where(ev.c.action == action).order_by(ev.c.tenant_id, ev.c.seq))
        ]


def test_deadline_by_severity_and_the_sealed_text_is_not_in_the_row(world):
    """H2, C1: the ANSSI report gets its owner, severity and a 24-hour deadline (critical); the
    summary quoting a leaked line is sealed with the platform key: the row holds neither the name
    nor the NIR in clear, and the security officer reads it back opened."""
    gw, p = world
    adv = _add(gw, p["so"])
    assert (adv.state, adv.severity, adv.owner, adv.level) == ("open", "critical", p["so"].account_id, 0)
    assert adv.deadline == RECEIVED + timedelta(hours=24)
    row = _raw(gw, adv.advisory_id)
    assert row.tenant_id == PLATFORM
    stored = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row._mapping.values())
    for secret in (b"DUPONT", b"2690375123456", b"VIH"):
        assert secret not in stored
    assert row.summary_enc is not None and row.assessment_enc is None
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        opened = advisories.show(u, adv.advisory_id)
    assert LEAKED in (opened.summary or "")
    # the audit events carry the advisory's id, never its text
    assert _events(gw, "advisory:add") == [(PLATFORM, "allowed", [adv.advisory_id])]
    high = _add(gw, p["so"], severity="low")
    assert high.deadline == RECEIVED + timedelta(days=30)


def test_cannot_close_without_assessment_and_decision(world):
    """H2: closing an open advisory is refused (recorded as refused); after the breach assessment
    (possible, its reasoning sealed) and the decision on telling the labs, it closes."""
    gw, p = world
    adv = _add(gw, p["so"])
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="breach assessment"):
        advisories.close(u, adv.advisory_id)
    assert _raw(gw, adv.advisory_id).state == "open"
    assert _events(gw, "advisory:close") == [(PLATFORM, "denied", [adv.advisory_id])]
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="labs concerned"):
        advisories.assess(u, adv.advisory_id, breach="yes", reasoning="r", notify_labs=True, labs=[])
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="one of"):
        advisories.assess(u, adv.advisory_id, breach="maybe", reasoning="r", notify_labs=False)
    now = RECEIVED + timedelta(hours=3)
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        done = advisories.assess(
            u,
            adv.advisory_id,
            breach="possible",
            reasoning=f"Ligne {LEAKED} retrouvée dans l'export du 2026-10-01",
            notify_labs=True,
            labs=[LAB_A],
            now=now,
        )
    assert (done.state, done.breach, done.notify_labs, done.labs) == ("assessed", "possible", True, (LAB_A,))
    assert done.deadline == now + timedelta(hours=24)
    row = _raw(gw, adv.advisory_id)
    assert b"DUPONT" not in bytes(row.assessment_enc) and row.assessed_by == p["so"].account_id
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        closed = advisories.close(u, adv.advisory_id)
    assert closed.state == "closed" and closed.closed_by == p["so"].account_id
    assert _events(gw, "advisory:close")[-1] == (PLATFORM, "allowed", [adv.advisory_id])
    assert _events(gw, "advisory:assess") == [
        (PLATFORM, "allowed", [adv.advisory_id, "breach:possible", "notify:yes", LAB_A])
    ]


def test_unanswered_advisory_escalates_past_its_deadline(world):
    """H1, H2: nothing happens before the deadline; past it, the advisory goes one level up with a
    new deadline, an advisory:escalate event and a finding (references only) handed to the alerts;
    unanswered again, it escalates again; a closed one never does."""
    gw, p = world
    adv = _add(gw, p["so"])
    sink = Recorder()
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        assert advisories.escalate_overdue(u, now=RECEIVED + timedelta(hours=23), sink=sink) == []
    assert sink.findings == []
    late = RECEIVED + timedelta(hours=25)
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        done = advisories.escalate_overdue(u, now=late, sink=sink)
    assert [(e.advisory_id, e.level, e.alert_id) for e in done] == [(adv.advisory_id, 1, "alert-1")]
    assert done[0].deadline == late + timedelta(hours=12)
    row = _raw(gw, adv.advisory_id)
    assert (row.level, row.state) == (1, "open")
    (f,) = sink.findings
    assert (f.rule_id, f.severity, f.tenant_id) == ("advisory:overdue", Severity.CRITICAL, PLATFORM)
    assert adv.advisory_id in f.refs and "level:1" in f.refs
    assert "DUPONT" not in f.title + " ".join(f.refs)
    assert _events(gw, "advisory:escalate") == [(PLATFORM, "allowed", [adv.advisory_id, "level:1"])]
    with gw.unit(p["so"], Purpose.MONITORING) as u:  # within the new deadline: nothing more
        assert advisories.escalate_overdue(u, now=late + timedelta(hours=11), sink=sink) == []
    with gw.unit(MONITOR, Purpose.MONITORING) as u:  # the dispatcher: the monitoring process (monitor:run)
        again = advisories.escalate_overdue(u, now=late + timedelta(hours=13), sink=sink)
    assert [e.level for e in again] == [2] and len(sink.findings) == 2
    assert sink.findings[1].group != sink.findings[0].group  # a new alert per level
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        advisories.assess(u, adv.advisory_id, breach="no", reasoning="faux positif", notify_labs=False)
        advisories.close(u, adv.advisory_id)
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        assert advisories.escalate_overdue(u, now=late + timedelta(days=60), sink=sink) == []


@pytest.mark.parametrize("role", ["support", "operator", "padmin"])
def test_vendor_support_and_operator_cannot_manage(world, role):
    """H2, F2: support and operator accounts neither register, read nor close an advisory; the
    platform admin reads the register but does not manage it; each refusal is recorded."""
    gw, p = world
    adv = _add(gw, p["so"])
    who = p[role]
    with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.add(u, source="press", severity="low", owner=who.account_id, summary="x")
    with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.assess(u, adv.advisory_id, breach="no", reasoning="x", notify_labs=False)
    if role == "padmin":
        with gw.unit(who, Purpose.MONITORING) as u:
            assert [a.advisory_id for a in advisories.listing(u)] == [adv.advisory_id]
    else:
        with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            advisories.listing(u)
        with gw.unit(who, Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            advisories.escalate_overdue(u, now=RECEIVED + timedelta(days=9), sink=Recorder())
    denied = [e for e in _events(gw, "advisory:manage") if e[1] == "denied"]
    assert len(denied) >= 1


def test_owner_is_an_active_vendor_account(world):
    """H2: the owner is an account of the vendor: a lab's account is refused as owner."""
    gw, p = world
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="owner"):
        advisories.add(u, source="anssi", severity="high", owner=p["dpo_a"].account_id, summary="x")
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(InvalidInput, match="unknown lab"):
        advisories.add(u, source="anssi", severity="high", owner=p["so"].account_id, summary="x", labs=["nope"])


def test_a_lab_sees_only_its_own_decided_advisories(world):
    """H2, I5: a lab's DPO and admin see the advisories naming their lab once telling the labs was
    decided yes, with references and decisions only (no sealed text, no other lab named); an open
    one, one decided no, and one naming only another lab stay out; a biologist and another lab's
    DPO see none of lab A's; a lab account cannot read the register itself."""
    gw, p = world
    told = _add(gw, p["so"], labs=(LAB_A, LAB_B))
    kept = _add(gw, p["so"], labs=(LAB_A,))
    other = _add(gw, p["so"], labs=(LAB_B,))
    _add(gw, p["so"], labs=(LAB_A,))  # still open
    with gw.unit(p["so"], Purpose.MONITORING) as u:
        advisories.assess(u, told.advisory_id, breach="yes", reasoning=LEAKED, notify_labs=True)
        advisories.assess(u, kept.advisory_id, breach="no", reasoning="rien", notify_labs=False)
        advisories.assess(u, other.advisory_id, breach="yes", reasoning="b", notify_labs=True)
    for who in ("dpo_a", "admin_a"):
        with gw.unit(p[who], Purpose.MONITORING) as u:
            seen = advisories.for_lab(u, LAB_A)
        assert [a.advisory_id for a in seen] == [told.advisory_id]
        assert seen[0].labs == (LAB_A,) and seen[0].summary is None and seen[0].assessment is None
        assert seen[0].breach == "yes"
    with gw.unit(p["dpo_b"], Purpose.MONITORING) as u:
        assert {a.advisory_id for a in advisories.for_lab(u, LAB_B)} == {told.advisory_id, other.advisory_id}
    with gw.unit(p["dpo_b"], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.for_lab(u, LAB_A)
    with gw.unit(p["bio_a"], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.for_lab(u, LAB_A)
    with gw.unit(p["dpo_a"], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.listing(u)
    with gw.unit(p["dpo_a"], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.show(u, told.advisory_id)
    with gw.unit(p["so"], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
        advisories.for_lab(u, LAB_A)  # the vendor reads the register, not a lab's view of it
    assert (LAB_A, "allowed", [told.advisory_id]) in _events(gw, "advisory:notice")
