"""Streaming export writers: HPRIM Santé 2.x result files and CSV, from domain objects.

Both writers take *patient reports* one at a time (``write_one``) or from any iterable, even a
generator (``write``), and write each as soon as it is given: memory stays constant however many
reports are written. A patient report is any object with the attributes ``identity``,
``requests``, ``specimens`` and ``results`` and, optionally, ``prescribers``: ``PatientReport``
below, ``labvault.domain.mapped.Mapped`` (what the readers return) and
``labvault.synth.PatientRecord`` all qualify. Prescribers named by ``Request.prescriber_id`` are
looked up in the report's ``prescribers``, then in the ``prescribers`` given to the writer.

Errors are ``ValueError`` with one line that names the record or column concerned, never a
value taken from the data.

``HprimWriter``
    One HPRIM Santé file per writer (per stream): an H record, then for each patient report one
    P record followed by one OBR per request and, under it, one OBX per result of that request and
    a C record for the result's comment; an L record on ``close()`` with the number of P records
    and of physical lines. A caller wanting one file per patient (or per request) opens one writer
    per file. The file is what ``labvault.interop.hprim.parse`` + ``to_domain`` read, which gives
    back one ``Mapped`` per patient report with the same values, within what HPRIM carries:

    - delimiters ``H|~^\\&``: component ``~``, repetition ``^``, escape ``\\``, subcomponent ``&``;
      every delimiter in a value is escaped (``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``), a line break is
      ``\\.br\\`` (CR and CRLF in a value are written as a line break and read back as ``\\n``);
    - lines longer than ``max_line`` characters (220 by default) go on in ``A|`` continuation lines,
      which the reader joins without a separator;
    - charset: UTF-8 by default; ISO-8859-1 on request (``encoding="latin-1"``; a value outside it is
      refused). The reader takes bytes that happen to be valid UTF-8 as UTF-8, so a latin-1 file
      whose only non-ASCII text forms valid UTF-8 sequences (e.g. "Ã©") reads back differently;
    - date/times as ``YYYYMMDDhhmmss``, local time: an aware datetime is converted to ``tz``
      (Europe/Paris by default) and written without offset; fractions of a second are dropped;
    - P: the INS in P-4 marked ``INS-NIR``, ``INS-NIA`` or ``INS-TEST`` after its OID, only for a
      qualified identity (RNIV); the local identifiers in P-2, P-3, P-4 (``urn:hprim:patient-id:``
      practice, lab, third; any other system's in P-3), repetitions ``^``; family and
      given names in P-5, birth name P-6, birth date P-7, sex P-8, address P-10 (as one component),
      phone P-12. HPRIM has no identity status, birthplace or e-mail: they are not written, and
      the reader's identity is always provisional;
    - OBR: OBR-3 accession, OBR-4 the result codes, OBR-6 requested_at, OBR-7 the collection
      date/time (the request's first specimen's ``collected_at``, else ``requested_at``), OBR-14
      received_at and OBR-15 type of that first specimen, OBR-16 the prescriber as
      ``RPPS~family~given``, OBR-22 reported_at. The reader makes one specimen per OBR and takes
      OBR-7 as both the request's date and the specimen's collection: a request's other
      specimens, and a ``requested_at`` different from the collection, do not come back; results
      are linked to the OBR's one specimen. The reader keeps an RPPS only if it has 11 digits,
      and no given name;
    - OBX: NM with the number as written (``Result.value_repr``, its comparator before it: ``<0.5``),
      else the stored number in plain decimal notation (never an exponent), or TX with the text
      (a value both numeric and textual keeps the number only), ``code~label~system`` with system
      ``LN`` for LOINC, ``L`` for the writer's own local system (``urn:hprim:codesystem:<sender>``)
      and the part after ``urn:hprim:codesystem:`` for the other HPRIM systems (any other system URI
      is written as is and reads back as ``urn:hprim:codesystem:<quoted URI>``); unit OBX-6;
      reference range OBX-7 as ``low - high``, ``>low`` or ``<high`` (a range text is written only
      when there is no bound, and a text that looks like a range reads back as bounds); flag
      OBX-8; status OBX-11 ``F``/``C``/``P``/``I`` (pending)/``X`` (cancelled)/
      ``W`` (entered in error); validated_at OBX-14; validated_by OBX-16; a comment
      in one C record after its OBX. The reader strips labels and flags;
    - identifiers (patient, request, specimen, result, prescriber ids) are not written: the reader
      derives its own.

``CsvWriter``
    RFC 4180 CSV (``csv`` module, comma, ``"`` quoting when needed, CRLF), UTF-8, a header row,
    then one row per result with the columns named in ``fields``, in that order, taken from
    ``CSV_FIELDS``: ``patient.*`` (the identity), ``request.*``, ``specimen.*`` (the result's
    specimen), ``prescriber.*`` (the request's) and ``result.*``, each a dataclass attribute. A
    name not in that list is a ``ValueError`` naming it. Cells: empty for None, ISO 8601 for dates
    and date/times, the enum value for enums, ``repr`` (shortest exact form) for numbers but
    ``result.value_num``, the number as written when the result keeps it (``12.50``); local
    identifiers as a JSON list of [system, value]. ``patient.nir`` and ``patient.ins_oid`` are empty
    unless the identity is qualified (RNIV).

    Formula injection: a *text* cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR gets a
    leading apostrophe (``'-x``, ``'+33 6 12``), so that a spreadsheet shows it as text; the
    apostrophe is part of the cell. Number columns (``CSV_NUMBER_FIELDS``: value and reference
    bounds) are never prefixed, so ``-1.5`` stays a number; dates cannot start with those
    characters.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from typing import IO, Any, Protocol, cast
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.domain.models import LOINC, Identity, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.interop.fhir_out import written

__all__ = ["CSV_FIELDS", "CSV_NUMBER_FIELDS", "CsvWriter", "HprimWriter", "PatientReport"]


class Report(Protocol):
    identity: Identity
    requests: Sequence[Request]
    specimens: Sequence[Specimen]
    results: Sequence[Result]


@dataclass(frozen=True, slots=True)
class PatientReport:
    """One patient's identity with requests, specimens, results and (optionally) prescribers."""

    identity: Identity
    requests: Sequence[Request]
    specimens: Sequence[Specimen] = ()
    results: Sequence[Result] = ()
    prescribers: Sequence[Prescriber] = ()


