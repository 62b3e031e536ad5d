"""Judging results against a lab's catalogue, and its auto-validation rules (docs/lab/catalogue.md).

Pure functions of their arguments: no database, no clock. ``Evaluator`` precompiles a catalogue into
dicts keyed by (code system, code) so that judging one result is a few lookups and comparisons.

* ``judge``: the reference range chosen (the most specific one matching sex, age and pregnancy),
  the flag (L, H, LL, HH, N; A for an abnormal qualitative answer), the critical limit crossed,
  the delta check against the previous result of the same test.
* ``calculate``: the calculated tests of one request (eGFR by CKD-EPI 2021, LDL by Friedewald), or
  why one was not computed.
* ``reflexes``: the tests a judged result orders.
* ``autovalidate``: whether a rule set releases a judged result, with the reason, the rule and
  the rule set's version; a result no rule covers is never released.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labvault.domain.models import LOINC
from labvault.errors import InvalidInput
from labvault.lab.catalogue import LOCAL, Catalogue, RefRange, Test, canonical_digest, load_toml

__all__ = [
    "CONDITIONS",
    "Calculated",
    "Decision",
    "DeltaVerdict",
    "Evaluator",
    "Judgement",
    "Previous",
    "Rule",
    "RuleSet",
    "autovalidate",
    "ckd_epi_2021",
    "friedewald",
    "parse_rules",
]

# -- calculations ------------------------------------------------------------------------------------

MG_DL_PER_UMOL_L = 1 / 88.42  # creatinine: 1 mg/dL = 88.42 umol/L
_CREATININE_TO_MG_DL = {"umol/L": MG_DL_PER_UMOL_L, "mg/dL": 1.0, "mg/L": 0.1}
FRIEDEWALD_TG_LIMIT = {"g/L": 3.4, "mmol/L": 4.5}
FRIEDEWALD_TG_DIVISOR = {"g/L": 5.0, "mmol/L": 2.2}
TG_TOO_HIGH = "triglycérides trop élevés"


def ckd_epi_2021(creatinine: float, unit: str, age: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m2) by the CKD-EPI 2021 creatinine equation, without race (Inker et al.,
    NEJM 2021): 142 x min(Scr/k, 1)^a x max(Scr/k, 1)^-1.200 x 0.9938^age [x 1.012 if female], Scr
    in mg/dL, k 0.7 (F) or 0.9 (M), a -0.241 (F) or -0.302 (M). Adults only."""
    factor = _CREATININE_TO_MG_DL.get(unit)
    if factor is None:
        raise InvalidInput("creatinine for eGFR is in umol/L, mg/dL or mg/L")
    if sex not in ("M", "F"):
        raise InvalidInput("eGFR needs the patient's sex (M or F)")
    if age < 18:
        raise InvalidInput("CKD-EPI 2021 is for adults (18 years and over)")
    if not creatinine > 0:
        raise InvalidInput("creatinine for eGFR is above 0")
    scr = creatinine * factor
    k, a = (0.7, -0.241) if sex == "F" else (0.9, -0.302)
    ratio = scr / k
    egfr = 142.0 * min(ratio, 1.0) ** a * max(ratio, 1.0) ** -1.200 * 0.9938**age
    return egfr * 1.012 if sex == "F" else egfr


def friedewald(total: float, hdl: float, triglycerides: float, unit: str) -> float | None:
    """LDL cholesterol = total - HDL - TG/5 (g/L) or TG/2.2 (mmol/L); None when the triglycerides
    are at or above 3.4 g/L (4.5 mmol/L), where the formula does not hold."""
    limit = FRIEDEWALD_TG_LIMIT.get(unit)
    if limit is None:
        raise InvalidInput("Friedewald takes lipids in g/L or mmol/L")
    if triglycerides >= limit:
        return None
    return total - hdl - triglycerides / FRIEDEWALD_TG_DIVISOR[unit]


# -- judging -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Previous:
    """The previous result of the same test for the same patient."""

    value: float
    at: datetime


@dataclass(frozen=True, slots=True)
class DeltaVerdict:
    verdict: str  # pass | fail | none (no rule, no previous result, or outside the period)
    change: float | None = None  # current - previous, in the test's unit
    percent: float | None = None  # the change as a percentage of the previous value


