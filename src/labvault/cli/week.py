"""A generated working week of synthetic labs, for the monitoring's own check (issue 16; H1, G5).

``simulate`` creates a new home (a directory that must not exist yet: never the user's), three
synthetic labs and their named staff, then drives each lab's days through the access gateway as
the workflow does (``labvault.lab.work``, ``labvault.lab.reports``, the analyser's messages through
``labvault.ingest``):

- reception (a technician) looks the patient up (a returning patient: a name search, then the
  identity) or records a new one, enters the request with tests from the catalogue, prints its
  labels and receives its specimens when they reach the lab;
- the bench (a technician) puts each specimen in analysis: the analyser's ORU^R01 names the
  specimen by its barcode (SPM-2) and goes through ingest on the lab's feed account; qualitative
  tests, and tests a reflex rule added, are entered by hand; most values are normal, some abnormal,
  a few critical (their call-back task is closed by the biologist on duty within its deadline);
- worklists: a technician validates technically what waits for it, the biologist on duty reviews
  each request (its results, and the patient's earlier results when a value is abnormal),
  validates biologically and issues the report; some reports are read again (the patient at the
  desk, the prescriber on the phone);
- the lab's DPO reviews the day before each morning (``labvault.monitoring.explained``);
- each night, what ``labvault serve`` schedules: every trail's signed checkpoint, the retention run;
  every hour, the monitoring consumer (the shipped rules) and its sweeps.

Staff read only what their work needs: no random reads. Time is simulated
(``labvault.ids.simulated_clock``): the days run in minutes, each event carries the simulated
time, and the clock only moves forward (each lab's chain keeps non-decreasing times).

After the week: the consumer drains and sweeps as of the simulated end, and each lab's DPO digest
gives the explained share per day. The setup (labs, accounts, the loaded history) is not the
week: its findings (accounts created raise ``privilege-change``, as they should) are counted apart.
"""

from __future__ import annotations

import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from labvault.access import Purpose
from labvault.access.principal import Principal
from labvault.crypto import tokens
from labvault.domain.hours import Hours, parse_hours
from labvault.domain.models import LOINC, Identity, ResultStatus, Sensitivity, SpecimenStatus, Workflow
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import InvalidInput
from labvault.ids import SIMULATION_MARKER, SimulatedClock, simulated_clock, utcnow

if TYPE_CHECKING:
    from labvault.lab.catalogue import Catalogue, Test
    from labvault.monitoring.consumer import Consumer
    from labvault.monitoring.findings import Finding
    from labvault.runtime import Runtime

ZONE = "Europe/Paris"
# The labs' own opening hours: the first two keep the default (labvault.domain.hours), the third
# set its own (a lab that opens later and closes earlier).
HOURS = (None, None, "mon-fri 07:30-19:00; sat 08:00-12:30")
PATIENTS_LOADED = 120  # each lab's history: patients with earlier requests (returning patients)
RETURNING = 0.35  # share of the day's patients who came before
ABNORMAL = 0.08  # share of values just outside the reference range
CRITICAL_REQUESTS = 0.02  # share of requests with one critical value
REPORT_READ_AGAIN = 0.3
INTRUSION_PATIENTS = 40  # --intrusion: patients a support account reads one by one at 3 am
ANALYSER_SECTIONS = frozenset({"biochimie", "hematologie", "hemostase", "immunoanalyse"})
# What prescribers ask (local codes or panels of the default catalogue), and how often a request
# holds each; calculated tests (eGFR, LDL) are computed into the request, never ordered.
ORDERS: tuple[tuple[str, float], ...] = (
    ("NFS", 0.45),
    ("IONO", 0.35),
    ("BILAN_RENAL", 0.3),
    ("GLY", 0.25),
    ("CRP", 0.2),
    ("BILAN_LIPIDIQUE", 0.15),
    ("BILAN_HEPATIQUE", 0.12),
    ("TSH", 0.15),
    ("HBA1C", 0.08),
    ("FERR", 0.1),
    ("VITD", 0.07),
    ("HEMOSTASE", 0.06),
    ("PSA", 0.04),
    ("HEPATITE_B", 0.03),
)
# No HIV serology: by default only biologists read HIV results (access.policy.DEFAULT_SENSITIVE_ACCESS),
# so its bench is a biologist's, which this week does not model.


@dataclass
class Staff:
    technicians: list[Principal]
    biologists: list[Principal]
    admin: Principal
    dpo: Principal
    feed: Principal


