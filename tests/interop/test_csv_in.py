"""CSV in: a Labvault CSV export reads back whole, rows grouped into one message per request, each
request stored or refused on its own with one line naming file, row and column (never a value)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import astuple, fields, replace
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.access import Purpose, scan
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.domain.models import LOINC, Identity, IdentityStatus, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.ingest.service import Ingestor, Summary, detect, instruction_for_ingest
from labvault.interop import csv_in
from labvault.interop._common import unit_system
from labvault.interop.writers import CSV_FIELDS, CsvWriter, PatientReport
from labvault.synth.generator import LabGenerator
from tests.cli.helpers import PASSWORD, enrolled_account
from tests.cli.test_cli import home, run  # noqa: F401  (home is a fixture)
from tests.conftest import ADMIN, lab_user, make_lab
from tests.ingest.test_ingest_instructed import NIR2, body, stored, world  # noqa: F401  (world is a fixture)
from tests.interop.messages import NIR, oru

HEAD = [
    "patient.nir",
    "patient.family_name",
    "patient.given_names",
    "patient.birth_date",
    "patient.sex",
    "patient.phone",
    "request.accession",
    "request.requested_at",
    "specimen.type",
    "specimen.collected_at",
    "result.code",
    "result.label",
    "result.value_num",
    "result.comment",
]


def row(
    acc: str = "A1",
    *,
    nir: str = NIR,
    day: str = "2019-06-20T08:30",
    code: str = "2823-3",
    value: str = "4.2",
    comment: str = "",
    **over: str,
) -> dict[str, str]:
    cells = {
        "patient.nir": nir,
        "patient.family_name": "DUPONT",
        "patient.given_names": "Jean",
        "patient.birth_date": "1985-07-04",
        "patient.sex": "M",
        "patient.phone": "0612345678",
        "request.accession": acc,
        "request.requested_at": day,
        "specimen.type": "SER",
        "specimen.collected_at": day,
        "result.code": code,
        "result.label": f"Test {code}",
        "result.value_num": value,
        "result.comment": comment,
    }
    cells.update(over)
    return cells


def table(rows: list[dict[str, str]], head: list[str] = HEAD, sep: str = ",") -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out, delimiter=sep, lineterminator="\r\n")
    w.writerow(head)
    w.writerows([r.get(h, "") for h in head] for r in rows)
    return out.getvalue().encode()


@pytest.fixture
def lab(gateway):
    make_lab(gateway, "lab-a")
    return gateway, lab_user(gateway, "lab-a", "technician"), lab_user(gateway, "lab-a", "biologist")


def ingest_bytes(gw, who, data: bytes, name: str = "export.csv", **kw: object) -> Summary:
    s = Summary(name, "csv")
    Ingestor(gw, who, "lab-a", **kw).ingest_pieces(ingest.read(data, file=name), s)  # type: ignore[arg-type]
    return s


# -- detection and the pure reader --------------------------------------------------------------------


def test_detects_csv_and_leaves_the_other_formats_alone():
    assert detect(table([row()])) == "csv"
    assert detect(b"\xef\xbb\xbf" + table([row()], sep=";")) == "csv"
    assert detect(b'"patient.nir";"result.code"\r\n') == "csv"
    assert detect(b"patient.nir,patient.family_name\r\n1,2") is None  # no result.code: not this format
    assert detect(b"nir,code\r\n") is None
    assert detect(oru()) == "hl7v2" and detect(b"H|~^\\&|||LAB") == "hprim"
    assert detect(b'{"resourceType": "Patient"}') == "fhir-json"
    assert "csv" in ingest.FORMATS


def test_rows_are_grouped_per_request_wherever_they_are():
    data = table(
        [row("A1"), row("A2", code="2951-2"), row("A1", code="2951-2", value="4,5"), row("A1", nir=NIR2, value="7")],
        sep=";",
    )
    pieces = ingest.read(data, file="x.csv")
    assert [p.reason for p in pieces] == [None] * 3
    got = [[(r.code, r.value_num) for r in p.envelope.mapped[0].results] for p in pieces]
    assert got == [[("2823-3", 4.2), ("2951-2", 4.5)], [("2951-2", 4.2)], [("2823-3", 7.0)]]
    first = pieces[0].envelope.mapped[0]
    assert first.requests[0].accession == "A1" and first.results[0].code_system == LOINC
    assert first.results[0].status == ResultStatus.FINAL and first.identity.identity_status == "provisional"
    assert len(first.specimens) == 1 and {r.specimen_id for r in first.results} == {first.specimens[0].specimen_id}
    assert len({p.envelope.key for p in pieces}) == 3
    again = ingest.read(table([row("A1", nir=NIR2, value="7")]), file="other name.csv")
    assert again[0].envelope.key == pieces[2].envelope.key  # ("csv", INS, request key): not the file or the rows
    assert b"A2" not in pieces[0].raw and pieces[0].raw.count(b"\r\n") == 3  # the header and the request's rows


def test_test_ins_only_in_test_mode_and_nia_accepted():
    data = table([row(**{"patient.ins_oid": OID_INS_TEST})], [*HEAD, "patient.ins_oid"])
    [p] = ingest.read(data, file="t.csv")
    assert (
        p.reason == "t.csv, row 2, column patient.ins_oid: test INS (OID 1.2.250.1.213.1.4.10) refused "
        "outside test mode"
    )
    assert ingest.read(data, file="t.csv", test_mode=True)[0].envelope is not None
    nia = table([row(nir="9" * 15, **{"patient.ins_oid": OID_NIA})], [*HEAD, "patient.ins_oid"])
    assert ingest.read(nia, file="t.csv")[0].envelope.mapped[0].identity.ins_oid == OID_NIA


def test_rows_of_one_request_must_agree():
    [p] = ingest.read(table([row(), row(code="2951-2", **{"patient.family_name": "DURAND"})]), file="x.csv")
    assert p.reason == (
        "x.csv, row 3, column patient.family_name: differs from row 2, the first row of the same request"
    )
    [p] = ingest.read(table([row(**{"request.accession": ""})]), file="x.csv")
    assert p.reason.startswith("x.csv, row 2, column request.accession: empty")


# -- 1. and 2.: a CsvWriter export reads back whole; the same file again creates nothing ------------------


def tricky() -> PatientReport:
    """Values CsvWriter guards against formula injection or must quote, aware times, no specimen."""
    paris = timezone(timedelta(hours=2))
    ident = Identity(
        "p-t",
        NIR2,
        IdentityStatus.PROVISIONAL,
        '-Le Gall; "Jr"',
        "",
        date(1985, 7, 4),
        "F",
        birth_name="=SUM(A1)",
        address="1 rue X,\nLyon",
        phone="+33 6 12 34 56 78",
        email="@x.invalid",
    )
    pres = Prescriber("d-t", "10001234567", "@HOUSE", "Greg")
    q = Request("q-t", "p-t", "d-t", datetime(2020, 5, 1, 8, 0, tzinfo=paris), accession="-ACC;1")
    s = Specimen("s-t", "q-t", "BLD", datetime(2020, 5, 1, 8, 5, tzinfo=paris), None)
    r1 = Result(
        "r-t1",
        "q-t",
        "2823-3",
        "K",
        specimen_id="s-t",
        value_num=-1.5,
        unit="mmol/L",
        ref_low=-2.0,
        flag="L",
        status=ResultStatus.CORRECTED,
        validated_by="Dr X",
        validated_at=datetime(2020, 5, 2, 9, 0, 30, tzinfo=UTC),
        comment='line 1\r\nline 2; "q", =x',
    )
    r2 = Result(
        "r-t2",
        "q-t",
        "LOC-1",
        "Aspect",
        code_system="urn:oid:1.2.3.4",
        value_text="\tcloudy",
        ref_text="+clear",
        status=ResultStatus.PRELIMINARY,
    )
    return PatientReport(ident, [q], [s], [r1, r2], [pres])


def reports() -> tuple[list, list[Prescriber]]:
    gen = LabGenerator("csv-lab", 7, prescribers=5)
    return [*gen.patients(4), tricky()], gen.prescribers


def _instant(values: tuple) -> tuple:
    return tuple(v.astimezone(UTC) if isinstance(v, datetime) and v.tzinfo else v for v in values)


def shape(idents, prescribers, requests, specimens, results) -> dict:
    """Values without ids, per INS: identity, and per request its prescriber, specimens and results."""
    pres = {p.prescriber_id: (p.rpps, p.family_name, p.given_name) for p in prescribers}
    spec = {s.specimen_id: _instant(astuple(replace(s, specimen_id="", request_id=""))) for s in specimens}
    out = {}
    for ident in idents:
        reqs = []
        for q in (q for q in requests if q.patient_id == ident.patient_id):
            res = sorted(
                (
                    (
                        _instant(astuple(replace(r, result_id="", request_id="", specimen_id=""))),
                        spec.get(r.specimen_id) if r.specimen_id else None,
                    )
                    for r in results
                    if r.request_id == q.request_id
                ),
                key=repr,
            )
            mine = sorted({spec[s.specimen_id] for s in specimens if s.request_id == q.request_id}, key=repr)
            reqs.append(
                (
                    # a request's status is computed from its results when stored (access.orders)
                    _instant(astuple(replace(q, request_id="", patient_id="", prescriber_id="", status=None))),
                    pres.get(q.prescriber_id) if q.prescriber_id else None,
                    mine,
                    repr(res),
                )
            )
        out[(ident.nir, ident.family_name)] = (astuple(replace(ident, patient_id="")), sorted(reqs, key=repr))
    return out


PARIS = ZoneInfo("Europe/Paris")  # the lab's zone: ingest reads a time without a zone in it


def _aware(x):
    """The dataclass with each naive datetime read in the lab's zone."""
    naive = {
        f.name: v.replace(tzinfo=PARIS)
        for f in fields(x)
        if isinstance(v := getattr(x, f.name), datetime) and v.tzinfo is None
    }
    return replace(x, **naive)


