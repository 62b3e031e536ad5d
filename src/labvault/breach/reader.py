"""A leaked file of any layout read as rows, its columns recognised.

``open_leak(path)`` / ``open_bytes(data, name)`` give a :class:`Leak`: its :class:`Layout` (what is
stored about a file: format, encoding, delimiter, the recognised columns; never a value) and
``rows()``, a stream of :class:`LeakRow` with the values normalised (a NIR of 13 characters with
its key checked, dates as ``date``, sex as ``M``/``F``; names as written, outer spaces dropped).

Formats: CSV/TSV/semicolon/pipe of unknown delimiter and quoting, in UTF-8 (with or without a BOM),
UTF-16, cp1252, latin-1, cp850 or mac_roman (the 8-bit ones told apart by charset-normalizer on a
sample); XLSX (openpyxl in read-only mode); ndjson (a package's own records,
``{"record": "identity", "id": ...}``); an SQL dump's text (``INSERT INTO ... VALUES``, pg_dump's
``COPY ... FROM stdin``). Rows may be ragged; a header may be missing, renamed or preceded by
titles; blank lines, repeated headers, comment and "total" lines are counted as junk, not read.

The columns are recognised on a sample (the first ``SAMPLE`` rows) by their header's words (French
and English), checked against their values, and by their values alone when there is no header or
its words say nothing. Rows are streamed: a text file is read through a decoder, a workbook in
read-only mode, so memory stays flat in the file's size (an SQL dump's text is held whole).

A file that cannot be read raises ``LeakUnreadable`` naming the layout and the failure, never a
cell.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from labvault.breach import columns as C
from labvault.breach.errors import LeakUnreadable
from labvault.crypto.digest import sha256_file, sha256_hex

KINDS = (
    "nir",
    "family_name",
    "birth_name",
    "given_names",
    "full_name",
    "birth_date",
    "date",
    "sex",
    "code",
    "label",
    "value",
    "unit",
    "text",
    "export_id",
    "link",
    "other",
)

SAMPLE = 2000  # rows read to recognise the columns
_SNIFF_BYTES = 256 * 1024
_CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class Column:
    index: int  # position in the row (0-based)
    header: str | None  # as written (None: no header)
    kind: str  # one of KINDS
    score: float  # 0..1, how sure


@dataclass(frozen=True, slots=True)
class Layout:
    """What is stored about a file: never a value."""

    sha256: str
    size: int
    format: str  # csv, tsv, xlsx, ndjson, sql, text
    encoding: str | None
    delimiter: str | None
    header: bool
    rows: int  # data rows read (filled once the rows are consumed)
    junk: int  # lines skipped (blank, repeated headers, comments, too short)
    columns: tuple[Column, ...]


@dataclass(slots=True)
class LeakRow:
    file: int
    line: int  # file index in the analysis, 1-based line/row number
    nir: str | None  # 13 digits (INS-NIR / NIR), key checked when given, else None
    family: str | None  # as written (matching normalises: blind.normalise_name)
    birth_name: str | None
    given: str | None
    birth_date: date | None
    sex: str | None  # "M" / "F"
    dates: tuple[date, ...] = ()  # other dates on the row (exam, collection, report)
    codes: tuple[str, ...] = ()  # test codes (LOINC like 718-7, local codes)
    labels: tuple[str, ...] = ()  # test labels
    texts: tuple[str, ...] = ()  # free text cells (comments)
    ids: tuple[str, ...] = ()  # the row's own id if it looks like an export id (32 hex)
    links: tuple[str, ...] = ()  # ids this row refers to (patient/request links: ndjson, SQL)
    record: str | None = None  # a record type when the layout says it (ndjson "record", SQL table)


# A raw row: (line, cells, group). The group is the ndjson record type or the SQL table.
Raw = tuple[int, list[str], str | None]


class Leak:
    """One file opened: ``layout`` (columns recognised from a sample), ``rows()`` streams the rows;
    once they are all read, ``layout.rows`` and ``layout.junk`` hold the counts."""

    def __init__(self, layout: Layout, reader: _Reader, index: int) -> None:
        self.layout = layout
        self._reader = reader
        self._index = index

    def rows(self) -> Iterator[LeakRow]:
        """Every data row, in file order (each call reads the file again)."""
        fmt = self.layout.format
        made = 0
        junk = 0
        try:
            schemas = self._reader.schemas
            makers = {g: _maker(cols, self._index, self._reader.serial) for g, cols in schemas.items()}
            header_cells = self._reader.header_cells
            width = self._reader.width
            headers_seen: set[str | None] = set()
            for line, cells, group in self._reader.raw():
                if _is_junk(cells, width, header_cells.get(group)):
                    if group in header_cells and group not in headers_seen and _is_header(cells, header_cells[group]):
                        headers_seen.add(group)  # the header itself: neither data nor junk
                    else:
                        junk += 1
                    continue
                make = makers.get(group)
                if make is None and self.layout.format == "ndjson":
                    make = makers.get(None)  # a record type the sample did not hold: the same columns
                if make is None:
                    junk += 1
                    continue
                made += 1
                yield make(line, cells, group)
        except LeakUnreadable:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a parser: named, never quoted
            raise LeakUnreadable(f"{fmt} file: rows cannot be read ({type(exc).__name__})") from None
        self.layout = replace(self.layout, rows=made, junk=junk + self._reader.skipped)


def open_leak(path: Path, *, index: int = 0) -> Leak:
    """Open a leaked file on disk (read as a stream; never loaded whole, but for an SQL dump)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
        digest = sha256_file(path)
    except OSError as exc:
        raise LeakUnreadable(f"file: cannot be opened ({type(exc).__name__})") from None
    return _open(lambda: path.open("rb"), head, size, digest, path.name, index)