class _Sink:
    """Writes str to a text stream, or encoded to a binary one; counts what it wrote."""

    def __init__(self, stream: IO[Any], encoding: str) -> None:
        self.stream = stream
        self.text = isinstance(stream, io.TextIOBase)
        self.encoding = encoding
        self.bytes = 0

    def write(self, s: str) -> None:
        if self.text:
            self.stream.write(s)
            self.bytes += len(s.encode(self.encoding, "replace"))
        else:
            data = s.encode(self.encoding)
            self.stream.write(data)
            self.bytes += len(data)


def _prescriber_book(given: Mapping[str, Prescriber] | Iterable[Prescriber]) -> dict[str, Prescriber]:
    if isinstance(given, Mapping):
        return dict(given)
    return {p.prescriber_id: p for p in given}


class _Writer:
    """What both writers share: report intake, prescriber lookup, counts, context manager."""

    def __init__(self, prescribers: Mapping[str, Prescriber] | Iterable[Prescriber]) -> None:
        self._prescribers = _prescriber_book(prescribers)
        self._counts = {"patients": 0, "requests": 0, "results": 0}
        self._closed = False

    def _prescriber(self, report: Report, prescriber_id: str | None, where: str) -> Prescriber | None:
        if prescriber_id is None:
            return None
        for p in getattr(report, "prescribers", ()) or ():
            if p.prescriber_id == prescriber_id:
                return p
        found = self._prescribers.get(prescriber_id)
        if found is None:
            raise ValueError(f"{where}: the request names a prescriber given neither in the report nor to the writer")
        return found

    def write(self, reports: Iterable[Report]) -> None:
        """Write every report of an iterable (a generator is consumed one report at a time)."""
        for report in reports:
            self.write_one(report)

    def write_one(self, report: Report) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def counts(self) -> dict[str, int]:
        """What has been written so far."""
        return dict(self._counts)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the writer is closed")

    def close(self) -> None:
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True  # a failed export: no trailer claiming the file is complete


