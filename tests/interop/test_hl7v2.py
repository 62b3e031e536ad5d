"""HL7 v2 parser and mapper: unit tests, every real file under ../shared/realdata/hl7v2, and a fuzz test."""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.domain.identifiers import OID_NIR
from labvault.domain.models import LOINC, IdentityStatus, ResultStatus
from labvault.errors import InvalidInput
from labvault.interop._common import is_ucum
from labvault.interop.hl7v2 import (
    MAX_INPUT_BYTES,
    MAX_SEGMENT_LENGTH,
    MAX_SEGMENTS,
    Hl7Error,
    parse,
    split_messages,
    to_domain,
)

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "hl7v2"
IN_CI = os.environ.get("CI") == "true"
REAL_FILES = sorted(p for p in REALDATA.rglob("*") if p.is_file()) if REALDATA.is_dir() else []
CALL_BUDGET = 300_000  # Python function calls allowed to split+parse+map one real file


def need_realdata() -> None:
    if REALDATA.is_dir():
        return
    reason = f"real HL7 v2 test data absent: {REALDATA}"
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


NIR = "1850775123456"  # made-up structure-only value
INS_REP = f"{NIR}^^^ASIP-SANTE-INS-NIR&{OID_NIR}&ISO^INS"


def oru(
    *,
    pid3: str = INS_REP,
    obx: str | None = None,
    extra: str = "",
    msh18: str = "",
    enc: str = "^~\\&",
    sep: str = "|",
    end: str = "\r",
) -> bytes:
    c, r, _e, s = enc
    obx = (
        obx
        or f"OBX{sep}1{sep}NM{sep}2823-3{c}Potassium{c}LN{sep}{sep}4.2{sep}mmol/L{c}{c}UCUM"
        f"{sep}3.5-5.1{sep}N{sep}{sep}{sep}F"
    )
    lines = [
        f"MSH{sep}{enc}{sep}LIS{sep}LAB1{c}1.2.3{c}ISO{sep}GW{sep}HOSP{sep}20240101120000+0100{sep}{sep}ORU{c}R01{c}ORU_R01"
        f"{sep}CTRL1{sep}P{sep}2.5.1{sep}{sep}{sep}{sep}{sep}{sep}{msh18}",
        f"PID{sep}1{sep}{sep}{pid3}{sep}{sep}DUPONT{c}Jean{c}{c}{c}{c}{c}L{r}MARTIN{c}Jean{c}{c}{c}{c}{c}D{sep}{sep}19850704{sep}M",
        f"ORC{sep}RE{sep}{sep}{sep}{sep}{sep}{sep}{sep}{sep}{sep}{sep}{sep}10001234567{c}HOUSE{c}Greg{c}{c}{c}{c}{c}{c}RPPS{s}1.2.250.1.71.4.2.1{s}ISO",
        f"OBR{sep}1{sep}P1{sep}F1{sep}24326-1{c}Electrolytes{c}LN{sep}{sep}{sep}20240101083000",
        obx,
        *([extra] if extra else []),
    ]
    return (end.join(lines) + end).encode("latin-1" if "8859" in msh18 else "utf-8")


def with_ins(raw: bytes) -> bytes:
    """A real message with an INS repetition added to PID-3 (real files carry none)."""
    out = []
    for line in raw.split(b"\r"):
        if line.startswith(b"PID|"):
            parts = line.split(b"|")
            while len(parts) < 4:
                parts.append(b"")
            parts[3] = (parts[3] + b"~" if parts[3] else b"") + INS_REP.encode()
            line = b"|".join(parts)
        out.append(line)
    return b"\r".join(out)


# ------------------------------------------------------------------------------------------ units


