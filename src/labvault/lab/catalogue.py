"""A lab's test catalogue: what each test is, how its results are judged (docs/lab/catalogue.md).

A catalogue is a TOML file: a ``version`` string, then ``[[test]]`` tables (local code, LOINC,
French and English labels, specimen type of HL7 table 0487 and container, UCUM unit, reference
ranges by sex, age band and pregnancy, critical limits, a delta-check rule, an optional
calculation), ``[[panel]]`` tables (a code expanding to tests) and ``[[reflex]]`` tables (a result
out of range orders other tests). ``parse_catalogue`` reads it into frozen dataclasses; every fault
is one ``InvalidInput`` line naming the test and the field, never the value's content beyond its
type. The digest is the SHA-256 of the canonical bytes (the parsed content as sorted, compact JSON),
so two files that say the same thing have the same digest whatever their layout.

LOINC codes and names (c) Regenstrief Institute, used under the LOINC licence
(https://loinc.org/license).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from labvault.crypto.digest import sha256_hex
from labvault.domain.models import LOINC
from labvault.errors import InvalidInput
from labvault.interop._common import is_ucum

__all__ = [
    "CALCULATIONS",
    "CONTAINERS",
    "LOCAL",
    "SPECIMEN_TYPES",
    "Catalogue",
    "Delta",
    "Panel",
    "RefRange",
    "Reflex",
    "Test",
    "canonical_digest",
    "default_catalogue",
    "default_text",
    "parse_catalogue",
]

LOCAL = "local"  # the code system of a lab's own codes, as (system, code) keys name them

# HL7 table 0487 (specimen type): the codes a lab's tests use here.
SPECIMEN_TYPES = frozenset(
    {"BLD", "SER", "PLAS", "SER/PLAS", "UR", "STL", "CSF", "SAL", "SPT", "SWAB", "PPP", "BLDA", "BLDV", "BLDC"}
)
CONTAINERS = frozenset(
    {
        "tube sec",
        "héparine",
        "EDTA",
        "citrate",
        "fluorure",
        "flacon urine",
        "pot stérile",
        "flacon hémoculture",
        "écouvillon",
        "seringue gaz du sang",
    }
)
# Calculations the rules know, with the inputs each needs (input name -> meaning).
CALCULATIONS: dict[str, tuple[str, ...]] = {
    "ckd_epi_2021": ("creatinine",),
    "friedewald": ("total", "hdl", "triglycerides"),
}
KINDS = ("quantitative", "qualitative")
DELTA_KINDS = ("absolute", "relative")
REFLEX_WHEN = ("out_of_range", "low", "high", "abnormal")
SEXES = ("M", "F")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_.-]{0,31}$")
_SECTION = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DEFAULT_SECTION = "general"
# French names of the default catalogue's sections (a lab's own ids are shown as they are).
SECTION_LABELS = {
    "biochimie": "Biochimie",
    "hematologie": "Hématologie",
    "hemostase": "Hémostase",
    "immunoanalyse": "Immuno-analyse",
    "serologie": "Sérologie",
    "urines": "Urines",
    DEFAULT_SECTION: "Général",
}
_LOINC = re.compile(r"^[0-9]{1,7}-[0-9]$")
_MAX_TESTS = 5000


@dataclass(frozen=True, slots=True)
class RefRange:
    """One reference range; ``None`` criteria match anyone. Ages in years: ``age_min`` inclusive,
    ``age_max`` exclusive. ``specificity`` counts the criteria given (the most specific wins)."""

    low: float | None
    high: float | None
    sex: str | None = None
    age_min: float | None = None
    age_max: float | None = None
    pregnant: bool | None = None
    text: str | None = None

    @property
    def specificity(self) -> int:
        return (
            (self.sex is not None)
            + (self.age_min is not None or self.age_max is not None)
            + (self.pregnant is not None) * 2
        )

    def matches(self, sex: str | None, age: float | None, pregnant: bool) -> bool:
        if self.sex is not None and sex != self.sex:
            return False
        if self.pregnant is not None and pregnant != self.pregnant:
            return False
        if self.age_min is not None and (age is None or age < self.age_min):
            return False
        return not (self.age_max is not None and (age is None or age >= self.age_max))


@dataclass(frozen=True, slots=True)
class Delta:
    """A delta check: the change from the previous result of the same test within ``days`` may not
    exceed ``limit`` (in the test's unit when ``kind`` is absolute, in percent when relative)."""

    kind: str
    limit: float
    days: float


@dataclass(frozen=True, slots=True)
class Test:
    code: str  # the lab's local code
    loinc: str
    label_fr: str
    label_en: str
    specimen: str  # HL7 table 0487
    container: str
    kind: str  # quantitative | qualitative
    unit: str | None  # UCUM; None for a qualitative test
    decimals: int | None
    ranges: tuple[RefRange, ...]
    critical_low: float | None
    critical_high: float | None
    delta: Delta | None
    normal_values: tuple[str, ...]  # a qualitative test's normal answers ("Négatif")
    calculation: str | None  # a key of CALCULATIONS
    inputs: tuple[tuple[str, str], ...]  # (input name, local code of the test giving it)
    section: str = DEFAULT_SECTION  # the bench that runs it: worklists are drawn per section


@dataclass(frozen=True, slots=True)
class Panel:
    code: str
    label_fr: str
    label_en: str
    tests: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reflex:
    id: str
    test: str
    when: str  # out_of_range | low | high | abnormal
    order: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    digest: str
    tests: tuple[Test, ...]
    panels: tuple[Panel, ...]
    reflexes: tuple[Reflex, ...]

    def test(self, code: str) -> Test | None:
        return next((t for t in self.tests if t.code == code), None)

    def by_loinc(self, loinc: str) -> Test | None:
        return next((t for t in self.tests if t.loinc == loinc), None)

    def expand(self, code: str) -> tuple[str, ...]:
        """A panel's tests, or the test itself; an unknown code is an ``InvalidInput``."""
        for p in self.panels:
            if p.code == code:
                return p.tests
        if self.test(code) is not None:
            return (code,)
        raise InvalidInput(f"catalogue {self.version}: no test or panel with this code")

    def key(self, test: Test) -> tuple[str, str]:
        return (LOINC, test.loinc)

    @property
    def sections(self) -> tuple[str, ...]:
        """The sections (benches) the catalogue's tests belong to, in the order they first appear."""
        return tuple(dict.fromkeys(t.section for t in self.tests))

    def section_of(self, loinc: str) -> str | None:
        """The section of the test with this LOINC code, or None when the catalogue has no such test."""
        found = self.by_loinc(loinc)
        return None if found is None else found.section


# -- parsing -----------------------------------------------------------------------------------------


def canonical_digest(data: dict[str, Any]) -> str:
    """SHA-256 of the parsed content as sorted, compact UTF-8 JSON (dates as ISO text)."""
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return sha256_hex(body.encode("utf-8"))


def load_toml(text: str, what: str) -> dict[str, Any]:
    """TOML text as a dict, or one ``InvalidInput`` line with the line and column of the fault."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what}: the file is not text")
    if len(text) > 2_000_000:
        raise InvalidInput(f"{what}: the file is larger than 2 MB")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{what}: not valid TOML: {str(e).splitlines()[0]}") from None
    except (ValueError, RecursionError):
        raise InvalidInput(f"{what}: not valid TOML") from None


class _Where:
    """Names the place of a fault: ``catalogue: test K: field unit: ...``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def fail(self, field: str, what: str) -> InvalidInput:
        return InvalidInput(f"{self.prefix}: field {field}: {what}")

    def table(self, data: dict[str, Any], allowed: set[str]) -> None:
        extra = sorted(str(k) for k in data if k not in allowed)
        if extra:
            raise self.fail(extra[0][:40], "unknown field")

    def optional(self, data: dict[str, Any], field: str, *, required: bool = True, max_len: int = 200) -> str | None:
        v = data.get(field)
        if v is None:
            if required:
                raise self.fail(field, "missing")
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.fail(field, "must be non-empty text")
        if len(v) > max_len:
            raise self.fail(field, f"longer than {max_len} characters")
        return v

    def need(self, data: dict[str, Any], field: str, *, max_len: int = 200) -> str:
        v = self.optional(data, field, max_len=max_len)
        if v is None:  # pragma: no cover - text() raises first
            raise self.fail(field, "missing")
        return v

    def number(self, data: dict[str, Any], field: str, *, required: bool = False) -> float | None:
        v = data.get(field)
        if v is None:
            if required:
                raise self.fail(field, "missing")
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.fail(field, "must be a number")
        f = float(v)
        if not math.isfinite(f):
            raise self.fail(field, "must be a finite number")
        return f

    def boolean(self, data: dict[str, Any], field: str) -> bool | None:
        v = data.get(field)
        if v is None:
            return None
        if not isinstance(v, bool):
            raise self.fail(field, "must be true or false")
        return v

    def texts(self, data: dict[str, Any], field: str, *, required: bool = False) -> tuple[str, ...]:
        v = data.get(field)
        if v is None:
            if required:
                raise self.fail(field, "missing")
            return ()
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise self.fail(field, "must be a list of non-empty texts")
        if required and not v:
            raise self.fail(field, "must not be empty")
        return tuple(v)

    def tables(self, data: dict[str, Any], field: str) -> list[dict[str, Any]]:
        v = data.get(field, [])
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self.fail(field, f"must be an array of tables ([[{field}]])")
        return v


def _code(where: _Where, data: dict[str, Any], field: str = "code") -> str:
    code = where.need(data, field)
    if not _CODE.match(code):
        raise where.fail(field, "a code is 1-32 capitals, digits, '_', '.' or '-'")
    return code


def _range(where: _Where, data: dict[str, Any], index: int) -> RefRange:
    w = _Where(f"{where.prefix}: range {index + 1}")
    w.table(data, {"low", "high", "sex", "age_min", "age_max", "pregnant", "text"})
    sex = w.optional(data, "sex", required=False)
    if sex is not None and sex not in SEXES:
        raise w.fail("sex", "must be M or F")
    low, high = w.number(data, "low"), w.number(data, "high")
    age_min, age_max = w.number(data, "age_min"), w.number(data, "age_max")
    text = w.optional(data, "text", required=False)
    if low is None and high is None and text is None:
        raise w.fail("low", "a range gives low, high or both (or a text)")
    if low is not None and high is not None and low > high:
        raise w.fail("low", "is above high")
    if age_min is not None and age_min < 0:
        raise w.fail("age_min", "must be 0 or more")
    if age_min is not None and age_max is not None and age_min >= age_max:
        raise w.fail("age_min", "must be below age_max")
    return RefRange(low, high, sex, age_min, age_max, w.boolean(data, "pregnant"), text)


_TEST_FIELDS = {
    "code",
    "loinc",
    "label_fr",
    "label_en",
    "specimen",
    "container",
    "kind",
    "unit",
    "decimals",
    "range",
    "critical_low",
    "critical_high",
    "delta",
    "normal",
    "calculation",
    "inputs",
    "section",
}


def _test(data: dict[str, Any], index: int) -> Test:
    raw_code = data.get("code")
    name = raw_code if isinstance(raw_code, str) and _CODE.match(raw_code) else f"#{index + 1}"
    w = _Where(f"catalogue: test {name}")
    w.table(data, _TEST_FIELDS)
    code = _code(w, data)
    loinc = w.need(data, "loinc")
    if not _LOINC.match(loinc) or not _loinc_check_ok(loinc):
        raise w.fail("loinc", "not a LOINC code (digits, '-', a check digit that agrees)")
    label_fr, label_en = w.need(data, "label_fr"), w.need(data, "label_en")
    specimen, container = w.need(data, "specimen"), w.need(data, "container")
    if specimen not in SPECIMEN_TYPES:
        raise w.fail(
            "specimen", f"not a specimen type of HL7 table 0487 known here ({', '.join(sorted(SPECIMEN_TYPES))})"
        )
    if container not in CONTAINERS:
        raise w.fail("container", f"one of {', '.join(sorted(CONTAINERS))}")
    kind = w.optional(data, "kind", required=False) or "quantitative"
    if kind not in KINDS:
        raise w.fail("kind", "quantitative or qualitative")
    unit = w.optional(data, "unit", required=kind == "quantitative", max_len=32)
    if unit is not None and not is_ucum(unit):
        raise w.fail("unit", "not a valid UCUM unit")
    decimals = data.get("decimals")
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6):
        raise w.fail("decimals", "an integer from 0 to 6")
    ranges = tuple(_range(w, r, i) for i, r in enumerate(w.tables(data, "range")))
    if kind == "qualitative" and ranges:
        raise w.fail("range", "a qualitative test gives its normal answers (normal), not ranges")
    crit_low, crit_high = w.number(data, "critical_low"), w.number(data, "critical_high")
    if crit_low is not None and crit_high is not None and crit_low >= crit_high:
        raise w.fail("critical_low", "must be below critical_high")
    delta = None
    if "delta" in data:
        d = data["delta"]
        if not isinstance(d, dict):
            raise w.fail("delta", "a table: { kind = ..., limit = ..., days = ... }")
        dw = _Where(f"{w.prefix}: delta")
        dw.table(d, {"kind", "limit", "days"})
        dkind = dw.need(d, "kind")
        if dkind not in DELTA_KINDS:
            raise dw.fail("kind", "absolute or relative")
        limit, days = dw.number(d, "limit", required=True), dw.number(d, "days", required=True)
        if limit is None or days is None or limit <= 0 or days <= 0:
            raise dw.fail("limit" if not limit or limit <= 0 else "days", "must be above 0")
        delta = Delta(dkind, limit, days)
    normal = w.texts(data, "normal", required=kind == "qualitative")
    if kind == "quantitative" and normal:
        raise w.fail("normal", "only a qualitative test lists normal answers")
    calculation = w.optional(data, "calculation", required=False)
    inputs: tuple[tuple[str, str], ...] = ()
    if calculation is not None:
        if calculation not in CALCULATIONS:
            raise w.fail("calculation", f"one of {', '.join(CALCULATIONS)}")
        raw = data.get("inputs")
        if not isinstance(raw, dict) or set(raw) != set(CALCULATIONS[calculation]):
            raise w.fail("inputs", f"a table naming the test of each of {', '.join(CALCULATIONS[calculation])}")
        if not all(isinstance(v, str) for v in raw.values()):
            raise w.fail("inputs", "each input names a test's code")
        inputs = tuple(sorted(raw.items()))
    elif "inputs" in data:
        raise w.fail("inputs", "only a calculated test has inputs")
    section = w.optional(data, "section", required=False) or DEFAULT_SECTION
    if not _SECTION.match(section):
        raise w.fail("section", "a section id: lower-case letters, digits, '-' (at most 32)")
    return Test(
        code,
        loinc,
        label_fr,
        label_en,
        specimen,
        container,
        kind,
        unit,
        decimals,
        ranges,
        crit_low,
        crit_high,
        delta,
        normal,
        calculation,
        inputs,
        section,
    )


