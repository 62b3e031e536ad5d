"""HL7 v2 lab messages: a pure parser and a mapper to domain objects (bytes in, dataclasses out).

No database, no socket, no network. Every failure a sender can cause is an ``Hl7Error`` (an
``InvalidInput``) whose one-line message says *where* (message, segment, field) and *what* is
wrong, never a value the sender wrote (M3, G2: no NIR, name, code or type echoed). Any other
exception is a bug of the reader and escapes: it is never dressed up as a refusal. A number (NM,
SN, a reference range bound) that ``_common.number_fault`` refuses (too long, too precise, not a finite
double once read: a 900,000-digit value overflows to infinity) is refused at its field.

- ``split_messages(data)``: UTF-8 BOM, MLLP frames (0x0B ... 0x1C 0x0D), FHS/BHS/BTS/FTS batches,
  CR / LF / CRLF segment ends; input larger than ``MAX_INPUT_BYTES`` is refused.
- ``parse(message)``: MSH-1/MSH-2 encoding characters (any), repetitions, components,
  subcomponents, escape sequences, MSH-18 character set; Z-segments kept aside.
- ``to_domain(message)``: ORU^R01 and OUL^R22, v2.3 to v2.5.1, into ``Mapped``.

Speed (``labvault bench hl7``): segments are split into fields once; a leaf is reached by cutting only
what leads to it, and unescaped only when the escape character is in it; the common time stamp shapes
are read without the regular expression; the mapping of an OBX field's raw text (code, type, unit,
range, flag, status, observer, time stamps, numeric value) is remembered per encoding and charset in
bounded tables, which only ever hold successful mappings (a new text goes through the ordinary code,
errors included), so the output is the same as without them.

``Message.get('PID-3')`` returns the first component of the first repetition of the field in the
first segment of that name, unescaped; ``'PID-3.4'`` a component, ``'PID-3.4.2'`` a subcomponent,
``'PID-3[2].1'`` a given repetition.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from labvault.crypto.derive import Order, Orders, message_scope
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, OID_RPPS
from labvault.domain.mapped import Mapped
from labvault.domain.models import (
    LOINC,
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.domain.sensitivity import sensitivity_of
from labvault.interop._common import UCUM, FieldAccess, NumberFault, number_fault, read_number, unit_system
from labvault.interop.errors import Hl7Error

MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_MESSAGES = 10_000
MAX_SEGMENTS = 5_000
MAX_SEGMENT_LENGTH = 1024 * 1024
MAX_FIELDS = 1_000
MAX_REPETITIONS = 1_000

SUPPORTED_TYPES = {("ORU", "R01"), ("OUL", "R22")}
SUPPORTED_VERSIONS = {"2.3", "2.3.1", "2.4", "2.5", "2.5.1"}

_BOM = b"\xef\xbb\xbf"
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+\Z")
_TS = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,4}))?)?)?)?)?)?([+-]\d{4})?\Z")
# A lone LF ends a segment only when a segment name follows; otherwise it is a line break in the data
# (seen in real files wrapped by an editor).
_LF_END = re.compile(r"\n+(?=[ \t]*(?:[A-Z][A-Z0-9]{2}(?:[^A-Za-z0-9\s]|\s*\Z))|\s*\Z)")
_LF_END_B = re.compile(rb"\n+(?=[ \t]*(?:[A-Z][A-Z0-9]{2}(?:[^A-Za-z0-9\s]|\s*\Z))|\s*\Z)")
_NAMES_OK: set[str] = set()  # segment names already checked against _SEGMENT_NAME (bounded)


# ---------------------------------------------------------------------------------------- splitting


def split_messages(data: bytes, *, file: str | None = None) -> list[bytes]:
    """Cut a file or stream into HL7 messages (each ending segments with CR)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise Hl7Error("input is not bytes", file=file)
    data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        raise Hl7Error(f"input of {len(data)} bytes exceeds the limit of {MAX_INPUT_BYTES} bytes", file=file)
    if data.lstrip(b"\r\n \t").startswith(b"\x0b"):
        chunks: list[bytes] = []
        pos = 0
        while (start := data.find(b"\x0b", pos)) >= 0:
            end = data.find(b"\x1c", start + 1)
            if end < 0 and not data[start + 1 :].strip():
                break  # a lone start block at the very end: nothing was sent
            if end < 0:
                raise Hl7Error(
                    "truncated MLLP frame: start block without end block", file=file, message_index=len(chunks) + 1
                )
            chunks.append(data[start + 1 : end])
            pos = end + 1
    else:
        chunks = [data]
    messages: list[list[bytes]] = []
    for chunk in chunks:
        if chunk.startswith(_BOM):
            chunk = chunk[3:]
        current: list[bytes] | None = None
        for line in _LF_END_B.sub(b"\r", chunk.replace(b"\r\n", b"\r")).split(b"\r"):
            line = line.lstrip(b" \t")
            if not line.strip():
                continue
            head = line[:3]
            if head in (b"FHS", b"BHS", b"BTS", b"FTS"):
                current = None
                continue
            if head == b"MSH":
                current = [line]
                messages.append(current)
                if len(messages) > MAX_MESSAGES:
                    raise Hl7Error(f"more than {MAX_MESSAGES} messages in one input", file=file)
            elif current is not None:
                current.append(line)
    if not messages:
        raise Hl7Error("not HL7 v2: no MSH segment found", file=file)
    return [b"\r".join(m) + b"\r" for m in messages]


# ------------------------------------------------------------------------------------------ parsing


@dataclass(frozen=True, slots=True)
class Encoding:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""