def test_maps_a_minimal_oru():
    m = to_domain(parse(oru()))
    assert m.identity.nir == NIR and m.identity.ins_oid == OID_NIR
    assert m.identity.identity_status is IdentityStatus.PROVISIONAL
    assert (m.identity.family_name, m.identity.birth_name, m.identity.given_names) == ("MARTIN", "DUPONT", "Jean")
    assert m.identity.birth_date == date(1985, 7, 4) and m.identity.sex == "M"
    [p] = m.prescribers
    assert p.rpps == "10001234567" and m.requests[0].prescriber_id == p.prescriber_id
    [r] = m.results
    assert (r.code, r.code_system, r.value_num, r.unit) == ("2823-3", LOINC, 4.2, "mmol/L")
    assert (r.ref_low, r.ref_high, r.flag, r.status) == (3.5, 5.1, "N", ResultStatus.FINAL)
    assert m.control_id == "CTRL1" and m.sending_facility == "LAB1"


def test_ids_are_deterministic():
    a, b = to_domain(parse(oru())), to_domain(parse(oru()))
    assert a.results[0].result_id == b.results[0].result_id and len(a.results[0].result_id) == 32
    assert a.requests[0].request_id == b.requests[0].request_id
    assert a.results[0].result_id != a.requests[0].request_id


def test_escapes():
    obx = "OBX|1|TX|X1^Note^L||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41C3A9\\\\.br\\g\\H\\x\\N\\||||||F"
    [r] = to_domain(parse(oru(obx=obx))).results
    assert r.value_text == "a|b^c&d~e\\fAé\ngx"
    assert r.code_system == "urn:hl7v2:codesystem:L"


def test_non_default_encoding_characters():
    raw = oru(
        sep="#",
        enc="$@!%",
        pid3=f"{NIR}$$$INS%{OID_NIR}%ISO$INS",
        obx="OBX#1#NM#2823-3$Potassium$LN##4.2#mmol/L##N###F",
    )
    msg = parse(raw)
    assert msg.get("PID-5") == "DUPONT" and msg.get("PID-5[2].1") == "MARTIN"
    assert msg.get("PID-3.4.2") == OID_NIR
    m = to_domain(msg)
    assert m.results[0].value_num == 4.2 and m.identity.nir == NIR and m.prescribers[0].rpps == "10001234567"


def test_repetitions_and_other_identifiers():
    pid3 = f"123^^^HOSP&1.2.3.4&ISO^PI~456^^^LOCAL^MR~{INS_REP}"
    m = to_domain(parse(oru(pid3=pid3)))
    assert m.other_identifiers == [("urn:oid:1.2.3.4", "123"), ("urn:hl7v2:assigner:LOCAL", "456")]


def test_msh18_iso_8859_1():
    obx = "OBX|1|ST|X1^Remarque^L||hémolysé||||||F"
    m = to_domain(parse(oru(obx=obx, msh18="8859/1")))
    assert m.results[0].value_text == "hémolysé"
    # undeclared: UTF-8 tried first, then ISO-8859-1
    raw = oru(obx=obx).replace("hémolysé".encode(), "hémolysé".encode("latin-1"))
    assert to_domain(parse(raw)).results[0].value_text == "hémolysé"


def test_msh18_declared_utf8_but_invalid():
    raw = oru(msh18="UNICODE UTF-8").replace(b"Jean", b"J\xe9an")
    with pytest.raises(Hl7Error, match="MSH-18"):
        parse(raw)


@pytest.mark.parametrize("end", ["\r", "\n", "\r\n"])
def test_segment_ends(end):
    [one] = split_messages(oru(end=end))
    assert to_domain(parse(one)).results[0].value_num == 4.2


def test_mllp_and_bom_and_batch():
    msg = oru()
    framed = b"\x0b" + msg + b"\x1c\x0d" + b"\x0b\xef\xbb\xbf" + msg.replace(b"CTRL1", b"CTRL2") + b"\x1c\x0d"
    assert [parse(m).control_id for m in split_messages(framed)] == ["CTRL1", "CTRL2"]
    batch = b"FHS|^~\\&\rBHS|^~\\&\r" + msg + msg.replace(b"CTRL1", b"CTRL3") + b"BTS|2\rFTS|1\r"
    assert [parse(m).control_id for m in split_messages(batch)] == ["CTRL1", "CTRL3"]
    with pytest.raises(Hl7Error, match="truncated MLLP"):
        split_messages(b"\x0b" + msg)


def test_input_size_limit():
    with pytest.raises(Hl7Error, match="exceeds the limit"):
        split_messages(b"MSH" + b"x" * MAX_INPUT_BYTES)