@dataclass
class Req:
    """One request of the week, as the simulation follows it (ids only, and the generated identity
    the analyser's message repeats)."""

    lab: str
    request_id: str
    patient_id: str
    identity: Identity
    entered_by: Principal
    specimens: tuple[tuple[str, str, str], ...]  # (id, container, type)
    results: dict[str, str]  # result id -> LOINC code
    critical: str | None  # the LOINC code whose value is critical, if any
    returning: bool


@dataclass
class LabSim:
    tenant: str
    hours: Hours
    staff: Staff
    rng: random.Random
    pool: list[Identity]  # patients the lab knows (returning ones are drawn from it)
    new_patients: Any  # LabGenerator of the week's new patients
    next_new: int = 0
    reqs: dict[str, Req] = field(default_factory=dict)


@dataclass
class LabFigures:
    tenant: str
    events: int = 0
    accesses: int = 0
    explained: int = 0
    requests: int = 0
    results: int = 0
    reports: int = 0
    callbacks: int = 0
    alerts_by_rule: Counter[str] = field(default_factory=Counter)
    unexplained_by_reason: Counter[str] = field(default_factory=Counter)
    days: list[dict[str, Any]] = field(default_factory=list)

    @property
    def explained_pct(self) -> float:
        return 100.0 if self.accesses == 0 else 100.0 * self.explained / self.accesses


@dataclass
class WeekResult:
    home: Path
    days: int
    start: date
    labs: list[LabFigures]
    alerts_by_rule: Counter[str]
    setup_findings: Counter[str]
    wall_s: float

    @property
    def events(self) -> int:
        return sum(x.events for x in self.labs)

    @property
    def accesses(self) -> int:
        return sum(x.accesses for x in self.labs)

    @property
    def explained_pct(self) -> float:
        n = self.accesses
        return 100.0 if n == 0 else 100.0 * sum(x.explained for x in self.labs) / n

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_rule.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "labs": len(self.labs),
            "events": self.events,
            "accesses": self.accesses,
            "explained_pct": round(self.explained_pct, 2),
            "alerts": self.alerts,
            "alerts_by_rule": dict(sorted(self.alerts_by_rule.items())),
        }


# -- the home ---------------------------------------------------------------------------------------


def new_home(path: Path | None) -> Path:
    """A new directory for the simulation (a temporary one by default), marked as the simulation's.
    A directory that exists already is refused: the simulation never writes into a real home."""
    import tempfile

    if path is None:
        home = Path(tempfile.mkdtemp(prefix="labvault-simulate-"))
    else:
        home = Path(path)
        try:
            home.mkdir(mode=0o700, parents=False, exist_ok=False)
        except FileExistsError:
            raise InvalidInput("--home: this directory exists; the simulation creates its own, new home") from None
        except OSError as exc:
            raise InvalidInput(f"--home: cannot create it ({type(exc).__name__})") from None
    (home / SIMULATION_MARKER).write_text("created by labvault simulate: synthetic labs only\n", encoding="utf-8")
    return home


def last_monday(today: date) -> date:
    """The Monday of the last whole week before ``today``."""
    return today - timedelta(days=today.weekday() + 7)


# -- values ---------------------------------------------------------------------------------------------


def _range(test: Test, sex: str, age: float) -> tuple[float | None, float | None]:
    best = None
    for r in test.ranges:
        if r.sex is not None and r.sex != sex:
            continue
        if r.age_min is not None and age < r.age_min:
            continue
        if r.age_max is not None and age >= r.age_max:
            continue
        if r.pregnant:
            continue
        if best is None or r.specificity > best.specificity:
            best = r
    return (best.low, best.high) if best is not None else (None, None)


def _value(rng: random.Random, test: Test, sex: str, age: float, how: str) -> str:
    """A value of ``test`` as the analyser or the technician writes it: ``how`` is normal,
    abnormal or critical."""
    if test.kind == "qualitative":
        normal = test.normal_values[0] if test.normal_values else "Négatif"
        return "Positif" if how != "normal" else normal
    low, high = _range(test, sex, age)
    if low is None and high is None:
        low, high = 1.0, 10.0
    if low is None:
        low = 0.2 * (high or 1.0)
    if high is None:
        high = 1.8 * low if low > 0 else 1.0
    span = high - low
    if how == "critical" and test.critical_high is not None:
        v = test.critical_high * rng.uniform(1.02, 1.1)
    elif how == "critical" and test.critical_low is not None:
        v = test.critical_low * rng.uniform(0.85, 0.97)
    elif how != "normal":
        if rng.random() < 0.6:
            top = test.critical_high if test.critical_high is not None else high * 1.4
            v = high + (top - high) * rng.uniform(0.1, 0.4)
        else:
            bottom = test.critical_low if test.critical_low is not None else low * 0.6
            v = low - (low - bottom) * rng.uniform(0.1, 0.4)
    else:
        v = rng.uniform(low + 0.1 * span, high - 0.1 * span)
    decimals = test.decimals if test.decimals is not None else 2
    return f"{max(v, 0.0):.{decimals}f}"