@dataclass(slots=True)
class Segment(FieldAccess):
    name: str
    fields: list[str]  # fields[n] is NAME-n, raw (escaped); fields[0] is the name
    position: int  # 1-based position in the message
    occurrence: int  # 1-based among segments of this name
    message: Message = field(repr=False)

    def repetitions(self, n: int) -> list[list[list[str]]]:
        """Repetitions -> components -> subcomponents, each leaf unescaped."""
        fields = self.fields
        raw = fields[n] if 0 <= n < len(fields) else ""
        if not raw:
            return []
        if self.name == "MSH" and n in (1, 2):
            return [[[raw]]]
        enc = self.message.encoding
        reps = raw.split(enc.repetition)
        if len(reps) > MAX_REPETITIONS:
            reps = reps[:MAX_REPETITIONS]
        comp, subc, esc = enc.component, enc.subcomponent, enc.escape
        if esc and esc in raw:
            unescape = self.message.unescape
            return [[[unescape(s) for s in c.split(subc)] for c in r.split(comp)] for r in reps]
        return [[c.split(subc) for c in r.split(comp)] for r in reps]

    def value(self, n: int, component: int = 1, sub: int = 1, rep: int = 1) -> str:
        """One leaf, unescaped (as ``FieldAccess.value``), splitting only what leads to it."""
        if rep != 1 or component < 1 or sub < 1 or (0 < n < 3 and self.name == "MSH"):
            return FieldAccess.value(self, n, component, sub, rep)
        fields = self.fields
        raw = fields[n] if 0 <= n < len(fields) else ""
        if not raw:
            return ""
        enc = self.message.encoding
        sep = enc.repetition
        r = raw[: raw.index(sep)] if sep in raw else raw
        sep = enc.component
        if component == 1:
            c = r[: r.index(sep)] if sep in r else r
        else:
            comps = r.split(sep)
            if component > len(comps):
                return ""
            c = comps[component - 1]
        sep = enc.subcomponent
        if sub == 1:
            s = c[: c.index(sep)] if sep in c else c
        else:
            subs = c.split(enc.subcomponent)
            if sub > len(subs):
                return ""
            s = subs[sub - 1]
        esc = enc.escape
        if esc and esc in s:
            return self.message.unescape(s)
        return s

    def leaves(self, n: int, width: int) -> list[str]:
        """``[value(n, 1), value(n, 2), ...]``: the first subcomponent of each component of the first
        repetition, unescaped, padded with "" to at least ``width`` items."""
        fields = self.fields
        raw = fields[n] if 0 <= n < len(fields) else ""
        if not raw:
            return [""] * width
        if 0 < n < 3 and self.name == "MSH":
            return [raw] + [""] * (width - 1)
        enc = self.message.encoding
        rep_sep, subc = enc.repetition, enc.subcomponent
        if rep_sep in raw:
            raw = raw[: raw.index(rep_sep)]
        out = [c[: c.index(subc)] if subc in c else c for c in raw.split(enc.component)]
        esc = enc.escape
        if esc and esc in raw:
            unescape = self.message.unescape
            out = [unescape(c) for c in out]
        if len(out) < width:
            out += [""] * (width - len(out))
        return out

    def field_text(self, n: int, rep: int = 1) -> str:
        """A whole repetition unescaped, components joined back with the component separator."""
        reps = self.repetitions(n)
        if rep > len(reps):
            return ""
        enc = self.message.encoding
        return enc.component.join(enc.subcomponent.join(c) for c in reps[rep - 1])

    def err(self, n: int | None, reason: str) -> Hl7Error:
        return Hl7Error(
            reason,
            file=self.message.file,
            message_index=self.message.index,
            segment=self.label,
            field=f"{self.name}-{n}" if n is not None else None,
        )


_PATH = re.compile(r"([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\[(\d{1,3})\])?(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?\Z")


@dataclass(slots=True)
class Message:
    encoding: Encoding
    charset: str
    index: int = 1
    file: str | None = None
    all_segments: list[Segment] = field(default_factory=list)

    def segments(self, name: str) -> list[Segment]:
        return [s for s in self.all_segments if s.name == name]

    def first(self, name: str) -> Segment | None:
        """The first segment of that name, or None."""
        for s in self.all_segments:
            if s.name == name:
                return s
        return None

    @property
    def z_segments(self) -> list[Segment]:
        return [s for s in self.all_segments if s.name.startswith("Z")]

    def get(self, path: str) -> str:
        m = _PATH.match(path)
        if not m:
            raise Hl7Error(f"bad field path {path!r}")
        name, n, rep, comp, sub = m.groups()
        seg = self.first(name)
        if seg is None:
            return ""
        return seg.value(int(n), int(comp or 1), int(sub or 1), int(rep or 1))

    def _msh(self, n: int, component: int = 1) -> str:
        seg = self.first("MSH")
        return seg.value(n, component) if seg is not None else ""

    @property
    def control_id(self) -> str:
        return self._msh(10)

    @property
    def sending_facility(self) -> str:
        return self._msh(4) or self._msh(4, 2)

    @property
    def message_type(self) -> str:
        return "^".join(p for p in (self._msh(9, 1), self._msh(9, 2)) if p)

    @property
    def version(self) -> str:
        return self._msh(12)

    def err(self, reason: str, segment: str | None = None, field: str | None = None) -> Hl7Error:
        return Hl7Error(reason, file=self.file, message_index=self.index, segment=segment, field=field)

    # escape sequences ---------------------------------------------------------------------------
    def unescape(self, s: str) -> str:
        esc = self.encoding.escape
        if not esc or esc not in s:
            return s
        pattern = _escape_pattern(esc)
        return pattern.sub(self._escape_one, s)

    def _escape_one(self, m: re.Match[str]) -> str:
        body = m.group(1)
        simple = _simple_escapes(self.encoding)
        if body in simple:
            return simple[body]
        if body.startswith((".sp", ".in", ".ti", ".sk")):
            return "\n" if body.startswith(".sp") else ""
        if body[:1] == "X" and len(body) > 1 and len(body) % 2 == 1:
            try:
                raw = bytes.fromhex(body[1:])
            except ValueError:
                return m.group(0)
            try:
                return raw.decode(self.charset if self.charset != "ascii" else "latin-1")
            except (UnicodeDecodeError, LookupError):
                return raw.decode("latin-1")
        return m.group(0)