def as_carried(sent: list) -> list:
    """What a CSV export says of the reports, as stored: the INS only of a qualified identity
    (RNIV), the accession number as the lab's order number, every number as written, the unit's
    system, times without a zone in the lab's."""
    out = []
    for rep in sent:
        ident = rep.identity if rep.identity.qualified else replace(rep.identity, nir=None, ins_oid=OID_NIR)
        requests = [_aware(replace(q, filler_number=q.filler_number or q.accession)) for q in rep.requests]
        specimens = [_aware(sp) for sp in rep.specimens]
        results = [
            _aware(
                replace(
                    r,
                    value_repr=r.value_repr or (repr(r.value_num) if r.value_num is not None else None),
                    unit_system=r.unit_system or unit_system(r.unit),
                )
            )
            for r in rep.results
        ]
        out.append(replace(rep, identity=ident, requests=requests, specimens=specimens, results=results))
    return out


def expected(sent: list, prescribers: list[Prescriber]) -> dict:
    """From the input alone: what a CSV carries (requests with results, the specimens of results)."""
    requests = [q for rep in sent for q in rep.requests if any(r.request_id == q.request_id for r in rep.results)]
    used = {r.specimen_id for rep in sent for r in rep.results}
    specimens = [s for rep in sent for s in rep.specimens if s.specimen_id in used]
    return shape(
        [rep.identity for rep in sent],
        [*prescribers, *(p for rep in sent for p in getattr(rep, "prescribers", ()))],
        requests,
        specimens,
        [r for rep in sent for r in rep.results],
    )