def open_bytes(data: bytes, name: str, *, index: int = 0) -> Leak:
    """Open a leaked file held in memory (the web upload: never written to disk)."""
    data = bytes(data)
    return _open(lambda: io.BytesIO(data), data[:_SNIFF_BYTES], len(data), sha256_hex(data), name, index)


def _open(source: Callable[[], IO[bytes]], head: bytes, size: int, digest: str, name: str, index: int) -> Leak:
    if size == 0 or not head.strip(b" \t\r\n\x00"):
        raise LeakUnreadable("file: empty")
    try:
        reader = _reader_for(source, head, name)
        reader.recognise()
    except LeakUnreadable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a parser: named, never quoted
        raise LeakUnreadable(f"file: layout cannot be recognised ({type(exc).__name__})") from None
    # ndjson: one set of columns for every record type; SQL: each table's, named "table.column"
    ndjson = reader.format == "ndjson"
    cols = reader.schemas[None] if ndjson else tuple(c for g in reader.schemas.values() for c in g)
    layout = Layout(
        sha256=digest,
        size=size,
        format=reader.format,
        encoding=reader.encoding,
        delimiter=reader.delimiter,
        header=reader.has_header,
        rows=0,
        junk=0,
        columns=cols,
    )
    return Leak(layout, reader, index)


# --- formats ----------------------------------------------------------------------------------