@functools.lru_cache(maxsize=64)
def _simple_escapes(enc: Encoding) -> dict[str, str]:
    return {
        "F": enc.field,
        "S": enc.component,
        "T": enc.subcomponent,
        "R": enc.repetition,
        "E": enc.escape,
        "P": enc.truncation,
        "H": "",
        "N": "",
        ".br": "\n",
        ".sp": "\n",
        ".fi": "",
        ".nf": "",
        ".ce": "",
    }


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _escape_pattern(esc: str) -> re.Pattern[str]:
    if esc not in _PATTERNS:
        e = re.escape(esc)
        _PATTERNS[esc] = re.compile(f"{e}([^{e}\\r]{{1,200}}){e}")
    return _PATTERNS[esc]


_CHARSETS = {
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "ISO-8859-1": "latin-1",
    "ISO8859-1": "latin-1",
    "ISO IR100": "latin-1",
    "ISO_IR 100": "latin-1",
    "8859/15": "iso-8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
}


def parse(message: bytes, *, index: int = 1, file: str | None = None) -> Message:
    """Parse one HL7 v2 message. Every fault of the input is an ``Hl7Error``; anything else is a bug."""
    try:
        return _parse(message, index, file)
    except Hl7Error as exc:
        raise exc.located(file=file, message_index=index) from None


_BYTES_LIKE = (bytes, bytearray, memoryview)
_ENCODINGS: dict[tuple[str, str], Encoding] = {}  # (field separator, MSH-2) -> Encoding, bounded


def _parse(data: bytes, index: int, file: str | None) -> Message:
    if not isinstance(data, _BYTES_LIKE):
        raise Hl7Error("input is not bytes")
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_INPUT_BYTES:
        raise Hl7Error(f"message of {len(data)} bytes exceeds the limit of {MAX_INPUT_BYTES} bytes")
    data = data.strip(b"\x0b\x1c\r\n \t")
    if data.startswith(_BOM):
        data = data[3:]
    if not data.startswith(b"MSH"):
        raise Hl7Error("not HL7 v2: the message does not start with an MSH segment")
    if len(data) < 8:
        raise Hl7Error("truncated: MSH segment too short", segment="MSH[1]")
    sep = chr(data[3])
    if not (0x21 <= data[3] <= 0x7E) or sep.isalnum() or sep == "\\":
        raise Hl7Error("invalid field separator", segment="MSH[1]", field="MSH-1")
    enc_end = data.find(data[3:4], 4)
    head_end = data.find(b"\r")
    if head_end < 0:
        head_end = len(data)
    lf = data.find(b"\n", 0, head_end)
    if lf >= 0:
        head_end = lf
    if enc_end < 0 or enc_end > head_end:
        enc_end = head_end
    enc_raw = data[4:enc_end].decode("latin-1")
    if not enc_raw:
        raise Hl7Error("encoding characters missing", segment="MSH[1]", field="MSH-2")
    if len(enc_raw) not in (3, 4, 5):
        raise Hl7Error(f"expected 4 encoding characters, found {len(enc_raw)}", segment="MSH[1]", field="MSH-2")
    encoding = _ENCODINGS.get((sep, enc_raw))
    if encoding is None:
        chars = [sep, *enc_raw]
        if len(set(chars)) != len(chars) or any(c.isalnum() or not (" " < c <= "~") for c in enc_raw):
            raise Hl7Error("encoding characters are not distinct printable symbols", segment="MSH[1]", field="MSH-2")
        if len(enc_raw) == 3:  # seen in the wild: "^~&", the escape character left out
            encoding = Encoding(sep, enc_raw[0], enc_raw[1], "", enc_raw[2])
        else:
            encoding = Encoding(sep, enc_raw[0], enc_raw[1], enc_raw[2], enc_raw[3], enc_raw[4:5])
        if len(_ENCODINGS) < 256:
            _ENCODINGS[(sep, enc_raw)] = encoding

    # MSH-18 from the header (delimiters are ASCII in every supported charset)
    header = data[:head_end].decode("latin-1").split(sep)
    declared = header[17].split(encoding.component)[0].split(encoding.repetition)[0].strip() if len(header) > 17 else ""
    if declared:
        codec = _CHARSETS.get(declared.upper())
        if codec is None:
            raise Hl7Error(
                "unsupported character set (expected ASCII, 8859/1, 8859/15 or UNICODE UTF-8)",
                segment="MSH[1]",
                field="MSH-18",
            )
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            raise Hl7Error(
                "bytes are not valid in the declared character set", segment="MSH[1]", field="MSH-18"
            ) from None
    else:
        codec = "utf-8"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            codec = "latin-1"
            text = data.decode("latin-1")

    msg = Message(encoding=encoding, charset=codec, index=index, file=file)
    if "\n" in text:
        text = _LF_END.sub("\r", text.replace("\r\n", "\r"))
    # "not ln.isspace()" is "ln.strip()" without building the stripped copy
    lines = [ln for ln in text.split("\r") if ln and not ln.isspace()]
    if len(lines) > MAX_SEGMENTS:
        raise Hl7Error(f"too many segments ({len(lines)}, limit {MAX_SEGMENTS})")
    counts: dict[str, int] = {}
    segments = msg.all_segments
    append = segments.append
    names_ok = _NAMES_OK
    for pos, line in enumerate(lines, start=1):
        if line[0] in " \t":
            line = line.lstrip(" \t")
        name = line[:3]
        if name not in names_ok:
            if not _SEGMENT_NAME.match(name):
                raise Hl7Error(f"segment {pos}: invalid segment name")
            if len(names_ok) < 4096:
                names_ok.add(name)
        if len(line) > 3 and line[3] != sep:
            raise Hl7Error(f"segment {pos}: invalid segment name")
        occurrence = counts[name] = counts.get(name, 0) + 1
        if len(line) > MAX_SEGMENT_LENGTH:
            raise Hl7Error(
                f"segment too long ({len(line)} characters, limit {MAX_SEGMENT_LENGTH})",
                segment=f"{name}[{occurrence}]",
            )
        parts = line.split(sep)
        if len(parts) > MAX_FIELDS:
            raise Hl7Error(f"too many fields ({len(parts) - 1}, limit {MAX_FIELDS})", segment=f"{name}[{occurrence}]")
        if name == "MSH":
            if pos != 1:
                raise Hl7Error("MSH segment inside a message (missing segment end?)", segment=f"{name}[{occurrence}]")
            parts[0:1] = ["MSH", sep]
        append(Segment(name, parts, pos, occurrence, msg))

    msh = msg.all_segments[0]
    if len(msg.all_segments) == 1:
        raise Hl7Error("truncated: the message has no segment after MSH", segment="MSH[1]")
    for n, what in ((9, "message type"), (10, "message control id"), (12, "version id")):
        if not msh.value(n):
            raise Hl7Error(f"{what} missing", segment="MSH[1]", field=f"MSH-{n}")
    return msg


