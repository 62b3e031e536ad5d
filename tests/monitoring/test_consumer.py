"""The consumer of the audit stream (H1, G1): a durable cursor per lab, findings and cursor
committed together, windows warmed on start without raising again; the sweeps; on PostgreSQL, one
consumer sees every lab's events, each under its own lab's scope."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from labvault.access import Gateway, Principal, Purpose
from labvault.access.principal import MONITOR
from labvault.ids import utcnow
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.consumer import Consumer
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab
from tests.monitoring.events import ListSink

RULES = rules_mod.parse("[lab.lab-a.bulk-read]\ngte = 3\n[lab.lab-b.bulk-read]\ngte = 3\n", base=rules_mod.shipped())


def _read(gw: Gateway, who: Principal, lab: str, *patients: str) -> None:
    with gw.unit(who, Purpose.CARE) as u:
        for p in patients:
            u.audit(lab, "patient:result:read", "result", 1, refs=[p])


def _bulk(findings, lab="lab-a"):
    return [f for f in findings if f.rule_id == "bulk-read" and f.tenant_id == lab]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_cursor_is_durable(gateway):
    """H1: a second consumer (a restart) does not raise again what the first raised; what is
    committed after is seen, and updates the same alert."""
    make_lab(gateway, "lab-a")
    bio = lab_user(gateway, "lab-a")
    _read(gateway, bio, "lab-a", "pat-1", "pat-2", "pat-3")
    sink = ListSink()
    first = Consumer(gateway, MONITOR, RULES, sink=sink)
    found = _bulk(first.poll())
    assert len(found) == 1 and found[0].event_count == 3 and found[0].refs[0] == bio.account_id
    assert sink.findings == found
    first.release()  # it stops: the lease is given up

    again = ListSink()
    second = Consumer(gateway, MONITOR, RULES, sink=again)
    assert second.poll() == [] and again.findings == []
    _read(gateway, bio, "lab-a", "pat-4")
    later = _bulk(second.poll())
    assert len(later) == 1 and later[0].dedup_key == found[0].dedup_key and later[0].event_count == 4
    assert later[0].last_seq > found[0].last_seq


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_finding_lost_when_the_sink_fails(gateway):
    """H1: the sink fails, the unit rolls back with the cursor: the next poll raises the finding."""
    make_lab(gateway, "lab-a")
    bio = lab_user(gateway, "lab-a")
    _read(gateway, bio, "lab-a", "pat-1", "pat-2", "pat-3")

    def broken(u, finding):
        raise RuntimeError("the alert store is down")

    consumer = Consumer(gateway, MONITOR, RULES, sink=broken)
    with pytest.raises(RuntimeError):
        consumer.poll()
    sink = ListSink()
    consumer.sink = sink
    assert len(_bulk(consumer.poll())) == 1
    consumer.release()
    restarted = Consumer(gateway, MONITOR, RULES, sink=ListSink())
    assert len(_bulk(restarted.poll())) == 0 and not restarted.waiting


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_account_runs_the_consumer(gateway):
    """H1, G5: the stream of every lab is read by the platform's monitoring process only: no
    lab account, and no vendor account either (its security officer, its platform admin)."""
    from labvault.errors import AccessDenied
    from tests.access.conftest import vendor_user
    from tests.conftest import ADMIN

    make_lab(gateway, "lab-a")
    dpo = lab_user(gateway, "lab-a", "lab_dpo")
    for who in (dpo, ADMIN, vendor_user(gateway, "security_officer")):
        with pytest.raises(AccessDenied):
            Consumer(gateway, who, RULES, sink=ListSink()).poll()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sweeps(gateway, raw_engine):
    """H1: a package past its deadline, an overdue call-back and a trail left unsigned are found;
    on time, nothing."""
    make_lab(gateway, "lab-a")
    now = utcnow()
    with raw_engine.begin() as c:
        c.execute(
            insert(t.migration_job).values(
                tenant_id="lab-a",
                migration_id="mig-1",
                instruction_id="instr-1",
                kind="migration",
                state="packaged",
                plan="{}",
                planned_by="op",
                planned_at=now - timedelta(days=40),
                deadline=now - timedelta(days=1),
            )
        )
        c.execute(
            insert(t.migration_job).values(
                tenant_id="lab-a",
                migration_id="mig-2",
                instruction_id="instr-2",
                kind="migration",
                state="packaged",
                plan="{}",
                planned_by="op",
                planned_at=now,
                deadline=now + timedelta(days=30),
            )
        )
        c.execute(
            insert(t.callback_task).values(
                tenant_id="lab-a",
                task_id="cb-1",
                request_id="req-1",
                result_id="res-1",
                opened_at=now - timedelta(hours=2),
                due_at=now - timedelta(hours=1),
                state="open",
                key_version=1,
            )
        )
        c.execute(
            insert(t.callback_task).values(
                tenant_id="lab-a",
                task_id="cb-2",
                request_id="req-2",
                result_id="res-2",
                opened_at=now,
                due_at=now + timedelta(hours=1),
                state="open",
                key_version=1,
            )
        )
    found = {(f.rule_id, f.group): f for f in Consumer(gateway, MONITOR, RULES, sink=ListSink()).sweep()}
    assert ("package-overdue", "migration=mig-1") in found and ("package-overdue", "migration=mig-2") not in found
    assert found[("callback-overdue", "lab")].refs == ("cb-1",)
    assert not any(k[0] == "checkpoint-missing" for k in found)
    later = Consumer(gateway, MONITOR, RULES, sink=ListSink(), clock=lambda: utcnow() + timedelta(hours=27)).sweep()
    assert "lab-a" in {f.tenant_id for f in later if f.rule_id == "checkpoint-missing"}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_one_consumer_sees_every_lab(db_url, keyring, gateway):
    """H1, F1: on PostgreSQL with the application's tenant filter off (row-level security alone),
    the consumer reads each lab under its own scope: each lab's findings hold its own events."""
    for lab in ("lab-a", "lab-b"):
        make_lab(gateway, lab)
    a, b = lab_user(gateway, "lab-a"), lab_user(gateway, "lab-b")
    _read(gateway, a, "lab-a", "a-1", "a-2", "a-3")
    _read(gateway, b, "lab-b", "b-1", "b-2", "b-3", "b-4")
    rls_only = Gateway(gateway.engine, keyring, tenant_filter=False)
    found = Consumer(rls_only, MONITOR, RULES, sink=ListSink()).poll()
    fa, fb = _bulk(found, "lab-a"), _bulk(found, "lab-b")
    assert len(fa) == len(fb) == 1
    assert set(fa[0].refs[1:]) == {"a-1", "a-2", "a-3"} and set(fb[0].refs[1:]) == {"b-1", "b-2", "b-3", "b-4"}
    assert fa[0].refs[0] == a.account_id and fb[0].refs[0] == b.account_id