def in_store(gw, bio) -> dict:
    with gw.unit(bio, Purpose.CARE) as u:
        return shape(
            list(scan.patients(u, "lab-a")),
            list(scan.prescribers(u, "lab-a")),
            list(scan.requests(u, "lab-a")),
            list(scan.specimens(u, "lab-a")),
            [r for _, r in scan.results(u, "lab-a")],
        )


def counts(gw) -> dict[str, int]:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return u.counts("lab-a")


def test_a_csv_export_reads_back_whole_and_once(lab, tmp_path):
    gw, tech, bio = lab
    sent, prescribers = reports()
    buf = io.BytesIO()
    with CsvWriter(buf, CSV_FIELDS, prescribers=prescribers) as w:
        w.write(sent)
    f = tmp_path / "export.csv"
    f.write_bytes(buf.getvalue())
    assert b"'-Le Gall" in buf.getvalue() and b"'\tcloudy" in buf.getvalue()  # the writer's guard is there
    [s] = Ingestor(gw, tech, "lab-a", group=3).ingest_files([f])
    n_requests = sum(len({r.request_id for r in rep.results}) for rep in sent)
    n_results = sum(len(rep.results) for rep in sent)
    assert (s.format, s.accepted, s.rejected, s.results) == ("csv", n_requests, 0, n_results), s.reasons
    want = expected(as_carried(sent), prescribers)
    assert in_store(gw, bio) == want and len(want) == len(sent)
    before = counts(gw)
    [again] = Ingestor(gw, tech, "lab-a").ingest_files([f])
    assert (again.accepted, again.duplicates, again.rejected, again.results) == (0, n_requests, 0, 0)
    assert counts(gw) == before and before["result"] == n_results
    assert in_store(gw, bio) == want


# -- 3. under a migration_in instruction ----------------------------------------------------------------


