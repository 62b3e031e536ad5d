"""Audit events chained when their unit commits, and the writers of one process queued.

A unit reads first and takes the lab's write lock (SQLite's writer, PostgreSQL's advisory lock)
only to chain and insert its events at commit. Concurrent units of one process must still give one
unbroken chain per lab, with times that never go backwards; a unit that fails after taking the
lock must release it (or every later writer of the process waits until its timeout).
"""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from labvault.access import Purpose
from labvault.audit import service as audit
from tests.conftest import lab_user, make_lab


def _events(gw, lab: str) -> list[tuple[int, datetime, str]]:
    dpo = lab_user(gw, lab, "lab_dpo", name="Dpo")
    with gw.unit(dpo, Purpose.ADMINISTRATION) as u:
        rows = audit.search(u, lab, limit=10_000)
    return sorted((int(e["seq"]), e["at"], str(e["action"])) for e in rows)


def test_concurrent_units_give_one_chain_whose_times_never_go_back(gateway):
    """G1: eight threads, each many audited units on one lab: every event is in the chain once,
    sequence numbers without gap, times in order, and the chain verifies."""
    make_lab(gateway, "lab-a")
    bio = lab_user(gateway, "lab-a")
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(15):
                with gateway.unit(bio, Purpose.CARE) as u:
                    u.audit("lab-a", "patient:identity:search", "patient", 0)
                    u.audit("lab-a", "patient:identity:search", "patient", 0)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not failures, failures
    events = [e for e in _events(gateway, "lab-a") if e[2] == "patient:identity:search"]
    assert len(events) == 8 * 15 * 2
    seqs = [s for s, _, _ in _events(gateway, "lab-a")]
    assert seqs == list(range(1, len(seqs) + 1))
    times = [at for _, at, _ in _events(gateway, "lab-a")]
    assert times == sorted(times)
    with gateway.unit(lab_user(gateway, "lab-a", "lab_dpo", name="Dpo"), Purpose.ADMINISTRATION) as u:
        assert audit.verify_log(u, "lab-a", max_unsigned_age=None).ok


def test_a_unit_failing_after_its_events_releases_the_writer(gateway):
    """G1: a unit that fails after its events were chained (a read of the trail flushes them, under
    the lab's write lock) rolls back: its events are not written, and the process's writer is free:
    the next unit, from another thread, commits at once."""
    make_lab(gateway, "lab-a")
    bio = lab_user(gateway, "lab-a")
    dpo = lab_user(gateway, "lab-a", "lab_dpo", name="Dpo")

    def mine() -> list[tuple[int, datetime, str]]:
        return [e for e in _events(gateway, "lab-a") if e[2] in ("patient:identity:search", "patient:read")]

    with pytest.raises(RuntimeError):
        with gateway.unit(dpo, Purpose.ADMINISTRATION) as u:
            u.audit("lab-a", "patient:read", "patient", 0)
            audit.search(u, "lab-a")  # chains and inserts the unit's events: the writer is taken
            raise RuntimeError("the work failed")
    assert mine() == []
    if gateway.sqlite_writer is not None:
        assert gateway.sqlite_writer.acquire(timeout=1), "the failed unit kept the process's writer lock"
        gateway.sqlite_writer.release()
    done = threading.Event()

    def next_unit() -> None:
        with gateway.unit(bio, Purpose.CARE) as u:
            u.audit("lab-a", "patient:identity:search", "patient", 0)
        done.set()

    th = threading.Thread(target=next_unit)
    th.start()
    th.join(30)
    assert done.is_set()
    assert [a for _, _, a in mine()] == ["patient:identity:search"]