# ------------------------------------------------------------------------------------------- HPRIM

_STATUS_CODE = {
    ResultStatus.FINAL: "F",
    ResultStatus.CORRECTED: "C",
    ResultStatus.PRELIMINARY: "P",
    ResultStatus.PENDING: "I",
    ResultStatus.CANCELLED: "X",
    ResultStatus.ENTERED_IN_ERROR: "W",
}
_HPRIM_ID_FIELD = {"practice": 2, "lab": 3, "third": 4}  # urn:hprim:patient-id:<name> -> P field
_HPRIM_ID = "urn:hprim:patient-id:"


def _hprim_slot(system: str) -> int:
    """The P field a local identifier goes back to: the one it was read from
    (``urn:hprim:patient-id:<sender>:P-2``), the one its name says (``...:practice``), else P-3."""
    if not system.startswith(_HPRIM_ID):
        return 3
    rest = system[len(_HPRIM_ID) :]
    if rest[-4:] in (":P-2", ":P-3", ":P-4"):
        return int(rest[-1])
    return _HPRIM_ID_FIELD.get(rest, 3)


_INS_MARKER = {OID_NIR: "INS-NIR", OID_NIA: "INS-NIA", OID_INS_TEST: "INS-TEST"}
_HPRIM_SYSTEM = "urn:hprim:codesystem:"
_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "~": "\\S\\", "^": "\\R\\", "&": "\\T\\", "\n": "\\.br\\"})


def _esc(value: str | None) -> str:
    """A value made safe for one HPRIM field: delimiters escaped, line breaks as \\.br\\."""
    if not value:
        return ""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value.translate(_ESCAPES)


def _decimal(x: float, where: str) -> str:
    """A float in plain decimal notation (no exponent) that reads back as the same float."""
    x = float(x)
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError(f"{where}: not a finite number")
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