def test_under_an_instruction_only_the_period_and_no_free_text(world, tmp_path):
    gw, _, bio, tech, operator, _, receive = world
    receive(body())  # 2019-2020, no free text, no phone
    rows = [
        row("Y18", day="2018-03-15T08:30", comment="haemolysed"),
        row("Y19", day="2019-06-20T08:30", comment="called Dr House"),
        row("Y19", day="2019-06-20T08:30", code="2951-2", value="142"),
        row("Y21", day="2021-01-05T08:30", value="4.3", comment="repeat"),
        row("Y19b", nir=NIR2, day="2020-12-31T23:00", code="2951-2", value="144", comment="fasting"),
    ]
    f = tmp_path / "old-lis.csv"
    f.write_bytes(table(rows))
    instr = instruction_for_ingest(gw, operator, "lab-a", "MIG-IN-1")
    [s] = Ingestor(gw, tech, "lab-a", instruction=instr).ingest_files([f])
    got = stored(gw, bio)
    assert got["kept"] == [
        (NIR, date(2019, 6, 20), "2823-3", 4.2),
        (NIR, date(2019, 6, 20), "2951-2", 142.0),
        (NIR2, date(2020, 12, 31), "2951-2", 144.0),
    ]
    assert got["comments"] == [None] * 3 and all(p.phone is None for p in got["identities"])
    assert (s.accepted, s.outside, s.rejected, s.results) == (2, 2, 0, 3)
    assert s.dropped == {"period": 2} and s.cleared == {"identity.phone": 2, "result.comment": 2}


# -- 4. refusals -------------------------------------------------------------------------------------------

BAD = {  # request -> (bad cell, column, what the reason says)
    "BADDATE": ({"request.requested_at": "20/06/2019"}, "request.requested_at", "not an ISO 8601 date"),
    "BADNIR": ({"patient.nir": NIR[:-2] + "00"}, "patient.nir", "not a valid NIR"),
    "BADNUM": ({"result.value_num": "4.2.1"}, "result.value_num", "not a number"),
    "BIGNUM": ({"result.value_num": "1e999"}, "result.value_num", "number out of range"),
    "BADSEX": ({"patient.sex": "X"}, "patient.sex", "not M, F or U"),
    "BADBIRTH": ({"patient.birth_date": "1985-02-30"}, "patient.birth_date", "date out of range"),
}


def test_a_bad_row_refuses_its_request_only(lab):
    gw, tech, bio = lab
    rows = [row("OK1")]
    for acc, (cells, column, _) in BAD.items():  # the bad row first, then a good one (patient columns agree)
        rows += [row(acc, **cells), row(acc, code="2951-2", **(cells if column.startswith("patient.") else {}))]
    rows.append(row("OK2", code="2951-2"))
    s = ingest_bytes(gw, tech, table(rows))
    assert (s.accepted, s.rejected, s.results) == (2, len(BAD), 2)
    for k, (acc, (cells, column, says)) in enumerate(BAD.items()):
        reason = s.reasons[k]
        assert reason.startswith(f"export.csv, row {3 + 2 * k}, column {column}: {says}"), reason
        assert "\n" not in reason and not any(v in reason for v in cells.values())
        assert "DUPONT" not in reason and acc not in reason
    with gw.unit(bio, Purpose.CARE) as u:
        [patient] = u.find_patients_by_nir("lab-a", NIR)
        assert sorted(q.accession for q in u.requests_of("lab-a", patient.patient_id)) == ["OK1", "OK2"]
        item, raw = intake.get(u, "lab-a", s.quarantine_ids[0])
    assert item.format == "csv" and raw.count(b"\r\n") == 3 and b"BADDATE" in raw and b"OK1" not in raw