def _reader_for(source: Callable[[], IO[bytes]], head: bytes, name: str) -> _Reader:
    if head.startswith(b"PK\x03\x04"):
        return _Xlsx(source)
    encoding = _encoding(head)
    text = _decode_head(head, encoding)
    _check_text(text)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if first.startswith("{"):
        lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
        if sum(1 for ln in lines if _json_object(ln)) >= max(1, len(lines) // 2):
            return _Ndjson(source, encoding)
    if _SQL_START.search(text):
        return _Sql(source, encoding)
    return _Delimited(source, encoding, text)


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _encoding(head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4:
        even = sample[0::2].count(0) / len(sample[0::2])
        odd = sample[1::2].count(0) / len(sample[1::2])
        if odd > 0.3 and even < 0.05:
            return "utf-16-le"
        if even > 0.3 and odd < 0.05:
            return "utf-16-be"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=len(head) < _SNIFF_BYTES)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    # An 8-bit encoding: Windows (cp1252), ISO (latin-1), DOS (cp850) or an old Mac's (mac_roman),
    # told apart by charset-normalizer on a sample
    import charset_normalizer

    best = charset_normalizer.from_bytes(head[:65536], cp_isolation=list(_EIGHT_BIT)).best()
    if best is not None and best.encoding in _EIGHT_BIT:
        return _EIGHT_BIT[best.encoding]
    try:
        head.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


_EIGHT_BIT = {"cp1252": "cp1252", "latin_1": "latin-1", "cp850": "cp850", "mac_roman": "mac_roman"}


def _decode_head(head: bytes, encoding: str) -> str:
    dec = codecs.getincrementaldecoder(encoding)(errors="replace")
    return dec.decode(head, final=False)


def _check_text(text: str) -> None:
    sample = text[:65536]
    if not sample:
        raise LeakUnreadable("file: empty")
    control = sum(1 for ch in sample if (ch < " " and ch not in "\t\r\n") or ch == "\ufffd")
    if control > 0.02 * len(sample) + 2:
        raise LeakUnreadable("file: binary content, neither a workbook nor text")


def _text_stream(raw: IO[bytes], encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")


class _Reader:
    """A format's raw rows, and the columns recognised on their sample."""

    format = "text"
    encoding: str | None = None
    delimiter: str | None = None
    serial = False  # numbers may be spreadsheet dates

    def __init__(self) -> None:
        self.schemas: dict[str | None, tuple[Column, ...]] = {}
        self.header_cells: dict[str | None, tuple[str, ...]] = {}
        self.has_header = False
        self.width = 0
        self.skipped = 0  # junk dropped by the format itself (bad ndjson lines, a package header)

    def raw(self) -> Iterator[Raw]:
        raise NotImplementedError

    def sample(self) -> list[Raw]:
        out = []
        for r in self.raw():
            out.append(r)
            if len(out) >= SAMPLE:
                break
        return out

    def recognise(self) -> None:
        sample = self.sample()
        groups: dict[str | None, list[list[str]]] = {}
        for _, cells, group in sample:
            groups.setdefault(group, []).append(cells)
        if not groups:
            raise LeakUnreadable(f"{self.format} file: no row")
        widths = Counter(len(c) for _, c, _ in sample if sum(1 for x in c if x.strip()) >= 2)
        self.width = widths.most_common(1)[0][0] if widths else max(len(c) for _, c, _ in sample)
        for group, rows in groups.items():
            header = self.given_header(group)
            if header is None:
                header, start = _find_header(rows, self.width)
                data = rows[start:]
            else:
                data = rows
            if header is not None:
                self.has_header = True
                self.header_cells[group] = tuple(_fold_cell(h) for h in header)
            self.schemas[group] = _recognise(header, data, self.width, serial=self.serial, group=group)
            if self.format == "sql" and group is not None:
                self.schemas[group] = tuple(
                    replace(c, header=f"{group}.{c.header}" if c.header else None) for c in self.schemas[group]
                )

    def given_header(self, group: str | None) -> list[str] | None:
        """A header the format itself gives (ndjson keys, an SQL column list)."""
        return None


class _Delimited(_Reader):
    def __init__(self, source: Callable[[], IO[bytes]], encoding: str, head: str) -> None:
        super().__init__()
        self.source = source
        self.encoding = encoding
        self.dialect = _dialect(head)
        self.delimiter = self.dialect["delimiter"] if self.dialect else None
        self.format = "tsv" if self.delimiter == "\t" else "csv" if self.delimiter else "text"

    def raw(self) -> Iterator[Raw]:
        with self.source() as f, _text_stream(f, self.encoding or "utf-8") as text:
            if self.dialect is None:
                for n, line in enumerate(text, start=1):
                    yield n, [line.rstrip("\r\n")], None
                return
            reader = csv.reader(text, **self.dialect)
            for cells in reader:
                yield reader.line_num, cells, None


_DELIMITERS = (",", ";", "\t", "|")


def _dialect(head: str) -> dict[str, Any] | None:
    lines = [ln for ln in head.splitlines()[:200] if ln.strip()]
    if len(lines) > 1 and not head.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may end mid-line
    text = "\n".join(lines)
    quote = '"'
    if text.count("'") > 2 * text.count('"') + 4 and re.search(r"(^|[,;\t|])'", text, re.M):
        quote = "'"
    escape = "\\" if "\\" + quote in text else None
    best: tuple[float, int, str] = (0.0, 1, "")
    for d in _DELIMITERS:
        if d not in text:
            continue
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=d, quotechar=quote, escapechar=escape)]
        except csv.Error:
            continue
        counts = [c for c in counts if c > 1] or [1]
        mode, hits = Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        share = hits / len(lines)
        if (share, mode) > best[:2]:
            best = (share, mode, d)
    if not best[2]:
        return None
    return {"delimiter": best[2], "quotechar": quote, "escapechar": escape, "doublequote": escape is None}


# A workbook is a ZIP: its parts' declared sizes bound what reading expands (Python's zipfile never
# inflates a member past its declared size). Real sheets deflate 5 to 30 times; a part expanding more
# than XLSX_MAX_RATIO times past XLSX_RATIO_FLOOR, or parts past XLSX_MAX_EXPANDED in all, is a zip
# bomb: refused before a byte is inflated (a cell or the shared strings are held whole in memory).
XLSX_MAX_RATIO = 100
XLSX_RATIO_FLOOR = 16 * 1024 * 1024
XLSX_MAX_EXPANDED = 8 * 1024 * 1024 * 1024


