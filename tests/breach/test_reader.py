"""H3: a leaked file of any layout is read as rows, its columns recognised and its values
normalised, so that the rows can be matched to a lab's patients through the blind indexes.

The files are cut (``labvault.synth.leak``) from a real package (a generated lab exported under a
signed instruction and opened with the real ``age`` CLI), and written by hand; every row's NIR,
names, birth date and sex are checked against the generator's truth, row by row."""

from __future__ import annotations

import codecs
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from labvault.breach.errors import LeakUnreadable
from labvault.breach.reader import KINDS, Leak, LeakRow, open_bytes, open_leak
from labvault.crypto.blind import normalise_name
from labvault.synth import leak

FLAT = [
    "family_name",
    "given_names",
    "nir",
    "birth_date",
    "sex",
    "date",
    "code",
    "label",
    "value",
    "unit",
    "text",
    "other",
]
# The kinds each shape's columns must be recognised as, in file order.
EXPECTED = {shape: FLAT for shape in leak.SHAPES if shape not in ("ndjson",)}
EXPECTED["dropped"] = [k for k in FLAT if k not in ("nir", "sex", "other")]
EXPECTED["full_name"] = ["full_name", *FLAT[2:]]
EXPECTED["ragged"] = FLAT  # (and a last column, empty but in the rows with an extra cell)


def _first(given: str | None) -> str:
    return normalise_name(given.split()[0]) if given else ""


def _check_rows(rows: list[LeakRow], truth: list[leak.Flat], *, nir: bool = True, sex: bool = True) -> None:
    assert len(rows) == len(truth)
    for r, t in zip(rows, truth, strict=True):
        assert r.nir == (t.nir[:13] if nir and t.nir else None), r.line
        assert normalise_name(r.family or "") == normalise_name(t.family or ""), r.line
        assert _first(r.given) == _first(t.given), r.line
        assert r.birth_date == t.birth_date, r.line
        assert r.sex == (t.sex if sex else None), r.line
        assert r.dates == ((t.exam.date(),) if t.exam else ()), r.line
        assert r.codes == ((t.code,) if t.code else ()), r.line
        assert r.texts == ((t.comment.strip(),) if t.comment else ()), r.line


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_shape_cut_from_a_real_package_is_read_row_by_row(package_records, tmp_path):
    """H3: each shape of leaked file (delimiters, encodings, renamed, English, opaque, reordered or
    dropped columns, no header, junk rows, capitals, no accents, extra spaces, a full-name column,
    ragged rows, XLSX, SQL INSERT and COPY, the 56-row sample) cut from a real package: the
    columns are recognised by kind and every row's NIR (key checked), names, birth date, sex, exam
    date, code and comment are the package's."""
    failures = []
    for shape in EXPECTED:
        path, truth = leak.write(package_records, shape, tmp_path, seed=3)
        opened = open_leak(path, index=2)
        kinds = [c.kind for c in opened.layout.columns][: len(EXPECTED[shape])]
        expected = EXPECTED[shape]
        if shape == "reordered":  # the kinds follow the headers, wherever they are
            expected = [dict(zip(leak.COLUMNS, FLAT, strict=True))[c.header or ""] for c in opened.layout.columns]
        if kinds != expected:
            failures.append(f"{shape}: {kinds}")
            continue
        rows = list(opened.rows())
        assert all(r.file == 2 for r in rows)
        try:
            _check_rows(rows, truth, nir=shape != "dropped", sex=shape != "dropped")
        except AssertionError as exc:
            failures.append(f"{shape}: row {exc}")
        assert opened.layout.rows == len(truth)
        assert opened.layout.header == (shape != "headerless"), shape
    assert failures == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("results", [5, 12])
