"""The issue's recorded attack, replayed at the engine (H1): a support account reads 5,000
patients at 3 am, then asks for an export beyond its instruction."""

from __future__ import annotations

import time

from labvault.monitoring import rules
from labvault.monitoring.engine import Engine
from tests.monitoring.events import DAY, NIGHT, ev, reads


def _attack():
    night = reads(5000, at=NIGHT, step=0.5, actor="sup-1", roles="support", purpose="support", addr="192.0.2.50")
    end = NIGHT + 2600
    night += [
        ev(
            "instruction:excess",
            at=end,
            actor="sup-1",
            roles="support",
            outcome="alert",
            refs=["instr-1"],
            purpose="export",
            object_type="instruction",
            addr="192.0.2.50",
        ),
        ev(
            "export:records",
            at=end,
            actor="sup-1",
            roles="support",
            outcome="denied",
            refs=["instr-1"],
            purpose="export",
            object_type="instruction",
            addr="192.0.2.50",
        ),
    ]
    return night


def test_the_attack_raises_bulk_read_off_hours_and_refused_export():
    """H1: bulk read (lab-wide and vendor thresholds), off-hours reads and the refused export,
    each once for the support account, in the lab concerned; references only."""
    engine = Engine(rules.shipped())
    found = {}
    events = _attack()
    for i in range(0, len(events), 1000):  # in batches, as the consumer reads them
        for f in engine.feed(events[i : i + 1000]):
            found.setdefault(f.rule_id, []).append(f)
    assert {"bulk-read", "bulk-read-vendor", "off-hours-read", "export-refused"} <= set(found)
    assert "shared-account" not in found  # one address
    for rule_id in ("bulk-read", "bulk-read-vendor", "off-hours-read", "export-refused"):
        assert {f.dedup_key for f in found[rule_id]} == {f"{rule_id}:actor=sup-1"}
        assert all(f.tenant_id == "lab-a" for f in found[rule_id])
    last = found["bulk-read"][-1]
    assert last.event_count == 5000 and last.refs[0] == "sup-1"
    assert all(r == "sup-1" or r.startswith("pat-") for r in last.refs)


def test_the_same_reads_by_day_by_a_biologist_raise_only_the_bulk_read():
    """H1: the off-hours and vendor rules need the night and the vendor role."""
    found = {f.rule_id for f in Engine(rules.shipped()).feed(reads(5000, at=DAY, step=0.5))}
    assert found == {"bulk-read"}


def test_evaluation_is_fast_enough():
    """H1 figure: rule evaluation of ordinary events well above 50,000 events/s on one core
    (checked loosely here, at 20,000/s; ``labvault bench monitor`` measures it)."""
    events = reads(50_000, step=0.1, addr="192.0.2.1")
    engine = Engine(rules.shipped())
    began = time.perf_counter()
    engine.feed(events)
    assert 50_000 / (time.perf_counter() - began) > 20_000
