"""CSV result files: a reader to domain objects (bytes in, ``Mapped`` out), the inverse of
``labvault.interop.writers.CsvWriter``.

No database, no socket; every failure a sender can cause is a ``CsvError`` (an ``InvalidInput``)
whose one-line message names file, row and column, never a value found there (M3, G2: an unknown
column is named by its position, not by the text of its header cell). Any other exception is a bug
of the reader and escapes.

- UTF-8 (BOM allowed), ``csv`` excel dialect; the delimiter, comma or semicolon, is taken from the
  header line only. Rows are numbered as in a spreadsheet: the header is row 1.
- The header names columns of ``CSV_FIELDS`` (``section.attribute``, what ``CsvWriter`` writes) or ``LOCAL_ID``,
  each once. ``REQUIRED`` must be there, and one of ``REQUEST_KEYS``; a ``specimen.*`` column needs
  ``specimen.type`` and ``specimen.collected_at``. Id columns (``*.patient_id``, ``*.result_id``...,
  except the request and specimen keys) and ``result.sensitivity`` are read but not used: ids and
  sensitivity are derived, as the other readers do.
- One row per result; rows are grouped into one message per request: same patient (its INS, spaces,
  dots and dashes ignored; without an INS, its local identifiers and strict traits as written) and
  same request key (``request.request_id``, else ``request.accession``), rows adjacent or not. The
  patient, prescriber and request columns must agree on every row of a request.
- Identity (RNIV): the INS is optional (``patient.nir`` empty: none, as ``CsvWriter`` writes an
  identity that is not qualified). With one: ``patient.ins_oid``, NIR by default, a NIR's key
  checked, the test OID only with ``test_mode``. ``patient.identity_status`` provisional (default),
  recovered, validated or qualified; without an INS qualified becomes validated and recovered
  provisional. Local identifiers (IPP): ``patient.local_ids`` (a JSON list of [system, value], what
  ``CsvWriter`` writes) and/or ``patient.local_id`` with ``patient.local_id_system`` (both columns
  together). ``patient.given_names`` every given name at birth, ``first_given_name``,
  ``used_given_name``.
- Values: dates ``YYYY-MM-DD``, date/times ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` with an optional
  ``Z`` or offset (a bare date is midnight; a time without a zone is the lab's, made aware by
  ingest); numbers by ``_common.read_number``: a point or a comma, kept as written
  (``result.value_repr``: ``12,50``), a comparator before the value (``<0.5``; else
  ``result.comparator``), refused when ``number_fault`` refuses them (too long or precise, not
  finite once read); the unit's system by ``_common.unit_system`` (``result.unit_system`` the
  claimed one: UCUM only for a valid UCUM unit); an apostrophe before ``= + - @``, tab or CR is
  dropped (``CsvWriter``'s formula guard). Sex ``M``/``F``/``U``; ``result.code_system`` LOINC and
  ``result.status`` final when empty (pending, preliminary, final, corrected, cancelled,
  entered-in-error; a pending result has no value); ``prescriber.rpps`` 11 digits (no prescriber
  without one). Orders: ``request.filler_number``, else ``request.accession`` (the lab's number),
  ``request.placer_number``, ``request.sender``, ``request.message_at``; ``result.observation_key``,
  ``result.message_at``. Empty text is None.
- A bad row refuses its request; a file that is not such a CSV (encoding, header, quoting, a row
  with another number of cells than the header, no data row) is refused whole.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from labvault.crypto.derive import Orders, message_scope, text_digest
from labvault.domain.identifiers import CODE_RE as _CODE
from labvault.domain.identifiers import CODE_SYSTEM_RE as _SYSTEM
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, normalise_nir, validate_nir
from labvault.domain.mapped import Mapped
from labvault.domain.models import LOINC, Identity, IdentityStatus, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import InvalidInput
from labvault.interop._common import Number, NumberFault, read_number, unit_system
from labvault.interop.errors import CsvError
from labvault.interop.writers import _INJECTION_START, CSV_FIELDS

REQUIRED = (
    "patient.nir",
    "patient.family_name",
    "patient.given_names",
    "patient.birth_date",
    "patient.sex",
    "request.requested_at",
    "result.code",
    "result.label",
)
REQUEST_KEYS = ("request.request_id", "request.accession")
SPECIMEN = ("specimen.type", "specimen.collected_at")
# A local identifier (IPP) in two plain columns, for an export shaped by hand (``patient.local_ids``,
# what ``CsvWriter`` writes, is a JSON list of [system, value]).
LOCAL_ID = ("patient.local_id", "patient.local_id_system")
_SHARED = ("patient.", "prescriber.", "request.")  # the same on every row of a request
_KNOWN = frozenset(CSV_FIELDS) | frozenset(LOCAL_ID)
# Without an INS an identity is neither qualified nor recovered (RNIV): a document seen stays validated.
_WITHOUT_INS = {
    IdentityStatus.QUALIFIED: IdentityStatus.VALIDATED,
    IdentityStatus.RECOVERED: IdentityStatus.PROVISIONAL,
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z", re.ASCII)
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:\d{2})?)?\Z", re.ASCII
)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d{1,3})?\Z", re.ASCII)
_RPPS = re.compile(r"\d{11}\Z", re.ASCII)
_BOM = "\ufeff"
_FIRST_LINE = re.compile(r"\s*([^\r\n]*)")


@dataclass(slots=True)
class Message:
    """One request of the file: what it maps to, or why it is refused. ``raw``: the header and the
    request's rows (the whole file when the file is refused), what the quarantine keeps."""

    index: int
    raw: bytes
    mapped: Mapped | None = None
    reason: str | None = None