def test_a_few_rows_without_a_header_still_give_the_identity(package_records, results):
    """H3: a handful of rows cut from a real package, with no header or headers that say nothing:
    the NIR, names, birth date and sex columns are still found by their values (the comment, a
    sentence, is free text, not a birth name), and every row's identity is the package's."""
    import random

    res = [r for r in package_records if r["record"] == "result"]
    rest = [r for r in package_records if r["record"] != "result"]
    subset = rest + random.Random(results).sample(res, results)
    for shape in ("headerless", "opaque"):
        data, name, truth = leak.cut(subset, shape, seed=results)
        opened = open_bytes(data, name)
        kinds = [c.kind for c in opened.layout.columns]
        assert kinds[:5] == FLAT[:5] and "birth_name" not in kinds and kinds[10] == "text", shape
        rows = list(opened.rows())
        assert [(r.nir, r.birth_date, r.sex) for r in rows] == [
            ((t.nir or "")[:13], t.birth_date, t.sex) for t in truth
        ]
        assert [(r.family, r.given) for r in rows] == [(t.family, t.given) for t in truth]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_shapes_say_their_format_encoding_and_delimiter(package_records):
    """H3: what is stored about a file (its layout) names its format, encoding, delimiter and junk
    lines; never a value of the file."""
    seen = {}
    for shape in ("csv", "semicolon", "tsv", "pipe", "utf16", "utf8sig", "junk", "xlsx", "sql_copy", "ndjson"):
        data, name, truth = leak.cut(package_records, shape, seed=5)
        opened = open_bytes(data, name)
        list(opened.rows())
        lay = opened.layout
        seen[shape] = (lay.format, lay.encoding, lay.delimiter)
        text = repr(lay)
        for t in truth[:20]:
            for value in (t.nir, t.family, t.given, t.birth_date and t.birth_date.strftime("%d/%m/%Y")):
                assert not value or value not in text, shape
        if shape == "junk":
            # 2 titles and a blank line above the header, header repeated every 50 rows, blank
            # separator lines, a total line
            assert lay.junk >= 3 + (len(truth) - 1) // 50 + 1
            assert lay.rows == len(truth)
    assert seen["csv"] == ("csv", "utf-8", ",")
    assert seen["semicolon"] == ("csv", "cp1252", ";")
    assert seen["tsv"] == ("tsv", "utf-8", "\t")
    assert seen["pipe"][0::2] == ("csv", "|") and seen["pipe"][1] in ("cp1252", "latin-1")
    assert seen["utf16"] == ("tsv", "utf-16", "\t")
    assert seen["utf8sig"] == ("csv", "utf-8-sig", ";")
    assert seen["xlsx"] == ("xlsx", None, None)
    assert seen["sql_copy"] == ("sql", "utf-8", None)
    assert seen["ndjson"] == ("ndjson", "utf-8", None)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_package_as_leaked_ndjson_gives_identities_ids_and_links(package_records):
    """H3: the package's own records leaked as ndjson: identity rows carry the NIR, names, birth date
    and sex with the record's export id; result rows carry their links (patient, request,
    specimen) and their code; the package's header record is not a row."""
    data, name, _ = leak.cut(package_records, "ndjson")
    opened = open_bytes(data, name)
    rows = list(opened.rows())
    records = [r for r in package_records if r["record"] != "header"]
    assert len(rows) == len(records) and opened.layout.junk == 1
    by_kind = {c.header: c.kind for c in opened.layout.columns}
    assert by_kind["id"] == "export_id" and by_kind["nir"] == "nir" and by_kind["patient"] == "link"
    assert by_kind["birth_date"] == "birth_date" and by_kind["family_name"] == "family_name"
    for row, rec in zip(rows, records, strict=True):
        assert row.record == rec["record"]
        assert row.ids == (rec["id"],)
        if rec["record"] == "identity":
            assert row.nir == rec["nir"][:13]
            assert row.family == rec["family_name"] and row.given == rec["given_names"]
            assert row.birth_name == rec["birth_name"]
            assert row.birth_date == date.fromisoformat(rec["birth_date"]) and row.sex == rec["sex"]
        elif rec["record"] == "result":
            assert set(row.links) == {rec[k] for k in ("patient", "request", "specimen")}
            assert row.codes == (rec["code"],) and row.nir is None
        elif rec["record"] == "prescriber":  # a prescriber's name is not a patient's
            assert row.family is None and row.given is None


# --- hand-made files ---------------------------------------------------------------------------

