"""``labvault bench monitor``: the rules on the audit stream, measured (H1 figures).

- ``events_per_s``: the shipped rules evaluated over N generated audit events, in batches of 5,000
  as the consumer reads them, on one core. The events are those of ordinary lab days: staff of
  three labs reading and writing results in their working hours from their own workstations,
  logins through the authentication service, a few vendor operations; no rule should fire on them.
- ``events_per_s_no_rules``: the same events only iterated and hashed (the floor of any pass).
- ``detection_p99_s`` (unless ``--no-latency``): events committed through a real gateway in a
  scratch home while a consumer polls every ``poll_s`` second (as ``serve --monitor-every 1``),
  timed from the commit to the sink's receipt of the finding.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from labvault.monitoring import rules as rules_mod
from labvault.monitoring.engine import Engine, Event

BATCH = 5000
LABS = ("lab-a", "lab-b", "lab-c")
_READS = ("patient:result:read", "patient:request:read", "specimen:timeline", "report:read")
_WRITES = ("patient:result:create", "result:validate", "result:enter", "patient:request:create", "labels:print")


def generate(n: int, *, seed: int = 16) -> list[Event]:
    """``n`` audit events of ordinary lab work (weekdays, 08:00-18:00 Paris), in time order."""
    rnd = random.Random(seed)
    start = datetime(2025, 3, 3, 7, 0, tzinfo=UTC).timestamp()  # a Monday, 08:00 in Paris
    staff = [(lab, f"{lab}-staff-{i}", rnd.choice(("biologist", "technician"))) for lab in LABS for i in range(40)]
    addr = {s[1]: f"10.{LABS.index(s[0])}.0.{i % 250 + 1}" for i, s in enumerate(staff)}
    seq = dict.fromkeys(LABS, 0)
    out: list[Event] = []
    at = start
    step = 36_000 / max(n, 1) * 5  # spread over five working days
    for _ in range(n):
        at += step * rnd.random() * 2
        day, offset = divmod(at - start, 36_000)
        when = start + (day % 5) * 86_400 + offset
        lab, actor, role = rnd.choice(staff)
        seq[lab] += 1
        x = rnd.random()
        if x < 0.04:
            out.append(
                Event(
                    lab,
                    seq[lab],
                    when,
                    "system:authentication",
                    "account:login",
                    "account",
                    "authentication",
                    "allowed",
                    None,
                    json.dumps([actor]),
                    addr[actor],
                )
            )
            continue
        action = rnd.choice(_READS) if x < 0.7 else rnd.choice(_WRITES)
        refs = json.dumps([f"p{rnd.randrange(20_000):05d}"]) if x < 0.7 else None
        out.append(Event(lab, seq[lab], when, actor, action, "result", "care", "allowed", role, refs, addr[actor]))
    out.sort(key=lambda e: e.at)
    return out


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("inf")


def evaluation(n: int) -> dict[str, Any]:
    events = generate(n)
    engine = Engine(rules_mod.shipped())
    began = time.perf_counter()
    findings = 0
    for i in range(0, n, BATCH):
        findings += len(engine.feed(events[i : i + BATCH]))
    spent = time.perf_counter() - began
    began = time.perf_counter()
    h = 0
    for e in events:
        h ^= hash(e)
    floor = time.perf_counter() - began
    return {
        "events": n,
        "events_per_s": _rate(n, spent),
        "events_per_s_no_rules": _rate(n, floor),
        "findings_on_ordinary_work": findings,
    }


def latency(samples: int = 20, poll_s: float = 1.0) -> dict[str, Any]:
    """Commit → finding received, through a real gateway and a consumer polling every ``poll_s``."""
    from labvault.access import Purpose
    from labvault.access.principal import MONITOR
    from labvault.bench.scratch import scratch
    from labvault.monitoring.consumer import Consumer

    with scratch("monitor", roles=("biologist",)) as sc:
        received: list[float] = []  # when the sink was handed each finding
        done = threading.Event()

        def sink(u, finding) -> str:
            if finding.rule_id == "audit-verification-failed":
                u.on_commit(lambda: received.append(time.perf_counter()))  # stored: its unit committed
            return finding.dedup_key

        rules = [r for r in rules_mod.shipped() if r.id == "audit-verification-failed"]
        consumer = Consumer(sc.gateway, MONITOR, rules, sink=sink)
        consumer.poll()
        thread = threading.Thread(
            target=consumer.run, kwargs={"interval": poll_s, "sweep_every": 3600, "stop": done.is_set}, daemon=True
        )
        thread.start()
        delays = []
        rnd = random.Random(5)
        try:
            for i in range(samples):
                time.sleep(rnd.random() * poll_s)
                before = len(received)
                with sc.gateway.unit(sc.admin, Purpose.MONITORING) as u:
                    u.audit(sc.lab, "audit:verify", "audit", 0, outcome="alert", refs=[f"sample-{i}"])
                committed = time.perf_counter()
                deadline = committed + 30
                while len(received) == before and time.perf_counter() < deadline:
                    time.sleep(0.005)
                if len(received) > before:
                    delays.append(received[-1] - committed)
        finally:
            done.set()
            thread.join(timeout=poll_s * 3)
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else None
    return {
        "detection_samples": len(delays),
        "detection_poll_s": poll_s,
        "detection_p50_s": round(delays[len(delays) // 2], 3) if delays else None,
        "detection_p99_s": round(p99, 3) if p99 is not None else None,
    }


def run_monitor(n: int, *, with_latency: bool = True, samples: int = 20) -> dict[str, Any]:
    out: dict[str, Any] = {"bench": "monitor", **evaluation(n)}
    if with_latency:
        out.update(latency(samples))
    out["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return out