def test_a_quarantined_request_replays_as_csv(lab):
    gw, tech, bio = lab
    data = table([row(**{"patient.ins_oid": OID_INS_TEST})], [*HEAD, "patient.ins_oid"])
    s = ingest_bytes(gw, tech, data)
    assert s.rejected == 1 and "test INS" in s.reasons[0]
    replayed = Ingestor(gw, bio, "lab-a", test_mode=True).replay(s.quarantine_ids[0])
    assert (replayed.accepted, replayed.results) == (1, 1)


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (
            [h for h in HEAD if h not in ("patient.sex", "result.label")],
            "export.csv, row 1: required column(s) missing: patient.sex, result.label",
        ),
        (
            [h for h in HEAD if h != "request.accession"],
            "export.csv, row 1: required column(s) missing: request.request_id or request.accession",
        ),
        ([h for h in HEAD if h != "specimen.type"], "export.csv, row 1: required column(s) missing: specimen.type"),
        ([*HEAD, "patient.shoe_size"], "export.csv, row 1, column 15: unknown column"),
        ([*HEAD, "DUPONT Jean!"], "export.csv, row 1, column 15: unknown column"),
        ([*HEAD, "result.code"], "export.csv, row 1, column result.code: column given twice"),
    ],
)
def test_a_bad_header_refuses_the_file(lab, head, says):
    gw, tech, _ = lab
    s = ingest_bytes(gw, tech, table([row("A1"), row("A2")], head))
    assert (s.accepted, s.rejected) == (0, 1) and s.reasons[0].startswith(says), s.reasons
    assert counts(gw)["request"] == 0


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (table([]), "export.csv: no data row after the header"),
        (table([row()]) + b"1,2\r\n", "export.csv, row 3: 2 cell(s) where the header has 14"),
        (table([row()]).replace(b"DUPONT", b"DUPONT\xff"), "export.csv: not UTF-8"),
    ],
)
def test_a_file_that_is_not_such_a_csv_is_refused_once(data, says):
    [p] = ingest.read(data, file="export.csv", fmt="csv")
    assert p.envelope is None and p.reason.startswith(says) and "DUPONT" not in p.reason


# -- fuzz ------------------------------------------------------------------------------------------------


def _only_pieces(data: bytes) -> None:
    for fmt in (None, "csv"):
        pieces = ingest.read(data, file="f.csv", fmt=fmt)
        assert pieces and all(isinstance(p, ingest.Piece) for p in pieces)
        for p in pieces:
            assert (p.envelope is None) != (p.reason is None)
            assert p.reason is None or "\n" not in p.reason


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_arbitrary_bytes(raw):
    _only_pieces(raw)
    _only_pieces(b"patient.nir,result.code\r\n" + raw)


_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            NIR,
            NIR2,
            "2019-06-20",
            "2019-06-20T08:30",
            "1985-07-04",
            "M",
            "F",
            "4,2",
            "-1e5",
            "'=x",
            "final",
            "SER",
            "2823-3",
            OID_NIA,
            OID_INS_TEST,
            "nan",
            "9999-99-99",
            "10001234567",
            "\r\n",
            '"',
        ]
    ),
    st.text(max_size=8),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from([*CSV_FIELDS, "junk", ""]), min_size=1, max_size=12),
    st.lists(st.lists(_CELLS, max_size=14), max_size=6),
    st.sampled_from([",", ";"]),
    st.booleans(),
)
def test_fuzz_csv_like_tables(head, rows, sep, whole):
    if whole:  # the required columns are there: the rows get as far as the mapping
        head = list(dict.fromkeys([*csv_in.REQUIRED, "request.accession", *head]))
    rows = [(r + [""] * len(head))[: len(head)] for r in rows] if whole else rows
    _only_pieces(table([dict(zip(head, r, strict=False)) for r in rows], head, sep))


# -- 5. the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_lab(home, capsys, monkeypatch, tmp_path):
    run(capsys, "init")
    run(
        capsys,
        "tenant",
        "add",
        "bio-lyon",
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    tech = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "tech@lab.invalid", "technician", "bio-lyon")
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    return tech


def test_cli_ingests_a_csv(cli_lab, capsys, tmp_path):
    good = tmp_path / "results.csv"
    good.write_bytes(table([row("A1"), row("A2"), row("A1", code="2951-2")], sep=";"))
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", cli_lab)
    assert code == 0, err
    summary = next(ln for ln in out.splitlines() if "results.csv" in ln)
    assert "Ingest summary" in out and summary.replace("│", " ").split() == [
        "results.csv",
        "csv",
        "2",
        "0",
        "0",
        "0",
        "3",
    ]
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", cli_lab, "--json")
    s = json.loads(out.strip())
    assert code == 0 and (s["format"], s["accepted"], s["duplicates"], s["rejected"]) == ("csv", 0, 2, 0)
    bad = tmp_path / "bad.csv"
    bad.write_bytes(table([row("B1", **{"result.value_num": "lots"}), row("B2")]))
    code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(bad), "--as", cli_lab, "--json")
    s = json.loads(out.strip())
    assert code == 1 and (s["accepted"], s["rejected"], s["results"]) == (1, 1, 1)
    assert s["reasons"] == [f"{bad}, row 2, column result.value_num: not a number"] and len(s["quarantine_ids"]) == 1