NIR_M = "184127512345640"  # 1 84 12 75 123 456, key 40
NIR_F = "284127512345687"
CORSICA = "184122A123456" + f"{97 - int('18412' + '19' + '123456') % 97:02d}"
ROWS = [
    ("Lefèvre-d'Orgeval", "Hélène Marie", NIR_F, "03/12/1984", "F", "10/11/2020", "718-7", "Hémoglobine"),
    ("Œuvray", "Jérôme", NIR_M, "1984-12-03", "M", "2020-11-11", "777-3", "Plaquettes"),
]
HEADER = ("Nom", "Prénom", "N° Sécu", "DDN", "Sexe", "Date prélèvement", "Code", "Libellé")


def _text(rows, delimiter=";", header=HEADER) -> str:
    lines = [delimiter.join(header)] if header else []
    lines += [delimiter.join(r) for r in rows]
    return "\r\n".join(lines) + "\r\n"


def _read(data: bytes, name: str = "leak.csv") -> tuple[Leak, list[LeakRow]]:
    opened = open_bytes(data, name)
    return opened, list(opened.rows())


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("utf-8", "utf-8"),
        ("utf-8-sig", "utf-8-sig"),
        ("cp1252", "cp1252"),
        ("utf-16", "utf-16"),
        ("utf-16-le", "utf-16-le"),
    ],
)
def test_encodings_give_the_names_as_written(encoding, expected):
    """H3: the same file in UTF-8 (with and without a BOM), cp1252 and UTF-16 (with a BOM, and
    little-endian without one): the encoding is found and the accented names read as written."""
    opened, rows = _read(_text(ROWS).encode(encoding))
    assert opened.layout.encoding == expected
    assert [(r.family, r.given) for r in rows] == [(r[0], r[1]) for r in ROWS]
    assert [r.nir for r in rows] == [NIR_F[:13], NIR_M[:13]]
    assert [r.birth_date for r in rows] == [date(1984, 12, 3)] * 2


@pytest.mark.parametrize("encoding", ["cp850", "mac_roman"])
def test_old_dos_and_mac_encodings_are_told_from_windows(encoding):
    """H3: a DOS (cp850) or old Mac (mac_roman) export, where 'é' is another byte than in cp1252:
    the encoding is found on a sample and the names read as written."""
    rows_8 = [(r[0].replace("Œ", "Oe"), *r[1:]) for r in ROWS]
    opened, rows = _read(_text(rows_8).encode(encoding))
    assert opened.layout.encoding == encoding
    assert [(r.family, r.given) for r in rows] == [("Lefèvre-d'Orgeval", "Hélène Marie"), ("Oeuvray", "Jérôme")]


def test_latin1_is_read_without_loss():
    """H3: a latin-1 file (no 'Œ' in latin-1): its accented names are read as written."""
    rows_l1 = [(r[0].replace("Œ", "Oe"), *r[1:]) for r in ROWS]
    opened, rows = _read(_text(rows_l1).encode("latin-1"))
    assert opened.layout.encoding in ("cp1252", "latin-1")
    assert [r.family for r in rows] == ["Lefèvre-d'Orgeval", "Oeuvray"]
    assert rows[0].given == "Hélène Marie"


def test_quoting_embedded_delimiters_newlines_and_doubled_quotes():
    """H3: a comma file whose cells hold commas, doubled quotes and line breaks in quotes; the
    comment is one cell and the line numbers are the file's."""
    data = (
        b'nom,prenom,nir,ddn,commentaire\n"Dupont, dit ""Jo""",Jean,184127512345640,03/12/1984,"ligne 1\nligne 2"\n'
        b"Martin,Anne,284127512345687,01/02/1950,RAS\n"
    )
    opened, rows = _read(data)
    assert opened.layout.delimiter == ","
    assert [c.kind for c in opened.layout.columns] == ["family_name", "given_names", "nir", "birth_date", "text"]
    assert rows[0].family == 'Dupont, dit "Jo"' and rows[0].texts == ("ligne 1\nligne 2",)
    assert [r.line for r in rows] == [3, 4]