# -------------------------------------------------------------------------------------------- dates


_TS_CACHE: dict[str, datetime] = {}  # text -> parsed value (immutable), bounded
_TS_CACHE_SIZE = 4096


def parse_ts(value: str, seg: Segment, n: int) -> datetime:
    """HL7 TS: YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]."""
    value = value.strip()
    known = _TS_CACHE.get(value)
    if known is not None:
        return known
    parsed = _parse_ts(value, seg, n)
    if len(_TS_CACHE) >= _TS_CACHE_SIZE:
        _TS_CACHE.clear()
    _TS_CACHE[value] = parsed
    return parsed


def _parse_ts(value: str, seg: Segment, n: int) -> datetime:
    size = len(value)
    if (size == 14 or size == 12 or size == 8) and value.isascii() and value.isdigit():
        # the common shapes YYYYMMDD[HHMM[SS]], read without the regular expression
        try:
            if size == 8:
                return datetime(int(value[:4]), int(value[4:6]), int(value[6:]))
            x = int(value) if size == 14 else int(value) * 100
            x, second = divmod(x, 100)
            x, minute = divmod(x, 100)
            x, hour = divmod(x, 100)
            x, day = divmod(x, 100)
            year, month = divmod(x, 100)
            return datetime(year, month, day, hour, minute, second)
        except ValueError:
            raise seg.err(n, "date/time out of range") from None
    m = _TS.match(value)
    if not m:
        raise seg.err(n, "date/time not in HL7 TS format YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]")
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        tzinfo = None
        if tz:
            hours, minutes = int(tz[1:3]), int(tz[3:5])
            if hours > 14 or minutes > 59:
                raise ValueError
            delta = timedelta(hours=hours, minutes=minutes)
            tzinfo = timezone(delta if tz[0] == "+" else -delta)
        micro = int((frac or "0").ljust(6, "0")[:6])
        return datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0), micro, tzinfo=tzinfo)
    except ValueError:
        raise seg.err(n, "date/time out of range") from None


def _plain_ts(raw: str) -> datetime | None:
    """A raw field of exactly 14 ASCII digits (YYYYMMDDHHMMSS, no separator, no escape, so it is its own
    value) as ``parse_ts`` reads it; None for any other shape or a date out of range, which the caller
    then reads through ``_ts_opt`` (and its located errors)."""
    if len(raw) != 14 or not raw.isascii() or not raw.isdigit():
        return None
    x, second = divmod(int(raw), 100)
    x, minute = divmod(x, 100)
    x, hour = divmod(x, 100)
    x, day = divmod(x, 100)
    year, month = divmod(x, 100)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


def _ts_opt(seg: Segment, n: int) -> datetime | None:
    v = seg.value(n)
    return parse_ts(v, seg, n) if v and not v.isspace() else None


# ------------------------------------------------------------------------------------------ mapping


def to_domain(message: Message, *, test_mode: bool = False) -> Mapped:
    """Map an ORU^R01 or OUL^R22 (v2.3 to 2.5.1) to domain objects. Every fault of the input is an
    ``Hl7Error``; anything else is a bug and escapes."""
    try:
        return _Mapper(message, test_mode).run()
    except Hl7Error as exc:
        raise exc.located(file=message.file, message_index=message.index) from None


def _authority_oid(hd_subs: list[str]) -> tuple[str, str]:
    """(oid, namespace) of an HD given as subcomponents namespace&universal id&type."""
    ns = hd_subs[0] if hd_subs else ""
    uid = hd_subs[1] if len(hd_subs) > 1 else ""
    if _OID.match(uid):
        return uid, ns
    if _OID.match(ns):
        return ns, ns
    return "", ns


class _Memo:
    """What an OBX field's raw text maps to, per encoding and charset (the only other inputs of the
    mapping). Only successful mappings are stored; a miss runs the ordinary code, which raises the
    located error. Each table is bounded."""

    __slots__ = ("code", "flag", "number", "observer", "ref", "status", "ts", "unit", "vtype")
    code: dict[str, Any]
    vtype: dict[str, Any]
    number: dict[str, Any]
    unit: dict[str, Any]
    ref: dict[str, Any]
    flag: dict[str, Any]
    status: dict[str, Any]
    observer: dict[str, Any]
    ts: dict[str, Any]
    LIMIT = 4096

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, {})

    def put(self, table: dict[str, Any], raw: str, value: Any) -> Any:
        if len(table) >= self.LIMIT:
            table.clear()
        table[raw] = value
        return value


_MEMOS: dict[tuple[Encoding, str], _Memo] = {}


def _memo_for(msg: Message) -> _Memo:
    try:
        key = (msg.encoding, msg.charset)
        memo = _MEMOS.get(key)
    except TypeError:  # an unhashable hand-built encoding: no sharing
        return _Memo()
    if memo is None:
        if len(_MEMOS) >= 64:
            _MEMOS.clear()
        memo = _MEMOS[key] = _Memo()
    return memo


_MISSING = object()


