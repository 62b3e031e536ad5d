"""The 72-hour clock against a lab that would dodge it and against two monitoring processes at once
(I3): a notification dated before the lab's own awareness does not escape the reason for the
delay; a reminder already sent by another pass is not sent (nor recorded) twice."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.access.principal import MONITOR
from labvault.breach import incidents
from labvault.errors import InvalidInput
from labvault.monitoring import dispatch
from labvault.store import schema as t
from tests.breach.test_incidents import LAB_A, _admin_conn, _sim, world  # noqa: F401  (fixture)


def test_a_notification_dated_before_the_labs_awareness_is_refused(world):
    """I3 (GDPR Art. 33(1)): 80 hours after its awareness, a lab records the authority's notification
    dated the day before it became aware: refused (a notification cannot precede the awareness),
    so the reason for the delay cannot be dodged by the date; dated now it still needs the reason."""
    gw, p = world
    from labvault.ids import utcnow

    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        own = incidents.open_incident(u, title="Poste volé", aware_at=utcnow() - timedelta(hours=80), tenant=LAB_A)
    aware = own.part(LAB_A).aware_at
    with pytest.raises(InvalidInput, match="awareness"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_notified(own.incident_id, LAB_A, at=aware - timedelta(days=1), reference="CNIL-X")
    with pytest.raises(InvalidInput, match="reason for the delay"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_notified(own.incident_id, LAB_A, at=utcnow(), reference="CNIL-X")
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        assert u.incident(own.incident_id, LAB_A).part(LAB_A).state == "open"


def test_a_reminder_sent_by_another_pass_is_not_sent_twice(world, tmp_path):
    """I3, H1: two monitoring passes read the same clock (24 hours past); the second records its
    reminder after the first did: one reminder step, one alert, the count stays at one."""
    gw, p = world
    sim, start = _sim(tmp_path)
    with sim as clock:
        with gw.unit(p["admin_a"], Purpose.BREACH) as u:
            own = incidents.open_incident(u, title="Poste volé", aware_at=start - timedelta(hours=1), tenant=LAB_A)
        clock.advance(timedelta(hours=24))
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            stale = [x for x in u.incident_clocks() if x.incident_id == own.incident_id]  # the slow pass reads
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            sent = dispatch.remind_incidents(u)  # the quick pass sends the 24-hour reminder
        assert [r.kind for r in sent if r.incident_id == own.incident_id] == ["reminder-24h"]
        assert stale and incidents.due_hour(stale[0], clock.now) == 24
        with gw.unit(MONITOR, Purpose.MONITORING) as u:  # the slow pass goes on with what it read
            claimed = u.incident_claim_reminder(LAB_A, own.incident_id, 24)
        assert claimed is False
    with _admin_conn(gw) as conn:
        steps = [
            r.step
            for r in conn.execute(select(t.incident_step).where(t.incident_step.c.incident_id == own.incident_id))
        ]
        reminders = conn.execute(
            select(t.incident_lab.c.reminders).where(t.incident_lab.c.incident_id == own.incident_id)
        ).scalar_one()
    assert steps.count("reminder-24h") == 1 and reminders == 1


def test_a_lab_reads_its_own_severity_never_the_incidents_whole(world):
    """I5, I1: the processor's incident scores the whole leak (every lab's categories); a lab reading
    the incident (list, one incident) gets its own part's ENISA score, never the whole one, which
    names another lab's exposed categories (lab B's oncology)."""
    gw, p = world
    from labvault.ids import utcnow
    from tests.breach.test_incidents import LAB_B, _open

    inc = _open(gw, p["so"], utcnow())
    assert "oncology" in inc.severity["dpc_reason"]  # the vendor's whole view
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        seen = [u.incident(inc.incident_id, LAB_A), *u.incidents(LAB_A)]
    for one in seen:
        assert "oncology" not in str(one.public()) and LAB_B not in str(one.public())
        assert one.severity == one.part(LAB_A).severity and "hiv" in one.severity["dpc_reason"]


@contextmanager
def _writer(gw, tenant: str):
    """A transaction on the store as one lab (PostgreSQL: its row-level security scope)."""
    with gw.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT set_config('labvault.tenant', '{tenant}', true)")
        yield conn


def test_a_sealed_affected_list_copied_to_another_analysis_or_lab_does_not_open(world):
    """I4, C*: someone with write access to the database copies a sealed affected list (a
    ``leak_match`` row's ``patients_enc``) to another analysis of the same lab, or another lab's
    list into this lab's row: the lab's DPO gets a refusal, never the copied list (the seal is
    bound to the lab's key and to tenant + analysis)."""
    from sqlalchemy import update

    from labvault.errors import LabvaultError
    from tests.breach.test_incidents import ANALYSIS, LAB_B

    gw, p = world
    other = "b" * 32
    lm = t.leak_match
    with _writer(gw, LAB_A) as conn:
        row = conn.execute(select(lm).where(lm.c.tenant_id == LAB_A, lm.c.analysis_id == ANALYSIS)).first()
        conn.execute(lm.insert().values({**row._mapping, "analysis_id": other}))
    with _writer(gw, LAB_B) as conn:
        theirs = conn.execute(
            select(lm.c.patients_enc).where(lm.c.tenant_id == LAB_B, lm.c.analysis_id == ANALYSIS)
        ).scalar_one()
    with gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        assert u.affected_patients(LAB_A, ANALYSIS) == ["pat-a0", "pat-a2"]
    with pytest.raises(LabvaultError) as copied, gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.affected_patients(LAB_A, other)
    assert "does not open" in str(copied.value)  # the copied row is there: its seal refuses it
    with _writer(gw, LAB_A) as conn:
        conn.execute(
            update(t.leak_match)
            .where(t.leak_match.c.tenant_id == LAB_A, t.leak_match.c.analysis_id == ANALYSIS)
            .values(patients_enc=theirs)
        )
    with pytest.raises(LabvaultError) as moved, gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.affected_patients(LAB_A, ANALYSIS)
    assert "does not open" in str(moved.value)