def _zip_guard(f: IO[bytes]) -> None:
    import zipfile

    try:
        infos = zipfile.ZipFile(f).infolist()
    except Exception as exc:  # noqa: BLE001 - a broken ZIP: named, never quoted
        raise LeakUnreadable(f"xlsx file: not a readable workbook ({type(exc).__name__})") from None
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > XLSX_RATIO_FLOOR and info.file_size > XLSX_MAX_RATIO * max(1, info.compress_size):
            raise LeakUnreadable(f"xlsx file: a part expands more than {XLSX_MAX_RATIO} times (a zip bomb): not read")
    if total > XLSX_MAX_EXPANDED:
        raise LeakUnreadable("xlsx file: its parts expand past the reader's limit: not read")
    f.seek(0)


class _Xlsx(_Reader):
    format = "xlsx"
    serial = True

    def __init__(self, source: Callable[[], IO[bytes]]) -> None:
        super().__init__()
        self.source = source

    def raw(self) -> Iterator[Raw]:
        import openpyxl  # type: ignore[import-untyped]

        with self.source() as f, warnings.catch_warnings():
            # openpyxl's warnings may quote a cell (a date out of range): none is let out
            warnings.simplefilter("ignore")
            _zip_guard(f)
            try:
                wb = openpyxl.load_workbook(f, read_only=True, data_only=True)
            except Exception as exc:  # noqa: BLE001 - zip, XML or workbook errors: named, never quoted
                raise LeakUnreadable(f"xlsx file: not a readable workbook ({type(exc).__name__})") from None
            try:
                n = 0
                to_text = C.to_text
                for ws in wb.worksheets:
                    if hasattr(ws, "reset_dimensions"):
                        ws.reset_dimensions()  # rows as they come: no first pass to size the sheet
                    for values in ws.iter_rows(values_only=True):
                        n += 1
                        yield n, [to_text(v) for v in values], None
            finally:
                wb.close()


class _Ndjson(_Reader):
    format = "ndjson"
    _SKIP_RECORDS = ("header", "manifest", "trailer", "footer")

    def __init__(self, source: Callable[[], IO[bytes]], encoding: str) -> None:
        super().__init__()
        self.source = source
        self.encoding = encoding
        self.keys: list[str] | None = None

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        self.skipped = 0
        with self.source() as f, _text_stream(f, self.encoding or "utf-8") as text:
            for n, line in enumerate(text, start=1):
                if not line.strip():
                    self.skipped += 1
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if not isinstance(rec, dict) or rec.get("record") in self._SKIP_RECORDS:
                    self.skipped += 1
                    continue
                if "resourceType" in rec:
                    rec = _fhir_flat(rec)
                yield n, rec

    def sample(self) -> list[Raw]:
        keys: dict[str, None] = {}
        recs = []
        for n, rec in self._records():
            recs.append((n, rec))
            keys.update(dict.fromkeys(rec))
            if len(recs) >= SAMPLE:
                break
        self.keys = [k for k in keys if k != "record"]
        return [self._row(n, rec) for n, rec in recs]

    def _row(self, n: int, rec: dict[str, Any]) -> Raw:
        to_text = C.to_text
        record = rec.get("record")
        return n, [to_text(rec.get(k)) for k in self.keys or ()], record if isinstance(record, str) else None

    def raw(self) -> Iterator[Raw]:
        for n, rec in self._records():
            yield self._row(n, rec)

    def recognise(self) -> None:
        sample = self.sample()
        if not sample:
            raise LeakUnreadable("ndjson file: no record")
        cells = [c for _, c, _ in sample]
        self.width = len(self.keys or ())
        self.has_header = True
        cols = _recognise(list(self.keys or ()), cells, self.width, serial=False, group=None)
        # one set of columns for every record type: a record lacking a key has it empty
        groups = {g for _, _, g in sample} | {None}
        self.schemas = dict.fromkeys(groups, cols)