class _Mapper:
    def __init__(self, msg: Message, test_mode: bool) -> None:
        self.msg = msg
        self.test_mode = test_mode
        self.prescribers: dict[tuple[str, str], Prescriber] = {}
        self.memo = _memo_for(msg)

    def _id(self, what: str) -> str:
        """The domain id of what ``what`` names in the message (a patient, a prescriber), which has no
        order number of its own (see ``labvault.crypto.derive``)."""
        return self.scope.id(what)

    def run(self) -> Mapped:
        msg = self.msg
        msh = msg.all_segments[0]
        first_msh = msg.first("MSH")
        mtype = (first_msh.value(9, 1), first_msh.value(9, 2)) if first_msh is not None else ("", "")
        if mtype not in SUPPORTED_TYPES:
            raise msh.err(9, "unsupported message type (expected ORU^R01 or OUL^R22)")
        version = msg.version
        if version not in SUPPORTED_VERSIONS:
            raise msh.err(12, "unsupported version (expected 2.3 to 2.5.1)")
        pid = msg.first("PID")
        if pid is None:
            raise msg.err("PID segment missing")
        control_id, sending_facility = msg.control_id, msg.sending_facility
        self.scope = message_scope("hl7v2", sending_facility, control_id)
        app = msh.value(3) or msh.value(3, 2)
        facility = msh.value(4) or msh.value(4, 2)
        sender = f"{app}^{facility}" if app or facility else None
        self.message_at = message_at = _ts_opt(msh, 7)
        self.modern = version in _MODERN
        numbers = Orders(self.scope)
        self.orders: dict[str, Order] = {}
        patient_id = self._id("PID[1]")
        oul = mtype == ("OUL", "R22")
        has_spm: bool | None = None
        status_memo = self.memo.status

        requests: list[Request] = []
        specimens: list[Specimen] = []
        results: list[Result] = []
        request: Request | None = None
        obr: Segment | None = None
        orc_prescriber: str | None = None
        orc: Segment | None = None  # the ORC just before an OBR: its order numbers are that OBR's
        specimen: Specimen | None = None
        pending_spm: list[Segment] = []
        last_result: Result | None = None
        for seg in msg.all_segments:
            name = seg.name
            if name == "OBX":
                if request is None or obr is None:
                    raise seg.err(None, "OBX before any OBR (observation without an order)")
                f = seg.fields
                raw = f[11] if len(f) > 11 else ""
                status_code = status_memo.get(raw)
                if status_code is None:
                    status_code = self.memo.put(status_memo, raw, seg.value(11).upper())
                if status_code in _NO_RESULT:
                    last_result = None
                    continue
                last_result = self._result(seg, request, specimen, status_code)
                results.append(last_result)
            elif name == "ORC":
                orc_prescriber = self._prescriber(seg, 12)
                orc = seg
                last_result = None
            elif name == "OBR":
                obr = seg
                when = _ts_opt(seg, 7) or _ts_opt(seg, 6) or _ts_opt(msh, 7)
                if when is None:
                    raise seg.err(7, "observation date/time missing")
                placer = seg.value(2) or (orc.value(2) if orc is not None else "")
                filler = seg.value(3) or (orc.value(3) if orc is not None else "")
                orc = None
                order = numbers.order(seg.label)
                request = Request(
                    request_id=order.request_id(),
                    patient_id=patient_id,
                    prescriber_id=self._prescriber(seg, 16) or orc_prescriber,
                    requested_at=when,
                    accession=filler or placer or None,
                    reported_at=_ts_opt(seg, 22),
                    placer_number=placer or None,
                    filler_number=filler or None,
                    sender=sender,
                    message_at=message_at,
                )
                self.orders[request.request_id] = order
                requests.append(request)
                specimen = None
                for spm in pending_spm:
                    specimen = self._specimen(spm, request)
                    specimens.append(specimen)
                pending_spm = []
                if has_spm is None:
                    has_spm = msg.first("SPM") is not None
                if not has_spm and (seg.value(15) or seg.value(7)):
                    specimen = Specimen(
                        specimen_id=order.specimen_id(),
                        request_id=request.request_id,
                        type=seg.value(15) or "UNK",
                        collected_at=when,
                        received_at=_ts_opt(seg, 14),
                    )
                    specimens.append(specimen)
                last_result = None
            elif name == "SPM":
                if oul or request is None:
                    pending_spm.append(seg)
                else:
                    specimen = self._specimen(seg, request)
                    specimens.append(specimen)
                last_result = None
            elif name == "NTE" and last_result is not None:
                note = "\n".join(seg.field_text(3, r + 1) for r in range(len(seg.repetitions(3))))
                if note:
                    last_result.comment = f"{last_result.comment}\n{note}" if last_result.comment else note
        if not requests:
            raise msg.err("truncated: no OBR segment (no order in the message)")
        first_specimen: dict[str, str] = {}
        for sp in specimens:
            first_specimen.setdefault(sp.request_id, sp.specimen_id)
        for res in results:  # v2.5 puts SPM after the order's OBX: link them to the order's specimen
            if res.specimen_id is None:
                res.specimen_id = first_specimen.get(res.request_id)
        identity, others = self._identity(pid, patient_id)
        reported = {r.request_id: r.reported_at for r in requests}
        for res in results:  # no validation time in the OBX: the report's (OBR-22), never OBR-7
            if res.validated_at is None and res.status not in _NOTHING_VALIDATED:
                res.validated_at = reported.get(res.request_id)
        return Mapped(
            identity=identity,
            prescribers=list(self.prescribers.values()),
            requests=requests,
            specimens=specimens,
            results=results,
            other_identifiers=others,
            z_segments=[msg.encoding.field.join(s.fields if s.name != "MSH" else s.fields[1:]) for s in msg.z_segments],
            control_id=control_id,
            sending_facility=sending_facility,
        )

    # identity -----------------------------------------------------------------------------------
    def _identity(self, pid: Segment, patient_id: str) -> tuple[Identity, list[tuple[str, str]]]:
        ins: tuple[str, str] | None = None
        others: list[tuple[str, str]] = []
        for rep in pid.repetitions(3):
            value = rep[0][0] if rep and rep[0] else ""
            if not value:
                continue
            oid, ns = _authority_oid(rep[3] if len(rep) > 3 else [])
            if oid in (OID_NIR, OID_NIA) or (oid == OID_INS_TEST and self.test_mode):
                if ins is None:
                    ins = (value, oid)
                continue
            if oid == OID_INS_TEST:
                raise pid.err(3, "test INS (OID 1.2.250.1.213.1.4.10) refused outside test mode")
            id_type = rep[4][0] if len(rep) > 4 and rep[4] else ""
            if oid:
                system = f"urn:oid:{oid}"
            elif ns:
                system = f"urn:hl7v2:assigner:{quote(ns, safe='')}"
            else:
                system = f"urn:hl7v2:idtype:{quote(id_type or 'unknown', safe='')}"
            others.append((system, value))
        names = self._names(pid)
        family, given, first_given, birth_name, used_given = names
        if not family:
            raise pid.err(5, "patient family name missing")
        bd = pid.value(7)
        if not bd.strip():
            raise pid.err(7, "birth date missing")
        born = parse_ts(bd, pid, 7)
        sex = pid.value(8).upper()
        address = birthplace = ""
        for rep in pid.repetitions(11):  # XAD; type BDL (XAD-7) is the birthplace, its INSEE code in XAD-9
            kind = rep[6][0] if len(rep) > 6 and rep[6] else ""
            if kind == "BDL":
                birthplace = birthplace or (rep[8][0] if len(rep) > 8 and rep[8] else "")
            elif not address:
                address = ", ".join(c[0] for c in rep[:6] if c and c[0])
        phone = email = ""
        for t in pid.repetitions(13):  # XTN; use code NET (XTN-2): an e-mail address in XTN-4

            def comp(i: int, t: list = t) -> str:
                return t[i][0] if len(t) > i and t[i] else ""

            if comp(1) == "NET" or comp(2) == "Internet":
                email = email or comp(3)
            elif not phone:
                phone = comp(0) or comp(11) or (comp(5) + comp(6)) or comp(3)
        status = IdentityStatus.PROVISIONAL
        for rep in pid.repetitions(32):  # the French PAM identity reliability code (PROV, VALI, RECUP, QUAL)
            known = _RELIABILITY.get((rep[0][0] if rep and rep[0] else "").strip().upper())
            if known is not None:
                status = known
                break
        if ins is None:  # a recovered or qualified identity has an INS: without one, it is not
            status = _WITHOUT_INS.get(status, status)
        identity = Identity(
            patient_id=patient_id,
            nir=ins[0] if ins is not None else None,
            identity_status=status,
            family_name=family,
            given_names=given,
            birth_date=date(born.year, born.month, born.day),
            sex=sex if sex in ("M", "F") else "U",
            birth_name=birth_name,
            birthplace_code=birthplace or None,
            address=address or None,
            phone=phone or None,
            email=email or None,
            first_given_name=first_given,
            used_given_name=used_given,
            local_ids=list(others),
        )
        if ins is not None:
            identity.ins_oid = ins[1]
        return identity, others

    @staticmethod
    def _names(pid: Segment) -> tuple[str, str, str | None, str | None, str | None]:
        """PID-5 (XPN: family^given^further given names^suffix^prefix^degree^name type): (name used,
        given names at birth in order, the first of them, birth name, given name used). Type L (or M)
        is the name at birth, D the name used; a name of another or no type stands for both when
        neither is given."""
        birth: list[str] | None = None
        used: list[str] | None = None
        other: list[str] | None = None
        for rep in pid.repetitions(5):
            parts = [c[0] if c else "" for c in rep[:7]]
            parts += [""] * (7 - len(parts))
            if not parts[0] and not parts[1]:
                continue
            ntype = parts[6].upper()
            if ntype in ("L", "M"):
                birth = birth or parts
            elif ntype == "D":
                used = used or parts
            else:
                other = other or parts
        main = birth or used or other
        if main is None:
            return "", "", None, None, None
        at_birth = birth or main
        if not at_birth[1] and not at_birth[2] and used is not None:
            at_birth = used
        given = " ".join(p for p in (at_birth[1], at_birth[2]) if p)
        # the first given name is XPN-2 when the others are apart (XPN-3); None when it is what
        # ``Identity.first_given`` derives from the given names anyway
        derived = given.replace(",", " ").split()
        first = at_birth[1] if at_birth[2] and at_birth[1] != (derived[0] if derived else "") else None
        used_given: str | None = None
        if birth is not None and used is not None and used[1] and used[1] not in (first, derived[0] if derived else ""):
            used_given = used[1]
        family = (used or other or birth or main)[0] or main[0]
        birth_name = (birth[0] or None) if birth is not None else None
        return family, given, first, birth_name, used_given

    # prescriber ---------------------------------------------------------------------------------
    def _prescriber(self, seg: Segment, n: int) -> str | None:
        reps = seg.repetitions(n)
        if not reps:
            return None
        xcn = reps[0]

        def sub(i: int, j: int = 0) -> str:
            return xcn[i][j] if len(xcn) > i and len(xcn[i]) > j else ""

        number = sub(0)
        if not number and not sub(1):
            return None
        oid, ns = _authority_oid(xcn[8] if len(xcn) > 8 else [])
        is_rpps = oid == OID_RPPS or ns.upper() == "RPPS"
        key = (oid or ns, number or f"{sub(1)}^{sub(2)}")
        if key not in self.prescribers:
            self.prescribers[key] = Prescriber(
                prescriber_id=self._id(f"prescriber/{key[0]}/{key[1]}"),
                rpps=number if is_rpps else "",
                family_name=sub(1),
                given_name=sub(2),
            )
        return self.prescribers[key].prescriber_id

    # specimen -----------------------------------------------------------------------------------
    def _specimen(self, spm: Segment, request: Request) -> Specimen:
        collected = _ts_opt(spm, 17) or request.requested_at
        return Specimen(
            specimen_id=self.orders[request.request_id].specimen_id(),
            request_id=request.request_id,
            label=spm.value(2) or spm.value(2, 2) or None,  # SPM-2: placer's, else filler's id
            type=(
                spm.value(4, 4)
                if spm.value(4, 6).upper() == "HL70487" and spm.value(4, 3).upper() != "HL70487"
                else spm.value(4)
            )
            or "UNK",
            collected_at=collected,
            received_at=_ts_opt(spm, 18),
        )

    # result -------------------------------------------------------------------------------------
    # Each OBX field is read through ``self.memo`` (raw text -> mapped value); on a miss, the method
    # named after the field maps it from the segment and may raise the located error. The order in
    # which fields are checked (3, 5, 11, 19, 14) is the order in which errors are reported.

    def _code(self, obx: Segment) -> tuple[str, str, str, object]:
        code, label, system_name, code2, label2, system2 = obx.leaves(3, 6)[:6]
        if system_name.upper() != "LN" and system2.upper() == "LN" and code2:
            code, label, system_name = code2, label2 or label, "LN"
        if not code and code2:
            code, label, system_name = code2, label2 or label, system2
        if not code:
            raise obx.err(3, "observation code missing")
        if system_name.upper() == "LN":
            system = LOINC
        else:
            system = f"urn:hl7v2:codesystem:{quote(system_name or 'local', safe='')}"
        return code, label, system, sensitivity_of(system, code)

    def _number(self, obx: Segment) -> tuple[float | None, str | None]:
        """An NM value: (the number, its text as written), or (None, None) when empty."""
        raw = obx.value(5)
        try:
            number = read_number(raw, comparator=False)
        except NumberFault as exc:
            raise obx.err(5, str(exc)) from None
        if number is None:
            if not raw.strip():
                return None, None
            raise obx.err(5, "value is not numeric for value type NM")
        return number.value, number.text

    def _text_value(self, obx: Segment, vtype: str) -> tuple[float | None, str | None, str | None, str | None]:
        """(number, text, number as written, comparator) of a value that is not NM."""
        value = obx.value
        reps = obx.repetitions(5)
        if vtype == "SN":  # comparator^number^separator/suffix^number
            comparator, n1, sep, n2 = (value(5, i).strip() for i in (1, 2, 3, 4))
            if comparator in ("", "=", "<", ">", "<=", ">=", "<>") and not sep and not n2:
                try:
                    number = read_number(n1, comparator=False)
                except NumberFault as exc:
                    raise obx.err(5, str(exc)) from None
                if number is not None and comparator != "<>":
                    return number.value, None, number.text, comparator if comparator not in ("", "=") else None
            if reps:
                return None, f"{comparator}{n1}{sep}{n2}" or None, None, None
            return None, None, None, None
        if vtype in ("CE", "CWE", "CNE", "CF"):
            text = "\n".join(value(5, 2, rep=i + 1) or value(5, 1, rep=i + 1) for i in range(len(reps)))
            return None, text or None, None, None
        if reps:
            return None, "\n".join(obx.field_text(5, i + 1) for i in range(len(reps))) or None, None, None
        return None, None, None, None

    def _unit(self, obx: Segment) -> tuple[str | None, str | None]:
        """OBX-6 (CE: unit^text^coding system): the unit and its system. A claim of UCUM holds only
        for valid UCUM; another named system is the sender's own (``urn:hl7v2:units:X``)."""
        unit = obx.value(6, 1) or None
        if unit is None:
            return None, None
        claimed = obx.value(6, 3).strip()
        if not claimed:
            return unit, unit_system(unit)
        if claimed.upper() == "UCUM":
            return unit, unit_system(unit, UCUM)
        return unit, unit_system(unit, f"urn:hl7v2:units:{quote(claimed, safe='')}")

    def _plain_text(self, obx: Segment, raw: str) -> str | None:
        """``_text_value`` of a text type (not SN nor coded) for a field without any separator."""
        return self.msg.unescape(raw) or None

    def _observer(self, obx: Segment) -> str | None:
        observer, given, family = obx.leaves(16, 3)[:3]
        if not observer:
            observer = " ".join(p for p in (given, family) if p)
        return observer or None

    def _result(self, obx: Segment, request: Request, specimen: Specimen | None, status_code: str) -> Result:
        memo = self.memo
        put = memo.put
        enc = self.msg.encoding
        f = obx.fields
        nf = len(f)
        raw = f[3] if nf > 3 else ""
        hit = memo.code.get(raw)
        if hit is None:
            hit = put(memo.code, raw, self._code(obx))
        code, label, system, sensitivity = hit
        raw = f[2] if nf > 2 else ""
        vtype = memo.vtype.get(raw)
        if vtype is None:
            vtype = put(memo.vtype, raw, obx.value(2).upper())
        raw = f[5] if nf > 5 else ""
        comparator: str | None = None
        if vtype == "NM":
            value_text = None
            number = memo.number.get(raw)
            if number is None:
                number = put(memo.number, raw, self._number(obx))
            value_num, value_repr = number
        elif vtype in _PLAIN_TEXT_TYPES and not (
            enc.repetition in raw or enc.component in raw or enc.subcomponent in raw
        ):
            value_num, value_text, value_repr = None, self._plain_text(obx, raw), None
        else:
            value_num, value_text, value_repr, comparator = self._text_value(obx, vtype)
        raw = f[7] if nf > 7 else ""
        ref = memo.ref.get(raw)
        if ref is None:
            try:
                ref = put(memo.ref, raw, _ref_range(obx.value(7)))
            except _NumberFault as exc:
                raise obx.err(7, exc.reason) from None
        status = _STATUS.get(status_code)
        if status is None:
            if not status_code:
                raise obx.err(11, "result status missing")
            raise obx.err(11, "result status cannot be imported (expected F, U, C, P, R, S, A, I, X, D or W)")
        raw = f[6] if nf > 6 else ""
        units = memo.unit.get(raw)
        if units is None:
            units = put(memo.unit, raw, self._unit(obx))
        unit, unit_sys = units
        raw = f[8] if nf > 8 else ""
        flag = memo.flag.get(raw, _MISSING)
        if flag is _MISSING:
            flag = put(memo.flag, raw, obx.value(8) or None)
        raw = f[16] if nf > 16 else ""
        observer = memo.observer.get(raw, _MISSING)
        if observer is _MISSING:
            observer = put(memo.observer, raw, self._observer(obx))
        ts = memo.ts
        validated_at = None
        if self.modern:  # OBX-19, the analysis time, is v2.5's
            raw = f[19] if nf > 19 else ""
            validated_at = ts.get(raw, _MISSING)
            if validated_at is _MISSING:
                validated_at = put(ts, raw, _plain_ts(raw) or _ts_opt(obx, 19))
        if validated_at is None:
            raw = f[14] if nf > 14 else ""
            validated_at = ts.get(raw, _MISSING)
            if validated_at is _MISSING:
                validated_at = put(ts, raw, _plain_ts(raw) or _ts_opt(obx, 14))
        result_id = self.orders[request.request_id].result_id(code)
        raw = f[4] if nf > 4 else ""
        observation_key = f"{system}|{code}|{obx.value(4) if raw else ''}"
        if _RESULT_POSITIONAL:
            return Result(
                result_id,
                request.request_id,
                code,
                label,
                system,
                specimen.specimen_id if specimen else None,
                value_num,
                value_text,
                unit,
                ref[0],
                ref[1],
                ref[2],
                flag,
                status,
                observer,
                validated_at,
                None,
                sensitivity,
                value_repr,
                comparator,
                unit_sys,
                observation_key,
                1,
                self.message_at,
            )
        return Result(  # pragma: no cover - only if models.Result's fields change order
            result_id=result_id,
            request_id=request.request_id,
            code=code,
            label=label,
            code_system=system,
            specimen_id=specimen.specimen_id if specimen else None,
            value_num=value_num,
            value_text=value_text,
            unit=unit,
            ref_low=ref[0],
            ref_high=ref[1],
            ref_text=ref[2],
            flag=flag,
            status=status,
            validated_by=observer,
            validated_at=validated_at,
            sensitivity=sensitivity,
            value_repr=value_repr,
            comparator=comparator,
            unit_system=unit_sys,
            observation_key=observation_key,
            message_at=self.message_at,
        )


