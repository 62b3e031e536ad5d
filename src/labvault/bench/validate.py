"""``labvault bench validate``: judging results against a lab's catalogue and rules, per second.

A scratch home with one generated lab; the results of its patients read through the gateway
(``Unit.results_of``, per patient) are the "previous results". Then N generated results
(``results_stream``), each request given to one of the lab's patients, are judged: reference
range (by sex and age), flag, critical limit, delta check against that patient's previous result
of the same test (each new result dated two days after it, so the checks run), reflex tests,
calculated tests per request (eGFR, LDL), and the lab's activated auto-validation rules. The
baseline, in the same run, is the same loop with only a comparison of each value to the range the
result carries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from labvault.access import Purpose
from labvault.bench.scratch import scratch
from labvault.domain.models import LOINC
from labvault.lab import service
from labvault.lab.rules import Evaluator, Previous, autovalidate

SEED = 15
NEXT_DAYS = timedelta(days=2)
_NO_DATE = datetime(2024, 1, 2, 8, 0)

# The rule set the benchmark activates: every test released when present, in range, not critical,
# its delta check passed and not a correction; troponin never released automatically.
BENCH_RULES = """\
version = "bench-1"

[[rule]]
id = "AV-ALL"
tests = ["*"]
require = ["unit_matches", "in_reference_range", "no_critical", "delta_passed", "not_correction"]

[[rule]]
id = "AV-TROPI"
tests = ["TROPI"]
require = ["previous_present", "in_reference_range", "no_critical", "delta_passed", "not_correction"]
"""


def run_validate(
    n: int, *, patients: int = 200, on_progress: Callable[[str, int, int], None] | None = None
) -> dict[str, object]:
    from labvault.synth import LabGenerator, results_stream
    from labvault.synth.load import load_lab

    with scratch("validate", roles=("biologist",)) as sc:
        gw, lab = sc.gateway, sc.lab
        load_lab(gw, sc.admin, lab, patients=patients, seed=SEED)
        gen = LabGenerator(lab, SEED)
        people = [gen.patient(i).identity for i in range(patients)]
        ids = [p.patient_id for p in people]
        with gw.unit(sc.user, Purpose.CARE) as u:
            stored = service.write_rules(u, lab, BENCH_RULES)
            service.activate_rules(u, lab, stored.number)
        t0 = time.perf_counter()
        previous: dict[tuple[str, str], Previous] = {}
        read = 0
        with gw.unit(sc.user, Purpose.CARE) as u:
            catalogue = service.current_catalogue(u, lab).catalogue
            current = service.current_rules(u, lab)
            if current is None:
                raise RuntimeError("the benchmark's rules were not activated")
            rules = current.rules
            for k, pid in enumerate(ids):
                for r in u.results_of(lab, pid):
                    read += 1
                    if r.value_num is None:
                        continue
                    at = r.validated_at or r.message_at or _NO_DATE
                    key = (pid, r.code)
                    if key not in previous or previous[key].at <= at:
                        previous[key] = Previous(r.value_num, at)
                if on_progress:
                    on_progress("read", k + 1, len(ids))
        read_s = time.perf_counter() - t0

        results = list(results_stream(lab, SEED + 1, n))
        # each request to one patient; sex and age from the patient
        owner: dict[str, int] = {}
        for r in results:
            if r.request_id not in owner:
                owner[r.request_id] = len(owner) * 7919 % patients
        ev = Evaluator(catalogue)

        # the judged loop
        counts = {"released": 0, "held": 0, "critical": 0, "delta_fail": 0, "reflex": 0, "calculated": 0}
        t1 = time.perf_counter()
        i = 0
        while i < len(results):
            req = results[i].request_id
            who = owner[req]
            pid, sex, birth = ids[who], people[who].sex, people[who].birth_date
            values: dict[str, tuple[float, str | None]] = {}
            age = None
            while i < len(results) and results[i].request_id == req:
                r = results[i]
                i += 1
                prev = previous.get((pid, r.code))
                at = prev.at + NEXT_DAYS if prev is not None else (r.validated_at or _NO_DATE)
                if age is None:
                    age = (at.date() - birth).days / 365.25
                value = r.value_num if r.value_num is not None else r.value_text
                j = ev.judge(LOINC, r.code, value, r.unit, sex=sex, age=age, at=at, previous=prev)
                d = autovalidate(rules, j, correction=r.version > 1)
                counts["released" if d.released else "held"] += 1
                counts["critical"] += j.critical
                counts["delta_fail"] += j.delta.verdict == "fail"
                if j.code is not None:
                    counts["reflex"] += len(ev.reflexes(j.code, j.flag))
                    if r.value_num is not None:
                        values[j.code] = (r.value_num, r.unit)
            counts["calculated"] += sum(1 for c in ev.calculate(values, sex=sex, age=age) if c.value is not None)
        judged_s = time.perf_counter() - t1

        # the baseline: only the comparison of each value to the range the result carries
        t2 = time.perf_counter()
        outside = 0
        for r in results:
            v = r.value_num
            if v is not None and (
                (r.ref_low is not None and v < r.ref_low) or (r.ref_high is not None and v > r.ref_high)
            ):
                outside += 1
        base_s = time.perf_counter() - t2
        dialect = sc.dialect

    return {
        "bench": "validate",
        "results": n,
        "patients": patients,
        "previous_results_read": read,
        "read_s": round(read_s, 3),
        "catalogue": catalogue.version,
        "rules": rules.version,
        "judged_s": round(judged_s, 4),
        "results_per_s": round(n / judged_s) if judged_s > 0 else None,
        "baseline_results_per_s": round(n / base_s) if base_s > 0 else None,
        "baseline_outside_range": outside,
        **counts,
        "store": dialect,
    }