_SQL_START = re.compile(r"^\s*(?:INSERT\s+(?:IGNORE\s+)?INTO\s|COPY\s+\S+.*\sFROM\s+stdin)", re.I | re.M)
_SQL_STMT = re.compile(
    r"^[ \t]*(?:INSERT\s+(?:IGNORE\s+)?INTO\s+(?P<itab>[^\s(]+)\s*(?:\((?P<icols>[^)]*)\))?\s*VALUES\s*"
    r"|COPY\s+(?P<ctab>[^\s(]+)\s*(?:\((?P<ccols>[^)]*)\))?\s+FROM\s+stdin[^\n]*\n)",
    re.I | re.M,
)
_SQL_STR = re.compile(r"(?:[EeNn])?'((?:[^'\\]|''|\\.)*)'", re.S)
_SQL_BARE = re.compile(r"[^,()\s]+(?:\([^)]*\))?")
_COPY_ESC = re.compile(r"\\(.)")
_COPY_MAP = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}
_STR_ESC = re.compile(r"''|\\(.)", re.S)


def _unq(name: str) -> str:
    return name.split(".")[-1].strip('`"[]')


class _Sql(_Reader):
    format = "sql"

    def __init__(self, source: Callable[[], IO[bytes]], encoding: str) -> None:
        super().__init__()
        self.source = source
        self.encoding = encoding
        self.columns: dict[str, list[str] | None] = {}

    def _text(self) -> str:
        with self.source() as f:
            return f.read().decode(self.encoding or "utf-8", errors="replace")

    def _statements(self, text: str) -> Iterator[tuple[re.Match[str], str, int]]:
        """Each INSERT or COPY statement: its match, its table and the line it starts on."""
        line, last = 1, 0
        for m in _SQL_STMT.finditer(text):
            table = _unq(m.group("itab") or m.group("ctab"))
            cols = m.group("icols") if m.group("itab") else m.group("ccols")
            if table not in self.columns:
                self.columns[table] = [_unq(c.strip()) for c in cols.split(",")] if cols else None
            line += text.count("\n", last, m.start())
            last = m.start()
            yield m, table, line

    def _parse(self, text: str, m: re.Match[str], table: str, line: int) -> Iterator[Raw]:
        if m.group("itab"):
            return self._inserts(text, m.end(), m.start(), line, table)
        return self._copy(text, m.end(), line + text.count("\n", m.start(), m.end()), table)

    def raw(self) -> Iterator[Raw]:
        text = self._text()
        for m, table, line in self._statements(text):
            yield from self._parse(text, m, table, line)

    def sample(self) -> list[Raw]:
        """Up to ``SAMPLE`` rows of each table (a table may come late in a dump)."""
        text = self._text()
        out: list[Raw] = []
        seen: Counter[str] = Counter()
        for m, table, line in self._statements(text):
            if seen[table] >= SAMPLE:
                continue
            for r in self._parse(text, m, table, line):
                out.append(r)
                seen[table] += 1
                if seen[table] >= SAMPLE:
                    break
        return out

    def _inserts(self, text: str, pos: int, last: int, line: int, table: str) -> Iterator[Raw]:
        n = len(text)
        while pos < n:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos >= n or text[pos] != "(":
                return
            line += text.count("\n", last, pos)
            last = pos
            pos += 1
            cells: list[str] = []
            while True:
                while pos < n and text[pos] in " \t\r\n":
                    pos += 1
                if pos >= n:
                    return
                ch = text[pos]
                if ch == "'" or (ch in "EeNn" and text.startswith("'", pos + 1)):
                    m = _SQL_STR.match(text, pos)
                    if m is None:
                        return
                    cells.append(_STR_ESC.sub(_str_unescape, m.group(1)))
                    pos = m.end()
                else:
                    m = _SQL_BARE.match(text, pos)
                    if m is None:
                        if ch == ")" and not cells:
                            pos += 1
                            break
                        return
                    token = m.group(0)
                    cells.append("" if token.upper() == "NULL" else token)
                    pos = m.end()
                while pos < n and text[pos] in " \t\r\n":
                    pos += 1
                if pos < n and text[pos] == ",":
                    pos += 1
                    continue
                if pos < n and text[pos] == ")":
                    pos += 1
                    break
                return
            yield line, cells, table
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos < n and text[pos] == ",":
                pos += 1
                continue
            return

    def _copy(self, text: str, pos: int, line: int, table: str) -> Iterator[Raw]:
        while True:
            end = text.find("\n", pos)
            row = text[pos:] if end < 0 else text[pos:end]
            row = row.rstrip("\r")
            if row == "\\." or (end < 0 and not row):
                return
            cells = ["" if c == "\\N" else _COPY_ESC.sub(_copy_unescape, c) for c in row.split("\t")]
            yield line, cells, table
            line += 1
            if end < 0:
                return
            pos = end + 1

    def given_header(self, group: str | None) -> list[str] | None:
        return self.columns.get(group) if group is not None else None