NO_DELTA = DeltaVerdict("none")


@dataclass(frozen=True, slots=True)
class Judgement:
    code: str | None  # the catalogue's local code; None: the test is not in the catalogue
    known: bool
    unit_ok: bool
    range: RefRange | None
    flag: str | None  # L, H, LL, HH, N, A; None: not judged (unknown test, unit differs, no value)
    critical: bool
    critical_limit: str | None  # "low" | "high"
    delta: DeltaVerdict
    value_present: bool


@dataclass(frozen=True, slots=True)
class Calculated:
    code: str
    value: float | None
    unit: str | None
    reason: str | None  # why it was not computed


class _Compiled:
    __slots__ = ("code", "crit_high", "crit_low", "delta", "normal", "qualitative", "ranges", "test", "unit")

    def __init__(self, test: Test) -> None:
        self.test = test
        self.code = test.code
        self.unit = test.unit
        self.qualitative = test.kind == "qualitative"
        self.normal = frozenset(v.casefold() for v in test.normal_values)
        # most specific first; among equals, the file's order
        self.ranges = tuple(sorted(test.ranges, key=lambda r: -r.specificity))
        self.crit_low = test.critical_low
        self.crit_high = test.critical_high
        self.delta = test.delta


class Evaluator:
    """A catalogue precompiled for judging."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.version = catalogue.version
        self._tests: dict[tuple[str, str], _Compiled] = {}
        for t in catalogue.tests:
            c = _Compiled(t)
            self._tests[(LOINC, t.loinc)] = c
            self._tests[(LOCAL, t.code)] = c
        self._reflex: dict[str, tuple[tuple[str, str, tuple[str, ...]], ...]] = {}
        for r in catalogue.reflexes:
            self._reflex[r.test] = (*self._reflex.get(r.test, ()), (r.id, r.when, r.order))
        self._calculated = tuple(t for t in catalogue.tests if t.calculation)

    def code_of(self, system: str, code: str) -> str | None:
        c = self._tests.get((system, code))
        return c.code if c else None

    def judge(
        self,
        system: str,
        code: str,
        value: float | str | None,
        unit: str | None,
        *,
        sex: str | None,
        age: float | None,
        pregnant: bool = False,
        at: datetime | None = None,
        previous: Previous | None = None,
    ) -> Judgement:
        """One result judged: ``value`` is a number (quantitative) or the answer's text (qualitative)."""
        c = self._tests.get((system, code))
        if c is None:
            return Judgement(None, False, False, None, None, False, None, NO_DELTA, value is not None)
        if value is None or value == "":
            return Judgement(c.code, True, True, None, None, False, None, NO_DELTA, False)
        flag: str | None
        if c.qualitative:
            if not isinstance(value, str):
                return Judgement(c.code, True, False, None, None, False, None, NO_DELTA, True)
            flag = "N" if value.strip().casefold() in c.normal else "A"
            return Judgement(c.code, True, True, None, flag, False, None, NO_DELTA, True)
        if unit != c.unit or isinstance(value, str | bool):
            return Judgement(c.code, True, False, None, None, False, None, NO_DELTA, True)
        v = float(value)
        chosen = None
        for r in c.ranges:
            if r.matches(sex, age, pregnant):
                chosen = r
                break
        limit = None
        if c.crit_low is not None and v <= c.crit_low:
            limit = "low"
        elif c.crit_high is not None and v >= c.crit_high:
            limit = "high"
        if limit == "low":
            flag = "LL"
        elif limit == "high":
            flag = "HH"
        elif chosen is None:
            flag = None
        elif chosen.low is not None and v < chosen.low:
            flag = "L"
        elif chosen.high is not None and v > chosen.high:
            flag = "H"
        else:
            flag = "N"
        delta = NO_DELTA
        d = c.delta
        if d is not None and previous is not None and at is not None:
            days = (at - previous.at).total_seconds() / 86400.0
            if 0 <= days <= d.days:
                change = v - previous.value
                percent = change / abs(previous.value) * 100.0 if previous.value else None
                failed = abs(change) > d.limit if d.kind == "absolute" else percent is None or abs(percent) > d.limit
                delta = DeltaVerdict("fail" if failed else "pass", change, percent)
        return Judgement(c.code, True, True, chosen, flag, limit is not None, limit, delta, True)

    def calculate(
        self, values: Mapping[str, tuple[float, str | None]], *, sex: str | None, age: float | None
    ) -> list[Calculated]:
        """The calculated tests whose inputs are among ``values`` (local code -> (value, unit)) of
        one request; a test whose inputs are all missing is left out, one that cannot be computed
        says why."""
        out = []
        for t in self._calculated:
            inputs = {name: values.get(code) for name, code in t.inputs}
            if all(v is None for v in inputs.values()):
                continue
            missing = sorted(name for name, v in inputs.items() if v is None)
            if missing:
                out.append(Calculated(t.code, None, t.unit, f"résultat manquant : {', '.join(missing)}"))
                continue
            out.append(self._calculate(t, inputs, sex, age))  # type: ignore[arg-type]
        return out

    def _calculate(
        self, t: Test, inputs: dict[str, tuple[float, str | None]], sex: str | None, age: float | None
    ) -> Calculated:
        if t.calculation == "ckd_epi_2021":
            crea, unit = inputs["creatinine"]
            if sex not in ("M", "F"):
                return Calculated(t.code, None, t.unit, "sexe inconnu")
            if age is None or age < 18:
                return Calculated(t.code, None, t.unit, "patient de moins de 18 ans")
            if unit not in _CREATININE_TO_MG_DL or not crea > 0:
                return Calculated(t.code, None, t.unit, "créatinine inexploitable (unité ou valeur)")
            return Calculated(t.code, _round(ckd_epi_2021(crea, unit, age, sex), t.decimals), t.unit, None)
        # friedewald
        (total, u1), (hdl, u2), (tg, u3) = inputs["total"], inputs["hdl"], inputs["triglycerides"]
        if not (u1 == u2 == u3 == t.unit) or t.unit not in FRIEDEWALD_TG_LIMIT:
            return Calculated(t.code, None, t.unit, "unités des lipides différentes")
        ldl = friedewald(total, hdl, tg, t.unit)
        if ldl is None:
            return Calculated(t.code, None, t.unit, TG_TOO_HIGH)
        return Calculated(t.code, _round(ldl, t.decimals), t.unit, None)

    def reflexes(self, code: str, flag: str | None) -> list[tuple[str, str]]:
        """(reflex rule id, test ordered) for a judged result of local code ``code``."""
        rules = self._reflex.get(code)
        if not rules or flag is None or flag == "N":
            return []
        out: list[tuple[str, str]] = []
        for rid, when, order in rules:
            if (
                (when == "out_of_range" and flag in ("L", "H", "LL", "HH"))
                or (when == "low" and flag in ("L", "LL"))
                or (when == "high" and flag in ("H", "HH"))
                or (when == "abnormal" and flag == "A")
            ):
                out.extend((rid, o) for o in order)
        return out