@pytest.mark.parametrize(
    ("raw", "where", "reason"),
    [
        (b"hello", None, "no MSH"),
        (oru().split(b"\r")[0] + b"\r", "MSH[1]", "truncated"),
        (oru().replace(b"ORU^R01", b"ADT^A01"), "MSH-9", "unsupported message type"),
        (b"\r".join(ln for ln in oru().split(b"\r") if not ln.startswith(b"PID")), None, "PID segment missing"),
        (b"\r".join(ln for ln in oru().split(b"\r") if not ln.startswith(b"OBR")), "OBX[1]", "before any OBR"),
        (oru().replace(b"20240101083000", b"20241301"), "OBR-7", "date/time"),
        (oru().replace(b"20240101083000", b"2024-01-01"), "OBR-7", "TS format"),
        (oru().replace(b"|4.2|", b"|abc|"), "OBX-5", "not numeric for value type NM"),
        (oru(pid3="123^^^HOSP^PI").replace(b"DUPONT", b"").replace(b"MARTIN", b""), "PID-5", "family name missing"),
        (oru(pid3="").replace(b"|19850704|", b"||"), "PID-7", "birth date missing"),
        (oru(pid3="1850775123456^^^X&1.2.250.1.213.1.4.10&ISO^INS~123^^^HOSP^PI"), "PID-3", "test INS"),
        (oru().replace(b"+0100||ORU", b"+2500||ORU"), "MSH-7", "date/time"),
        (oru().replace(b"|||F", b"|||O"[:-1] + b"Q"), "OBX-11", "result status cannot be imported"),
        (oru(pid3="1850775123456^^^X&1.2.250.1.213.1.4.10&ISO^INS"), "PID-3", "test INS"),
        (oru(extra="NTE|1||" + "x" * MAX_SEGMENT_LENGTH), "NTE[1]", "segment too long"),
        (oru(extra="\r".join(["NTE|1"] * MAX_SEGMENTS)), None, "too many segments"),
    ],
)
def test_precise_rejections(raw, where, reason):
    with pytest.raises(Hl7Error) as info:
        for i, m in enumerate(split_messages(raw), start=1):
            to_domain(parse(m, index=i))
    text = str(info.value)
    assert reason in text and "\n" not in text
    assert isinstance(info.value, InvalidInput)
    if where:
        assert where in text


def test_error_messages_carry_no_personal_value():
    with pytest.raises(Hl7Error) as info:
        to_domain(parse(oru().replace(b"|4.2|", b"|SECRET42|")))
    assert "SECRET42" not in str(info.value)
    assert (info.value.segment, info.value.field, info.value.message_index) == ("OBX[1]", "OBX-5", 1)
    with pytest.raises(Hl7Error) as info:
        to_domain(parse(oru().replace(b"19850704", b"19851399")))
    assert "19851399" not in str(info.value) and info.value.field == "PID-7"


def test_test_ins_accepted_in_test_mode():
    m = to_domain(parse(oru(pid3="1850775123456^^^X&1.2.250.1.213.1.4.10&ISO^INS")), test_mode=True)
    assert m.identity.ins_oid == "1.2.250.1.213.1.4.10"


def test_nte_comment_z_segments_and_ranges():
    extra = "NTE|1||first\\.br\\line\rZBE|1|custom"
    obx = "OBX|1|NM|1988-5^CRP^LN||12|mg/L|<10|H|||P|||20240101090000|||||20240101100000"
    m = to_domain(parse(oru(obx=obx, extra=extra)))
    [r] = m.results
    assert (r.ref_low, r.ref_high, r.status, r.comment) == (None, 10.0, ResultStatus.PRELIMINARY, "first\nline")
    assert r.validated_at is not None and m.z_segments == ["ZBE|1|custom"]


# ------------------------------------------------------------------------------------------ real files


def _ids(p: Path) -> str:
    return p.relative_to(REALDATA).as_posix()