def test_single_quotes_and_pipes():
    """H3: an unusual dialect: pipe-delimited, cells quoted with single quotes."""
    data = "'nom'|'prenom'|'date de naissance'\n'Le Gall'|'Anne'|'01/02/1950'\n'O''Neil'|'Paul'|'2/3/61'\n"
    opened, rows = _read(data.encode())
    assert opened.layout.delimiter == "|"
    assert [(r.family, r.given, r.birth_date) for r in rows] == [
        ("Le Gall", "Anne", date(1950, 2, 1)),
        ("O'Neil", "Paul", date(1961, 3, 2)),
    ]


def test_headerless_columns_are_recognised_by_their_values():
    """H3: no header: the NIR by its key, the given names by a first-name list, the family name, the
    birth date from the exam date (the earlier, spread over decades), sex written 1/2, a LOINC
    code, a unit, a number and a free-text comment."""
    lines = []
    fams = ["Dupont", "Moreau", "Lefebvre", "Garnier", "Chevalier", "Rousseau", "Fontaine", "Mercier"]
    givens = ["Jean", "Marie", "Pierre", "Isabelle", "Michel", "Nathalie", "Philippe", "Sophie"]
    for i in range(40):
        nir = f"{1 + i % 2}{50 + i:02d}0{1 + i % 9}7512345{i:01d}"[:13]
        nir += f"{97 - int(nir) % 97:02d}"
        lines.append(
            ";".join(
                [
                    f"{1 + i % 2}",
                    nir,
                    f"2020-0{1 + i % 9}-1{i % 10}",
                    fams[i % 8],
                    givens[i % 8],
                    f"{1 + i % 28:02d}/{1 + i % 9:02d}/{1940 + i}",
                    ["718-7", "777-3", "2345-7"][i % 3],
                    ["g/dL", "10*9/L", "mmol/L"][i % 3],
                    f"{10 + i / 7:.2f}".replace(".", ","),
                    f"Patient sous traitement anticoagulant, contrôle dans {i + 2} jours",
                ]
            )
        )
    opened, rows = _read(("\n".join(lines) + "\n").encode())
    kinds = [c.kind for c in opened.layout.columns]
    assert kinds == ["sex", "nir", "date", "family_name", "given_names", "birth_date", "code", "unit", "value", "text"]
    assert opened.layout.header is False and all(c.header is None for c in opened.layout.columns)
    assert rows[0].sex == "M" and rows[1].sex == "F"
    assert rows[5].family == "Rousseau" and rows[5].given == "Nathalie"
    assert rows[5].birth_date == date(1945, 6, 6) and rows[5].dates == (date(2020, 6, 15),)
    assert rows[5].nir is not None and len(rows[5].nir) == 13


def test_full_names_are_split_family_then_given():
    """H3: one column 'DUPONT Jean' (or 'Jean DUPONT', 'Dupont, Jean'): family and given names."""
    data = "patient;ddn\nDUPONT Jean Pierre;01/01/1960\nMarie LE GALL;02/02/1970\nMartin, Paul;03.03.71\n"
    opened, rows = _read(data.encode())
    assert [c.kind for c in opened.layout.columns] == ["full_name", "birth_date"]
    assert [(r.family, r.given) for r in rows] == [("DUPONT", "Jean Pierre"), ("LE GALL", "Marie"), ("Martin", "Paul")]
    assert rows[2].birth_date == date(1971, 3, 3)


def test_nir_key_checked_thirteen_digits_kept_corsica():
    """H3, M3: a NIR of 15 with a wrong key gives no NIR; 13 digits are kept (no key to check);
    spaces and dots are dropped; Corsica's 2A is read."""
    data = (
        "nom;nir\nA;184127512345640\nB;184127512345610\nC;1 84 12 75 123 456\nD;1.84.12.75.123.456.40\n"
        f"E;{CORSICA}\nF;{CORSICA[:-2]}00\n"
    ).encode()
    _, rows = _read(data)
    assert [r.nir for r in rows] == ["1841275123456", None, "1841275123456", "1841275123456", CORSICA[:13], None]


