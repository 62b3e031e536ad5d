"""The HL7 v2 reader on real files (../shared/realdata/hl7v2) and on what French senders write: identities
without an INS (local identifiers, PID-32 status), every given name, result statuses, order numbers,
numbers as written and unit systems. ``docs/interop/hl7v2-realdata.md`` is what ``document()`` gives
on the real files, checked here; regenerate it with
``PYTHONPATH=src:. python -m tests.interop.test_hl7v2_realdata > docs/interop/hl7v2-realdata.md``."""

from __future__ import annotations

import os
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from labvault.domain.models import LOINC, IdentityStatus, ResultStatus
from labvault.ingest import service as ingest
from labvault.interop._common import UCUM
from labvault.interop.hl7v2 import parse, split_messages, to_domain

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata" / "hl7v2"
DOC = ROOT / "docs" / "interop" / "hl7v2-realdata.md"
CBC = REALDATA / "ms-fhir-converter" / "LRI_2.0-NG_CBC_Typ_Message.hl7"
NIR = "1850775123456"


def need(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"real HL7 v2 test data absent: {path}")


def read_one(raw: bytes, **kw):
    [msg] = split_messages(raw)
    return to_domain(parse(msg), **kw)


def test_nist_lri_cbc_message_is_read_whole():
    """M2: the NIST LRI CBC message (no INS): a provisional identity with its local id (PID-3) and
    its traits (middle name kept), its order numbers, and every value with unit, flag and range."""
    need(CBC)
    m = read_one(CBC.read_bytes())
    ident = m.identity
    assert ident.nir is None and ident.identity_status is IdentityStatus.PROVISIONAL
    assert ident.local_ids == [("urn:hl7v2:assigner:NIST%20MPI", "PATID1234")]
    assert (ident.family_name, ident.given_names, ident.first_given) == ("Jones", "William A", "William")
    assert (ident.birth_date, ident.sex) == (date(1961, 6, 15), "M")
    [req] = m.requests
    assert (req.placer_number, req.filler_number) == ("ORD666555", "R-991133")
    assert req.sender == "NIST Test Lab APP^NIST Lab Facility"
    assert req.message_at == datetime(2011, 5, 31, 14, 5, 51, tzinfo=timezone(timedelta(hours=-5)))
    minus8 = timezone(timedelta(hours=-8))
    assert req.reported_at == datetime(2011, 1, 4, 17, 0, 28, tzinfo=minus8)
    assert len(m.results) == 28
    by_code = {r.code: r for r in m.results}
    rbc, hgb, wbc = by_code["26453-1"], by_code["718-7"], by_code["26464-8"]
    assert (rbc.value_num, rbc.value_repr, rbc.unit, rbc.unit_system) == (4.41, "4.41", "10*6/uL", UCUM)
    assert (rbc.flag, rbc.ref_text, rbc.status) == ("N", "4.3 to 6.2", ResultStatus.FINAL)
    assert (hgb.value_num, hgb.unit, hgb.flag) == (12.5, "g/mL", "L")
    assert (wbc.value_num, wbc.value_repr, wbc.unit, wbc.flag) == (105600.0, "105600", "{cells}/uL", "HH")
    assert by_code["38892-6"].value_text == "Present ++ out of ++++"
    assert by_code["6742-1"].value_text == "Many spherocytes present."
    assert all(r.code_system == LOINC for r in m.results)
    assert rbc.validated_at == datetime(2011, 1, 3, 16, 34, 28, tzinfo=minus8)  # OBX-19, not OBR-7
    assert rbc.observation_key == f"{LOINC}|26453-1|" and rbc.message_at == req.message_at


def test_every_well_formed_real_lab_message_is_accepted_provisional():
    """M2: real ORU^R01 files carry no INS: accepted, provisional, with their local identifiers."""
    names = [
        "nist/ORU_R01_2.5.1_SampleTestCase1.hl7",
        "cdc-ti/001_TN_ORU_R01_LRI_v251.hl7",
        "cdc-ti/004_Oracle_ORU_R01_v23.hl7",
        "ruby-hl7/cerner_lead.hl7",
        "ms-fhir-converter/LAB-ORU-2.hl7",
    ]
    for name in names:
        need(REALDATA / name)
        m = read_one((REALDATA / name).read_bytes())
        assert m.identity.nir is None and m.identity.identity_status is IdentityStatus.PROVISIONAL, name
        assert m.identity.local_ids and m.results, name
    m = read_one((REALDATA / names[0]).read_bytes())
    assert m.identity.local_ids == [("urn:oid:2.16.840.1.113883.19.3.2.1", "9817566735")]
    [r] = m.results
    assert (r.code, r.unit, r.value_num) == ("10368-9", "ug/dL", 50.0)