# The fields given positionally, in order (the workflow fields after them keep their defaults).
_RESULT_POSITIONAL = [f.name for f in dataclasses.fields(Result)][:24] == [
    "result_id",
    "request_id",
    "code",
    "label",
    "code_system",
    "specimen_id",
    "value_num",
    "value_text",
    "unit",
    "ref_low",
    "ref_high",
    "ref_text",
    "flag",
    "status",
    "validated_by",
    "validated_at",
    "comment",
    "sensitivity",
    "value_repr",
    "comparator",
    "unit_system",
    "observation_key",
    "version",
    "message_at",
]
_PLAIN_TEXT_TYPES = frozenset({"ST", "TX", "FT"})
_NO_RESULT = {"O", "N"}  # order detail only, not asked: no result to import
_MODERN = frozenset({"2.5", "2.5.1"})  # versions with OBX-19 (date/time of the analysis)
# PID-32, the French PAM profile's identity reliability code, as an RNIV status
_RELIABILITY = {
    "PROV": IdentityStatus.PROVISIONAL,
    "VALI": IdentityStatus.VALIDATED,
    "RECUP": IdentityStatus.RECOVERED,
    "QUAL": IdentityStatus.QUALIFIED,
}
# without an INS, an identity cannot be recovered nor qualified (both mean an INS fetched)
_WITHOUT_INS = {
    IdentityStatus.QUALIFIED: IdentityStatus.VALIDATED,
    IdentityStatus.RECOVERED: IdentityStatus.PROVISIONAL,
}
_NOTHING_VALIDATED = frozenset({ResultStatus.PENDING, ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR})
_STATUS = {
    "I": ResultStatus.PENDING,
    "X": ResultStatus.CANCELLED,
    "D": ResultStatus.ENTERED_IN_ERROR,
    "W": ResultStatus.ENTERED_IN_ERROR,
    "F": ResultStatus.FINAL,
    "U": ResultStatus.FINAL,
    "C": ResultStatus.CORRECTED,
    "P": ResultStatus.PRELIMINARY,
    "R": ResultStatus.PRELIMINARY,
    "S": ResultStatus.PRELIMINARY,
    "A": ResultStatus.PRELIMINARY,
}