def test_a_nir_of_thirteen_gets_back_its_key():
    """H3: the 15 characters a lab stores (and hashes) are the 13 read plus their key."""
    from labvault.breach.columns import with_key

    assert with_key(NIR_M[:13]) == NIR_M and with_key(NIR_F[:13]) == NIR_F and with_key(CORSICA[:13]) == CORSICA


def test_junk_titles_blank_lines_repeated_headers_comments_and_totals():
    """H3: titles above the header, blank lines, a comment, the header repeated and a total line are
    counted as junk; the data rows keep their line numbers."""
    text = (
        "Laboratoire X - extraction\n\n# exporté le 12/02/2021\n"
        + _text(ROWS[:1], header=HEADER)
        + ";;;;;;;\n"
        + _text(ROWS[1:], header=HEADER)
        + "Total;2;;;;;;\n"
    )
    opened, rows = _read(text.encode())
    assert [r.family for r in rows] == [ROWS[0][0], ROWS[1][0]]
    assert [r.line for r in rows] == [5, 8]
    assert opened.layout.rows == 2 and opened.layout.junk == 6
    assert opened.layout.columns[2].header == "N° Sécu" and opened.layout.columns[2].kind == "nir"


def test_ragged_rows_read_what_they_hold():
    """H3: rows shorter or longer than the header: missing cells are empty, extra cells ignored."""
    text = "nom;prenom;ddn;sexe\nDupont;Jean;01/01/1960\nMartin;Anne;02/02/1970;F;x;y\nDurand;Luc\n"
    _, rows = _read(text.encode())
    assert [(r.family, r.given, r.birth_date, r.sex) for r in rows] == [
        ("Dupont", "Jean", date(1960, 1, 1), None),
        ("Martin", "Anne", date(1970, 2, 2), "F"),
        ("Durand", "Luc", None, None),
    ]


def test_dates_in_every_written_form():
    """H3: dd/mm/yyyy, yyyy-mm-dd, dd.mm.yy, dd-mm-yyyy, datetimes, yyyymmdd."""
    text = (
        "nom;date de naissance;date examen\nA;03/12/1984;10/11/2020 09:51\nB;1984-12-03;2020-11-10T09:51:00\n"
        "C;03.12.84;10.11.20\nD;03-12-1984;20201110\n"
    )
    _, rows = _read(text.encode())
    assert {r.birth_date for r in rows} == {date(1984, 12, 3)}
    assert {r.dates for r in rows} == {(date(2020, 11, 10),)}


def test_xlsx_read_only_with_titles_dates_and_serials(tmp_path):
    """H3: a workbook (written with openpyxl): a title row above the header, birth dates as date
    cells or as Excel serial numbers, NIR as numbers, sex as H/F."""
    import openpyxl  # type: ignore[import-untyped]

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Extraction du 12/02/2021"])
    ws.append(["NOM", "PRENOM", "NIR", "Date de naissance", "Sexe", "Date prélèvement"])
    ws.append(["DUPONT", "Jean", int(NIR_M), datetime(1984, 12, 3), "H", datetime(2020, 11, 10, 9, 51)])
    ws.append(["MARTIN", "Anne", int(NIR_F), 31019, "F", 44145])  # 1984-12-03, 2020-11-10 as serials
    path = tmp_path / "leak.xlsx"
    wb.save(path)
    opened = open_leak(path)
    rows = list(opened.rows())
    assert opened.layout.format == "xlsx" and opened.layout.encoding is None
    assert [c.kind for c in opened.layout.columns] == ["family_name", "given_names", "nir", "birth_date", "sex", "date"]
    assert [(r.family, r.nir, r.birth_date, r.sex, r.dates) for r in rows] == [
        ("DUPONT", NIR_M[:13], date(1984, 12, 3), "M", (date(2020, 11, 10),)),
        ("MARTIN", NIR_F[:13], date(1984, 12, 3), "F", (date(2020, 11, 10),)),
    ]
    assert [r.line for r in rows] == [3, 4] and opened.layout.junk == 1


