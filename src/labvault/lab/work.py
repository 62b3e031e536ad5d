"""The lab's workflow as the faces (CLI, API, pages) call it: thin functions over a gateway unit.

Everything is done by the unit's ``access.work`` methods (authorised, sealed, audited); this module
turns what a face reads (a scanned barcode, a value typed) into those calls, and judges each value
entered against the lab's current catalogue and auto-validation rules (``CatalogueJudge``): the
reference range chosen by the patient's sex, age at collection and the request's pregnancy flag,
the flag, the critical limit (a call-back task due in ``CALLBACK_MINUTES``), the delta check against
the patient's previous result of the same test, the calculated tests computed into the request, the
reflex tests ordered, then the rules' decision. The same judge is passed to ingest's analyser path
(``labvault.ingest.intake.store``). The judge's notes (delta check, a calculation not done, why the
rules held a result) are kept in the result's sealed comment after ``NOTES_MARK``: ``review`` reads
them for the validation screen, ``for_report`` leaves them out of the patient's report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from labvault.access.work import (
    NOTES_MARK,
    CalculatedValue,
    EnteredRequest,
    Judge,
    JudgedResult,
    JudgeInput,
    Verdict,
    split_comment,
)
from labvault.domain.models import (
    LOINC,
    Nonconformity,
    OrderedTest,
    Result,
    ResultStatus,
    Specimen,
    SpecimenStatus,
    Urgency,
)
from labvault.errors import InvalidInput
from labvault.lab.catalogue import Catalogue, Test
from labvault.lab.rules import Evaluator, Previous, autovalidate
from labvault.lab.service import LoadedCatalogue, StoredRules, current_catalogue, current_rules

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = [
    "BASIC_TESTS",
    "CALLBACK_MINUTES",
    "NOTES_MARK",
    "CatalogueJudge",
    "Review",
    "catalogue_judge",
    "correct_result",
    "enter_request",
    "enter_result",
    "for_report",
    "judge_result",
    "move",
    "ordered_tests",
    "receive",
    "reject",
    "review",
    "scanned",
    "validate_biological",
    "validate_technical",
]

# A critical value's call-back task is due within this many minutes (no lab setting yet).
CALLBACK_MINUTES = 30

# Tests the CLI can order by code before a catalogue is loaded: (LOINC code, label, UCUM unit,
# specimen type, container). The lab's catalogue (``labvault.lab.catalogue``), when loaded, is
# what a face passes as ``resolve`` instead.
BASIC_TESTS: dict[str, OrderedTest] = {
    code: OrderedTest("http://loinc.org", code, label, unit, kind, box)
    for code, label, unit, kind, box in (
        ("2823-3", "Potassium", "mmol/L", "SER", "SST gold"),
        ("2951-2", "Sodium", "mmol/L", "SER", "SST gold"),
        ("2160-0", "Creatinine", "umol/L", "SER", "SST gold"),
        ("2345-7", "Glucose", "mmol/L", "PLAS", "fluoride grey"),
        ("718-7", "Hemoglobin", "g/dL", "BLD", "EDTA lavender"),
        ("6690-2", "Leukocytes", "10*9/L", "BLD", "EDTA lavender"),
        ("777-3", "Platelets", "10*9/L", "BLD", "EDTA lavender"),
        ("1988-5", "C reactive protein", "mg/L", "SER", "SST gold"),
    )
}


def ordered_tests(
    codes: Sequence[str], resolve: Callable[[str], OrderedTest | None] | None = None
) -> list[OrderedTest]:
    """The tests named by their codes: through ``resolve`` (the lab's catalogue) when given, else
    ``BASIC_TESTS``. An unknown code is refused, by name (codes are not personal)."""
    out = []
    for code in codes:
        code = code.strip()
        found = resolve(code) if resolve is not None else BASIC_TESTS.get(code)
        if found is None:
            raise InvalidInput(f"unknown test code {code[:40]!r}")
        out.append(found)
    if not out:
        raise InvalidInput("a request names at least one test")
    return out


def enter_request(
    u: Unit,
    tenant: str,
    patient_id: str,
    tests: Sequence[OrderedTest],
    *,
    collected_at: datetime,
    collector: str | None = None,
    prescriber_id: str | None = None,
    urgent: bool = False,
    clinical: str | None = None,
    pregnant: bool | None = None,
) -> EnteredRequest:
    """A request entered by hand: its specimens (one per container) and ordered results."""
    return u.enter_request(
        tenant,
        patient_id,
        tests,
        prescriber_id=prescriber_id,
        urgency=Urgency.URGENT if urgent else Urgency.ROUTINE,
        clinical=clinical,
        pregnant=pregnant,
        collected_at=collected_at,
        collector=collector,
    )


def scanned(barcode: str) -> str:
    """The specimen id a barcode reader gives (a scanner may add spaces or a line end)."""
    value = barcode.strip()
    if not value:
        raise InvalidInput("no barcode read")
    return value


def receive(u: Unit, tenant: str, barcode: str) -> Specimen:
    """A specimen received at the lab, by scanning its label."""
    return u.specimen_event(tenant, scanned(barcode), SpecimenStatus.RECEIVED)


def reject(u: Unit, tenant: str, barcode: str, nonconformity: Nonconformity | str) -> Specimen:
    """A specimen rejected with its non-conformity: its results are cancelled, the request told."""
    return u.specimen_event(tenant, scanned(barcode), SpecimenStatus.REJECTED, nonconformity=nonconformity)


def move(u: Unit, tenant: str, barcode: str, status: SpecimenStatus | str) -> Specimen:
    """Any other move of a specimen (in analysis, stored, discarded)."""
    return u.specimen_event(tenant, scanned(barcode), status)


def enter_result(
    u: Unit,
    tenant: str,
    result_id: str,
    value: str | float,
    unit: str | None = None,
    *,
    comment: str | None = None,
    judge: Judge | None = None,
) -> tuple[Result, JudgedResult]:
    """A value entered by hand, then judged (``judge``, else the lab's current catalogue and
    rules): the result as stored after judgement, and what judging did."""
    u.enter_result(tenant, result_id, value, unit, comment=comment)
    done = u.judge_result(tenant, result_id, judge or catalogue_judge(u, tenant))
    return done.result, done


def correct_result(
    u: Unit,
    tenant: str,
    result_id: str,
    value: str | float,
    unit: str | None = None,
    *,
    comment: str | None = None,
    judge: Judge | None = None,
) -> tuple[Result, JudgedResult]:
    """A new value for a validated result, judged again; it is validated again as any other and,
    once validated, its status is ``corrected``."""
    u.correct_result(tenant, result_id, value, unit, comment=comment)
    done = u.judge_result(tenant, result_id, judge or catalogue_judge(u, tenant))
    return done.result, done


def judge_result(u: Unit, tenant: str, result_id: str, judge: Judge | None = None) -> JudgedResult:
    """Judge again a result entered and not yet validated (the lab's current catalogue and rules)."""
    return u.judge_result(tenant, result_id, judge or catalogue_judge(u, tenant))


def validate_technical(u: Unit, tenant: str, result_ids: Sequence[str]) -> list[Result]:
    return u.validate(tenant, result_ids, "technical")


def validate_biological(u: Unit, tenant: str, result_ids: Sequence[str]) -> list[Result]:
    return u.validate(tenant, result_ids, "biological")


# -- judging ------------------------------------------------------------------------------------------


def _age(born: date | None, at: datetime | None) -> float | None:
    """Age in years at ``at`` (fractional: age bands such as 0-1 month are judged right)."""
    if born is None or at is None:
        return None
    return max((at.date() - born).days, 0) / 365.25


def _years(born: date | None, at: datetime | None) -> int | None:
    """Age in completed years (what CKD-EPI 2021 takes)."""
    if born is None or at is None:
        return None
    d = at.date()
    return d.year - born.year - ((d.month, d.day) < (born.month, born.day))


def ordered_test(test: Test) -> OrderedTest:
    """A catalogue's test as a request orders it."""
    return OrderedTest(LOINC, test.loinc, test.label_fr, test.unit, test.specimen, test.container)


def _number(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else repr(value)


class CatalogueJudge:
    """A lab's catalogue (its stored version number) and auto-validation rules in force, as the
    ``Judge`` ``access.work`` calls: pure, given what the gateway read."""

    def __init__(
        self, loaded: LoadedCatalogue, rules: StoredRules | None, *, callback_minutes: int = CALLBACK_MINUTES
    ) -> None:
        self.number = loaded.number
        self.catalogue: Catalogue = loaded.catalogue
        self.evaluator = Evaluator(loaded.catalogue)
        self.rules = None if rules is None else rules.rules
        self.callback_minutes = callback_minutes

    def __call__(self, given: JudgeInput) -> Verdict:
        res = given.result
        ev = self.evaluator
        at = given.collected_at or res.message_at
        age = _age(given.birth_date, at)
        prev = given.previous
        previous = (
            Previous(prev.value_num, given.previous_at)
            if prev is not None and prev.value_num is not None and given.previous_at is not None
            else None
        )
        value: float | str | None = res.value_num if res.value_num is not None else res.value_text
        j = ev.judge(
            res.code_system,
            res.code,
            value,
            res.unit,
            sex=given.sex,
            age=age,
            pregnant=given.pregnant,
            at=at,
            previous=previous,
        )
        notes: list[str] = []
        if not j.known:
            notes.append("test absent du catalogue : non jugé")
        elif j.value_present and not j.unit_ok:
            notes.append("unité différente de celle du catalogue : non jugé")
        if j.critical:
            notes.append(f"valeur critique ({'basse' if j.critical_limit == 'low' else 'haute'}) : appel à faire")
        if j.delta.verdict != "none" and previous is not None and j.delta.change is not None:
            change = f"{j.delta.change:+g} {res.unit or ''}".rstrip()
            if j.delta.percent is not None:
                change += f", {j.delta.percent:+.0f} %"
            word = "échoué" if j.delta.verdict == "fail" else "conforme"
            notes.append(f"delta-check {word} : {change} depuis le {previous.at.date().isoformat()}")
        calculated: list[CalculatedValue] = []
        if j.code is not None and j.flag is not None:
            calculated, why = self._calculations(j.code, given)
            notes.extend(why)
        reflex = []
        for rid, code in ev.reflexes(j.code or "", j.flag):
            test = self.catalogue.test(code)
            if test is not None:
                reflex.append(ordered_test(test))
                notes.append(f"réflexe {rid} : {test.label_fr} demandé")
        decision = autovalidate(self.rules, j, correction=given.correction)
        release = f"{decision.version}:{decision.rule_id}" if decision.released else None
        if release is None:
            notes.append(f"auto-validation : retenu ({decision.reason})")
        keep = not j.known or not j.unit_ok  # not judged: what the sender said stays
        rng = j.range
        return Verdict(
            catalogue_version=self.number,
            flag=res.flag if keep else j.flag,
            ref_low=res.ref_low if keep else (rng.low if rng else None),
            ref_high=res.ref_high if keep else (rng.high if rng else None),
            ref_text=res.ref_text if keep else (rng.text if rng else None),
            notes=tuple(notes),
            callback_minutes=self.callback_minutes if j.critical else None,
            release=release,
            calculated=tuple(calculated),
            reflex=tuple(reflex),
        )

    def _calculations(self, code: str, given: JudgeInput) -> tuple[list[CalculatedValue], list[str]]:
        """The calculated tests this result is an input of, from the request's values."""
        if not any(code in dict(t.inputs).values() for t in self.catalogue.tests if t.calculation):
            return [], []
        ev = self.evaluator
        values: dict[str, tuple[float, str | None]] = {}
        for x in given.request_results:
            local = ev.code_of(x.code_system, x.code)
            gone = x.status in (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)
            if local is not None and x.value_num is not None and not gone:
                values[local] = (x.value_num, x.unit)
        at = given.collected_at or given.result.message_at
        out: list[CalculatedValue] = []
        why: list[str] = []
        for calc in ev.calculate(values, sex=given.sex, age=_years(given.birth_date, at)):
            test = self.catalogue.test(calc.code)
            if test is None or code not in dict(test.inputs).values():
                continue
            if calc.value is not None:
                text = f"{calc.value:.{test.decimals}f}" if test.decimals is not None else _number(calc.value)
                out.append(CalculatedValue(ordered_test(test), text))
            elif calc.reason and not calc.reason.startswith("résultat manquant"):
                why.append(f"{test.label_fr} non calculé : {calc.reason}")
        return out, why


class _LabJudge:
    """The lab's current catalogue and rules, read through the unit on first use only."""

    def __init__(self, u: Unit, tenant: str) -> None:
        self.u, self.tenant = u, tenant
        self._judge: CatalogueJudge | None = None

    def __call__(self, given: JudgeInput) -> Verdict:
        if self._judge is None:
            self._judge = CatalogueJudge(current_catalogue(self.u, self.tenant), current_rules(self.u, self.tenant))
        return self._judge(given)


def catalogue_judge(u: Unit, tenant: str) -> Judge:
    """The judge of a lab: its current catalogue (the default one, version 0, when it loaded none)
    and its activated auto-validation rules (none: nothing released automatically), read once,
    when the first result is judged."""
    return _LabJudge(u, tenant)


# -- what the faces show --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Review:
    """What the validation screen shows beside a result."""

    flag: str | None
    ref_low: float | None
    ref_high: float | None
    ref_text: str | None
    comment: str | None  # the comment proper (typed, or sent by the analyser)
    notes: tuple[str, ...]  # the judge's: critical, delta check, calculation, reflex, auto-validation
    catalogue_version: int | None
    released_by_rule: str | None

    @property
    def delta_failed(self) -> bool:
        return any(n.startswith("delta-check échoué") for n in self.notes)

    @property
    def held(self) -> str | None:
        """Why the auto-validation rules held the result (None: released, or not judged)."""
        return next((n.removeprefix("auto-validation : retenu (")[:-1] for n in self.notes if "retenu (" in n), None)


def review(result: Result) -> Review:
    comment, notes = split_comment(result.comment)
    return Review(
        result.flag,
        result.ref_low,
        result.ref_high,
        result.ref_text,
        comment,
        notes,
        result.catalogue_version,
        result.released_by_rule,
    )


def for_report(results: Sequence[Result]) -> list[Result]:
    """Results as the patient's report shows them: their comment without the judge's notes."""
    return [dataclasses.replace(r, comment=split_comment(r.comment)[0]) for r in results]
