"""Numbers a sender wrote: NaN, infinity, an overflow (a 900,000-digit value) or an absurdly long
numeric text is refused at ingest by every reader, with its position and never the value; nothing
non-finite reaches the store."""

from __future__ import annotations

import json

import pytest

from labvault.domain.models import LOINC
from labvault.errors import InvalidInput
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.interop import csv_in, fhir, hl7v2, hprim
from tests.interop.messages import NIR, oru
from tests.interop.test_csv_in import row, table
from tests.interop.test_fhir import lab_bundle
from tests.interop.test_hprim import hpr

HUGE = "9" * 900_000  # stored as infinity before: float("9" * 900_000) == inf
LONG = "0." + "1" * 60  # finite, but no lab value has 60 significant digits
SHORT_OK = "0.000123456789012345678901234567"  # 27 significant digits: still read


def _only_refusal(pieces: list[ingest.Piece]) -> str:
    assert len(pieces) == 1 and pieces[0].envelope is None, pieces
    reason = pieces[0].reason
    assert reason is not None and HUGE[:20] not in reason and "111111111111" not in reason
    return reason


@pytest.mark.parametrize("value", [HUGE, LONG, "9" * 400])
def test_hl7_nm_value_refused_with_its_position(value):
    reason = _only_refusal(ingest.read(oru(value=value), file="feed.hl7"))
    assert reason.startswith("feed.hl7, message 1, OBX[1], OBX-5: number "), reason


def test_hl7_sn_value_refused_with_its_position():
    msg = oru(value=f"^{HUGE}", obx_type="SN")
    reason = _only_refusal(ingest.read(msg, file="feed.hl7"))
    assert reason.startswith("feed.hl7, message 1, OBX[1], OBX-5: number "), reason


def test_hl7_reference_range_bound_refused_with_its_position():
    msg = oru().replace(b"3.5-5.1", ("3.5-" + HUGE).encode())
    reason = _only_refusal(ingest.read(msg, file="feed.hl7"))
    assert reason.startswith("feed.hl7, message 1, OBX[1], OBX-7: number "), reason


def test_hl7_ordinary_numbers_still_read():
    [m] = hl7v2.read(oru(value=SHORT_OK))
    assert m.results[0].value_num == float(SHORT_OK)
    assert (m.results[0].ref_low, m.results[0].ref_high) == (3.5, 5.1)


def test_hprim_nm_value_and_range_refused_with_their_position():
    obx = f"OBX|1|NM|2823-3~Potassium~LN||{HUGE}|mmol/L|3.5 - 5.1|N|||F"
    reason = _only_refusal(ingest.read(hpr(obx=[obx]), file="res.hpr"))
    assert reason.startswith("res.hpr, line 4, OBX[1], OBX-5: number "), reason
    obx = f"OBX|1|NM|2823-3~Potassium~LN||4,2|mmol/L|3.5 - {HUGE}|N|||F"
    reason = _only_refusal(ingest.read(hpr(obx=[obx]), file="res.hpr"))
    assert reason.startswith("res.hpr, line 4, OBX[1], OBX-7: number "), reason
    obx = f"OBX|1|NM|2823-3~Potassium~LN||{LONG}|mmol/L||N|||F"
    assert "OBX-5: number of more than 40 significant digits" in _only_refusal(
        ingest.read(hpr(obx=[obx]), file="res.hpr")
    )


def _fhir_with_value(raw_number: str) -> bytes:
    """The lab bundle whose first Observation's valueQuantity.value is the JSON number text given."""
    doc = lab_bundle()
    i = next(i for i, e in enumerate(doc["entry"]) if e["resource"]["resourceType"] == "Observation")
    doc["entry"][i]["resource"]["valueQuantity"]["value"] = 123456.0
    text = json.dumps(doc).replace("123456.0", raw_number, 1)
    assert raw_number in text
    return text.encode()


@pytest.mark.parametrize("number", [HUGE, HUGE + ".5", "1e400", "-1e400", LONG, "1" + "0" * 5000])
def test_fhir_value_quantity_refused_with_its_json_path(number):
    reason = _only_refusal(ingest.read(_fhir_with_value(number), file="b.json"))
    assert ", Observation, Observation.valueQuantity.value: number " in reason, reason
    assert reason.startswith("b.json, entry "), reason


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_fhir_non_json_numbers_refused(number):
    reason = _only_refusal(ingest.read(_fhir_with_value(number), file="b.json"))
    assert "is not a JSON number" in reason