def _round(v: float, decimals: int | None) -> float:
    return round(v, decimals) if decimals is not None else v


# -- auto-validation ---------------------------------------------------------------------------------

# Each condition, and the reason given when it does not hold.
CONDITIONS: dict[str, str] = {
    "value_present": "pas de valeur",
    "known_test": "test absent du catalogue",
    "unit_matches": "unité différente de celle du catalogue",
    "in_reference_range": "hors des valeurs de référence",
    "no_critical": "valeur critique",
    "delta_passed": "delta-check échoué",
    "previous_present": "pas de résultat antérieur pour le delta-check",
    "not_correction": "correction d'un résultat",
}
ALL = "*"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    tests: tuple[str, ...]  # local codes, or ("*",)
    require: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RuleSet:
    version: str
    digest: str
    rules: tuple[Rule, ...]
    by_test: Mapping[str, Rule]  # local code -> the rule that covers it ("*": the catch-all)


@dataclass(frozen=True, slots=True)
class Decision:
    released: bool
    reason: str
    rule_id: str | None
    version: str


def parse_rules(text: str, catalogue: Catalogue | None = None) -> RuleSet:
    """An auto-validation rule set from TOML text; with ``catalogue``, each test it names must be
    one of the catalogue's. Any fault is one ``InvalidInput`` line."""
    data = load_toml(text, "rules")
    try:
        return _parse_rules(data, catalogue)
    except InvalidInput:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:
        raise InvalidInput(f"rules: malformed ({type(e).__name__})") from None