# --------------------------------------------------------------------------------- made-up messages


def oru(pid3: str, pid5: str = "DUPONT^Jean^^^^^L", pid32: str = "", obx: tuple[str, ...] = (), v: str = "2.5.1"):
    pid = f"PID|1||{pid3}||{pid5}||19850704|M" + ("|" * 24 + pid32 if pid32 else "")
    lines = [
        f"MSH|^~\\&|LIS|LAB1|GW|HOSP|20240101120000+0100||ORU^R01^ORU_R01|C1|P|{v}",
        pid,
        "ORC|RE|P-1|F-1",
        "OBR|1|||24326-1^Electrolytes^LN|||20240101083000|||||||||||||||20240101110000",
        *(obx or ("OBX|1|NM|2823-3^Potassium^LN||4.2|mmol/L^^UCUM|3.5-5.1|N|||F",)),
    ]
    return ("\r".join(lines) + "\r").encode()


INS = f"{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
IPP = "IPP42^^^HOSP&1.2.3.4&ISO^PI"


@pytest.mark.parametrize(
    ("pid3", "pid32", "status"),
    [
        (INS, "", IdentityStatus.PROVISIONAL),
        (INS, "PROV", IdentityStatus.PROVISIONAL),
        (INS, "VALI", IdentityStatus.VALIDATED),
        (INS, "RECUP", IdentityStatus.RECOVERED),
        (INS, "QUAL", IdentityStatus.QUALIFIED),
        (IPP, "QUAL", IdentityStatus.VALIDATED),  # no INS: not qualified
        (IPP, "RECUP", IdentityStatus.PROVISIONAL),  # no INS: not recovered
        (IPP, "VALI", IdentityStatus.VALIDATED),
    ],
)
def test_identity_status_from_pid32(pid3, pid32, status):
    """M2: PID-32 (French PAM identity reliability) gives the RNIV status; without an INS an identity
    is neither recovered nor qualified."""
    ident = read_one(oru(pid3, pid32=pid32)).identity
    assert ident.identity_status is status
    assert ident.nir == (NIR if pid3 == INS else None)
    if pid3 == IPP:
        assert ident.local_ids == [("urn:oid:1.2.3.4", "IPP42")]


def test_local_ids_systems_and_ins_kept_apart():
    """M2: identifiers other than the INS become local ids: urn:oid, else assigner, else id type."""
    ident = read_one(oru(f"A1^^^HOSP^PI~B2^^^^MR~{INS}~C3^^^&1.2.9&ISO")).identity
    assert ident.nir == NIR
    assert ident.local_ids == [
        ("urn:hl7v2:assigner:HOSP", "A1"),
        ("urn:hl7v2:idtype:MR", "B2"),
        ("urn:oid:1.2.9", "C3"),
    ]


def test_no_identifier_but_traits_is_accepted():
    """M2: no identifier at all: accepted on its strict traits (matched on them), provisional."""
    ident = read_one(oru("")).identity
    assert ident.nir is None and ident.local_ids == [] and ident.identity_status is IdentityStatus.PROVISIONAL


def test_names_at_birth_and_used():
    """M2: PID-5 L gives the birth name and every given name at birth in order; D the name used and
    the given name used."""
    ident = read_one(oru(IPP, pid5="DUPONT^Jean^Pierre Paul^^^^L~MARTIN^Pierre^^^^^D")).identity
    assert (ident.birth_name, ident.family_name) == ("DUPONT", "MARTIN")
    assert (ident.given_names, ident.first_given, ident.used_given_name) == ("Jean Pierre Paul", "Jean", "Pierre")
    composed = read_one(oru(IPP, pid5="DUPONT^Jean Pierre^Paul^^^^L")).identity
    assert (composed.given_names, composed.first_given) == ("Jean Pierre Paul", "Jean Pierre")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("I", ResultStatus.PENDING),
        ("X", ResultStatus.CANCELLED),
        ("D", ResultStatus.ENTERED_IN_ERROR),
        ("W", ResultStatus.ENTERED_IN_ERROR),
        ("C", ResultStatus.CORRECTED),
        ("F", ResultStatus.FINAL),
    ],
)
def test_result_statuses(code, status):
    """OBX-11 I, X, D and W are kept (pending, cancelled, entered in error) with code and unit."""
    m = read_one(oru(IPP, obx=(f"OBX|1|NM|2823-3^Potassium^LN|||mmol/L^^UCUM|||||{code}",)))
    [r] = m.results
    assert (r.status, r.code, r.unit, r.value_num) == (status, "2823-3", "mmol/L", None)
    if status in (ResultStatus.PENDING, ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR):
        assert r.validated_at is None
    else:
        assert r.validated_at == datetime(2024, 1, 1, 11, 0)  # OBR-22: no OBX-19 nor OBX-14


