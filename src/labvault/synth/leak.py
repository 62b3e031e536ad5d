"""Leaked files cut from a package: the shapes a copy takes once it is out.

``flatten(records)`` joins a package's decrypted records (the ndjson records, as dicts) into flat
rows like the 2021 file: one row per result with its patient's identity, its exam date, code,
label, value, unit, comment and prescriber. ``cut(records, shape, seed=...)`` writes them in one of
``SHAPES`` and gives the file's bytes, a file name and the rows in the file's order (the truth a
reader is checked against). Deterministic from the seed. No database, no key: test material for
the leak reader, the analysis, the demo and the bench.
"""

from __future__ import annotations

import csv
import io
import json
import random
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

# The 2021 file's columns (French), in its order.
COLUMNS = (
    "nom",
    "prénom",
    "NIR",
    "ddn",
    "sexe",
    "date d'examen",
    "code",
    "libellé",
    "résultat",
    "unité",
    "commentaire",
    "prescripteur",
)
RENAMED = (
    "Nom patient",
    "Prénoms",
    "N° Sécurité sociale",
    "Date de naissance",
    "Genre",
    "Date prélèvement",
    "Code analyse",
    "Examen",
    "Valeur",
    "Unités",
    "Remarques",
    "Médecin prescripteur",
)
ENGLISH = (
    "last_name",
    "first_name",
    "ssn",
    "dob",
    "gender",
    "collected",
    "loinc",
    "test",
    "result",
    "unit",
    "comments",
    "prescriber",
)

SHAPES = (
    "csv",  # comma, UTF-8, the 2021 columns
    "semicolon",  # semicolon, cp1252 (a French spreadsheet's CSV)
    "tsv",  # tab, UTF-8
    "pipe",  # pipe, latin-1, quotes on every cell
    "utf16",  # tab, UTF-16 with its BOM (a spreadsheet's "Unicode text")
    "utf8sig",  # semicolon, UTF-8 with a BOM
    "renamed",  # French synonyms for every header
    "english",  # English headers, ISO dates
    "opaque",  # headers that say nothing (col1, col2...)
    "reordered",  # columns shuffled
    "dropped",  # no NIR, no sex, no prescriber
    "headerless",  # no header row
    "junk",  # titles, blank lines, comments, repeated headers, a total line
    "capitals",  # names in capitals, without accents
    "no_accents",  # names without accents, as written otherwise
    "spaces",  # names with extra spaces, NIR written with spaces
    "full_name",  # one "DUPONT Jean" column, dd.mm.yy dates
    "ragged",  # empty trailing cells cut, some rows with an extra cell
    "xlsx",  # a workbook (dates as dates, numbers as numbers)
    "ndjson",  # the package's own records
    "sql_insert",  # an SQL dump: INSERT INTO ... VALUES (...), (...);
    "sql_copy",  # a pg_dump: COPY ... FROM stdin;
    "sample56",  # 56 rows, drawn at random (the 2020 sample)
)


@dataclass(frozen=True, slots=True)
class Flat:
    """One leaked row and its truth: the patient's export id and identity, the result's facts."""

    patient: str | None  # the package's patient id (an export id)
    result: str  # the package's result id
    family: str | None
    given: str | None
    birth_name: str | None
    nir: str | None  # 15 characters as stored
    birth_date: date | None
    sex: str | None
    exam: datetime | None
    code: str | None
    label: str | None
    value: float | str | None
    unit: str | None
    comment: str | None
    prescriber: str | None

    def cells(self) -> tuple[Any, ...]:
        """The row's values in ``COLUMNS`` order (typed: dates, numbers)."""
        return (
            self.family,
            self.given,
            self.nir,
            self.birth_date,
            self.sex,
            self.exam,
            self.code,
            self.label,
            self.value,
            self.unit,
            self.comment,
            self.prescriber,
        )


def _dt(text: Any) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).replace(tzinfo=None)


