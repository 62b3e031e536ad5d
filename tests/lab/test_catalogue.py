"""The catalogue format: the default catalogue, its agreement with the generator, faults on one line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvault.errors import InvalidInput
from labvault.interop._common import is_ucum
from labvault.lab.catalogue import _parse, default_catalogue, default_text, parse_catalogue
from labvault.synth import panels as P

MINIMAL = """
version = "t-1"
[[test]]
code = "K"
loinc = "2823-3"
label_fr = "Potassium"
label_en = "Potassium"
specimen = "SER"
container = "tube sec"
unit = "mmol/L"
range = [{ low = 3.5, high = 5.1 }]
"""


def test_default_catalogue_parses_with_its_panels_and_calculations() -> None:
    cat = default_catalogue()
    assert cat.version == "labvault-default-2025.1"
    assert 60 <= len(cat.tests) <= 80
    assert cat.expand("IONO") == ("NA", "K", "CL", "CO2")
    assert cat.expand("BILAN_LIPIDIQUE") == ("CT", "HDL", "TG", "LDL")
    assert cat.expand("K") == ("K",)
    assert {t.code: t.calculation for t in cat.tests if t.calculation} == {"EGFR": "ckd_epi_2021", "LDL": "friedewald"}
    assert cat.test("EGFR").loinc == "98979-8"  # eGFR CKD-EPI 2021
    assert (cat.reflexes[0].test, cat.reflexes[0].order) == ("TSH", ("T4L",))
    with pytest.raises(InvalidInput):
        cat.expand("NOPE")


def test_every_unit_is_ucum_and_every_quantitative_test_has_one() -> None:
    for t in default_catalogue().tests:
        if t.kind == "quantitative":
            assert t.unit is not None and is_ucum(t.unit), t.code
        else:
            assert t.unit is None and t.normal_values == ("Négatif",), t.code


def test_the_generator_tests_are_in_the_catalogue_with_the_same_loinc_and_unit() -> None:
    """Generated results judge against the catalogue: same LOINC codes, same units (genetic tests,
    free text read by a biologist, are the only ones left out)."""
    cat = default_catalogue()
    for g in P.ALL_TESTS:
        t = cat.by_loinc(g.code)
        if isinstance(g, P.Genetic):
            assert t is None
            continue
        assert t is not None, g.code
        if isinstance(g, P.Analyte):
            assert t.kind == "quantitative" and t.unit == g.unit, g.code
        else:
            assert t.kind == "qualitative" and P.QUALITATIVE_NEGATIVE in t.normal_values, g.code


def test_digest_is_of_the_content_not_the_layout() -> None:
    a = parse_catalogue(MINIMAL)
    b = parse_catalogue("\n\n# a comment\n" + MINIMAL.replace(" = ", "="))
    c = parse_catalogue(MINIMAL.replace("5.1", "5.2"))
    assert a.digest == b.digest != c.digest
    assert len(a.digest) == 64
    assert parse_catalogue(default_text()).digest == default_catalogue().digest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("2823-3", "2823-4"), "catalogue: test K: field loinc: not a LOINC code"),
        (('unit = "mmol/L"', 'unit = "mmol/l/x"'), "catalogue: test K: field unit: not a valid UCUM unit"),
        (('unit = "mmol/L"', 'unit = "µmol/L"'), "catalogue: test K: field unit: not a valid UCUM unit"),
        (('specimen = "SER"', 'specimen = "BLOOD"'), "catalogue: test K: field specimen"),
        (('container = "tube sec"', 'container = "bocal"'), "catalogue: test K: field container"),
        (("low = 3.5", "low = 6.5"), "catalogue: test K: range 1: field low: is above high"),
        (("low = 3.5", 'low = "3,5"'), "catalogue: test K: range 1: field low: must be a number"),
        (('label_en = "Potassium"\n', ""), "catalogue: test K: field label_en: missing"),
        (('label_en = "Potassium"', 'label_en = "Potassium"\ncolour = 1'), "catalogue: test K: field colour: unknown"),
        (('version = "t-1"', 'version = ""'), "catalogue: field version"),
        (("range = [", 'delta = { kind = "fast", limit = 1, days = 1 }\nrange = ['), "test K: delta: field kind"),
        (("[[test]]", "[[test]\n"), "catalogue: not valid TOML"),
    ],
)
def test_a_bad_file_gives_one_line_naming_the_test_and_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_catalogue(MINIMAL.replace(*change))
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def test_a_panel_or_reflex_naming_an_unknown_test_is_refused() -> None:
    with pytest.raises(InvalidInput, match="panel IONO: field tests: names a test"):
        parse_catalogue(MINIMAL + '[[panel]]\ncode = "IONO"\nlabel_fr = "a"\nlabel_en = "b"\ntests = ["K", "NA"]\n')
    with pytest.raises(InvalidInput, match="reflex R1: field order"):
        parse_catalogue(MINIMAL + '[[reflex]]\nid = "R1"\ntest = "K"\nwhen = "high"\norder = ["NA"]\n')


_toml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_text_raises_only_invalid_input(text: str) -> None:
    try:
        parse_catalogue(text)
    except InvalidInput as e:
        message = str(e)
    else:
        return
    assert "\n" not in message


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_garbage_structures_raise_only_invalid_input(data: st.DataObject) -> None:
    """Any shape of parsed content under the known fields (what tomllib may hand over)."""
    fields = ["code", "loinc", "label_fr", "label_en", "specimen", "container", "kind", "unit", "range", "delta"]
    test = {"code": "K", "loinc": "2823-3", "label_fr": "a", "label_en": "b", "specimen": "SER"}
    test.update(data.draw(st.dictionaries(st.sampled_from(fields), _toml_values.filter(lambda v: v is not None))))
    doc = {"version": data.draw(st.sampled_from(["v", 1])), "test": [test]}
    try:
        _parse(doc)
    except InvalidInput as e:
        message = str(e)
    else:
        return
    assert "\n" not in message