def _age(born: date, on: date) -> float:
    return max((on - born).days, 0) / 365.25


# -- the simulation --------------------------------------------------------------------------------------


class Week:
    """The scheduler of the simulated week: tasks at simulated times, run in order."""

    def __init__(
        self,
        rt: Runtime,
        clock: SimulatedClock,
        labs: list[LabSim],
        catalogue: Catalogue,
        consumer: Consumer,
        *,
        requests_per_day: int | None,
        seed: int,
    ) -> None:
        self.rt, self.gw, self.clock = rt, rt.gateway, clock
        self.labs = {x.tenant: x for x in labs}
        self.cat = catalogue
        self.consumer = consumer
        self.requests_per_day = requests_per_day
        self.seed = seed
        self._queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self._n = itertools.count()
        self.findings: list[Finding] = []
        self.counts: dict[str, Counter[str]] = {x.tenant: Counter() for x in labs}
        self.zone = ZoneInfo(ZONE)

    # -- the queue ------------------------------------------------------------------------------
    def at(self, when: datetime, task: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (max(when, self.clock.now), next(self._n), task))

    def run_until(self, end: datetime) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, task = heapq.heappop(self._queue)
            self.clock.move_to(when)
            task()
        self.clock.move_to(end)

    def local(self, day: date, hour: float) -> datetime:
        """Hour ``hour`` (fractional) of ``day`` in the labs' time zone, as UTC."""
        midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
        return (midnight + timedelta(minutes=round(hour * 60))).astimezone(UTC)

    def is_open(self, lab: LabSim, at: datetime) -> bool:
        return lab.hours.open_at(at.astimezone(self.zone))

    def unit(self, who: Principal, purpose: Purpose = Purpose.CARE):
        return self.gw.unit(who, purpose)

    # -- the days -------------------------------------------------------------------------------
    def plan_day(self, day: date) -> None:
        for lab in self.labs.values():
            spans = lab.hours.days[day.weekday()]
            if not spans:
                continue
            opens = min(s for s, _ in spans) / 60
            closes = max(e for _, e in spans) / 60
            self._plan_lab_day(lab, day, opens, closes)

    def _plan_lab_day(self, lab: LabSim, day: date, opens: float, closes: float) -> None:
        rng = lab.rng
        saturday = day.weekday() == 5
        n = self.requests_per_day if self.requests_per_day is not None else rng.randint(40, 120)
        if saturday:
            n = max(1, n // 2)
        # The DPO reviews the day before, early in the morning.
        self.at(self.local(day, opens + 0.5), lambda: self.dpo_review(lab, day - timedelta(days=1)))
        # Patients: most in the morning (fasting blood tests), the rest until two hours before closing.
        last_arrival = max(opens + 0.5, closes - 2.5)
        morning_end = min(opens + 4, last_arrival)
        for _ in range(n):
            if rng.random() < 0.7:
                hour = rng.uniform(opens + 0.25, morning_end)
            else:
                hour = rng.uniform(opens + 0.25, last_arrival)
            self.at(self.local(day, hour), lambda: self.arrive(lab))
        # Worklists: technical validation every 45 min, biological every hour, until closing.
        hour = opens + 1.0
        k = 0
        while hour < closes - 0.25:
            tech = lab.staff.technicians[k % len(lab.staff.technicians)]
            self.at(self.local(day, hour), partial(self.technical_round, lab, tech))
            hour += 0.75
            k += 1
        hour = opens + 1.5
        while hour < closes - 0.1:
            self.at(self.local(day, hour), lambda: self.biological_round(lab))
            hour += 1.0

    def on_duty(self, lab: LabSim) -> Principal:
        """The biologist on duty: the first in the morning, the second from 13:00 (lab time)."""
        local = self.clock.now.astimezone(self.zone)
        bios = lab.staff.biologists
        return bios[0] if local.hour < 13 else bios[1 % len(bios)]

    # -- a patient at the desk ------------------------------------------------------------------
    def _tests(self, rng: random.Random) -> list[Test]:
        from labvault.lab import work

        codes: list[str] = []
        while not codes:
            for code, p in ORDERS:
                if rng.random() < p:
                    codes.append(code)
        tests: dict[str, Test] = {}
        for code in codes:
            panel = next((p for p in self.cat.panels if p.code == code), None)
            for c in panel.tests if panel is not None else (code,):
                test = self.cat.test(c)
                if test is not None and not test.calculation:
                    tests[test.code] = test
        _ = work  # the tests are ordered through work.ordered_test by the caller
        return list(tests.values())

    def arrive(self, lab: LabSim) -> None:
        from labvault.lab import work

        rng = lab.rng
        tech = lab.staff.technicians[0] if rng.random() < 0.7 else rng.choice(lab.staff.technicians)
        returning = bool(lab.pool) and rng.random() < RETURNING
        tests = self._tests(rng)
        critical = None
        if rng.random() < CRITICAL_REQUESTS:
            with_limits = [t for t in tests if t.critical_high is not None or t.critical_low is not None]
            critical = rng.choice(with_limits).loinc if with_limits else None
        collected = self.clock.now - timedelta(minutes=rng.randint(5, 20))
        with self.unit(tech) as u:
            if returning:
                ident = rng.choice(lab.pool)
                found = u.find_patients_by_name(
                    lab.tenant, ident.family_name, ident.given_names.split(" ")[0], ident.birth_date
                )
                pid = found[0].patient_id if found else ident.patient_id
                u.get_patient(lab.tenant, pid)
            else:
                ident = lab.new_patients.patient(lab.next_new).identity
                lab.next_new += 1
                u.add_patients(lab.tenant, [ident])
                pid = ident.patient_id
                lab.pool.append(ident)
            entered = work.enter_request(
                u,
                lab.tenant,
                pid,
                [work.ordered_test(t) for t in tests],
                collected_at=collected,
                collector=tech.name,
                urgent=rng.random() < 0.1,
            )
            u.audit(lab.tenant, "labels:print", "specimen", len(entered.specimens), refs=[entered.request_id])
        req = Req(
            lab.tenant,
            entered.request_id,
            pid,
            ident,
            tech,
            entered.specimens,
            dict(entered.results),
            critical,
            returning,
        )
        lab.reqs[req.request_id] = req
        self.counts[lab.tenant]["requests"] += 1
        self.at(self.clock.now + timedelta(minutes=rng.randint(5, 20)), lambda: self.receive(lab, req))

    def receive(self, lab: LabSim, req: Req) -> None:
        from labvault.lab import work

        tech = lab.staff.technicians[0]
        with self.unit(tech) as u:
            for specimen_id, _, _ in req.specimens:
                work.receive(u, lab.tenant, specimen_id)
        for k, specimen in enumerate(req.specimens):
            later = self.clock.now + timedelta(minutes=lab.rng.randint(20, 60) + 5 * k)
            self.at(later, partial(self.analyse, lab, req, specimen))

    # -- the bench -----------------------------------------------------------------------------
    def analyse(self, lab: LabSim, req: Req, specimen: tuple[str, str, str]) -> None:
        from labvault.ingest import service as ingest
        from labvault.lab import work

        rng = lab.rng
        specimen_id, container, _ = specimen
        techs = lab.staff.technicians
        bench = techs[1 % len(techs)] if rng.random() < 0.6 else techs[2 % len(techs)]
        ident = req.identity
        age = _age(ident.birth_date, self.clock.now.date())
        by_loinc = {t.loinc: t for t in self.cat.tests}
        mine = [
            (rid, by_loinc[code])
            for rid, code in req.results.items()
            if code in by_loinc and by_loinc[code].container == container
        ]

        def how(test: Test) -> str:
            if req.critical == test.loinc:
                return "critical"
            return "abnormal" if rng.random() < ABNORMAL else "normal"

        # A sensitive category (PSA: oncology) is entered at the bench: the feed's service account
        # may not write into one (access.policy.DEFAULT_SENSITIVE_ACCESS names lab people only).
        machine = [
            (rid, t)
            for rid, t in mine
            if t.kind != "qualitative"
            and t.section in ANALYSER_SECTIONS
            and sensitivity_of(LOINC, t.loinc) is Sensitivity.OTHER
        ]
        by_hand = [(rid, t) for rid, t in mine if (rid, t) not in machine]
        with self.unit(bench) as u:
            work.move(u, lab.tenant, specimen_id, SpecimenStatus.IN_ANALYSIS)
        if machine:
            values = [(t, _value(rng, t, ident.sex, age, how(t))) for _, t in machine]
            message = _oru(ident, specimen_id, values, self.clock.now, next(self._n))
            summary = ingest.Summary("analyser.hl7", "hl7v2")
            ing = ingest.Ingestor(self.gw, lab.staff.feed, lab.tenant, feed="mllp")
            ing.ingest_pieces(ingest.read(message, file="analyser.hl7"), summary)
            if summary.accepted != 1:
                raise RuntimeError(f"the analyser's message was not matched: {summary.reasons[:1]}")
        with self.unit(bench) as u:
            for rid, test in by_hand:
                work.enter_result(u, lab.tenant, rid, _value(rng, test, ident.sex, age, how(test)), test.unit)
            # What a reflex rule added to the request waits for a value: entered by hand, normal.
            for r in u.results_of_request(lab.tenant, req.request_id):
                if r.workflow == Workflow.ORDERED and r.status not in (ResultStatus.CANCELLED,):
                    added = by_loinc.get(r.code)
                    if added is not None and added.container == container and not added.calculation:
                        value = _value(rng, added, ident.sex, age, "normal")
                        work.enter_result(u, lab.tenant, r.result_id, value, added.unit)
            work.move(u, lab.tenant, specimen_id, SpecimenStatus.STORED)
        if req.critical is not None and any(t.loinc == req.critical for _, t in mine):
            self.at(self.clock.now + timedelta(minutes=rng.randint(5, 20)), lambda: self.callbacks(lab))

    def callbacks(self, lab: LabSim) -> None:
        """The biologist on duty calls the prescriber about each critical value, reads it back."""
        bio = self.on_duty(lab)
        with self.unit(bio) as u:
            for task in u.callbacks(lab.tenant):
                if task.state == "open":
                    u.close_callback(lab.tenant, task.task_id, "prescripteur (appel)", True)
                    self.counts[lab.tenant]["callbacks"] += 1

    # -- the worklists --------------------------------------------------------------------------
    def technical_round(self, lab: LabSim, tech: Principal) -> None:
        from labvault.lab import work

        with self.unit(tech) as u:
            waiting = u.waiting_results(lab.tenant, [Workflow.ENTERED], limit=5000)
            ids = [r.result_id for r in waiting]
            for k in range(0, len(ids), 500):
                work.validate_technical(u, lab.tenant, ids[k : k + 500])

    def biological_round(self, lab: LabSim) -> None:
        from labvault.lab import reports, work

        bio = self.on_duty(lab)
        with self.unit(bio) as u:
            waiting = u.waiting_results(lab.tenant, [Workflow.TECHNICAL], limit=5000)
        requests = sorted({r.request_id for r in waiting})
        for request_id in requests:
            req = lab.reqs.get(request_id)
            with self.unit(bio) as u:
                results = u.results_of_request(lab.tenant, request_id)
                abnormal = any(r.flag not in (None, "N") for r in results)
                if abnormal and req is not None and req.returning:
                    u.results_of(lab.tenant, req.patient_id)  # the patient's earlier results
                ids = [r.result_id for r in results if r.workflow == Workflow.TECHNICAL]
                if ids:
                    work.validate_biological(u, lab.tenant, ids)
                    self.counts[lab.tenant]["results"] += len(ids)
                done = all(
                    r.workflow in (Workflow.BIOLOGICAL, Workflow.AUTO_RELEASED) or r.result_id in ids
                    for r in results
                    if r.status not in (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)
                )
                if done:
                    reports.issue_report(u, lab.tenant, request_id)
                    self.counts[lab.tenant]["reports"] += 1
            if done and req is not None and lab.rng.random() < REPORT_READ_AGAIN:
                later = self.clock.now + timedelta(minutes=lab.rng.randint(30, 240))
                if self.is_open(lab, later):
                    self.at(later, partial(self.read_again, lab, req))

    def read_again(self, lab: LabSim, req: Req) -> None:
        """The patient at the desk (the technician who entered the request prints the report again),
        or the prescriber on the phone (the biologist on duty, who validated it or not)."""
        from labvault.lab import reports

        who = req.entered_by
        with self.unit(who) as u:
            try:
                reports.current_report(u, lab.tenant, req.request_id)
            except InvalidInput:
                return  # a result changed since: the next report is the biologist's

    # -- the DPO, the night ---------------------------------------------------------------------
    def dpo_review(self, lab: LabSim, day: date) -> None:
        from labvault.monitoring import explained

        with self.unit(lab.staff.dpo, Purpose.MONITORING) as u:
            explained.digest(u, lab.tenant, day)

    def checkpoints(self) -> None:
        """What ``labvault serve`` schedules (every hour there; every six hours here, which the
        checkpoint sweep's 26 hours allow): a signed checkpoint of every trail."""
        from labvault.audit import service as audit
        from labvault.crypto.keys import PLATFORM

        for lab in (PLATFORM, *self.labs):
            try:
                with self.rt.unit(Purpose.ADMINISTRATION) as u:
                    audit.checkpoint(u, lab)
            except InvalidInput:
                continue  # no event yet

    def night(self) -> None:
        """What ``labvault serve`` schedules at night: the retention run, then the checkpoints."""
        from labvault.retention import purge

        _, failed = purge.run_all(self.gw, self.rt.operator, now=utcnow())
        if failed:
            raise RuntimeError(f"retention run failed for {', '.join(sorted(failed))}")
        for lab in self.labs.values():  # patients whose last request passed its period are gone
            with self.gw.unit(self.rt.operator, Purpose.GENERATE) as u:  # ids only, nothing decrypted
                kept = u.stored_patient_ids(lab.tenant, [p.patient_id for p in lab.pool])
            lab.pool = [p for p in lab.pool if p.patient_id in kept]
        self.checkpoints()

    def monitor(self) -> None:
        """The consumer's poll and sweeps, as ``labvault serve`` runs them."""
        self.findings.extend(self.consumer.drain())
        self.findings.extend(self.consumer.sweep())


def _oru(ident: Identity, barcode: str, values: list[tuple[Test, str]], now: datetime, n: int) -> bytes:
    """The analyser's ORU^R01: the specimen named by its barcode (SPM-2), the patient's traits as
    the middleware had them from the order, one OBX per test."""
    stamp = now.strftime("%Y%m%d%H%M%S")
    given = ident.given_names.split(" ")[0]
    lines = [
        f"MSH|^~\\&|ANALYSER|AU5800^1.2.250.1.999^ISO|LIS|LAB|{stamp}+0000||ORU^R01^ORU_R01|SIM-{n}|P|2.5.1",
        f"PID|1||||{ident.family_name}^{given}^^^^^L||{ident.birth_date:%Y%m%d}|{ident.sex}",
        f"OBR|1|||{values[0][0].loinc}^{values[0][0].label_en}^LN|||{stamp}",
    ]
    for k, (test, value) in enumerate(values, start=1):
        lines.append(f"OBX|{k}|NM|{test.loinc}^{test.label_en}^LN||{value}|{test.unit or ''}^^UCUM|||||F")
    lines.append(f"SPM|1|{barcode}||SER^Serum^HL70487")
    return ("\r".join(lines) + "\r").encode()


# -- setup ------------------------------------------------------------------------------------------------


def _staff(rt: Runtime, tenant: str, k: int) -> Staff:
    """The lab's people: invited lab_admin (by the platform), who adds the rest, as in production."""
    from labvault.accounts import service

    addr = f"10.{k + 1}.0"
    people: dict[str, list[Principal]] = {}

    def add(by: Principal, role: str, name: str, email: str, n: int, *, kind: str = "person") -> Principal:
        with rt.gateway.unit(by, Purpose.ADMINISTRATION) as u:
            extra = {"kind": "service", "purpose": "ingest"} if kind == "service" else {}
            acct = service.create_account(u, tenant_id=tenant, name=name, email=email, roles=[role], **extra)
        if kind == "person":  # the person enrols (a password nobody needs again: no one logs in here)
            with rt.gateway.auth_unit(source_addr=f"{addr}.{10 + n}", user_agent="labvault-web") as u:
                service.enrol_directly(u, email, tokens.new_token()[:24] + "-Aa1!")
        p = Principal(
            acct.account_id,
            name,
            tenant,
            frozenset({role}),
            kind,
            source_addr=f"{addr}.{10 + n}",
            user_agent="labvault-web" if kind == "person" else "analyser-middleware",
        )
        people.setdefault(role, []).append(p)
        return p

    admin = add(rt.operator, "lab_admin", f"Paul Lefebvre ({tenant})", f"lab-admin@{tenant}.sim.invalid", 0)
    for n, name in enumerate(("Léa Girard", "Hugo Martin", "Chloé Bernard"), start=1):
        add(admin, "technician", f"{name} ({tenant})", f"technician{n}@{tenant}.sim.invalid", n)
    for n, name in enumerate(("Dr Claire Moreau", "Dr Julien Dumas"), start=4):
        add(admin, "biologist", f"{name} ({tenant})", f"biologist{n - 3}@{tenant}.sim.invalid", n)
    dpo = add(admin, "lab_dpo", f"Nadia Benali ({tenant})", f"dpo@{tenant}.sim.invalid", 6)
    feed = add(admin, "service", "Analyser middleware feed", f"feed@{tenant}.sim.invalid", 7, kind="service")
    return Staff(people["technician"], people["biologist"], admin, dpo, feed)


def _setup(rt: Runtime, n_labs: int, seed: int) -> list[LabSim]:
    from labvault.synth import LabGenerator
    from labvault.synth.load import SYNTHETIC_RETENTION, ensure_labs, load_lab

    tenants = ensure_labs(rt.gateway, rt.operator, n_labs, retention=SYNTHETIC_RETENTION)
    labs = []
    for k, tenant in enumerate(tenants):
        staff = _staff(rt, tenant, k)
        own = HOURS[k % len(HOURS)]
        if own is not None:
            with rt.gateway.unit(staff.admin, Purpose.ADMINISTRATION) as u:
                u.set_lab_details(tenant, working_hours=own)
        with rt.unit(Purpose.ADMINISTRATION) as u:
            hours = parse_hours(u.tenant(tenant).working_hours)
        load_lab(rt.gateway, rt.operator, tenant, patients=PATIENTS_LOADED, seed=seed)
        history = LabGenerator(tenant, seed)
        pool = [history.patient(i).identity for i in range(PATIENTS_LOADED)]
        labs.append(
            LabSim(
                tenant,
                hours,
                staff,
                random.Random(f"{seed}:{tenant}"),
                pool,
                LabGenerator(tenant, seed + 1000),
            )
        )
    return labs


def _events_in(rt: Runtime, tenant: str) -> int:
    """How many events the lab's trail holds (the simulation's home is new: all of them are the week's)."""
    with rt.unit(Purpose.ADMINISTRATION) as u:
        return sum(1 for _ in u.trail_rows(tenant, ("seq",)))


def simulate(
    *,
    days: int = 7,
    labs: int = 3,
    seed: int = 1,
    home: Path | None = None,
    requests_per_day: int | None = None,
    start: date | None = None,
    intrusion: bool = False,
    progress: Callable[[str], None] | None = None,
) -> WeekResult:
    """H1, G5: the generated week (see the module's docstring), its alerts and explained share."""
    from labvault.config import Settings
    from labvault.monitoring import explained, rules
    from labvault.monitoring.consumer import Consumer
    from labvault.runtime import init_home, open_runtime

    if not 1 <= days <= 31:
        raise InvalidInput("--days: from 1 to 31")
    if not 1 <= labs <= 8:
        raise InvalidInput("--labs: from 1 to 8")
    if requests_per_day is not None and not 1 <= requests_per_day <= 1000:
        raise InvalidInput("--requests-per-day: from 1 to 1000")
    first = start or last_monday(datetime.now(UTC).date())
    if first.weekday() != 0:
        raise InvalidInput("--start: a Monday")
    began = time.monotonic()
    say = progress or (lambda _: None)
    home = new_home(home)
    zone = ZoneInfo(ZONE)
    setup_at = datetime.combine(first - timedelta(days=1), datetime.min.time(), zone).replace(hour=9)
    settings = Settings(home=home, passphrase=tokens.new_token())
    with simulated_clock(setup_at.astimezone(UTC), home=home) as clock, _reports_as_html():
        init_home(settings, "Simulation operator", "operator@simulation.invalid")
        rt = open_runtime(settings)
        try:
            say("setting up the labs")
            sims = _setup(rt, labs, seed)
            catalogue = _catalogue()
            consumer = Consumer(rt.gateway, rt.monitor, rules.shipped())
            week = Week(rt, clock, sims, catalogue, consumer, requests_per_day=requests_per_day, seed=seed)
            week.night()  # the platform's first signed checkpoints and retention run, as serve starts them
            setup_findings = Counter(f.rule_id for f in _distinct(consumer.drain() + consumer.sweep()))
            week_start = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
            week.run_until(week_start)
            for d in range(days):
                day = first + timedelta(days=d)
                week.plan_day(day)
                midnight = datetime.combine(day, datetime.min.time(), zone)
                for hour in range(1, 24):
                    week.at(midnight.replace(hour=hour).astimezone(UTC), week.monitor)
                for hour in (6, 12, 18):
                    week.at(midnight.replace(hour=hour, minute=30).astimezone(UTC), week.checkpoints)
                week.at(midnight.replace(hour=23, minute=30).astimezone(UTC), week.night)
                if intrusion and d == days - 1:
                    week.at(midnight.replace(hour=3).astimezone(UTC), lambda: _intrusion(week))
                week.run_until((midnight + timedelta(days=1)).astimezone(UTC))
                say(f"{day.isoformat()} done")
            week.monitor()  # the rules over what is left, the sweeps as of the simulated end
            raised = _distinct(week.findings)
            alerts = Counter(f.rule_id for f in raised)
            figures = []
            for sim in sims:
                fig = LabFigures(sim.tenant)
                fig.events = _events_in(rt, sim.tenant)
                fig.requests = week.counts[sim.tenant]["requests"]
                fig.results = week.counts[sim.tenant]["results"]
                fig.reports = week.counts[sim.tenant]["reports"]
                fig.callbacks = week.counts[sim.tenant]["callbacks"]
                fig.alerts_by_rule = Counter(f.rule_id for f in raised if f.tenant_id == sim.tenant)
                for d in range(days):
                    with rt.gateway.unit(sim.staff.dpo, Purpose.MONITORING) as u:
                        dg = explained.digest(u, sim.tenant, first + timedelta(days=d))
                    fig.accesses += dg.total
                    fig.explained += dg.explained
                    fig.unexplained_by_reason.update(
                        {k: v for k, v in dg.reasons.items() if k not in _EXPLAINED_REASONS}
                    )
                    fig.days.append({"day": dg.day.isoformat(), "accesses": dg.total, "explained": dg.explained})
                figures.append(fig)
        finally:
            rt.close()
    return WeekResult(home, days, first, figures, alerts, setup_findings, time.monotonic() - began)


@contextmanager
def _reports_as_html() -> Iterator[None]:
    """Reports rendered to their HTML (the same content, gathered through the same reads) without
    WeasyPrint's layout into a PDF, which takes most of a second a report: a week of three labs
    issues thousands. Process-wide while the simulation runs (its home is its own)."""
    from labvault.lab import report, reports

    original = reports.report_pdf

    def html(r: Any, **kwargs: Any) -> bytes:
        return report.report_html(r, **kwargs).encode()

    reports.report_pdf = html  # type: ignore[assignment]
    try:
        yield
    finally:
        reports.report_pdf = original


def _distinct(findings: list[Finding]) -> list[Finding]:
    """One per alert: the findings of one group (same lab, same key) go to the same open alert."""
    seen: dict[tuple[str, str], Finding] = {}
    for f in findings:
        seen.setdefault((f.tenant_id, f.dedup_key), f)
    return list(seen.values())


_EXPLAINED_REASONS = frozenset(
    {
        "entered-request",
        "specimen",
        "entered-result",
        "validated-technical",
        "validated-biological",
        "issued-report",
        "grant",
        "instruction",
    }
)


def _catalogue() -> Catalogue:
    from labvault.lab.catalogue import default_catalogue

    return default_catalogue()


def _intrusion(week: Week) -> None:
    """What the check must catch: a support account, under a grant the first lab approved (naming
    40 of its patients), reads them one by one at 3 am (a bulk read, off hours)."""
    from labvault.access import grants
    from labvault.crypto.keys import PLATFORM

    lab = next(iter(week.labs.values()))
    with week.rt.unit(Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            PLATFORM,
            "support-night",
            "Support (night)",
            "support-night@vendor.sim.invalid",
            ["support"],
            commitment="confidentiality commitment (simulation)",
        )
    sup = Principal("support-night", "Support (night)", PLATFORM, frozenset({"support"}), source_addr="192.0.2.50")
    named = [p.patient_id for p in lab.pool[:INTRUSION_PATIENTS]]
    with week.gw.unit(sup, Purpose.SUPPORT) as u:
        g = grants.request_grant(
            u,
            lab.tenant,
            ticket="INC-0300",
            reason="display of results",
            hours=4,
            fields=["identity", "requests", "results"],
            patients=named,
        )
    with week.gw.unit(lab.staff.admin, Purpose.ADMINISTRATION) as u:
        grants.approve_grant(u, lab.tenant, g.grant_id)
    for patient_id in named:
        week.clock.advance(timedelta(seconds=20))
        with week.gw.unit(sup, Purpose.SUPPORT) as u:
            u.get_patient(lab.tenant, patient_id)
            u.results_of(lab.tenant, patient_id)