def test_values_as_written_comparators_and_unit_systems():
    """NM as written (decimal comma read), SN with a comparator, ranges as text; OBX-6.3 system."""
    obx = (
        "OBX|1|NM|A^a^L||105600|/uL^^UCUM|||||F",
        "OBX|2|NM|B^b^L||12,50|UI/l^^UCUM|||||F",
        "OBX|3|SN|C^c^L||<^0.5|mg/L^^ISO+|||||F",
        "OBX|4|SN|D^d^L||^1^-^3|g/L|||||F",
        "OBX|5|NM|E^e^L||7|mmol/L|||||F",
        "OBX|6|NM|E^e^L|2|8|mmol/L|||||F|||20240101093000",
    )
    rs = read_one(oru(IPP, obx=obx, v="2.4")).results
    assert [(r.value_num, r.value_repr, r.comparator, r.value_text) for r in rs] == [
        (105600.0, "105600", None, None),
        (12.5, "12,50", None, None),
        (0.5, "0.5", "<", None),
        (None, None, None, "1-3"),
        (7.0, "7", None, None),
        (8.0, "8", None, None),
    ]
    assert [r.unit_system for r in rs] == [UCUM, None, "urn:hl7v2:units:ISO%2B", UCUM, UCUM, UCUM]
    assert rs[4].observation_key != rs[5].observation_key  # OBX-4 sub-id
    assert rs[5].validated_at == datetime(2024, 1, 1, 9, 30)  # v2.4: OBX-14


def test_placer_and_filler_from_obr_first():
    """OBR-2/OBR-3 number the order; an ORC just before gives them when the OBR has none."""
    raw = oru(IPP).replace(b"OBR|1|||", b"OBR|1|PO^X|FO^Y|")
    [req] = read_one(raw).requests
    assert (req.placer_number, req.filler_number, req.sender) == ("PO", "FO", "LIS^LAB1")
    [req] = read_one(oru(IPP)).requests
    assert (req.placer_number, req.filler_number) == ("P-1", "F-1")


# ------------------------------------------------------------------------------- the doc, as run

HEAD = """\
# HL7 v2 reader on the real test files

`labvault.ingest.service.read` (HL7 v2: `split_messages`, `parse`, `to_domain` of
`labvault.interop.hl7v2`, then the checks made before any write) run on every file under
`../shared/realdata/hl7v2/` (third-party test material: origin and licence in
`../shared/realdata/SOURCES.md`; the files are not copied into this repository). This page is what
`document()` in `tests/interop/test_hl7v2_realdata.py` gives, not written by hand: print it again with
`PYTHONPATH=src:. python -m tests.interop.test_hl7v2_realdata > docs/interop/hl7v2-realdata.md`;
the test `test_the_doc_is_what_the_code_gives` fails when this page and the code disagree.

None of these files is French, so none carries an INS (PID-3 with assigning authority OID
1.2.250.1.213.1.4.8 for a NIR, .4.9 for a NIA). An INS is not needed to receive a message: without
one, the identity is kept with its traits (names, birth date, sex) and the sender's identifiers from
PID-3 as local identifiers, and its status is provisional unless PID-32 (French PAM identity
reliability) says validated; recovered and qualified need an INS. Only a qualified INS is ever
written out again (FHIR, HL7 v2, HPRIM): an identity without one goes out with its local identifiers.

Column **as received**: what became of each message of the file as it is: accepted (messages,
results, identity status, per status) or refused with the reason `read` gives, the file's name that
starts each reason left out. Reasons name the message, segment and field, never the value found there.

| file | as received |
|---|---|
"""


def _files() -> list[Path]:
    return sorted(p for p in REALDATA.rglob("*") if p.is_file())


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _reason(name: str, reason: str) -> str:
    for prefix in (f"{name}, ", f"{name}: "):
        if reason.startswith(prefix):
            return reason[len(prefix) :]
    return reason


