"""Judging results against the default catalogue: ranges, flags, critical values, delta checks,
calculated tests, reflexes and auto-validation."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from labvault.domain.models import LOINC
from labvault.errors import InvalidInput
from labvault.lab.catalogue import LOCAL, default_catalogue
from labvault.lab.rules import Evaluator, Previous, autovalidate, ckd_epi_2021, friedewald, parse_rules

EV = Evaluator(default_catalogue())
AT = datetime(2025, 3, 10, 8, 0)
K, CREA, HB, TSH, GLY = "2823-3", "2160-0", "718-7", "3016-3", "2345-7"

RULES = parse_rules(
    """
version = "av-2025-03"

[[rule]]
id = "AV-GEN"
tests = ["*"]
require = ["unit_matches", "in_reference_range", "no_critical", "delta_passed", "not_correction"]

[[rule]]
id = "AV-K"
tests = ["K"]
require = ["in_reference_range", "no_critical", "delta_passed", "previous_present"]
""",
    default_catalogue(),
)


def judge(code, value, unit, sex="M", age=45.0, **kw):
    return EV.judge(LOINC, code, value, unit, sex=sex, age=age, at=kw.pop("at", AT), **kw)


def test_the_range_is_chosen_by_sex_age_and_pregnancy() -> None:
    assert (judge(HB, 12.5, "g/dL", sex="M").range.low, judge(HB, 12.5, "g/dL", sex="F").range.low) == (13.0, 12.0)
    assert judge(HB, 12.5, "g/dL", sex="M").flag == "L"
    assert judge(HB, 12.5, "g/dL", sex="F").flag == "N"
    child = judge(HB, 12.5, "g/dL", sex="M", age=6.0)
    assert (child.range.low, child.range.high, child.flag) == (11.0, 15.5, "N")
    # pregnancy is the most specific criterion: 11.5 g/dL is normal for a pregnant woman
    pregnant = judge(HB, 11.5, "g/dL", sex="F", age=30.0, pregnant=True)
    assert (pregnant.range.low, pregnant.flag) == (11.0, "N")
    assert judge(HB, 11.5, "g/dL", sex="F", age=30.0).flag == "L"
    assert judge(TSH, 3.0, "mU/L", sex="F", age=30.0, pregnant=True).flag == "H"
    assert judge(TSH, 3.0, "mU/L", sex="F", age=30.0).flag == "N"
    crea_child = judge(CREA, 8.0, "mg/L", age=10.0)
    assert (crea_child.range.high, crea_child.flag) == (9.0, "N")


def test_flags_and_critical_limits() -> None:
    assert judge(K, 4.2, "mmol/L").flag == "N"
    assert judge(K, 3.2, "mmol/L").flag == "L"
    assert judge(K, 5.6, "mmol/L").flag == "H"
    critical = judge(K, 6.8, "mmol/L")
    assert (critical.flag, critical.critical, critical.critical_limit) == ("HH", True, "high")
    low = judge(GLY, 0.40, "g/L")
    assert (low.flag, low.critical, low.critical_limit) == ("LL", True, "low")
    assert not judge(K, 5.6, "mmol/L").critical


def test_qualitative_answers_and_units() -> None:
    assert judge("56888-1", "Négatif", None).flag == "N"
    assert judge("56888-1", "Positif", None).flag == "A"
    other_unit = judge(K, 4.2, "meq/L")
    assert (other_unit.unit_ok, other_unit.flag) == (False, None)
    unknown = EV.judge(LOINC, "99999-9", 1.0, "g/L", sex="M", age=40.0)
    assert (unknown.known, unknown.code) == (False, None)
    assert EV.judge(LOCAL, "K", 4.2, "mmol/L", sex="M", age=40.0).flag == "N"


def test_a_creatinine_jump_beyond_its_delta_rule_fails_the_delta_check() -> None:
    prev = Previous(8.0, AT - timedelta(days=2))
    jump = judge(CREA, 14.0, "mg/L", previous=prev)  # +75 % in two days; the rule allows 50 % in 7
    assert jump.delta.verdict == "fail"
    assert jump.delta.change == pytest.approx(6.0)
    assert jump.delta.percent == pytest.approx(75.0)
    assert judge(CREA, 10.0, "mg/L", previous=prev).delta.verdict == "pass"
    old = Previous(8.0, AT - timedelta(days=30))  # outside the rule's 7 days
    assert judge(CREA, 14.0, "mg/L", previous=old).delta.verdict == "none"
    assert judge(CREA, 14.0, "mg/L").delta.verdict == "none"
    k = judge(K, 5.0, "mmol/L", previous=Previous(3.8, AT - timedelta(days=1)))  # absolute: 1.2 > 1.0
    assert (k.delta.verdict, round(k.delta.change, 2)) == ("fail", 1.2)


@pytest.mark.parametrize(
    ("creatinine", "unit", "age", "sex", "expected"),
    [
        # by hand: 142 x (1.0/0.9)^-1.200 x 0.9938^50 = 142 x 0.88124 x 0.73273 = 91.7
        (1.0, "mg/dL", 50, "M", 92),
        (88.42, "umol/L", 50, "M", 92),
        (10.0, "mg/L", 50, "M", 92),
        # 142 x (0.8/0.7)^-1.200 x 0.9938^60 x 1.012 = 142 x 0.85194 x 0.68856 x 1.012 = 84.3
        (0.8, "mg/dL", 60, "F", 84),
        # below kappa: 142 x (0.6/0.7)^-0.241 x 0.9938^40 x 1.012 = 142 x 1.03785 x 0.77978 x 1.012 = 116.3
        (0.6, "mg/dL", 40, "F", 116),
        # 142 x (2.0/0.9)^-1.200 x 0.9938^70 = 142 x 0.38357 x 0.64720 = 35.3
        (2.0, "mg/dL", 70, "M", 35),
    ],
)
def test_egfr_ckd_epi_2021_against_values_worked_by_hand(creatinine, unit, age, sex, expected) -> None:
    assert abs(ckd_epi_2021(creatinine, unit, age, sex) - expected) <= 1.0


def test_calculated_tests_of_one_request() -> None:
    out = {c.code: c for c in EV.calculate({"CREA": (10.0, "mg/L")}, sex="M", age=50.0)}
    assert list(out) == ["EGFR"]
    assert out["EGFR"].value == 92 and out["EGFR"].unit == "mL/min/{1.73_m2}"
    child = EV.calculate({"CREA": (5.0, "mg/L")}, sex="F", age=9.0)
    assert (child[0].value, child[0].reason) == (None, "patient de moins de 18 ans")
    lipids = {"CT": (2.20, "g/L"), "HDL": (0.50, "g/L"), "TG": (1.00, "g/L")}
    ldl = EV.calculate(lipids, sex="F", age=50.0)
    assert [(c.code, c.value, c.reason) for c in ldl] == [("LDL", 1.50, None)]
    high_tg = EV.calculate({**lipids, "TG": (3.50, "g/L")}, sex="F", age=50.0)
    assert [(c.code, c.value, c.reason) for c in high_tg] == [("LDL", None, "triglycérides trop élevés")]
    missing = EV.calculate({"CT": (2.2, "g/L")}, sex="F", age=50.0)
    assert missing[0].reason == "résultat manquant : hdl, triglycerides"


def test_friedewald_in_both_units_and_its_limit() -> None:
    assert friedewald(2.20, 0.50, 1.00, "g/L") == pytest.approx(1.50)
    assert friedewald(5.5, 1.3, 2.2, "mmol/L") == pytest.approx(3.2)
    assert friedewald(2.2, 0.5, 3.39, "g/L") is not None
    assert friedewald(2.2, 0.5, 3.4, "g/L") is None
    assert friedewald(6.0, 1.0, 4.5, "mmol/L") is None
    with pytest.raises(InvalidInput):
        friedewald(2.2, 0.5, 1.0, "mg/dL")


def test_a_tsh_out_of_range_orders_ft4() -> None:
    assert EV.reflexes("TSH", judge(TSH, 7.5, "mU/L").flag) == [("TSH-T4L", "T4L")]
    assert EV.reflexes("TSH", judge(TSH, 0.05, "mU/L").flag) == [("TSH-T4L", "T4L")]
    assert EV.reflexes("TSH", judge(TSH, 1.5, "mU/L").flag) == []
    assert EV.reflexes("AGHBS", judge("5196-1", "Positif", None).flag) == [("AGHBS-POS", "ACHBC")]


def test_autovalidation_releases_a_normal_result_and_holds_the_others_with_their_reason() -> None:
    normal = autovalidate(RULES, judge(GLY, 0.95, "g/L"))
    assert (normal.released, normal.rule_id, normal.version) == (True, "AV-GEN", "av-2025-03")
    high = autovalidate(RULES, judge(GLY, 1.40, "g/L"))
    assert (high.released, high.reason, high.rule_id, high.version) == (
        False,
        "hors des valeurs de référence",
        "AV-GEN",
        "av-2025-03",
    )
    crit = autovalidate(RULES, judge(K, 6.8, "mmol/L", previous=Previous(4.0, AT - timedelta(days=1))))
    assert (crit.released, crit.rule_id) == (False, "AV-K")
    assert crit.reason in ("hors des valeurs de référence", "valeur critique")
    jump = judge(CREA, 12.5, "mg/L", previous=Previous(8.0, AT - timedelta(days=2)))  # in range, +56 %
    assert jump.flag == "N"
    assert autovalidate(RULES, jump).reason == "delta-check échoué"
    # potassium's own rule asks for a previous result
    assert autovalidate(RULES, judge(K, 4.2, "mmol/L")).reason == "pas de résultat antérieur pour le delta-check"
    k_ok = autovalidate(RULES, judge(K, 4.2, "mmol/L", previous=Previous(4.0, AT - timedelta(days=1))))
    assert (k_ok.released, k_ok.rule_id) == (True, "AV-K")
    assert autovalidate(RULES, judge(GLY, 0.95, "g/L"), correction=True).reason == "correction d'un résultat"
    assert autovalidate(RULES, judge(GLY, None, "g/L")).reason == "pas de valeur"
    assert not autovalidate(RULES, judge(GLY, 0.95, "mg/dL")).released


def test_a_result_outside_every_rule_is_never_released() -> None:
    only_k = parse_rules('version = "k"\n[[rule]]\nid = "R"\ntests = ["K"]\nrequire = []\n')
    decision = autovalidate(only_k, judge(GLY, 0.95, "g/L"))
    assert (decision.released, decision.reason, decision.rule_id) == (False, "aucune règle ne couvre ce test", None)
    assert not autovalidate(None, judge(GLY, 0.95, "g/L")).released
    unknown = EV.judge(LOINC, "99999-9", 1.0, "g/L", sex="M", age=40.0)
    assert autovalidate(RULES, unknown).reason == "test absent du catalogue"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version = "v"\n', "rules: field rule"),
        ('version = "v"\n[[rule]]\nid = "R"\ntests = ["NOPE"]\nrequire = []\n', "rules: rule R: field tests"),
        ('version = "v"\n[[rule]]\nid = "R"\ntests = ["*"]\nrequire = ["sunny"]\n', "rules: rule R: field require"),
        ('version = "v"\n[[rule]]\nid = "R"\ntests = ["*", "K"]\nrequire = []\n', "rules: rule R: field tests"),
        ("version = ", "rules: not valid TOML"),
    ],
)
def test_bad_rules_give_one_line(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_rules(text, default_catalogue())
    assert message in str(e.value) and "\n" not in str(e.value)