def test_sql_dump_insert_with_escapes_and_two_tables():
    """H3: an SQL dump's text: multi-row INSERTs with doubled and backslashed quotes, NULL, a
    second table without a column list (its columns by content) linking to patients by id."""
    pid = "0123456789abcdef0123456789abcdef"
    sql = (
        "-- MySQL dump\nSET NAMES utf8;\n"
        "INSERT INTO `patients` (`id`, `nom`, `prenom`, `nir`, `date_naissance`) VALUES\n"
        f"('{pid}', 'O''Brien', 'Seán', '{NIR_M}', '1984-12-03'),\n"
        "('fedcba9876543210fedcba9876543210', 'D\\'Arc', NULL, '284127512345687', '1950-02-01');\n"
        "INSERT INTO resultats VALUES (1, "
        f"'{pid}', '718-7', 13.5, 'g/dL', 'contrôle; à refaire'), (2, '{pid}', '777-3', 268, '10*9/L', NULL);\n"
    )
    opened, rows = _read(sql.encode(), "dump.sql")
    assert opened.layout.format == "sql"
    heads = {c.header: c.kind for c in opened.layout.columns if c.header}
    assert heads["patients.nir"] == "nir" and heads["patients.id"] == "export_id"
    assert heads["patients.date_naissance"] == "birth_date"
    pats = [r for r in rows if r.record == "patients"]
    res = [r for r in rows if r.record == "resultats"]
    assert [(r.family, r.given, r.nir, r.ids) for r in pats] == [
        ("O'Brien", "Seán", NIR_M[:13], (pid,)),
        ("D'Arc", None, NIR_F[:13], ("fedcba9876543210fedcba9876543210",)),
    ]
    assert [(r.links, r.codes) for r in res] == [((pid,), ("718-7",)), ((pid,), ("777-3",))]
    assert [r.line for r in pats] == [4, 5]


def test_pg_dump_copy_block():
    """H3: pg_dump's COPY ... FROM stdin: tab-separated, \\N for NULL, backslash escapes, ended by \\."""
    sql = (
        "CREATE TABLE public.identite (nom text);\n"
        "COPY public.identite (nom, prenom, nir, ddn, sexe) FROM stdin;\n"
        f"Dupont\tJean\\tPierre\t{NIR_M}\t1984-12-03\tM\n"
        f"Le Gall\t\\N\t{NIR_F}\t1950-02-01\tF\n"
        "\\.\n\nSELECT 1;\n"
    )
    _, rows = _read(sql.encode(), "dump.sql")
    assert [(r.family, r.given, r.nir, r.birth_date, r.sex, r.line) for r in rows] == [
        ("Dupont", "Jean\tPierre", NIR_M[:13], date(1984, 12, 3), "M", 3),
        ("Le Gall", None, NIR_F[:13], date(1950, 2, 1), "F", 4),
    ]


def test_ndjson_by_hand_with_a_bad_line():
    """H3: ndjson records (keys of the package's records), a line that is no JSON counted as junk."""
    lines = [
        json.dumps(
            {"record": "identity", "id": "a" * 32, "nir": NIR_M, "family_name": "Noël", "birth_date": "1944-09-18"}
        ),
        "{not json",
        json.dumps(
            {"record": "result", "id": "b" * 32, "patient": "a" * 32, "code": "718-7", "comment": "VIH négatif"}
        ),
    ]
    opened, rows = _read(("\n".join(lines) + "\n").encode(), "x.ndjson")
    assert [(r.record, r.nir, r.family, r.birth_date, r.links, r.texts) for r in rows] == [
        ("identity", NIR_M[:13], "Noël", date(1944, 9, 18), (), ()),
        ("result", None, None, None, ("a" * 32,), ("VIH négatif",)),
    ]
    assert opened.layout.junk == 1


def test_rows_can_be_read_again_and_kinds_are_known():
    """H3: ``rows()`` reads the file again on each call; every kind is one of KINDS."""
    opened = open_bytes(_text(ROWS).encode(), "x.csv")
    assert list(opened.rows()) == list(opened.rows())
    assert all(c.kind in KINDS and 0 <= c.score <= 1 for c in opened.layout.columns)


# --- refusals: named, never quoted ------------------------------------------------------------