def _run(raw: bytes, name: str) -> list[object]:
    outcomes: list[object] = []
    try:
        messages = split_messages(raw, file=name)
    except Hl7Error as exc:
        return [exc]
    for i, m in enumerate(messages, start=1):
        try:
            outcomes.append(to_domain(parse(m, index=i, file=name)))
        except Hl7Error as exc:
            outcomes.append(exc)
    return outcomes


@pytest.mark.parametrize("path", REAL_FILES or [None], ids=[_ids(p) for p in REAL_FILES] or ["absent"])
def test_real_file_maps_or_is_rejected_precisely(path):
    need_realdata()
    raw = path.read_bytes()
    calls = 0
    is_ucum("mg/dL")  # the UCUM grammar is built once per process, outside the budget of any one file

    def counter(frame, event, arg):
        nonlocal calls
        calls += 1
        if calls > CALL_BUDGET:
            raise AssertionError("loop budget exceeded")

    old = sys.getprofile()
    sys.setprofile(counter)
    try:
        outcomes = _run(raw, _ids(path)) + _run(with_ins(raw), _ids(path))
    finally:
        sys.setprofile(old)
    assert calls <= CALL_BUDGET
    for o in outcomes:
        if isinstance(o, Hl7Error):
            text = str(o)
            assert "\n" not in text and _ids(path) in text
            assert o.message_index is not None or "no MSH" in text or "MLLP" in text


KNOWN = {
    # file: (code, unit, value) preserved from the file text once an INS is present
    "nist/ORU_R01_2.5.1_SampleTestCase1.hl7": ("10368-9", "ug/dL", 50.0),
    "cdc-ti/004_Oracle_ORU_R01_v23.hl7": None,
    "ruby-hl7/cerner_lead.hl7": None,
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_files_preserve_values(name):
    need_realdata()
    raw = (REALDATA / name).read_bytes()
    text = raw.decode("latin-1")
    [msg] = split_messages(raw)
    assert to_domain(parse(msg)).identity.nir is None  # accepted without an INS (M2: provisional)
    m = to_domain(parse(with_ins(msg)))
    assert m.results and m.control_id in text and m.sending_facility in text
    for r in m.results:
        assert f"|{r.code}^" in text or f"^{r.code}^" in text
        if r.unit:
            assert r.unit in text
    if KNOWN[name]:
        code, unit, value = KNOWN[name]
        assert any((r.code, r.unit, r.value_num) == (code, unit, value) for r in m.results)


@pytest.mark.parametrize("path", [p for p in REAL_FILES if "malformed" in p.parts] or [None])
def test_malformed_files_are_rejected(path):
    need_realdata()
    for o in _run(path.read_bytes(), _ids(path)):
        assert isinstance(o, Hl7Error)


# ------------------------------------------------------------------------------------------ fuzz


def _seeds() -> list[bytes]:
    seeds = [oru()]
    for p in REAL_FILES[:40]:
        if p.stat().st_size < 20_000:
            seeds.append(p.read_bytes())
    return seeds


def _must_not_crash(data: bytes) -> None:
    try:
        messages = split_messages(data)
    except Hl7Error:
        return
    for m in messages:
        try:
            to_domain(parse(m), test_mode=True)
        except Hl7Error:
            pass


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(data):
    _must_not_crash(data)
    _must_not_crash(b"MSH|^~\\&|" + data)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_seeds()),
    st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 40), st.binary(max_size=8)), max_size=6),
)
def test_fuzz_mutated_messages(seed, edits):
    data = bytearray(seed)
    for pos, cut, insert in edits:
        at = pos % (len(data) + 1)
        data[at : at + cut] = insert
    _must_not_crash(bytes(data))
    _must_not_crash(with_ins(bytes(data)))


def test_spm_after_obx_is_the_orders_specimen():
    spm = "|".join(["SPM", "1", "", "", "BLD^Blood^HL70487", *[""] * 12, "20240101080000", "20240101093000"])
    m = to_domain(parse(oru(extra=spm)))
    [sp] = m.specimens
    assert (sp.type, sp.collected_at.hour, sp.received_at.minute) == ("BLD", 8, 30)
    assert m.results[0].specimen_id == sp.specimen_id and sp.request_id == m.requests[0].request_id