_RANGE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*-\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\Z")
_BOUND = re.compile(r"\s*(<=|>=|<|>)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\Z")


_RANGE_CACHE: dict[str, tuple[float | None, float | None, str | None]] = {}  # bounded


class _NumberFault(Exception):
    """A bound of a reference range that is no number to store (see ``number_fault``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bound(text: str) -> float:
    if fault := number_fault(text):
        raise _NumberFault(fault)
    return float(text)


def _ref_range(raw: str) -> tuple[float | None, float | None, str | None]:
    """'3.5-5.1' -> (3.5, 5.1); '<10' -> (None, 10); '>2' -> (2, None); anything else is text.
    A bound too long or not finite raises ``_NumberFault``."""
    known = _RANGE_CACHE.get(raw)
    if known is None:
        known = _ref_range_of(raw)
        if len(_RANGE_CACHE) >= 4096:
            _RANGE_CACHE.clear()
        _RANGE_CACHE[raw] = known
    return known


def _ref_range_of(raw: str) -> tuple[float | None, float | None, str | None]:
    if not raw.strip():
        return None, None, None
    if m := _RANGE.match(raw):
        return _bound(m.group(1)), _bound(m.group(2)), None
    if m := _BOUND.match(raw):
        bound = _bound(m.group(2))
        return (None, bound, raw.strip()) if m.group(1).startswith("<") else (bound, None, raw.strip())
    return None, None, raw.strip()


def read(data: bytes, *, file: str | None = None, test_mode: bool = False) -> list[Mapped]:
    """Split, parse and map every message of an input; the first failure is raised."""
    out = []
    for i, raw in enumerate(split_messages(data, file=file), start=1):
        out.append(to_domain(parse(raw, index=i, file=file), test_mode=test_mode))
    return out