class HprimWriter(_Writer):
    """Writes one HPRIM Santé 2.x ORU result file to ``stream`` (binary, or text opened with
    ``newline=""``); the H record at once, the L record on ``close()``. See the module documentation."""

    def __init__(
        self,
        stream: IO[Any],
        *,
        sender: str = "LABVAULT",
        receiver: str = "",
        file_name: str = "RESULTS.HPR",
        created_at: datetime | None = None,
        encoding: str = "utf-8",
        line_end: str = "\r\n",
        max_line: int = 220,
        tz: tzinfo | None = None,
        prescribers: Mapping[str, Prescriber] | Iterable[Prescriber] = (),
    ) -> None:
        super().__init__(prescribers)
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8", "latin-1", "latin1", "iso-8859-1"):
            raise ValueError("encoding must be utf-8 or latin-1 (ISO-8859-1)")
        if line_end not in ("\r", "\n", "\r\n"):
            raise ValueError("line_end must be CR, LF or CRLF")
        if max_line < 20:
            raise ValueError("max_line must be at least 20 characters")
        self._sink = _Sink(stream, encoding)
        self._encoding = encoding
        self._end = line_end
        self._max = max_line
        self._tz = tz or ZoneInfo("Europe/Paris")
        self._sender = sender
        self._local_system = f"{_HPRIM_SYSTEM}{quote(sender or 'local', safe='')}"
        self._lines = 0
        self._counts.update(comments=0, lines=0, bytes=0)
        created = created_at or datetime.now(self._tz)
        self._line(
            "H|~^\\&|"
            + "|".join(
                [
                    _esc(file_name),
                    "",
                    _esc(sender),
                    "",
                    "ORU",
                    "",
                    "",
                    _esc(receiver),
                    "",
                    "P",
                    "H2.2",
                    self._ts(created, "H-13"),
                ]
            )
        )

    # low level ------------------------------------------------------------------------------------
    def _line(self, record: str) -> None:
        """One record, cut into continuation lines when it is longer than ``max_line``."""
        end, size = self._end, self._max
        if len(record) <= size:
            self._sink.write(record + end)
            self._lines += 1
            return
        parts = [record[:size]]
        step = size - 2
        parts += ["A|" + record[i : i + step] for i in range(size, len(record), step)]
        self._sink.write(end.join(parts) + end)
        self._lines += len(parts)

    def _ts(self, value: datetime | date | None, where: str) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(self._tz).replace(tzinfo=None)
            return (
                f"{value.year:04d}{value.month:02d}{value.day:02d}{value.hour:02d}{value.minute:02d}{value.second:02d}"
            )
        if isinstance(value, date):
            return f"{value.year:04d}{value.month:02d}{value.day:02d}"
        raise ValueError(f"{where}: not a date or date/time")

    def _system(self, system: str) -> str:
        if system == LOINC:
            return "LN"
        if system == self._local_system:
            return "L"
        if system.startswith(_HPRIM_SYSTEM):
            name = unquote(system[len(_HPRIM_SYSTEM) :])
            if (
                name
                and name == name.strip()
                and name.upper() not in ("LN", "LOINC", "L")
                and quote(name, safe="") == system[len(_HPRIM_SYSTEM) :]
            ):
                return name
        return system

    def _check_charset(self, record: str, where: str) -> None:
        try:
            record.encode(self._encoding)
        except UnicodeEncodeError:
            raise ValueError(f"{where}: a value cannot be written in {self._encoding}") from None

    # records --------------------------------------------------------------------------------------
    def write_one(self, report: Report) -> None:
        """Write one patient report: a P record and its OBR, OBX and C records."""
        self._check_open()
        n_patient = self._counts["patients"] + 1
        where = f"patient report {n_patient}"
        records = self._records(report, n_patient, where)  # everything checked before anything is written
        for rec in records:
            self._line(rec)
        c = self._counts
        c["patients"] = n_patient
        c["requests"] += len(report.requests)
        c["results"] += sum(1 for r in records if r.startswith("OBX|"))
        c["comments"] += sum(1 for r in records if r.startswith("C|"))

    def _records(self, report: Report, n_patient: int, where: str) -> list[str]:
        ident = report.identity
        if not report.requests:
            raise ValueError(f"{where}: no request (HPRIM needs at least one OBR per patient)")
        ids: dict[int, list[str]] = {2: [], 3: [], 4: []}
        for system, value in ident.local_ids:
            if value:
                slot = _hprim_slot(system)
                ids[slot].append(_esc(value))
        if ident.qualified:  # RNIV: only a qualified INS goes out
            marker = _INS_MARKER.get(ident.ins_oid)
            if marker is None:
                raise ValueError(f"{where}: INS OID is not that of an INS-NIR, INS-NIA or test INS")
            ids[4].insert(0, f"{_esc(ident.nir)}~{marker}")
        if not ident.family_name:
            raise ValueError(f"{where}: identity without family name")
        sex = ident.sex if ident.sex in ("M", "F") else "U"
        p = [
            "P",
            str(n_patient),
            "^".join(ids[2]),
            "^".join(ids[3]),
            "^".join(ids[4]),
            f"{_esc(ident.family_name)}~{_esc(ident.given_names)}",
            _esc(ident.birth_name),
            self._ts(ident.birth_date, f"{where}, P-7"),
            sex,
            "",
            _esc(ident.address),
            "",
            _esc(ident.phone),
        ]
        records = ["|".join(p)]
        by_request: dict[str, list[Result]] = {r.request_id: [] for r in report.requests}
        for res in report.results:
            bucket = by_request.get(res.request_id)
            if bucket is None:
                raise ValueError(f"{where}: a result names a request that is not in the report")
            bucket.append(res)
        first_specimen: dict[str, Specimen] = {}
        for sp in report.specimens:
            first_specimen.setdefault(sp.request_id, sp)
        for k, req in enumerate(report.requests, start=1):
            rwhere = f"{where}, OBR {k}"
            spec = first_specimen.get(req.request_id)
            pres = self._prescriber(report, req.prescriber_id, rwhere)
            xcn = f"{_esc(pres.rpps)}~{_esc(pres.family_name)}~{_esc(pres.given_name)}" if pres else ""
            results = by_request[req.request_id]
            tests = "^".join(dict.fromkeys(f"{_esc(r.code)}~{_esc(r.label)}" for r in results))
            collected = spec.collected_at if spec else req.requested_at
            obr = [
                "OBR",
                str(k),
                "",
                _esc(req.accession),
                tests,
                "",
                self._ts(req.requested_at, f"{rwhere}, OBR-6"),
                self._ts(collected, f"{rwhere}, OBR-7"),
                "",
                "",
                "",
                "",
                "",
                "",
                self._ts(spec.received_at if spec else None, f"{rwhere}, OBR-14"),
                _esc(spec.type) if spec else "",
                xcn,
                "",
                "",
                "",
                "",
                "",
                self._ts(req.reported_at, f"{rwhere}, OBR-22"),
            ]
            records.append("|".join(obr))
            for i, res in enumerate(results, start=1):
                records.extend(self._obx(res, i, f"{rwhere}, OBX {i}"))
        text = "\n".join(records)
        self._check_charset(text, where)
        return records

    def _obx(self, res: Result, i: int, where: str) -> list[str]:
        if not res.code:
            raise ValueError(f"{where}: result without code")
        number = written(res.value_repr)
        if number is not None:
            comparator = res.comparator if res.comparator in ("<", "<=", ">=", ">") else ""
            vtype, value = "NM", comparator + number
        elif res.value_num is not None:
            vtype, value = "NM", _decimal(res.value_num, f"{where}, OBX-5")
        elif res.value_text:
            vtype, value = "TX", _esc(res.value_text)
        else:
            vtype, value = "NM", ""
        low, high = res.ref_low, res.ref_high
        if low is not None and high is not None:
            ref = f"{_decimal(low, f'{where}, OBX-7')} - {_decimal(high, f'{where}, OBX-7')}"
        elif low is not None:
            ref = f">{_decimal(low, f'{where}, OBX-7')}"
        elif high is not None:
            ref = f"<{_decimal(high, f'{where}, OBX-7')}"
        else:
            ref = _esc(res.ref_text)
        status = _STATUS_CODE.get(res.status)
        if status is None:
            raise ValueError(f"{where}: result status cannot be written")
        obx = [
            "OBX",
            str(i),
            vtype,
            f"{_esc(res.code)}~{_esc(res.label)}~{_esc(self._system(res.code_system))}",
            "",
            value,
            _esc(res.unit),
            ref,
            _esc(res.flag),
            "",
            "",
            status,
            "",
            "",
            self._ts(res.validated_at, f"{where}, OBX-14"),
            "",
            _esc(res.validated_by),
        ]
        out = ["|".join(obx)]
        if res.comment:
            out.append(f"C|1|L|{_esc(res.comment)}")
        return out

    def counts(self) -> dict[str, int]:
        c = dict(self._counts)
        c["lines"] = self._lines
        c["bytes"] = self._sink.bytes
        return c

    def close(self) -> None:
        """Write the L record (number of P records, number of lines including L), once, and flush the
        stream (it is left open: it belongs to the caller)."""
        if self._closed:
            return
        self._line(f"L|1||{self._counts['patients']}|{self._lines + 1}")
        self._closed = True
        flush = getattr(self._sink.stream, "flush", None)
        if flush is not None:
            flush()