SECRET = "Zébulon"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n  \n",
        b"PK\x03\x04" + f"{SECRET} {NIR_M}".encode() + b"\x00" * 50,
        bytes(range(256)) * 8 + f"{SECRET};{NIR_M}".encode(),
        b"\x00" * 10 + f"{SECRET};{NIR_M}".encode() + b"\x00\x01\x02" * 100,
    ],
    ids=["empty", "blank", "bad-xlsx", "binary", "nuls"],
)
def test_a_malformed_file_is_refused_without_quoting_a_cell(data):
    """H3, G2: a file that cannot be read raises LeakUnreadable, whose one line names the layout
    and the failure, never a cell (a name, a NIR) of the file."""
    with pytest.raises(LeakUnreadable) as caught:
        opened = open_bytes(data, "leak.bin")
        list(opened.rows())
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message and NIR_M not in message and NIR_M[:13] not in message
    assert message.split(":")[0] in ("file", "xlsx file", "csv file", "text file")


def test_a_row_the_csv_parser_refuses_is_named_by_the_format_not_quoted():
    """H3, G2: a cell longer than the CSV parser takes, after the sample: LeakUnreadable naming the
    format and the parser's failure; the cell (a name and a NIR) is not in the message."""
    text = "nom;nir\n" + "Dupont;184127512345640\n" * 3000 + f'"{SECRET} {NIR_M}' + "x" * 200_000 + '";1\n'
    opened = open_bytes(text.encode(), "leak.csv")
    with pytest.raises(LeakUnreadable) as caught:
        list(opened.rows())
    message = str(caught.value)
    assert message == "csv file: rows cannot be read (Error)"


@pytest.mark.parametrize(
    "data",
    [
        f"nom;nir\n{SECRET};{NIR_M}\n".encode("utf-16-le")[:-1] + b"\x00\xd8",
        ("nom;nir\n" + '"' + SECRET + NIR_M + "x" * 200_000 + '"\n').encode(),
    ],
    ids=["broken-utf16", "huge-cell"],
)
def test_an_odd_file_is_read_or_refused_never_anything_else(data):
    """H3, G2: a broken UTF-16 tail is read with replacement characters; a huge cell in the sniffed
    sample makes a one-column text file; neither fails otherwise."""
    message = ""
    try:
        opened = open_bytes(data, "leak.bin")
        rows = list(opened.rows())
    except LeakUnreadable as exc:
        message = str(exc)
    else:
        assert opened.layout.format in ("csv", "text") and len(rows) >= 1
    assert SECRET not in message and NIR_M[:13] not in message


def test_a_missing_file_is_refused_by_name_of_its_failure(tmp_path):
    """H3: a path that cannot be opened: LeakUnreadable."""
    with pytest.raises(LeakUnreadable, match="cannot be opened"):
        open_leak(tmp_path / "absent.csv")


def test_the_layout_of_a_headerless_file_holds_no_value():
    """H3, G2: the layout (what is stored about a file) of a file without a header holds kinds,
    counts and the file's digest, never one of its cells."""
    opened = open_bytes(_text(ROWS, header=None).encode(), "x.csv")
    list(opened.rows())
    text = repr(opened.layout)
    for row in ROWS:
        for cell in row:
            assert len(cell) < 3 or cell not in text
    assert len(opened.layout.sha256) == 64 and opened.layout.size > 0


def test_utf16_bytes_are_not_mistaken_for_binary():
    """H3: UTF-16 without a BOM, big-endian: read, not refused as binary."""
    data = codecs.encode(_text(ROWS), "utf-16-be")
    opened, rows = _read(data)
    assert opened.layout.encoding == "utf-16-be" and rows[1].family == "Œuvray"


def test_a_file_of_one_column_of_nirs():
    """H3: a bare list of NIRs, one per line, no header."""
    opened, rows = _read(f"{NIR_M}\n{NIR_F}\n".encode())
    assert opened.layout.format == "text" and [c.kind for c in opened.layout.columns] == ["nir"]
    assert [r.nir for r in rows] == [NIR_M[:13], NIR_F[:13]]