# The identifier systems of a French national health identifier (NIR, NIA, test INS).
_NIR_SYSTEMS = ("urn:oid:1.2.250.1.213.1.4.8", "urn:oid:1.2.250.1.213.1.4.9", "urn:oid:1.2.250.1.213.1.4.10")


def _fhir_flat(res: dict[str, Any]) -> dict[str, Any]:
    """A FHIR resource of a bulk export (ndjson) as a flat record: a Patient's id, NIR (by its
    identifier system), first name, birth date and sex; an Observation's id, subject, code and
    dates. Other resources keep their type and id."""
    rtype = res.get("resourceType")
    flat: dict[str, Any] = {"record": rtype if isinstance(rtype, str) else None, "id": res.get("id")}
    if rtype == "Patient":
        names = res.get("name")
        name = next((n for n in names if isinstance(n, dict)), {}) if isinstance(names, list) else {}
        given = name.get("given")
        flat["nir"] = next(
            (
                i.get("value")
                for i in res.get("identifier") or ()
                if isinstance(i, dict) and i.get("system") in _NIR_SYSTEMS
            ),
            None,
        )
        flat["family_name"] = name.get("family")
        flat["given_names"] = " ".join(g for g in given if isinstance(g, str)) if isinstance(given, list) else None
        flat["birth_date"] = res.get("birthDate")
        flat["sex"] = res.get("gender")
    elif rtype == "Observation":
        subject = res.get("subject")
        ref = subject.get("reference") if isinstance(subject, dict) else None
        flat["patient"] = ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None
        code = res.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        first = next((c for c in codings if isinstance(c, dict)), {}) if isinstance(codings, list) else {}
        flat["code"] = first.get("code")
        flat["label"] = first.get("display") or (code.get("text") if isinstance(code, dict) else None)
        flat["effective"] = res.get("effectiveDateTime")
    return flat


def _str_unescape(m: re.Match[str]) -> str:
    if m.group(0) == "''":
        return "'"
    return _COPY_MAP.get(m.group(1), m.group(1))


def _copy_unescape(m: re.Match[str]) -> str:
    return _COPY_MAP.get(m.group(1), m.group(1))


# --- header, junk, columns --------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _fold_cell(cell: str) -> str:
    return C.norm_header(cell)


def _nonempty(cells: list[str]) -> int:
    return sum(1 for c in cells if c and not c.isspace())


def _value_like(cell: str) -> bool:
    c = cell.strip()
    return bool(c) and (C.is_number(c) or C.parse_date(c) is not None or C.nir13(c) is not None)


