"""A leaked file of any layout read as rows, its columns recognised.

``open_leak(path)`` / ``open_bytes(data, name)`` give a :class:`Leak`: its :class:`Layout` (what is
stored about a file: format, encoding, delimiter, the recognised columns; never a value) and
``rows()``, a stream of :class:`LeakRow` with the values normalised (a NIR of 13 digits, dates as
``date``, names as written). A file that cannot be read raises ``LeakUnreadable`` naming the layout
and the failure, never a cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from labvault.breach.errors import LeakUnreadable
from labvault.crypto.digest import sha256_hex

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


@dataclass(slots=True)
class Leak:
    """One file opened: ``layout`` recognised from a sample, ``rows()`` streams the rows."""

    layout: Layout
    _rows: Iterator[LeakRow] = field(repr=False)

    def rows(self) -> Iterator[LeakRow]:
        return self._rows


def open_leak(path: Path, *, index: int = 0) -> Leak:
    """Open a leaked file on disk."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LeakUnreadable(f"file: cannot be opened ({type(exc).__name__})") from None
    return open_bytes(data, Path(path).name, index=index)


def open_bytes(data: bytes, name: str, *, index: int = 0) -> Leak:
    """Open a leaked file held in memory (the web upload: never written to disk)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    reader = list(csv.reader(io.StringIO(text)))
    header = reader[0] if reader else []
    columns = tuple(Column(i, h, "other", 0.0) for i, h in enumerate(header))
    layout = Layout(sha256_hex(data), len(data), "csv", "utf-8", ",", True, len(reader) - 1, 0, columns)
    rows = iter([LeakRow(index, n, None, None, None, None, None, None) for n, _ in enumerate(reader[1:], start=2)])
    return Leak(layout, rows)