# --------------------------------------------------------------------------------------------- CSV

_SECTIONS: tuple[tuple[str, type], ...] = (
    ("patient", Identity),
    ("prescriber", Prescriber),
    ("request", Request),
    ("specimen", Specimen),
    ("result", Result),
)
CSV_FIELDS: tuple[str, ...] = tuple(
    f"{section}.{f.name}" for section, cls in _SECTIONS for f in dataclasses.fields(cls)
)
CSV_NUMBER_FIELDS: frozenset[str] = frozenset({"result.value_num", "result.ref_low", "result.ref_high"})
_INJECTION_START = ("=", "+", "-", "@", "\t", "\r")


# Identity fields written only for a qualified identity (RNIV: the INS goes out only when qualified).
_INS_FIELDS = frozenset({"nir", "ins_oid"})


def _cell(value: object, number: bool) -> str:
    if value is None:
        return ""
    if number:
        return repr(float(value))  # type: ignore[arg-type]
    if isinstance(value, list):  # local identifiers: (system, value) pairs, as JSON
        return json.dumps([list(x) for x in value], ensure_ascii=False)
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, date):  # datetime included
        return value.isoformat()
    text = str(value)
    if text.startswith(_INJECTION_START):
        return "'" + text
    return text


class CsvWriter(_Writer):
    """Writes one CSV row per result with the columns named in ``fields``: see the module documentation."""

    def __init__(
        self,
        stream: IO[Any],
        fields: Sequence[str],
        *,
        prescribers: Mapping[str, Prescriber] | Iterable[Prescriber] = (),
    ) -> None:
        super().__init__(prescribers)
        if isinstance(fields, str):
            raise ValueError("fields must be a sequence of column names, not one string")
        allowed = set(CSV_FIELDS)
        seen: set[str] = set()
        for name in fields:
            if name not in allowed:
                raise ValueError(f"unknown CSV field {name!r} (allowed: section.attribute, see CSV_FIELDS)")
            if name in seen:
                raise ValueError(f"CSV field {name!r} given twice")
            seen.add(name)
        if not fields:
            raise ValueError("no CSV field selected")
        self._fields = tuple(fields)
        self._plan = [(name.split(".", 1)[0], name.split(".", 1)[1], name in CSV_NUMBER_FIELDS) for name in fields]
        self._needs = {section for section, _, _ in self._plan}
        self._sink = _Sink(stream, "utf-8")
        self._buf = io.StringIO(newline="")  # one report's rows, then handed to the stream
        self._csv = csv.writer(self._buf, dialect="excel", lineterminator="\r\n")
        self._csv.writerow(self._fields)
        self._flush_rows()
        self._counts.update(rows=0, bytes=0)

    def _flush_rows(self) -> None:
        buf = self._buf
        data = buf.getvalue()
        buf.seek(0)
        buf.truncate(0)
        if data:
            self._sink.write(data)

    def write_one(self, report: Report) -> None:
        """Write one row per result of the report."""
        self._check_open()
        n = self._counts["patients"] + 1
        where = f"patient report {n}"
        requests = {r.request_id: r for r in report.requests}
        specimens = {s.specimen_id: s for s in report.specimens} if "specimen" in self._needs else {}
        rows = []
        for res in report.results:
            req = requests.get(res.request_id)
            if req is None:
                raise ValueError(f"{where}: a result names a request that is not in the report")
            objects = {
                "patient": report.identity,
                "request": req,
                "result": res,
                "specimen": specimens.get(res.specimen_id) if res.specimen_id is not None else None,
                "prescriber": (
                    self._prescriber(report, req.prescriber_id, where) if "prescriber" in self._needs else None
                ),
            }
            row = []
            for section, attr, number in self._plan:
                obj = objects[section]
                if obj is None or (section == "patient" and attr in _INS_FIELDS and not report.identity.qualified):
                    row.append("")
                elif number and attr == "value_num" and written(res.value_repr) is not None:
                    row.append(cast(str, written(res.value_repr)))  # the number as written: 105600, 12.50
                else:
                    row.append(_cell(getattr(obj, attr), number))
            rows.append(row)
        self._csv.writerows(rows)  # one report's rows at a time
        self._flush_rows()
        c = self._counts
        c["patients"] = n
        c["requests"] += len(report.requests)
        c["results"] += len(rows)
        c["rows"] += len(rows)

    def counts(self) -> dict[str, int]:
        c = dict(self._counts)
        c["bytes"] = self._sink.bytes
        return c

    def close(self) -> None:
        """Flush the stream (it is left open: it belongs to the caller)."""
        if self._closed:
            return
        self._closed = True
        flush = getattr(self._sink.stream, "flush", None)
        if flush is not None:
            flush()
