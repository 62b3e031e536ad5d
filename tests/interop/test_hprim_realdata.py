"""The real HPRIM files under ../shared/realdata/hprim through the real stack: read, ingested into a
lab's store and read back as FHIR; and the table of docs/interop/hprim-realdata.md, which is what
``realdata_table()`` gives (``python -m tests.interop.test_hprim_realdata`` prints it)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from labvault.access import Purpose, scan
from labvault.domain.models import IdentityStatus, ResultStatus
from labvault.ingest import service as ingest
from labvault.interop.fhir_out import NdjsonWriter
from labvault.interop.hprim import HprimError, parse, to_domain
from labvault.migration.export import RESOURCE_TYPES, export_fhir
from tests.conftest import lab_user, make_lab

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata" / "hprim"
DOC = ROOT / "docs" / "interop" / "hprim-realdata.md"
AKARAH = "akarah/hprim22_ORU_acide_urique_A_continuation.hpr"
LIBHPRIM = "libhprim/hprim21_ORU_with_A_continuation_C_comment_FIC.hpr"
START, END = "<!-- table: start -->", "<!-- table: end -->"


def need(name: str | None = None) -> Path:
    path = REALDATA / name if name else REALDATA
    if path.exists():
        return path
    reason = f"real HPRIM test data absent: {path}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


# ----------------------------------------------------------------------------------- the doc's table


def _line_ends(raw: bytes) -> str:
    crlf = raw.count(b"\r\n")
    cr, lf = raw.count(b"\r") - crlf, raw.count(b"\n") - crlf
    kinds = [k for k, n in (("CRLF", crlf), ("CR", cr), ("LF", lf)) if n]
    return "/".join(kinds) or "no"


def _result(r) -> str:
    value = f"{r.comparator or ''}{r.value_repr}" if r.value_repr is not None else r.value_text or "no value"
    unit = f" {r.unit}" if r.unit else ""
    ref = ""
    if r.ref_low is not None or r.ref_high is not None:
        ref = f" [{'' if r.ref_low is None else f'{r.ref_low:g}'}-{'' if r.ref_high is None else f'{r.ref_high:g}'}]"
    elif r.ref_text:
        ref = " [range as text]"
    note = ", comment" if r.comment else ""
    return f"{r.code} {value}{unit}{ref} ({r.status.value}{note})"


def outcome(path: Path) -> tuple[str, str]:
    """What ``parse`` read, and what became of the file as received (accepted or refused)."""
    raw = path.read_bytes()
    name = path.relative_to(REALDATA).as_posix()
    try:
        f = parse(raw, file=name)
    except HprimError as exc:
        return "refused", f"refused: `{exc}`"
    names = " ".join(r.name for r in f.records)
    read = (
        f"{len(f.records)} records ({names}), {f.version}, {_line_ends(raw)} line ends, "
        f"L {'present' if f.complete else 'absent'}"
    )
    try:
        mapped = to_domain(f)
    except HprimError as exc:
        return read, f"refused: `{exc}`"
    parts = []
    for m in mapped:
        i = m.identity
        ins = "INS" if i.nir else "no INS"
        parts.append(
            f"accepted: {len(m.results)} result(s), identity {i.identity_status.value} ({ins}, "
            f"{len(i.local_ids)} local id(s)), {len(m.requests)} request(s): "
            + "; ".join(_result(r) for r in m.results)
        )
    return read, " / ".join(parts)


def realdata_table() -> str:
    rows = ["| File | Bytes | Parse | As received |", "|---|---:|---|---|"]
    for path in sorted(p for p in REALDATA.rglob("*") if p.is_file()):
        read, got = outcome(path)
        cells = [f"`{path.relative_to(REALDATA).as_posix()}`", str(path.stat().st_size), read, got]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def test_the_doc_table_is_what_the_code_gives():
    """M5: docs/interop/hprim-realdata.md shows what the reader does with each real file, as run."""
    need()
    doc = DOC.read_text("utf-8")
    table = doc.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == realdata_table()


def test_real_files_accepted_without_ins_with_their_values():
    """M2, M5: the well-formed real files are accepted without an INS, identity provisional; the
    libhprim values with their units, reference ranges, flags and comment; the akarah uric acid
    pending with its unit and no value."""
    lib = to_domain(parse(need(LIBHPRIM).read_bytes()))
    [m] = lib
    assert (m.identity.nir, m.identity.identity_status) == (None, IdentityStatus.PROVISIONAL)
    assert m.identity.local_ids == [
        ("urn:hprim:patient-id:PO:P-2", "398"),
        ("urn:hprim:patient-id:PO:P-3", "B1042100871"),
    ]
    assert (m.identity.family_name, m.identity.given_names, m.identity.birth_name) == ("GAULLE", "MARECHAL", "PIT")
    [req] = m.requests
    assert (req.placer_number, req.filler_number, req.sender) == ("idechantillo", "20428E9575", "PO")
    ot1, ht = m.results
    assert (ot1.code, ot1.value_num, ot1.value_repr, ot1.unit, ot1.unit_system) == ("OT1", 16.0, "16", "UI/l", None)
    assert (ot1.ref_low, ot1.ref_high, ot1.flag, ot1.comment) == (10.0, 40.0, "N", "Anemie macrocytaire")
    assert (ht.code, ht.value_num, ht.value_repr, ht.unit) == ("HT", 38.2, "38.2", "%")
    assert (ht.ref_low, ht.ref_high, ht.unit_system) == (35.0, 48.0, "http://unitsofmeasure.org")
    assert ot1.status is ht.status is ResultStatus.FINAL

    [a] = to_domain(parse(need(AKARAH).read_bytes()))
    assert (a.identity.nir, a.identity.identity_status) == (None, IdentityStatus.PROVISIONAL)
    [au] = a.results
    assert (au.code, au.label, au.unit, au.status) == ("AU", "Acide urique", "µmol/L", ResultStatus.PENDING)
    assert (au.value_num, au.value_text, au.unit_system) == (None, None, None)
    assert a.requests[0].filler_number == "001"


# ------------------------------------------------------------------------------ through the store


def _ingest(gw, who, lab: str, name: str, raw: bytes) -> ingest.Summary:
    s = ingest.Summary(name, "hprim")
    ingest.Ingestor(gw, who, lab).ingest_pieces(ingest.read(raw, file=name), s)
    return s


def _fhir(gw, who, lab: str) -> dict[str, list[dict]]:
    streams = {t: io.BytesIO() for t in RESOURCE_TYPES}
    with gw.unit(who, Purpose.CARE) as u:
        with NdjsonWriter(streams=streams) as w:
            export_fhir(u, lab, w)
    return {t: [json.loads(x) for x in s.getvalue().splitlines()] for t, s in streams.items()}


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_akarah_pending_uric_acid_through_the_store(gateway):
    """M2, M5: the akarah file ingested as received: a provisional patient with its local ids; the
    pending uric acid stored and served as an Observation ``registered`` with no value and its unit
    µmol/L; its request neither completed nor final. The same file sent again with the value is
    an update of the same request and observation: the result final with its value."""
    raw = need(AKARAH).read_bytes()
    make_lab(gateway, "lab-hp")
    who = lab_user(gateway, "lab-hp", "biologist")
    s = _ingest(gateway, who, "lab-hp", AKARAH, raw)
    assert (s.accepted, s.rejected, s.results) == (1, 0, 1), s.reasons
    with gateway.unit(who, Purpose.CARE) as u:
        [p] = scan.patients(u, "lab-hp")
        [(_, stored)] = scan.results(u, "lab-hp")
    assert (p.nir, p.identity_status) == (None, IdentityStatus.PROVISIONAL)
    assert sorted(p.local_ids) == [
        ("urn:hprim:patient-id:001:P-2", "01"),
        ("urn:hprim:patient-id:001:P-3", "02"),
        ("urn:hprim:patient-id:001:P-4", "02"),
    ]
    assert (stored.status, stored.unit, stored.value_num) == (ResultStatus.PENDING, "µmol/L", None)
    fhir = _fhir(gateway, who, "lab-hp")
    [obs] = fhir["Observation"]
    assert obs["status"] == "registered" and obs["code"]["coding"][0]["code"] == "AU"
    assert obs["valueQuantity"] == {"unit": "µmol/L"}  # the unit, no value, no UCUM code
    [report] = fhir["DiagnosticReport"]
    [order] = fhir["ServiceRequest"]
    assert report["status"] == "registered" and order["status"] == "active"
    [patient] = fhir["Patient"]
    assert {i["value"] for i in patient["identifier"]} == {"01", "02"}
    assert all(i["system"].startswith("urn:hprim:patient-id:001:") for i in patient["identifier"])

    # the file written again a day later (H date) with the value: versions are ordered by the
    # time of the message that said them, so the later file is the current value
    done = raw.replace("|||µmol/L|||||I|".encode(), "||350|µmol/L|||||F|".encode())
    done = done.replace(b"|H2.2~C|201301011200", b"|H2.2~C|201301021200")
    assert done.count(b"350") == 1 and done.count(b"201301021200") == 1
    s2 = _ingest(gateway, who, "lab-hp", AKARAH, done)
    assert (s2.accepted, s2.rejected) == (1, 0), s2.reasons
    with gateway.unit(who, Purpose.CARE) as u:
        [(_, now)] = scan.results(u, "lab-hp")
        assert len(list(scan.requests(u, "lab-hp"))) == 1
    assert (now.status, now.value_num, now.value_repr, now.unit) == (ResultStatus.FINAL, 350.0, "350", "µmol/L")
    assert now.result_id == stored.result_id  # the same observation, updated
    fhir = _fhir(gateway, who, "lab-hp")
    assert [o["status"] for o in fhir["Observation"]] == ["final"]
    assert [r["status"] for r in fhir["DiagnosticReport"]] == ["final"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_libhprim_values_and_ranges_through_the_store(gateway):
    """M5: the libhprim values served as FHIR with their units and reference ranges, a unit that is
    not UCUM (UI/l) as text only, the identity provisional."""
    make_lab(gateway, "lab-hq")
    who = lab_user(gateway, "lab-hq", "biologist")
    s = _ingest(gateway, who, "lab-hq", LIBHPRIM, need(LIBHPRIM).read_bytes())
    assert (s.accepted, s.rejected, s.results) == (1, 0, 2), s.reasons
    fhir = _fhir(gateway, who, "lab-hq")
    by_code = {o["code"]["coding"][0]["code"]: o for o in fhir["Observation"]}
    ot1, ht = by_code["OT1"], by_code["HT"]
    assert ot1["valueQuantity"] == {"value": 16, "unit": "UI/l"}
    assert ot1["referenceRange"] == [{"low": {"value": 10.0, "unit": "UI/l"}, "high": {"value": 40.0, "unit": "UI/l"}}]
    assert ot1["note"] == [{"text": "Anemie macrocytaire"}] and ot1["status"] == "final"
    assert ht["valueQuantity"] == {"value": 38.2, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    assert (ht["referenceRange"][0]["low"]["value"], ht["referenceRange"][0]["high"]["value"]) == (35.0, 48.0)
    [patient] = fhir["Patient"]
    status = patient["extension"][0]["extension"][0]["valueCoding"]["code"]
    assert status == "PROV" and all(i["type"]["coding"][0]["code"] == "PI" for i in patient["identifier"])


if __name__ == "__main__":
    print(realdata_table())