def is_header(line: str) -> bool:
    """Whether a first line looks like a header of this format (``patient.nir`` and ``result.code``)."""
    line = line.lstrip(_BOM)
    names = {c.strip().strip('"').strip() for c in line.split(_delimiter(line))}
    return {"patient.nir", "result.code"} <= names


def read(data: bytes, *, file: str, test_mode: bool = False) -> list[Message]:
    """One ``Message`` per request. Never raises for bad content (a ``CsvError`` becomes the refused
    message's reason); any other exception is a bug of the reader and escapes."""
    try:
        header, rows, delimiter = _table(bytes(data))
        cols = _columns(header)
        groups: dict[tuple[str, str], list[_Row]] = {}
        for n, cells in rows:
            row = _Row(n, cells, cols)
            groups.setdefault(row.group_key(), []).append(row)
    except CsvError as exc:
        return [Message(1, bytes(data), reason=str(exc.located(file)))]
    out = []
    for i, (key, members) in enumerate(groups.items(), 1):
        raw = _serialise(header, members, delimiter)
        try:
            out.append(Message(i, raw, mapped=_map(key, members, test_mode)))
        except CsvError as exc:
            out.append(Message(i, raw, reason=str(exc.located(file))))
    return out


# ------------------------------------------------------------------------------------------ the table


def _delimiter(header: str) -> str:
    return ";" if header.count(";") > header.count(",") else ","