def test_reading_is_streamed(tmp_path):
    """H3: ``open_leak`` recognises the columns on a sample; the rows come one by one."""
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write(_text([], header=HEADER))
        for _ in range(3000):
            f.write(";".join(ROWS[0]) + "\n")
    opened = open_leak(path)
    it = opened.rows()
    first = next(it)
    assert first.family == ROWS[0][0] and opened.layout.rows == 0  # counted once all are read
    assert sum(1 for _ in it) == 2999 and opened.layout.rows == 3000


def test_a_workbook_cell_openpyxl_would_quote_in_a_warning_is_not_let_out(tmp_path):
    """G2: a date cell whose serial is out of range makes openpyxl warn with the cell's value; the
    reader lets no such warning out."""
    import warnings

    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["nom", "nir", "ddn"])
    ws.append(["Dupont", NIR_M, 99999999])
    ws.append(["Martin", NIR_F, 31019])
    ws["C2"].number_format = "dd/mm/yyyy"
    ws["C3"].number_format = "dd/mm/yyyy"
    path = tmp_path / "w.xlsx"
    wb.save(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opened = open_leak(path)
        rows = list(opened.rows())
    assert not [w for w in caught if "99999999" in str(w.message)]
    assert [r.nir for r in rows] == [NIR_M[:13], NIR_F[:13]] and rows[1].birth_date == date(1984, 12, 3)


REALDATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "realdata"
SYNTHEA = REALDATA / "fhir" / "bulk-ndjson" / "synthea-10-patients" / "Patient.000.ndjson"


@pytest.mark.skipif(not SYNTHEA.is_file(), reason=f"real FHIR bulk data absent: {SYNTHEA}")
def test_a_real_fhir_bulk_export_of_patients_is_read():
    """H3: a real FHIR bulk export (Synthea, ../shared/realdata) leaked as ndjson: every Patient
    read with its first name, given names, birth date and sex as the file writes them."""
    opened = open_leak(SYNTHEA)
    rows = list(opened.rows())
    truth = [json.loads(line) for line in SYNTHEA.read_text().splitlines() if line.strip()]
    assert len(rows) == len(truth) == 13
    for row, res in zip(rows, truth, strict=True):
        name = res["name"][0]
        assert row.record == "Patient"
        assert (row.family, row.given) == (name["family"], " ".join(name["given"]))
        assert row.birth_date == date.fromisoformat(res["birthDate"])
        assert row.sex == {"male": "M", "female": "F"}[res["gender"]]
        assert row.nir is None  # US identifiers only


def test_a_fhir_patient_with_an_ins_nir_identifier():
    """H3: a FHIR Patient carrying the INS-NIR under its OID (FR Core) gives the NIR; an
    Observation gives its subject as a link and its code."""
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "10003"},
            {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": NIR_F},
        ],
        "name": [{"family": "Lefèvre", "given": ["Hélène", "Marie"]}],
        "birthDate": "1984-12-03",
        "gender": "female",
    }
    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/" + "c" * 32},
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
        "effectiveDateTime": "2020-11-10T09:51:00+01:00",
    }
    _, rows = _read((json.dumps(patient) + "\n" + json.dumps(obs) + "\n").encode(), "bulk.ndjson")
    assert (rows[0].nir, rows[0].family, rows[0].given, rows[0].sex) == (NIR_F[:13], "Lefèvre", "Hélène Marie", "F")
    assert (rows[1].record, rows[1].links, rows[1].codes, rows[1].dates) == (
        "Observation",
        ("c" * 32,),
        ("718-7",),
        (date(2020, 11, 10),),
    )


def test_an_ndjson_record_type_after_the_sample_is_still_read():
    """H3: a record type first seen after the sample's rows reads with the same columns."""
    ident = {"record": "identity", "id": "a" * 32, "nir": NIR_M, "family_name": "Noël", "patient": "d" * 32}
    late = {"record": "result", "id": "b" * 32, "patient": "a" * 32, "nir": NIR_F}
    text = "".join(json.dumps(ident) + "\n" for _ in range(2100)) + json.dumps(late) + "\n"
    _, rows = _read(text.encode(), "x.ndjson")
    assert len(rows) == 2101 and (rows[-1].record, rows[-1].links, rows[-1].nir) == ("result", ("a" * 32,), NIR_F[:13])