def as_received(path: Path) -> list[tuple[str, str | None, int]]:
    """Per message of the file: ("accepted", identity status, results) or ("refused", reason, 0)."""
    name = path.relative_to(REALDATA).as_posix()
    out: list[tuple[str, str | None, int]] = []
    for piece in ingest.read(path.read_bytes(), file=name, fmt="hl7v2"):
        if piece.envelope is None:
            out.append(("refused", _reason(name, piece.reason or ""), 0))
            continue
        for m in piece.envelope.mapped:
            out.append(("accepted", m.identity.identity_status.value, len(m.results)))
    return out


def _cell(outcomes: list[tuple[str, str | None, int]]) -> str:
    parts = []
    statuses = sorted({s for kind, s, _ in outcomes if kind == "accepted" and s})
    for status in statuses:
        mine = [n for kind, s, n in outcomes if kind == "accepted" and s == status]
        parts.append(f"accepted: {_plural(len(mine), 'message')}, {_plural(sum(mine), 'result')}, identity {status}")
    parts += [f"refused: {reason}" for kind, reason, _ in outcomes if kind == "refused"]
    return "; ".join(parts)


def _summary(rows: dict[str, list[tuple[str, str | None, int]]]) -> list[str]:
    outside = {k: v for k, v in rows.items() if not k.startswith("malformed/")}
    under = {k: v for k, v in rows.items() if k.startswith("malformed/")}
    accepted = [o for v in rows.values() for o in v if o[0] == "accepted"]
    files_ok = [k for k, v in rows.items() if any(o[0] == "accepted" for o in v)]
    statuses = Counter(s for _, s, _ in accepted)
    lines = [
        "",
        "## Summary",
        "",
        f"{_plural(len(rows), 'file')} ({len(outside)} outside `malformed/`, {len(under)} under it), "
        f"{_plural(sum(len(v) for v in rows.values()), 'message')} as `read` cuts them.",
        "",
        f"Accepted: {_plural(len(accepted), 'message')} from {_plural(len(files_ok), 'file')}, "
        f"{_plural(sum(n for _, _, n in accepted), 'result')} in all; identity "
        + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        + ".",
        "",
        "Refused messages by reason (the message number left out), outside `malformed/` and under it:",
        "",
        "| reason | outside `malformed/` | under `malformed/` |",
        "|---|---:|---:|",
    ]

    def why(reason: str | None) -> str:
        text = reason or ""
        if text.startswith("message "):
            text = text.split(", ", 1)[1] if ", " in text else text.split(": ", 1)[1]
        return text

    out = Counter(why(r) for v in outside.values() for kind, r, _ in v if kind == "refused")
    mal = Counter(why(r) for v in under.values() for kind, r, _ in v if kind == "refused")
    for reason in sorted(set(out) | set(mal), key=lambda r: (-(out[r] + mal[r]), r)):
        lines.append(f"| {reason.replace('|', chr(92) + '|')} | {out[reason]} | {mal[reason]} |")
    return lines


TAIL = """
## Known gaps

- A lone LF followed by something that is not a segment name is kept as a line break in the data
  (real files wrapped by an editor); a comment block between messages (the 1994 mixed file) ends up
  inside the previous message's last segment.
- MSH-2 with 3 characters (`^~&`, seen in the ELR examples) is read as component, repetition and
  subcomponent with no escape character.
- OBX-11 `O` (order detail) and `N` (not asked) give no result; `I` is kept as pending, `X` as
  cancelled, `D` and `W` as entered in error; an empty OBX-11 is refused.
- Batch trailers (BTS-1/FTS-1 counts) are not checked; MSH-18 `UNICODE` (UTF-16) is refused.
- CE/CWE values keep the text (or the code when no text), not the coded value itself.
"""


def document() -> str:
    rows = {p.relative_to(REALDATA).as_posix(): as_received(p) for p in _files()}
    table = [f"| `{name}` | {_cell(o).replace('|', chr(92) + '|')} |" for name, o in rows.items()]
    return HEAD + "\n".join(table) + "\n" + "\n".join(_summary(rows)) + "\n" + TAIL


def test_the_doc_is_what_the_code_gives():
    """M2: docs/interop/hl7v2-realdata.md shows what ingest.read does with each real HL7 v2 file
    (accepted without an INS, provisional; or refused, with the reason), as run."""
    if not REALDATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real HL7 v2 test data absent: {REALDATA}")
        pytest.skip(f"real HL7 v2 test data absent: {REALDATA}")
    assert DOC.read_text(encoding="utf-8") == document(), "regenerate: see this module's docstring"


if __name__ == "__main__":
    print(document(), end="")