def _table(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CsvError(f"not UTF-8 (byte {exc.start})") from None
    text = text.removeprefix(_BOM)
    first = _FIRST_LINE.match(text)
    delimiter = _delimiter(first.group(1) if first else "")
    reader = csv.reader(io.StringIO(text, newline=""), dialect="excel", delimiter=delimiter)
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    n = 0
    try:
        for cells in reader:
            n += 1
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if header is None:
                header = [c.strip() for c in cells]
                continue
            if len(cells) != len(header):
                raise CsvError(f"{len(cells)} cell(s) where the header has {len(header)}", row=n)
            rows.append((n, cells))
    except csv.Error as exc:
        raise CsvError(f"not well-formed CSV ({str(exc).split(':')[0]})", row=n + 1) from None
    if header is None:
        raise CsvError("empty input: no header row")
    if not rows:
        raise CsvError("no data row after the header")
    return header, rows, delimiter


def _columns(header: list[str]) -> dict[str, int]:
    cols: dict[str, int] = {}
    for i, name in enumerate(header, 1):
        if name not in _KNOWN:
            raise CsvError(
                "unknown column (expected a name of CSV_FIELDS, such as patient.nir)", row=1, field=f"column {i}"
            )
        if name in cols:
            raise CsvError("column given twice", row=1, field=f"column {name}")
        cols[name] = i - 1
    missing = [c for c in REQUIRED if c not in cols]
    if not any(k in cols for k in REQUEST_KEYS):
        missing.append(" or ".join(REQUEST_KEYS))
    if any(c.startswith("specimen.") for c in cols):
        missing += [c for c in SPECIMEN if c not in cols]
    if any(c in cols for c in LOCAL_ID):
        missing += [c for c in LOCAL_ID if c not in cols]
    if missing:
        raise CsvError(f"required column(s) missing: {', '.join(missing)}", row=1)
    return cols


def _serialise(header: list[str], rows: list[_Row], delimiter: str) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, dialect="excel", delimiter=delimiter, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(r.cells for r in rows)
    return buf.getvalue().encode("utf-8")


# ------------------------------------------------------------------------------------------ values


class _Row:
    __slots__ = ("cells", "cols", "n")

    def __init__(self, n: int, cells: list[str], cols: dict[str, int]) -> None:
        self.n, self.cells, self.cols = n, cells, cols

    def err(self, column: str, reason: str) -> CsvError:
        return CsvError(reason, row=self.n, field=f"column {column}")

    def get(self, name: str) -> str:
        """The cell, without the apostrophe ``CsvWriter`` puts before a formula-like text; "" if absent."""
        i = self.cols.get(name)
        if i is None:
            return ""
        v = self.cells[i]
        return v[1:] if v[:1] == "'" and v[1:2] in _INJECTION_START else v

    def optional(self, name: str) -> str | None:
        return self.get(name) or None

    def required(self, name: str) -> str:
        v = self.get(name).strip()
        if not v:
            raise self.err(name, "empty, a value is required")
        return v

    def patient_key(self) -> str:
        """The INS; without one, the local identifiers and the strict traits as written."""
        if nir := normalise_nir(self.get("patient.nir").strip()):
            return nir
        cells = ("patient.local_ids", *LOCAL_ID, "patient.family_name", "patient.given_names", "patient.birth_date")
        return "traits\x1e" + "\x1e".join(self.get(c).strip() for c in cells)

    def group_key(self) -> tuple[str, str]:
        for k in REQUEST_KEYS:
            if v := self.get(k).strip():
                return self.patient_key(), f"{k}\x1f{v}"
        return self.patient_key(), ""

    def date(self, name: str) -> date:
        v = self.required(name)
        if not _DATE.match(v):
            raise self.err(name, "not an ISO 8601 date (YYYY-MM-DD)")
        try:
            return date.fromisoformat(v)
        except ValueError:
            raise self.err(name, "date out of range") from None

    def when(self, name: str) -> datetime:
        v = self.required(name)
        if not _DATETIME.match(v):
            raise self.err(name, "not an ISO 8601 date or date/time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS])")
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise self.err(name, "date/time out of range") from None

    def when_opt(self, name: str) -> datetime | None:
        return self.when(name) if self.get(name).strip() else None

    def number(self, name: str, *, comparator: bool = False) -> Number | None:
        """The number of a cell as written (decimal point or comma; with ``comparator``, ``<0.5``)."""
        v = self.get(name).strip()
        if not v:
            return None
        try:
            n = read_number(v, comparator=comparator)
        except NumberFault as exc:
            raise self.err(name, str(exc)) from None
        if n is None or not _NUMBER.match(n.text):
            raise self.err(name, "not a number")
        return n

    def bound(self, name: str) -> float | None:
        n = self.number(name)
        return None if n is None else n.value

    def code(self, name: str) -> str:
        v = self.get(name).strip()
        if v and not (_CODE if name == "result.code" else _SYSTEM).match(v):
            raise self.err(name, "not a code (control characters or stray whitespace)")
        return v


# ------------------------------------------------------------------------------------------ mapping


def _map(key: tuple[str, str], rows: list[_Row], test_mode: bool) -> Mapped:
    first = rows[0]
    if not key[1]:
        raise first.err(
            " or ".join(k for k in REQUEST_KEYS if k in first.cols), "empty: rows are grouped into requests by this key"
        )
    control = text_digest("\x1f".join(key))
    scope = message_scope("csv", "", control)
    new_id = scope.id
    identity = _identity(first, new_id("patient"), test_mode)
    prescribers: list[Prescriber] = []
    if rpps := first.get("prescriber.rpps").strip():
        if not _RPPS.match(rpps):
            raise first.err("prescriber.rpps", "not an RPPS number (11 digits)")
        prescribers.append(
            Prescriber(
                new_id(f"prescriber/{rpps}"),
                rpps,
                first.get("prescriber.family_name"),
                first.get("prescriber.given_name"),
            )
        )
    accession = first.optional("request.accession")
    order = Orders(scope).order("request")
    request = Request(
        request_id=order.request_id(),
        patient_id=identity.patient_id,
        prescriber_id=prescribers[0].prescriber_id if prescribers else None,
        requested_at=first.when("request.requested_at"),
        accession=accession,
        reported_at=first.when_opt("request.reported_at"),
        # the lab's number of the order (its own column, else the accession number) and the placer's
        placer_number=first.optional("request.placer_number"),
        filler_number=first.optional("request.filler_number") or accession,
        sender=first.optional("request.sender"),
        message_at=first.when_opt("request.message_at"),
    )
    shared = [(name, i) for name, i in first.cols.items() if name.startswith(_SHARED)]
    for row in rows[1:]:  # the first row's values are good: the others must be the same
        for name, i in shared:
            if row.cells[i] != first.cells[i]:
                raise row.err(name, f"differs from row {first.n}, the first row of the same request")
    specimens: dict[str, Specimen] = {}
    results = [
        _result(row, request, _specimen(row, request, specimens, order.specimen_id), order.result_id) for row in rows
    ]
    return Mapped(
        identity=identity,
        prescribers=prescribers,
        requests=[request],
        specimens=list(specimens.values()),
        results=results,
        other_identifiers=[],
        z_segments=[],
        control_id=control,
        sending_facility="",
    )


def _identity(row: _Row, patient_id: str, test_mode: bool) -> Identity:
    nir = row.get("patient.nir").strip() or None
    oid = row.get("patient.ins_oid").strip() or OID_NIR
    if nir is None:  # no INS: the identity is read from its traits and local identifiers
        oid = OID_NIR
    elif oid == OID_NIR:
        try:
            validate_nir(nir)
        except InvalidInput:
            raise row.err("patient.nir", "not a valid NIR (bad length, format or key)") from None
    elif oid == OID_INS_TEST and not test_mode:
        raise row.err("patient.ins_oid", f"test INS (OID {OID_INS_TEST}) refused outside test mode")
    elif oid not in (OID_NIA, OID_INS_TEST):
        raise row.err("patient.ins_oid", f"not an INS OID ({OID_NIR} for an INS-NIR, {OID_NIA} for an INS-NIA)")
    elif not normalise_nir(nir):
        raise row.err("patient.nir", "empty INS")
    text = row.get("patient.identity_status").strip() or IdentityStatus.PROVISIONAL
    if text not in set(IdentityStatus):
        raise row.err("patient.identity_status", "not provisional, recovered, validated or qualified")
    status = IdentityStatus(text)
    if nir is None:
        status = _WITHOUT_INS.get(status, status)
    sex = row.required("patient.sex").upper()
    if sex not in ("M", "F", "U"):
        raise row.err("patient.sex", "not M, F or U")
    if not row.get("patient.family_name").strip():
        raise row.err("patient.family_name", "empty, a value is required")
    return Identity(
        patient_id=patient_id,
        nir=nir,
        identity_status=status,
        family_name=row.get("patient.family_name"),
        given_names=row.get("patient.given_names"),
        birth_date=row.date("patient.birth_date"),
        sex=sex,
        birth_name=row.optional("patient.birth_name"),
        birthplace_code=row.optional("patient.birthplace_code"),
        address=row.optional("patient.address"),
        phone=row.optional("patient.phone"),
        email=row.optional("patient.email"),
        ins_oid=oid,
        first_given_name=row.optional("patient.first_given_name"),
        used_given_name=row.optional("patient.used_given_name"),
        local_ids=_local_ids(row),
    )


def _local_ids(row: _Row) -> list[tuple[str, str]]:
    """``patient.local_ids`` (a JSON list of [system, value], as ``CsvWriter`` writes it), then
    ``patient.local_id`` with its ``patient.local_id_system``."""
    out: list[tuple[str, str]] = []
    if text := row.get("patient.local_ids").strip():
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if not isinstance(items, list) or not all(
            isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) and y.strip() for y in x) for x in items
        ):
            raise row.err("patient.local_ids", "not a JSON list of [system, value] pairs of text")
        out += [(system.strip(), value.strip()) for system, value in items]
    if value := row.get("patient.local_id").strip():
        system = row.get("patient.local_id_system").strip()
        if not system:
            raise row.err("patient.local_id_system", "empty, the system of patient.local_id is required")
        if (system, value) not in out:
            out.append((system, value))
    return out