def _loinc_check_ok(code: str) -> bool:
    """LOINC's mod-10 check digit (the Luhn variant LOINC documents)."""
    body, check = code.split("-")
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d // 10 + d % 10
        total += d
    return (10 - total % 10) % 10 == int(check)


def parse_catalogue(text: str) -> Catalogue:
    """A catalogue from TOML text, checked whole; any fault is one ``InvalidInput`` line."""
    data = load_toml(text, "catalogue")
    try:
        return _parse(data)
    except InvalidInput:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as e:  # a shape not foreseen
        raise InvalidInput(f"catalogue: malformed ({type(e).__name__})") from None


def _parse(data: dict[str, Any]) -> Catalogue:
    top = _Where("catalogue")
    top.table(data, {"version", "test", "panel", "reflex"})
    version = top.need(data, "version", max_len=64)
    raw_tests = top.tables(data, "test")
    if not raw_tests:
        raise top.fail("test", "a catalogue lists at least one test ([[test]])")
    if len(raw_tests) > _MAX_TESTS:
        raise top.fail("test", f"more than {_MAX_TESTS} tests")
    tests = tuple(_test(t, i) for i, t in enumerate(raw_tests))
    codes: dict[str, Test] = {}
    loincs: set[str] = set()
    for t in tests:
        if t.code in codes:
            raise InvalidInput(f"catalogue: test {t.code}: field code: given twice")
        if t.loinc in loincs:
            raise InvalidInput(f"catalogue: test {t.code}: field loinc: another test has the same LOINC code")
        codes[t.code] = t
        loincs.add(t.loinc)
    for t in tests:
        for name, source in t.inputs:
            if source not in codes or codes[source].kind != "quantitative":
                raise InvalidInput(f"catalogue: test {t.code}: field inputs: {name} names no quantitative test")
    panels: list[Panel] = []
    for i, p in enumerate(top.tables(data, "panel")):
        raw_code = p.get("code")
        pw = _Where(
            f"catalogue: panel {raw_code if isinstance(raw_code, str) and _CODE.match(raw_code) else '#' + str(i + 1)}"
        )
        pw.table(p, {"code", "label_fr", "label_en", "tests"})
        code = _code(pw, p)
        if code in codes or any(x.code == code for x in panels):
            raise pw.fail("code", "given twice (a panel's code is neither a test's nor another panel's)")
        members = pw.texts(p, "tests", required=True)
        for m in members:
            if m not in codes:
                raise pw.fail("tests", "names a test the catalogue does not list")
        label_fr, label_en = pw.need(p, "label_fr"), pw.need(p, "label_en")
        panels.append(Panel(code, label_fr, label_en, members))
    reflexes: list[Reflex] = []
    for i, r in enumerate(top.tables(data, "reflex")):
        raw_id = r.get("id")
        rw = _Where(
            f"catalogue: reflex {raw_id if isinstance(raw_id, str) and _CODE.match(raw_id) else '#' + str(i + 1)}"
        )
        rw.table(r, {"id", "test", "when", "order"})
        rid = _code(rw, r, "id")
        if any(x.id == rid for x in reflexes):
            raise rw.fail("id", "given twice")
        test = _code(rw, r, "test")
        if test not in codes:
            raise rw.fail("test", "names a test the catalogue does not list")
        when = rw.need(r, "when")
        if when not in REFLEX_WHEN:
            raise rw.fail("when", f"one of {', '.join(REFLEX_WHEN)}")
        order = rw.texts(r, "order", required=True)
        if any(o not in codes for o in order):
            raise rw.fail("order", "names a test the catalogue does not list")
        if test in order:
            raise rw.fail("order", "a test does not order itself")
        reflexes.append(Reflex(rid, test, when, order))
    return Catalogue(version, canonical_digest(data), tests, tuple(panels), tuple(reflexes))


def default_text() -> str:
    """The catalogue shipped with Labvault (``catalogue_default.toml``)."""
    return resources.files("labvault.lab").joinpath("catalogue_default.toml").read_text("utf-8")


@cache
def default_catalogue() -> Catalogue:
    return parse_catalogue(default_text())