def test_fhir_ndjson_value_refused_with_its_line():
    doc = lab_bundle()
    lines = [json.dumps(e["resource"]) for e in doc["entry"]]
    k = next(i for i, ln in enumerate(lines) if '"Observation"' in ln and "valueQuantity" in ln)
    obs = json.loads(lines[k])
    obs["valueQuantity"]["value"] = 123456.0
    lines[k] = json.dumps(obs).replace("123456.0", HUGE)
    with pytest.raises(fhir.FhirError) as info:
        fhir.read_ndjson({"Observation.ndjson": "\n".join(lines).encode()})
    assert str(info.value).startswith(
        f"Observation.ndjson, line {k + 1}, Observation, Observation.valueQuantity.value: number "
    ), str(info.value)


CSV_HUGE = "9" * 100_000  # a CSV cell is at most 131,072 characters (csv module): HUGE is refused as such


@pytest.mark.parametrize("value", [CSV_HUGE, "1e999", "1,5e400", LONG])
def test_csv_number_refused_with_its_row_and_column(value):
    reason = _only_refusal(ingest.read(table([row("A1", value=value)]), file="x.csv"))
    assert reason.startswith("x.csv, row 2, column result.value_num: number "), reason


def test_csv_900000_digits_refused_at_its_row():
    assert _only_refusal(ingest.read(table([row("A1", value=HUGE)]), file="x.csv")).startswith(
        "x.csv, row 2: not well-formed CSV (field larger than field limit"
    )


def test_csv_reference_bound_refused():
    data = table(
        [row("A1", **{"result.ref_high": CSV_HUGE})],
        head=[*csv_in.REQUIRED, "request.accession", "result.value_num", "result.ref_high"],
    )
    reason = _only_refusal(ingest.read(data, file="x.csv"))
    assert reason.startswith("x.csv, row 2, column result.ref_high: number "), reason


def test_the_store_refuses_a_non_finite_number_from_any_reader():
    """The check before the store, whatever reader made the objects: no NaN or infinity is stored."""
    [m] = hl7v2.read(oru())
    for attr in ("value_num", "ref_low", "ref_high"):
        for bad in (float("inf"), float("-inf"), float("nan")):
            r = m.results[1]
            before = getattr(r, attr)
            setattr(r, attr, bad)
            try:
                with pytest.raises(InvalidInput) as info:
                    intake.check(intake.Envelope("k", "hl7v2", [m]))
            finally:
                setattr(r, attr, before)
            assert str(info.value) == "result 2: a number is not finite (NaN or infinity)"
    intake.check(intake.Envelope("k", "hl7v2", [m]))
    assert m.results[0].code_system == LOINC and m.identity.nir == NIR


def test_hprim_declared_counts_of_any_length_are_no_crash():
    """The L record's counts were read with int(): a 5,000-digit count raised ValueError."""
    f = hprim.parse(hpr(tail="L|1||" + "7" * 5000 + "|" + "8" * 5000))
    assert any("L-3" in w for w in f.warnings) and not any("7777" in w for w in f.warnings)
    f = hprim.parse(hpr(tail="L|1||\u00b2|9"))  # a superscript two is a digit to str.isdigit, not to int()
    assert hprim.to_domain(f)


def test_extreme_but_exact_numbers_still_read_and_underflow_is_refused():
    """What the writers of this package write for any finite double (no exponent: 1e300 is 301
    digits) still reads back; a non-zero value that would read as 0 is refused."""
    big, tiny = "1" + "0" * 300, "0." + "0" * 320 + "5"
    for text, value in ((big, 1e300), (tiny, 5e-321)):
        [m] = hl7v2.read(oru(value=text))
        assert m.results[0].value_num == value
    under = "0." + "0" * 350 + "1"
    assert "OBX-5: number out of range (too close to zero" in _only_refusal(ingest.read(oru(value=under), file="f"))
    reason = _only_refusal(ingest.read(_fhir_with_value("1e-400"), file="b.json"))
    assert "Observation.valueQuantity.value: number out of range (too close to zero" in reason