def _specimen(row: _Row, request: Request, seen: dict[str, Specimen], new_id: Callable[[], str]) -> Specimen | None:
    names = [n for n in row.cols if n.startswith("specimen.")]
    if not any(row.get(n).strip() for n in names):
        return None
    kind = row.required("specimen.type")
    collected = row.when("specimen.collected_at")
    received = row.when_opt("specimen.received_at")
    key = row.get("specimen.specimen_id").strip() or f"{kind}\x1f{collected.isoformat()}"
    sp = seen.get(key)
    if sp is None:
        sp = seen[key] = Specimen(new_id(), request.request_id, kind, collected, received)
    for name, mine, theirs in (
        ("specimen.type", sp.type, kind),
        ("specimen.collected_at", sp.collected_at, collected),
        ("specimen.received_at", sp.received_at, received),
    ):
        if mine != theirs:
            raise row.err(name, "differs from an earlier row of the same specimen")
    return sp


def _result(row: _Row, request: Request, specimen: Specimen | None, result_id: Callable[[str], str]) -> Result:
    code = row.code("result.code")
    if not code:
        raise row.err("result.code", "empty, a value is required")
    system = row.code("result.code_system") or LOINC
    status = row.get("result.status").strip() or ResultStatus.FINAL
    if status not in set(ResultStatus):
        raise row.err("result.status", "not pending, preliminary, final, corrected, cancelled or entered-in-error")
    value = row.number("result.value_num", comparator=True)
    comparator = value.comparator if value is not None else None
    if value is not None and comparator is None and (cmp := row.get("result.comparator").strip()):
        if cmp not in ("<", "<=", ">=", ">"):
            raise row.err("result.comparator", "not <, <=, >= or >")
        comparator = cmp
    unit = row.optional("result.unit")
    claimed = row.get("result.unit_system").strip() or None
    return Result(
        result_id=result_id(code),
        request_id=request.request_id,
        code=code,
        label=row.get("result.label"),
        code_system=system,
        specimen_id=specimen.specimen_id if specimen else None,
        value_num=value.value if value is not None else None,
        value_text=row.optional("result.value_text"),
        unit=unit,
        ref_low=row.bound("result.ref_low"),
        ref_high=row.bound("result.ref_high"),
        ref_text=row.optional("result.ref_text"),
        flag=row.optional("result.flag"),
        status=ResultStatus(status),
        validated_by=row.optional("result.validated_by"),
        validated_at=row.when_opt("result.validated_at"),
        comment=row.optional("result.comment"),
        sensitivity=sensitivity_of(system, code),
        value_repr=value.text if value is not None else None,
        comparator=comparator,
        unit_system=unit_system(unit, claimed),
        observation_key=row.optional("result.observation_key"),
        message_at=row.when_opt("result.message_at"),
    )