def flatten(records: Iterable[dict[str, Any]]) -> list[Flat]:
    """One row per result, joined with its patient, request, specimen and prescriber."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    results = []
    for rec in records:
        rtype = rec.get("record")
        if rtype == "result":
            results.append(rec)
        elif rtype and "id" in rec:
            by.setdefault(rtype, {})[rec["id"]] = rec
    ident, reqs, specs, docs = (by.get(t, {}) for t in ("identity", "request", "specimen", "prescriber"))
    out = []
    for r in results:
        p = ident.get(r.get("patient") or "", {})
        req = reqs.get(r.get("request") or "", {})
        spec = specs.get(r.get("specimen") or "", {})
        doc = docs.get(req.get("prescriber") or "", {})
        value = r.get("value_num") if r.get("value_num") is not None else r.get("value_text")
        bd = p.get("birth_date")
        out.append(
            Flat(
                patient=r.get("patient"),
                result=r["id"],
                family=p.get("family_name"),
                given=p.get("given_names"),
                birth_name=p.get("birth_name"),
                nir=p.get("nir"),
                birth_date=date.fromisoformat(bd) if bd else None,
                sex=p.get("sex"),
                exam=_dt(spec.get("collected_at") or req.get("requested_at")),
                code=r.get("code"),
                label=r.get("label"),
                value=value,
                unit=r.get("unit"),
                comment=r.get("comment"),
                prescriber=" ".join(["Dr", doc.get("given_name") or "", doc.get("family_name") or ""]).strip()
                if doc
                else None,
            )
        )
    return out


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("œ", "oe").replace("Œ", "OE")


def _names(rows: list[Flat], fn: Callable[[str], str]) -> list[Flat]:
    def f(v: str | None) -> str | None:
        return fn(v) if v else v

    return [replace(r, family=f(r.family), given=f(r.given), birth_name=f(r.birth_name)) for r in rows]


def _fmt_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return (f"{v:g}").replace(".", ",")
    return str(v)


def _text_cells(r: Flat, *, ddn: str = "%d/%m/%Y", exam: str = "%d/%m/%Y %H:%M", nir_spaces: bool = False) -> list[str]:
    nir = r.nir or ""
    if nir_spaces and len(nir) == 15:
        nir = f"{nir[0]} {nir[1:3]} {nir[3:5]} {nir[5:7]} {nir[7:10]} {nir[10:13]} {nir[13:]}"
    return [
        r.family or "",
        r.given or "",
        nir,
        r.birth_date.strftime(ddn) if r.birth_date else "",
        r.sex or "",
        r.exam.strftime(exam) if r.exam else "",
        r.code or "",
        r.label or "",
        _fmt_value(r.value),
        r.unit or "",
        r.comment or "",
        r.prescriber or "",
    ]


def _csv(
    header: Sequence[str] | None, rows: Iterable[Sequence[str]], delimiter: str, *, quoting: int = csv.QUOTE_MINIMAL
) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator="\r\n")  # type: ignore[arg-type]
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _sql_literal(v: str) -> str:
    if v == "":
        return "NULL"
    return "'" + v.replace("\\", "\\\\").replace("'", "''") + "'"


def _sql_insert(rows: list[Flat], table: str = "resultats", batch: int = 100) -> str:
    cols = ", ".join(c.replace("'", "").replace(" ", "_").replace("é", "e") for c in COLUMNS)
    out = ["-- dump of the lab's results", "SET client_encoding = 'UTF8';", ""]
    for i in range(0, len(rows), batch):
        values = ",\n".join(
            "(" + ", ".join(_sql_literal(c) for c in _text_cells(r, ddn="%Y-%m-%d", exam="%Y-%m-%d %H:%M:%S")) + ")"
            for r in rows[i : i + batch]
        )
        out.append(f"INSERT INTO public.{table} ({cols}) VALUES\n{values};")
    return "\n".join(out) + "\n"


def _copy_escape(v: str) -> str:
    if v == "":
        return "\\N"
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _sql_copy(rows: list[Flat], table: str = "resultats") -> str:
    cols = ", ".join(c.replace("'", "").replace(" ", "_").replace("é", "e") for c in COLUMNS)
    lines = [
        "--",
        "-- PostgreSQL database dump",
        "--",
        f"CREATE TABLE public.{table} (id integer);",
        f"COPY public.{table} ({cols}) FROM stdin;",
    ]
    lines += [
        "\t".join(_copy_escape(c) for c in _text_cells(r, ddn="%Y-%m-%d", exam="%Y-%m-%d %H:%M:%S")) for r in rows
    ]
    lines += ["\\.", "", "-- PostgreSQL database dump complete"]
    return "\n".join(lines) + "\n"


def _xlsx(header: Sequence[str], rows: list[Flat]) -> bytes:
    import openpyxl  # type: ignore[import-untyped]

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Résultats")
    ws.append(["Extraction résultats"])
    ws.append(list(header))
    for r in rows:
        cells = list(r.cells())
        cells[3] = datetime(r.birth_date.year, r.birth_date.month, r.birth_date.day) if r.birth_date else None
        ws.append(cells)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _junk(header: Sequence[str], rows: list[list[str]], delimiter: str, rng: random.Random) -> str:
    lines = [
        _csv(None, [["Laboratoire - extraction des résultats"]], delimiter),
        _csv(None, [["# généré le 12/02/2021"]], delimiter),
        "\r\n",
        _csv(header, [], delimiter),
    ]
    for i, row in enumerate(rows):
        if i and i % 50 == 0:
            lines.append(_csv(header, [], delimiter))
        if rng.random() < 0.03:
            lines.append(delimiter * (len(header) - 1) + "\r\n")
        lines.append(_csv(None, [row], delimiter))
    lines.append(_csv(None, [["Total", str(len(rows))]], delimiter))
    return "".join(lines)


def cut(records: Sequence[dict[str, Any]], shape: str, *, seed: int = 0) -> tuple[bytes, str, list[Flat]]:
    """The leaked file of ``shape`` cut from a package's records: (bytes, file name, the rows in
    the file's order). For ``ndjson`` the rows are the flattened results (the file holds the
    records themselves)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown leak shape {shape}")
    rng = random.Random(f"{seed}:{shape}")
    rows = flatten(records)
    header: Sequence[str] = COLUMNS
    if shape == "ndjson":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        return text.encode(), "package.ndjson", rows
    if shape == "sample56":
        rows = rng.sample(rows, min(56, len(rows)))
        return _csv(header, [_text_cells(r) for r in rows], ";").encode("utf-8"), "extrait.csv", rows
    if shape == "capitals":
        rows = _names(rows, lambda v: strip_accents(v).upper())
    elif shape == "no_accents":
        rows = _names(rows, strip_accents)
    elif shape == "spaces":
        rows = _names(rows, lambda v: "  " + v.replace(" ", "   ") + " ")
    elif shape == "pipe":
        rows = _names(rows, lambda v: v.replace("œ", "oe").replace("Œ", "OE"))
    if shape == "xlsx":
        return _xlsx(header, rows), "resultats.xlsx", rows
    if shape == "sql_insert":
        return _sql_insert(rows).encode(), "dump.sql", rows
    if shape == "sql_copy":
        return _sql_copy(rows).encode(), "dump.sql", rows
    cells = [_text_cells(r, nir_spaces=shape == "spaces") for r in rows]
    delimiter, encoding, quoting = ",", "utf-8", csv.QUOTE_MINIMAL
    if shape in ("semicolon", "utf8sig", "junk", "capitals", "no_accents", "renamed", "reordered", "ragged"):
        delimiter = ";"
    if shape == "semicolon":
        encoding = "cp1252"
    elif shape == "utf8sig":
        encoding = "utf-8-sig"
    elif shape in ("tsv", "utf16"):
        delimiter = "\t"
        encoding = "utf-16" if shape == "utf16" else "utf-8"
    elif shape == "pipe":
        delimiter, encoding, quoting = "|", "latin-1", csv.QUOTE_ALL
    elif shape == "renamed":
        header = RENAMED
    elif shape == "english":
        header = ENGLISH
        cells = [_text_cells(r, ddn="%Y-%m-%d", exam="%Y-%m-%dT%H:%M:%S") for r in rows]
    elif shape == "opaque":
        header = [f"col{i + 1}" for i in range(len(COLUMNS))]
    elif shape == "reordered":
        order = list(range(len(COLUMNS)))
        rng.shuffle(order)
        header = [COLUMNS[i] for i in order]
        cells = [[c[i] for i in order] for c in cells]
    elif shape == "dropped":
        keep = [i for i, c in enumerate(COLUMNS) if c not in ("NIR", "sexe", "prescripteur")]
        header = [COLUMNS[i] for i in keep]
        cells = [[c[i] for i in keep] for c in cells]
    elif shape == "full_name":
        header = ["Patient", *COLUMNS[2:]]
        cells = [
            [f"{strip_accents(r.family or '').upper()} {r.given or ''}".strip(), *c[2:]]
            for r, c in zip(rows, [_text_cells(r, ddn="%d.%m.%y", exam="%d.%m.%Y") for r in rows], strict=True)
        ]
    elif shape == "ragged":
        cut_cells = []
        for c in cells:
            while c and c[-1] == "":
                c = c[:-1]
            if rng.random() < 0.1:
                c = [*c, ""]
            cut_cells.append(c)
        cells = cut_cells
    if shape == "headerless":
        text = _csv(None, cells, delimiter)
    elif shape == "junk":
        text = _junk(header, cells, delimiter, rng)
    else:
        text = _csv(header, cells, delimiter, quoting=quoting)
    ext = "tsv" if delimiter == "\t" else "txt" if shape == "utf16" else "csv"
    return text.encode(encoding, errors="replace"), f"resultats-{shape}.{ext}", rows


def write(records: Sequence[dict[str, Any]], shape: str, directory: Path, *, seed: int = 0) -> tuple[Path, list[Flat]]:
    """``cut`` written into ``directory``: the file's path and the rows in its order."""
    data, name, rows = cut(records, shape, seed=seed)
    path = Path(directory) / name
    path.write_bytes(data)
    return path, rows


def big(rows: Sequence[Flat], n: int, *, seed: int = 0) -> Iterable[str]:
    """``n`` lines of the 2021 file (a header, then rows drawn with replacement from ``rows``), as
    text lines for a bench or a speed check."""
    rng = random.Random(seed)
    yield _csv(COLUMNS, [], ";")
    cells = [_csv(None, [_text_cells(r)], ";") for r in rows]
    for _ in range(n):
        yield cells[rng.randrange(len(cells))]
