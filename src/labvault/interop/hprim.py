"""HPRIM Santé 2.x result files: a pure parser and a mapper to domain objects (bytes in, dataclasses out).

No database, no socket, no network; mirrors ``labvault.interop.hl7v2``. Every failure a sender can cause
is an ``HprimError`` (an ``InvalidInput``) whose one-line message says *where* (line, record, field) and
*what* is wrong, never a value the sender wrote (M3, G2); any other exception is a bug of the reader and
escapes. Records H, P, OBR, OBX, C, L (M5). A number (NM value, reference range bound) that
``_common.number_fault`` refuses (too long, too precise, not finite once read) is refused at its field.

- ``parse(data)``: records H, P, OBR, OBX, C, A (continuation, joined to the previous record with no
  separator added), L and any other well-formed record name (kept); separators from the H record
  (``H|~^\\&``: field, component, repetition, escape, subcomponent); CR, LF or CRLF line ends; UTF-8
  when the bytes are valid UTF-8, ISO-8859-1 otherwise; leading blanks on a line ignored.
- ``to_domain(f)``: one ``Mapped`` per P record with the OBR/OBX/C records that follow it.

What the mapping keeps (HPRIM Santé 2.x carries no identity status and no time zone):

- identity: always *provisional* (RNIV), an INS given or not. A P-2..P-4 identifier marked as an
  INS (``INS-NIR``, ``INS-NIA``, their OIDs) is the INS; every other one is a local identifier
  (IPP) of the sending system, ``urn:hprim:patient-id:<H sender>:P-<field>``. P-5 is
  ``name used~first given name~other given names~...``: every given name is kept, in order, in
  ``given_names`` (the first also in ``first_given_name`` when the sender separated them); P-6 is
  the birth name;
- order: OBR-2 the placer's number, OBR-3 the lab's (filler) number (first non-empty component),
  the sending system (H sender) and the date of the file (H date) as the message time;
- result: status OBX-11 (``I`` pending: kept with its code, label and unit and no value; ``X``
  cancelled; ``W`` or ``D`` entered in error), the number as written (decimal comma, comparator)
  with ``read_number``, the unit's system (UCUM only for a valid UCUM unit), the observation key
  (code system, code, OBX-4 sub-id) and the file's date. Times stay naive: ingest reads them in
  the lab's zone.

Field numbering follows HPRIM/ASTM: ``record.value(n)`` is field n, the record name being field 0 and
the H delimiters field 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import quote

from labvault.crypto.derive import Order, Orders, message_scope
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.domain.mapped import Mapped
from labvault.domain.models import LOINC, Identity, IdentityStatus, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.interop._common import FieldAccess, NumberFault, number_fault, read_number, unit_system
from labvault.interop.errors import HprimError

MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_LINES = 200_000
MAX_RECORD_LENGTH = 1024 * 1024
MAX_FIELDS = 1_000
MAX_REPETITIONS = 1_000

SUPPORTED_VERSIONS = ("H2.0", "H2.1", "H2.2", "H2.3", "H2.4")

_BOM = b"\xef\xbb\xbf"
_RECORD_NAME = re.compile(r"[A-Z][A-Z0-9]{0,2}\Z")
_TS = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2}))?)?)?)?)?\Z")
_RANGE = re.compile(r"\s*([+-]?\d+(?:[.,]\d*)?)\s*(?:-|à|a|to)\s*([+-]?\d+(?:[.,]\d*)?)\s*\Z")
_ONE_SIDED = re.compile(r"\s*(<=|>=|<|>)\s*([+-]?\d+(?:[.,]\d*)?)\s*\Z")
_LINE_END = re.compile(r"\r\n|\r|\n")

# Markers, in a patient-identifier field, saying that the value is an INS (as a component after the
# value: ``1850775123456~INS-NIR`` or with the OID).
_NIR_MARKERS = {"INS", "INS-NIR", "NIR", "INSNIR", "INS_NIR", OID_NIR}
_NIA_MARKERS = {"INS-NIA", "NIA", "INSNIA", "INS_NIA", OID_NIA}
_TEST_MARKERS = {"INS-TEST", "INSTEST", OID_INS_TEST}


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "~"
    repetition: str = "^"
    escape: str = "\\"
    subcomponent: str = "&"


@dataclass(slots=True)
class Record(FieldAccess):
    name: str
    fields: list[str]  # fields[n] is field n, raw; fields[0] is the name
    line: int  # 1-based physical line where the record starts
    occurrence: int  # 1-based among records of this name
    delimiters: Delimiters = field(repr=False)
    continued: int = 0  # number of A lines joined into this record

    def repetitions(self, n: int) -> list[list[list[str]]]:
        """Repetitions -> components -> subcomponents, each leaf unescaped."""
        raw = self.raw(n)
        if not raw:
            return []
        d = self.delimiters
        if self.name == "H" and n == 1:
            return [[[raw]]]
        reps = raw.split(d.repetition)[:MAX_REPETITIONS]
        return [[[_unescape(s, d) for s in c.split(d.subcomponent)] for c in r.split(d.component)] for r in reps]

    def field_string(self, n: int, rep: int = 1) -> str:
        """A whole repetition unescaped, components joined back with the component delimiter."""
        reps = self.repetitions(n)
        if rep > len(reps):
            return ""
        d = self.delimiters
        return d.component.join(d.subcomponent.join(c) for c in reps[rep - 1])

    def err(self, n: int | None, reason: str) -> HprimError:
        where = f"{self.name}-{n}" if n is not None else None
        return HprimError(reason, line=self.line, record=self.label, field=where)


def _unescape(s: str, d: Delimiters) -> str:
    e = d.escape
    if not e or e not in s:
        return s
    table = {"F": d.field, "S": d.component, "R": d.repetition, "T": d.subcomponent, "E": e, ".br": "\n"}
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == e:
            j = s.find(e, i + 1)
            if j > i and s[i + 1 : j] in table:
                out.append(table[s[i + 1 : j]])
                i = j + 1
                continue
        out.append(s[i])
        i += 1
    return "".join(out)


@dataclass(slots=True)
class HprimFile:
    delimiters: Delimiters
    records: list[Record]
    charset: str  # the codec the bytes were read with: "utf-8" or "latin-1"
    file: str | None = None
    complete: bool = False  # an L record ends the file
    warnings: list[str] = field(default_factory=list)  # non-fatal non-conformities (no personal values)

    @property
    def header(self) -> Record:
        return self.records[0]

    def records_named(self, name: str) -> list[Record]:
        return [r for r in self.records if r.name == name]

    @property
    def message_name(self) -> str:
        return self.header.value(2)

    @property
    def sender(self) -> str:
        return self.header.value(4) or self.header.value(4, 2)

    @property
    def receiver(self) -> str:
        return self.header.value(9) or self.header.value(9, 2)

    @property
    def message_type(self) -> str:
        return self.header.value(6)

    @property
    def version(self) -> str:
        return self.header.value(12)

    @property
    def date(self) -> str:
        return self.header.value(13)


def parse(data: bytes, *, file: str | None = None) -> HprimFile:
    """Parse one HPRIM Santé file. Every fault of the input is an ``HprimError``; anything else is a bug."""
    try:
        return _parse(data, file)
    except HprimError as exc:
        raise exc.located(file=file) from None


def _parse(data: bytes, file: str | None) -> HprimFile:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise HprimError("input is not bytes")
    data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        raise HprimError(f"input of {len(data)} bytes exceeds the limit of {MAX_INPUT_BYTES} bytes")
    if data.startswith(_BOM):
        data = data[3:]
    try:
        content = data.decode("utf-8")
        charset = "utf-8"
    except UnicodeDecodeError:
        content = data.decode("latin-1")
        charset = "latin-1"
    physical = _LINE_END.split(content)
    if len(physical) > MAX_LINES:
        raise HprimError(f"too many lines ({len(physical)}, limit {MAX_LINES})")

    # header: the first non-blank line
    first = next((i for i, ln in enumerate(physical) if ln.strip()), None)
    if first is None:
        raise HprimError("empty input: no H record")
    head = physical[first].lstrip(" \t")
    hline = first + 1
    if not head.startswith("H") or len(head) < 2:
        raise HprimError("not HPRIM: the file does not start with an H record", line=hline)
    sep = head[1]
    if not (" " < sep <= "~") or sep.isalnum() or sep == "\\":
        raise HprimError("invalid field delimiter", line=hline, record="H[1]", field="H-1")
    end = head.find(sep, 2)
    delims = head[2 : end if end >= 0 else len(head)]
    if not delims:
        raise HprimError("delimiters missing (expected e.g. ~^\\& after 'H|')", line=hline, record="H[1]", field="H-2")
    if len(delims) not in (3, 4):
        raise HprimError(
            f"expected 4 delimiter characters, found {len(delims)}", line=hline, record="H[1]", field="H-2"
        )
    chars = [sep, *delims]
    if len(set(chars)) != len(chars) or any(c.isalnum() or not (" " < c <= "~") for c in delims):
        raise HprimError("delimiters are not distinct printable symbols", line=hline, record="H[1]", field="H-2")
    if len(delims) == 3:
        d = Delimiters(sep, delims[0], delims[1], "", delims[2])
    else:
        d = Delimiters(sep, delims[0], delims[1], delims[2], delims[3])

    hf = HprimFile(delimiters=d, records=[], charset=charset, file=file)
    counts: dict[str, int] = {}
    pending: tuple[list[str], int] | None = None  # (line pieces: the record, then its A continuations; line)

    def flush() -> None:
        nonlocal pending
        if pending is None:
            return
        pieces, line = pending
        pending = None
        body, cont = "".join(pieces), len(pieces) - 1
        name = body.split(sep, 1)[0]
        counts[name] = counts.get(name, 0) + 1
        label = f"{name}[{counts[name]}]"
        if len(body) > MAX_RECORD_LENGTH:
            raise HprimError(
                f"record too long ({len(body)} characters, limit {MAX_RECORD_LENGTH})", line=line, record=label
            )
        parts = body.split(sep)
        if len(parts) > MAX_FIELDS:
            raise HprimError(f"too many fields ({len(parts) - 1}, limit {MAX_FIELDS})", line=line, record=label)
        fields = ["H", delims, *parts[2:]] if name == "H" else parts
        hf.records.append(Record(name, fields, line, counts[name], d, cont))

    for idx in range(first, len(physical)):
        ln = physical[idx].lstrip(" \t")
        lineno = idx + 1
        if not ln.strip():
            continue
        name = ln.split(sep, 1)[0]
        if not _RECORD_NAME.match(name):
            raise HprimError(
                "invalid record name (not a letter and up to 2 letters or digits before the field delimiter)",
                line=lineno,
            )
        if hf.complete:
            raise HprimError("record after the L record (end of file)", line=lineno, record=name)
        if name == "H" and idx != first:
            raise HprimError("second H record (two files concatenated?)", line=lineno, record="H")
        if name == "A":
            if pending is None:
                raise HprimError("continuation record A without a record to continue", line=lineno, record="A")
            pending[0].append(ln[2:])
            continue
        flush()
        pending = ([ln], lineno)
        if name == "L":
            flush()
            hf.complete = True
    flush()

    if len(hf.records) == 1:
        raise HprimError("truncated: the file has no record after H", line=hline, record="H[1]")
    if not hf.version:
        raise HprimError("version missing", line=hline, record="H[1]", field="H-13")
    if hf.complete:
        lrec = hf.records[-1]
        n_p = len(hf.records_named("P"))
        declared = lrec.value(3).strip()
        if _declared_count(declared) not in (None, n_p):
            hf.warnings.append(f"L-3 declares another count of patient records than the {n_p} found")
        declared_lines = lrec.value(4).strip()
        n_lines = sum(1 + r.continued for r in hf.records)
        if _declared_count(declared_lines) not in (None, n_lines):
            hf.warnings.append(f"L-4 declares another count of lines than the {n_lines} found")
    else:
        hf.warnings.append("no L record: the file may be truncated")
    return hf


def _declared_count(text: str) -> int | None:
    """A count written in the L record: None if it is no count (not ASCII digits), -1 if it is too
    long to be a real one (more than 9 digits; never read with ``int``), else the count."""
    if not (text and text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 9 else -1


# -------------------------------------------------------------------------------------------- dates


def parse_ts(value: str, rec: Record, n: int) -> datetime:
    """HPRIM date/time: YYYY[MM[DD[hh[mm[ss]]]]]."""
    m = _TS.match(value.strip())
    if not m:
        raise rec.err(n, "date/time not in HPRIM format YYYY[MM[DD[hh[mm[ss]]]]]")
    y, mo, dd, h, mi, s = m.groups()
    try:
        return datetime(int(y), int(mo or 1), int(dd or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        raise rec.err(n, "date/time out of range") from None


def _ts_opt(rec: Record, n: int) -> datetime | None:
    v = rec.value(n)
    return parse_ts(v, rec, n) if v.strip() else None


def _number(rec: Record, n: int) -> str | None:
    """An order number (OBR-2 placer, OBR-3 filler): the first non-empty component of the field."""
    for rep in rec.repetitions(n)[:1]:
        for comp in rep:
            if comp and comp[0].strip():
                return comp[0]
    return None


def _num(s: str) -> float:
    return float(s.replace(",", "."))


class _NumberFault(Exception):
    """A bound of a reference range that is no number to store (see ``number_fault``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bound(s: str) -> float:
    if fault := number_fault(s):
        raise _NumberFault(fault)
    return _num(s)


def _ref_range(raw: str) -> tuple[float | None, float | None, str | None]:
    """'3.5 - 5.1', '3,5 à 5,1' -> (3.5, 5.1); '<6.1' -> (None, 6.1); anything else is text. A bound
    too long or not finite raises ``_NumberFault``."""
    raw = raw.strip()
    if not raw:
        return None, None, None
    m = _RANGE.match(raw)
    if m:
        low, high = _bound(m.group(1)), _bound(m.group(2))
        if low <= high:
            return low, high, None
        return None, None, raw  # inverted bounds: kept as sent, not trusted as numbers
    m = _ONE_SIDED.match(raw)
    if m:
        v = _bound(m.group(2))
        return (v, None, None) if m.group(1).startswith(">") else (None, v, None)
    return None, None, raw


# ------------------------------------------------------------------------------------------ mapping


_NO_RESULT = {"O", "N"}  # an order detail, a test not asked: no result to import
_STATUS = {
    "I": ResultStatus.PENDING,  # asked, no value yet: kept with its code, label and unit
    "X": ResultStatus.CANCELLED,  # cannot be obtained
    "W": ResultStatus.ENTERED_IN_ERROR,  # as ``labvault.interop.writers`` writes it (HL7 table 0085)
    "D": ResultStatus.ENTERED_IN_ERROR,  # deleted (HL7 table 0085)
    "F": ResultStatus.FINAL,
    "U": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    "M": ResultStatus.CORRECTED,
    "P": ResultStatus.PRELIMINARY,
    "R": ResultStatus.PRELIMINARY,
    "S": ResultStatus.PRELIMINARY,
    "A": ResultStatus.PRELIMINARY,
}
_TEXT_TYPES = {"ST", "TX", "FT", "CE", "CWE", "TS", "DT", "SN", ""}


def to_domain(f: HprimFile, *, test_mode: bool = False) -> list[Mapped]:
    """Map an HPRIM ORU file to one ``Mapped`` per P record. Every fault of the input is an
    ``HprimError``; anything else is a bug and escapes."""
    try:
        return _Mapper(f, test_mode).run()
    except HprimError as exc:
        raise exc.located(file=getattr(f, "file", None)) from None


class _Mapper:
    def __init__(self, f: HprimFile, test_mode: bool) -> None:
        self.f = f
        self.test_mode = test_mode
        self.sender = f.sender
        self.local_system = f"urn:hprim:codesystem:{quote(self.sender or 'local', safe='')}"
        # a local identifier's system names the sending system and the P field it came in
        self.id_system = f"urn:hprim:patient-id:{quote(self.sender or 'unknown', safe='')}:P-"
        self.message_at: datetime | None = None

        self.scope = message_scope("hprim", f.sender, f.message_name, f.date)

    def _id(self, what: str) -> str:
        """The domain id of what ``what`` names in the file (a patient, a prescriber, an order
        without a number); see ``labvault.crypto.derive``."""
        return self.scope.id(what)

    def run(self) -> list[Mapped]:
        f = self.f
        h = f.header
        if not f.version.upper().startswith(SUPPORTED_VERSIONS):
            raise h.err(12, "unsupported version (expected H2.0 to H2.4)")
        if f.message_type.upper() != "ORU":
            raise h.err(6, "unsupported message type (expected ORU)")
        if not f.complete:
            raise HprimError(
                "truncated: no L record at the end of the file", line=f.records[-1].line, record=f.records[-1].label
            )
        groups: list[tuple[Record, list[Record]]] = []
        for rec in f.records[1:]:
            if rec.name == "P":
                groups.append((rec, []))
            elif rec.name in ("OBR", "OBX", "C"):
                if not groups:
                    if rec.name == "C":
                        continue  # a comment on the file itself
                    raise rec.err(None, f"{rec.name} before any P record (result without a patient)")
                groups[-1][1].append(rec)
        if not groups:
            raise HprimError("no P record (no patient in the file)", line=h.line, record=h.label)
        self.message_at = _ts_opt(h, 13)
        return [self._patient(p, recs) for p, recs in groups]

    def _patient(self, p: Record, recs: list[Record]) -> Mapped:
        patient_id = self._id(p.label)
        identity, others = self._identity(p, patient_id)
        prescribers: dict[str, Prescriber] = {}
        requests: list[Request] = []
        specimens: list[Specimen] = []
        results: list[Result] = []
        request: Request | None = None
        specimen: Specimen | None = None
        last: Result | None = None
        numbers = Orders(self.scope)
        order: Order | None = None
        for rec in recs:
            if rec.name == "OBR":
                when = _ts_opt(rec, 7) or _ts_opt(rec, 6) or _ts_opt(rec, 14) or self.message_at
                if when is None:
                    raise rec.err(7, "collection date/time missing")
                placer, filler = _number(rec, 2), _number(rec, 3)
                order = numbers.order(rec.label)
                request = Request(
                    request_id=order.request_id(),
                    patient_id=patient_id,
                    prescriber_id=self._prescriber(rec, prescribers),
                    requested_at=when,
                    accession=rec.value(3) or rec.value(3, 2) or rec.value(2) or rec.value(2, 2) or None,
                    reported_at=_ts_opt(rec, 22),
                    placer_number=placer,
                    filler_number=filler,
                    sender=self.sender or None,
                    message_at=self.message_at,
                )
                requests.append(request)
                specimen = Specimen(
                    specimen_id=order.specimen_id(),
                    request_id=request.request_id,
                    type=rec.value(15) or "UNK",
                    collected_at=when,
                    received_at=_ts_opt(rec, 14),
                )
                specimens.append(specimen)
                last = None
            elif rec.name == "OBX":
                if request is None or order is None:  # both set by an OBR
                    raise rec.err(None, "OBX before any OBR (observation without an order)")
                if rec.value(11).strip().upper() in _NO_RESULT or rec.value(2).strip().upper() == "FIC":
                    last = None  # an order detail, not asked, or a reference to a file sent apart: no result
                    continue
                last = self._result(rec, request, specimen, order)
                results.append(last)
            elif rec.name == "C" and last is not None:
                note = rec.field_string(3)
                if note:
                    last.comment = f"{last.comment}\n{note}" if last.comment else note
        if not requests:
            raise p.err(None, "no OBR record for this patient (no order)")
        return Mapped(
            identity=identity,
            prescribers=list(prescribers.values()),
            requests=requests,
            specimens=specimens,
            results=results,
            other_identifiers=others,
            z_segments=[],
            control_id=self.f.message_name,
            sending_facility=self.sender,
        )

    # identity -----------------------------------------------------------------------------------
    def _identity(self, p: Record, patient_id: str) -> tuple[Identity, list[tuple[str, str]]]:
        ins: tuple[str, str] | None = None
        others: list[tuple[str, str]] = []
        for n in (2, 3, 4):
            for rep in p.repetitions(n):
                value = rep[0][0] if rep and rep[0] else ""
                if not value:
                    continue
                markers = {c[0].strip().upper() for c in rep[1:] if c and c[0].strip()}
                if markers & (_NIR_MARKERS | _NIA_MARKERS) or (markers & _TEST_MARKERS and self.test_mode):
                    oid = OID_NIA if markers & _NIA_MARKERS else OID_INS_TEST if markers & _TEST_MARKERS else OID_NIR
                    if ins is None:
                        ins = (value, oid)
                    continue
                if markers & _TEST_MARKERS:
                    raise p.err(n, f"test INS (OID {OID_INS_TEST}) refused outside test mode")
                others.append((f"{self.id_system}{n}", value))
        family, first, more = p.value(5, 1), p.value(5, 2), p.value(5, 3)
        if not family:
            raise p.err(5, "patient family name missing")
        bd = p.value(7)
        if not bd.strip():
            raise p.err(7, "birth date missing")
        born = parse_ts(bd, p, 7)
        sex = p.value(8).upper()
        addr = p.repetitions(10)
        address = ", ".join(c[0] for c in addr[0][:6] if c and c[0]) if addr else ""
        identity = Identity(
            patient_id=patient_id,
            nir=ins[0] if ins else None,
            identity_status=IdentityStatus.PROVISIONAL,  # HPRIM carries no identity status
            family_name=family,
            given_names=" ".join(g for g in (first, more) if g),
            birth_date=date(born.year, born.month, born.day),
            sex=sex if sex in ("M", "F") else "U",
            birth_name=p.value(6) or None,
            address=address or None,
            phone=p.value(12) or None,
            ins_oid=ins[1] if ins else OID_NIR,
            first_given_name=first if first.strip() and more.strip() else None,
            local_ids=list(others),
        )
        return identity, others

    # prescriber ---------------------------------------------------------------------------------
    def _prescriber(self, obr: Record, seen: dict[str, Prescriber]) -> str | None:
        code, name = obr.value(16, 1), obr.value(16, 2)
        if not code and not name:
            return None
        key = code or name
        if key not in seen:
            seen[key] = Prescriber(
                prescriber_id=self._id(f"prescriber/{key}"),
                rpps=code if code.isdigit() and len(code) == 11 else "",
                family_name=name,
                given_name="",
            )
        return seen[key].prescriber_id

    # result -------------------------------------------------------------------------------------
    def _result(self, obx: Record, request: Request, specimen: Specimen | None, order: Order) -> Result:
        code, label, system_name = obx.value(3, 1), obx.value(3, 2).strip(), obx.value(3, 3).strip()
        if not code:
            raise obx.err(3, "observation code missing")
        if system_name.upper() in ("LN", "LOINC"):
            system = LOINC
        elif system_name and system_name.upper() != "L":
            system = f"urn:hprim:codesystem:{quote(system_name, safe='')}"
        else:
            system = self.local_system
        vtype = obx.value(2).upper()
        value_num: float | None = None
        value_text: str | None = None
        value_repr: str | None = None
        comparator: str | None = None
        raw = obx.value(5).strip()
        reps = obx.repetitions(5)
        if vtype == "NM":
            if raw:
                try:
                    number = read_number(raw)
                except NumberFault as exc:
                    raise obx.err(5, str(exc)) from None
                if number is None:
                    raise obx.err(5, "value is not numeric for value type NM")
                value_num, value_repr, comparator = number.value, number.text, number.comparator
        elif vtype == "CE":
            value_text = (
                "\n".join(obx.value(5, 2, rep=i + 1) or obx.value(5, 1, rep=i + 1) for i in range(len(reps))) or None
            )
        elif vtype in _TEXT_TYPES or reps:
            value_text = "\n".join(obx.field_string(5, i + 1) for i in range(len(reps))) or None
        try:
            ref_low, ref_high, ref_text = _ref_range(obx.field_string(7))
        except _NumberFault as exc:
            raise obx.err(7, exc.reason) from None
        status_code = obx.value(11).strip().upper()
        status = _STATUS.get(status_code)
        if status is None:
            if not status_code:
                raise obx.err(11, "result status missing")
            raise obx.err(11, "result status cannot be imported (expected F, U, C, M, P, R, S, A, I, X, W or D)")
        sub_id = obx.value(4).strip()
        unit = obx.value(6, 1) or None
        return Result(
            result_id=order.result_id(code),
            request_id=request.request_id,
            code=code,
            label=label,
            code_system=system,
            specimen_id=specimen.specimen_id if specimen else None,
            value_num=value_num,
            value_text=value_text,
            unit=unit,
            ref_low=ref_low,
            ref_high=ref_high,
            ref_text=ref_text,
            flag=obx.value(8).strip() or None,
            status=status,
            validated_by=obx.value(16, 1) or None,
            validated_at=_ts_opt(obx, 14),
            sensitivity=sensitivity_of(system, code),
            value_repr=value_repr,
            comparator=comparator,
            unit_system=unit_system(unit),
            observation_key=f"{system}|{code}|{sub_id}" if sub_id else f"{system}|{code}",
            message_at=self.message_at,
        )