def _parse_rules(data: dict[str, Any], catalogue: Catalogue | None) -> RuleSet:
    extra = sorted(str(k) for k in data if k not in ("version", "rule"))
    if extra:
        raise InvalidInput(f"rules: field {extra[0][:40]}: unknown field")
    version = data.get("version")
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise InvalidInput("rules: field version: must be non-empty text (64 characters at most)")
    raw = data.get("rule")
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) for r in raw):
        raise InvalidInput("rules: field rule: a rule set lists at least one rule ([[rule]])")
    known = {t.code for t in catalogue.tests} if catalogue is not None else None
    rules: list[Rule] = []
    by_test: dict[str, Rule] = {}
    for i, r in enumerate(raw):
        rid = r.get("id")
        name = rid if isinstance(rid, str) and rid.strip() and len(rid) <= 64 else f"#{i + 1}"
        where = f"rules: rule {name}"
        extra = sorted(str(k) for k in r if k not in ("id", "tests", "require"))
        if extra:
            raise InvalidInput(f"{where}: field {extra[0][:40]}: unknown field")
        if name != rid:
            raise InvalidInput(f"{where}: field id: must be non-empty text (64 characters at most)")
        if any(x.id == rid for x in rules):
            raise InvalidInput(f"{where}: field id: given twice")
        tests, require = r.get("tests"), r.get("require")
        if not isinstance(tests, list) or not tests or not all(isinstance(x, str) for x in tests):
            raise InvalidInput(f'{where}: field tests: a list of test codes, or ["*"] for every test')
        if ALL in tests and len(tests) > 1:
            raise InvalidInput(f'{where}: field tests: "*" stands alone')
        if known is not None and any(x != ALL and x not in known for x in tests):
            raise InvalidInput(f"{where}: field tests: names a test the catalogue does not list")
        if not isinstance(require, list) or not all(isinstance(x, str) for x in require):
            raise InvalidInput(f"{where}: field require: a list of conditions ({', '.join(CONDITIONS)})")
        unknown = [x for x in require if x not in CONDITIONS]
        if unknown:
            raise InvalidInput(f"{where}: field require: unknown condition (one of {', '.join(CONDITIONS)})")
        rule = Rule(rid, tuple(tests), tuple(dict.fromkeys(("value_present", "known_test", *require))))
        for code in tests:
            if code in by_test:
                raise InvalidInput(f"{where}: field tests: a test is covered by two rules")
            by_test[code] = rule
        rules.append(rule)
    return RuleSet(version, canonical_digest(data), tuple(rules), by_test)


def autovalidate(rules: RuleSet | None, judgement: Judgement, *, correction: bool = False) -> Decision:
    """Whether ``rules`` release this judged result automatically: the rule naming its test, else
    the ``"*"`` rule; every condition of that rule must hold. No rule set, or no rule covering the
    test: never released."""
    if rules is None:
        return Decision(False, "aucune règle d'auto-validation active", None, "")
    rule = rules.by_test.get(judgement.code or "") or rules.by_test.get(ALL)
    if rule is None:
        return Decision(False, "aucune règle ne couvre ce test", None, rules.version)
    for cond in rule.require:
        if not _holds(cond, judgement, correction):
            return Decision(False, CONDITIONS[cond], rule.id, rules.version)
    return Decision(True, "conditions remplies : " + ", ".join(rule.require), rule.id, rules.version)


def _holds(cond: str, j: Judgement, correction: bool) -> bool:
    if cond == "value_present":
        return j.value_present
    if cond == "known_test":
        return j.known
    if cond == "unit_matches":
        return j.unit_ok
    if cond == "in_reference_range":
        return j.unit_ok and j.flag == "N"
    if cond == "no_critical":
        return j.unit_ok and not j.critical
    if cond == "delta_passed":
        return j.delta.verdict != "fail"
    if cond == "previous_present":
        return j.delta.verdict != "none"
    if cond == "not_correction":
        return not correction
    return False