def _find_header(rows: list[list[str]], width: int) -> tuple[list[str] | None, int]:
    """The header row among the first rows (titles above it are junk), and where data starts."""
    if width > MAX_COLUMNS:  # each cell's words are weighed: a file this wide is no table
        raise LeakUnreadable(f"file: more than {MAX_COLUMNS} columns, not a table of records")
    for i, cells in enumerate(rows[:30]):
        filled = _nonempty(cells)
        if filled < max(1, min(2, width)) or filled < 0.5 * width:
            continue
        known = sum(1 for c in cells if C.header_kind(c) is not None)
        values = sum(1 for c in cells if _value_like(c))
        if values == 0 and known >= max(1, min(2, filled // 3)):
            return cells, i + 1
        if values == 0 and filled >= 0.8 * width and len(rows) > i + 1:
            # no known word: a header still when the rows below hold values where it holds words
            below = rows[i + 1 : i + 21]
            data_cols = sum(
                1
                for j in range(len(cells))
                if sum(1 for r in below if j < len(r) and _value_like(r[j])) >= 0.6 * len(below)
            )
            if data_cols >= 1 and len(set(cells)) == len(cells):
                return cells, i + 1
        return None, 0
    return None, 0


def _is_junk(cells: list[str], width: int, header: tuple[str, ...] | None) -> bool:
    filled = len(cells) - cells.count("")
    if filled == 0 or (width >= 3 and filled < 2):
        return filled == 0 or _nonempty(cells) < 2
    first = cells[0] if cells[0] else next((c for c in cells if c and not c.isspace()), "")
    if not first or first[0] in "#-/ TtSsGgNnCc":  # cheap test first: most rows start otherwise
        first = first.lstrip()
        if not first:
            return _nonempty(cells) == 0
        if first.startswith(("#", "--", "//")):
            return True
        low = first[:12].lower()
        if low.startswith(("total", "sous-total", "sous total", "grand total", "nombre de", "count")):
            return True
    return header is not None and _is_header(cells, header)


def _is_header(cells: list[str], header: tuple[str, ...]) -> bool:
    if len(cells) < len(header) - 1 or not header:
        return False
    head = cells[0].lstrip()[:1].lower()
    if (head != header[0][:1] and head.isascii()) or _fold_cell(cells[0]) != header[0]:
        return False
    return tuple(_fold_cell(c) for c in cells[: len(header)]) == header[: len(cells)]


MAX_COLUMNS = 4096  # a leaked table of records (the 2021 file: up to 60 fields)


def _recognise(
    header: list[str] | None, rows: list[list[str]], width: int, *, serial: bool, group: str | None
) -> tuple[Column, ...]:
    """Each column's kind: its header's word checked against its values, or its values alone."""
    ncols = max([len(header or ())] + [len(r) for r in rows] + [0])
    if ncols > MAX_COLUMNS:  # each column is recognised on its own: a file this wide is no table
        raise LeakUnreadable(f"file: more than {MAX_COLUMNS} columns, not a table of records")
    rows = [r for r in rows if not _is_junk(r, width, None)]
    ncols = max([len(header or ())] + [len(r) for r in rows] + [0])
    if not rows and header is None:
        return ()
    cols: list[Column] = []
    total = len(rows)
    values_of: dict[int, list[str]] = {}
    for i in range(ncols):
        values = [r[i] for r in rows if i < len(r) and r[i] and not r[i].isspace()]
        values_of[i] = values
        head = header[i] if header is not None and i < len(header) else None
        hkind = C.header_kind(head)
        ckind, cscore = C.content_kind(values, total=total, serial=serial)
        if hkind is not None and ckind in ("export_id", "link") and hkind not in ("export_id", "link"):
            kind, score = "link", cscore  # a named column of ids that is not the row's own: a link
        elif hkind is not None and hkind != "other" and C.fits(hkind, values, serial=serial) >= 0.5:
            kind, score = hkind, 0.9
        elif hkind == "other" and ckind not in ("nir", "export_id", "link"):
            kind, score = "other", 0.9
        else:
            kind, score = ckind, cscore
        cols.append(Column(i, head, kind, round(float(score), 3)))
    return tuple(_settle(cols, values_of, total, serial))


def _settle(cols: list[Column], values_of: dict[int, list[str]], total: int, serial: bool) -> list[Column]:
    """One patient per row: at most one birth date, family, birth name and given names column;
    the others are dates or other columns (a second name column with more gaps: the birth name)."""
    by = {k: [c for c in cols if c.kind == k] for k in KINDS}
    out = {c.index: c for c in cols}
    births = by["birth_date"]
    if len(births) > 1:
        medians: dict[int, date] = {
            c.index: C.median_date(values_of[c.index], serial=serial) or date.max for c in births
        }
        keep = min(births, key=lambda c: (c.header is None, medians[c.index]))
        for c in births:
            if c.index != keep.index:
                out[c.index] = replace(c, kind="date")
    elif not births:
        dates = [c for c in by["date"] if c.header is None or C.header_kind(c.header) is None]
        medians2: dict[int, date | None] = {
            c.index: C.median_date(values_of[c.index], serial=serial) for c in by["date"]
        }
        if dates and len(by["date"]) >= 2:
            early = min(dates, key=lambda c: medians2[c.index] or date.max)
            others = [medians2[c.index] for c in by["date"] if c.index != early.index and medians2[c.index]]
            m = medians2[early.index]
            if m and others and min(d for d in others if d).year - m.year >= 15:
                out[early.index] = replace(early, kind="birth_date")
    for c in by["export_id"][1:]:  # one id of its own per row: the other id columns are links
        out[c.index] = replace(c, kind="link")
    fams = by["family_name"]
    if len(fams) > 1:
        named = [c for c in fams if C.header_kind(c.header) == "family_name"]
        primary = named[0] if named else max(fams, key=lambda c: (len(values_of[c.index]), -c.index))
        for c in fams:
            if c.index == primary.index or c in named:
                continue
            if not by["birth_name"]:
                out[c.index] = replace(c, kind="birth_name")
                by["birth_name"] = [c]
            else:
                out[c.index] = replace(c, kind="other")
    if len(by["given_names"]) > 1:
        for c in by["given_names"][1:]:
            if c.header is None or C.header_kind(c.header) is None:
                out[c.index] = replace(c, kind="other")
    return [out[i] for i in sorted(out)]


# --- rows -------------------------------------------------------------------------------------


def _maker(cols: tuple[Column, ...], file: int, serial: bool) -> Callable[[int, list[str], str | None], LeakRow]:
    """A function building a row from its cells: only the recognised columns are read."""

    def first(kind: str) -> int:
        return next((c.index for c in cols if c.kind == kind), -1)

    def every(kind: str) -> tuple[int, ...]:
        return tuple(c.index for c in cols if c.kind == kind)

    i_nirs = every("nir")
    i_fam, i_birth, i_given, i_full = (
        first("family_name"),
        first("birth_name"),
        first("given_names"),
        first("full_name"),
    )
    i_bd, i_sex = first("birth_date"), first("sex")
    i_dates, i_codes, i_labels, i_texts = every("date"), every("code"), every("label"), every("text")
    i_ids, i_links = every("export_id"), every("link")
    nir_cache: dict[str, str | None] = {}
    date_cache: dict[str, date | None] = {}
    hex32 = re.compile(r"[0-9a-fA-F]{32}\Z").match

    def nir_of(v: str) -> str | None:
        r = nir_cache.get(v, "")
        if r == "":
            if len(nir_cache) > _CACHE_MAX:
                nir_cache.clear()
            r = nir_cache[v] = C.nir13(v) if v else None
        return r

    def date_of(v: str) -> date | None:
        try:
            return date_cache[v]
        except KeyError:
            if len(date_cache) > _CACHE_MAX:
                date_cache.clear()
            r = date_cache[v] = C.parse_date(v, serial=serial) if v else None
            return r

    sex_cache: dict[str, str | None] = {}

    def sex_of(v: str) -> str | None:
        try:
            return sex_cache[v]
        except KeyError:
            r = C.sex_of(v)
            if len(sex_cache) < 1000:
                sex_cache[v] = r
            return r

    def texts_of(idx: tuple[int, ...]) -> Callable[[list[str], int], tuple[str, ...]]:
        """The non-empty cells at ``idx`` (one column: no loop)."""
        if not idx:
            return lambda cells, n: ()
        if len(idx) == 1:
            (j,) = idx

            def one(cells: list[str], n: int) -> tuple[str, ...]:
                if j < n and (v := cells[j].strip()):
                    return (v,)
                return ()

            return one
        return lambda cells, n: tuple(v for i in idx if i < n and (v := cells[i].strip()))

    codes_of, labels_of, free_of = texts_of(i_codes), texts_of(i_labels), texts_of(i_texts)
    any_ids = bool(i_ids or i_links)
    no_names = ("prescriber",)

    def make(line: int, cells: list[str], group: str | None) -> LeakRow:
        n = len(cells)
        nir = None
        for i in i_nirs:
            if i < n and (nir := nir_of(cells[i].strip())) is not None:
                break
        family = given = birth = None
        if group not in no_names:
            if 0 <= i_fam < n:
                family = cells[i_fam].strip() or None
            if 0 <= i_given < n:
                given = cells[i_given].strip() or None
            if 0 <= i_birth < n:
                birth = cells[i_birth].strip() or None
            if 0 <= i_full < n and (family is None or given is None):
                full = cells[i_full].strip()
                if full:
                    f, g = C.split_full_name(full)
                    family = family or f
                    given = given or g
        bd = date_of(cells[i_bd].strip()) if 0 <= i_bd < n else None
        sex = sex_of(cells[i_sex]) if 0 <= i_sex < n else None
        if len(i_dates) == 1:
            d = date_of(cells[i_dates[0]].strip()) if i_dates[0] < n else None
            dates: tuple[date, ...] = (d,) if d is not None else ()
        else:
            dates = tuple(d for i in i_dates if i < n and (d := date_of(cells[i].strip())) is not None)
        ids: tuple[str, ...] = ()
        links: tuple[str, ...] = ()
        if any_ids:
            ids = tuple(v.lower() for i in i_ids if i < n and hex32(v := cells[i].strip()))
            links = tuple(v.lower() for i in i_links if i < n and hex32(v := cells[i].strip()))
        return LeakRow(
            file,
            line,
            nir,
            family,
            birth,
            given,
            bd,
            sex,
            dates,
            codes_of(cells, n),
            labels_of(cells, n),
            free_of(cells, n),
            ids,
            links,
            group,
        )

    return make
