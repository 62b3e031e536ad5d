"""A controller's instruction: what the lab allows the vendor to do with its data, signed by the lab.

Nothing leaves the platform without one (GDPR Art. 28(3)(a)). This module is pure: it parses a
document (YAML or JSON bytes), checks it strictly, turns it into the record that is signed
(``to_record``; canonical JSON through ``labvault.crypto.signing.canonical``), signs and verifies
it, and says what a request asks beyond it (``excess``). No database, no files.

The document (``template(kind, tenant)`` writes a commented one)::

    version: 1                      # optional; 1 is the only version
    id: exp-2025-001                # 1-64 of [A-Za-z0-9._:-]
    tenant: lab-a
    kind: export                    # one of KINDS
    scope: selection                # kind deletion only: lab (the whole lab, no selection) or selection
    purpose: "..."                  # 1-500 characters
    legal_basis: "..."              # optional
    fields:                         # category -> fields, from FIELDS (not used by kind deletion)
      identity: [nir, family_name]
      result: [code, value_num, unit]
      free_text: [result.comment]   # free text is never included unless listed here
    selection:
      collected_from: 2024-01-01    # dates of specimen collection, inclusive
      collected_to: 2024-12-31
      patients: [p1, p2]            # optional; absent means every patient
      codes: ["http://loinc.org|718-7"]   # optional; "system|code" or [system, code]
      sensitive: [hiv]              # optional; results of a sensitive category only if listed
    destination:                    # kinds export, migration_out, return (optional for support_access)
      name: "..."
      country: FR                   # ISO 3166-1 alpha-2
      transfer_basis: "..."         # required when the country is outside the EEA
      recipient_age_key: age1...    # the recipient's age X25519 public key
      receipt_key: 64 hex digits    # optional: the recipient's Ed25519 key; its receipt must be signed
    source:                         # kind migration_in only: where the data comes from
      name: "..."
      country: FR                   # optional
    expected_volume: 12000          # results; required for export, migration_out, return
    tolerance: 0.10                 # allowed excess over expected_volume, 0..1
    deletion_deadline: 2025-06-30T00:00:00Z   # required for export, migration_out, return, deletion
    valid_from: 2025-01-01T00:00:00Z
    valid_until: 2025-03-31T00:00:00Z

A ``deletion`` with ``scope: lab`` covers the whole lab: every record, every package, then its
keys (``labvault tenant end --delete``, ``labvault tenant shred``); it has no ``selection``.

``migration_in`` names a ``source`` (a separate section, not a reused destination) and has no
destination: nothing leaves. Errors are one line, ``instruction: <path>: <reason>``, and never
repeat a value from the document (key, category and field names are repeated when they are safe
identifiers).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml

from labvault.crypto.signing import Signer, verify
from labvault.domain.models import Sensitivity
from labvault.errors import InvalidInput, SignatureInvalid
from labvault.instructions.errors import (
    DeadlinePassed,
    Expired,
    InstructionInvalid,
    InstructionRefused,  # noqa: F401  (still importable from here)
    InstructionSignatureInvalid,
    InstructionUnsigned,
    NotYetValid,
    UnknownSigner,
    WrongTenant,
)

VERSION = 1
MAX_BYTES = 64 * 1024
MAX_TEXT = 500

KINDS = ("export", "migration_out", "migration_in", "support_access", "return", "deletion")
# Kinds that send data out: they need a destination and a recipient key.
OUTBOUND = ("export", "migration_out", "return")
NEEDS_VOLUME = OUTBOUND
NEEDS_DEADLINE = (*OUTBOUND, "deletion")
# What a deletion covers: the records its selection names, or the whole lab (then its keys too).
SCOPE_SELECTION = "selection"
SCOPE_LAB = "lab"
SCOPES = (SCOPE_SELECTION, SCOPE_LAB)

FREE_TEXT = "free_text"
FIELDS: dict[str, tuple[str, ...]] = {
    "identity": (
        "nir",
        "family_name",
        "given_names",
        "birth_name",
        "birth_date",
        "sex",
        "birthplace_code",
        "address",
        "phone",
        "email",
    ),
    "prescriber": ("rpps", "family_name", "given_name"),
    "request": ("requested_at", "accession", "reported_at"),
    "specimen": ("type", "collected_at", "received_at"),
    "result": (
        "code",
        "code_system",
        "label",
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
    ),
    # Free text may hold anything (names, diagnoses): excluded unless listed on its own.
    FREE_TEXT: ("result.comment",),
}
SENSITIVE = tuple(s.value for s in Sensitivity if s is not Sensitivity.OTHER)

EEA = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
    ]
)
ISO_COUNTRIES = frozenset(
    [
        "AD",
        "AE",
        "AF",
        "AG",
        "AI",
        "AL",
        "AM",
        "AO",
        "AQ",
        "AR",
        "AS",
        "AT",
        "AU",
        "AW",
        "AX",
        "AZ",
        "BA",
        "BB",
        "BD",
        "BE",
        "BF",
        "BG",
        "BH",
        "BI",
        "BJ",
        "BL",
        "BM",
        "BN",
        "BO",
        "BQ",
        "BR",
        "BS",
        "BT",
        "BV",
        "BW",
        "BY",
        "BZ",
        "CA",
        "CC",
        "CD",
        "CF",
        "CG",
        "CH",
        "CI",
        "CK",
        "CL",
        "CM",
        "CN",
        "CO",
        "CR",
        "CU",
        "CV",
        "CW",
        "CX",
        "CY",
        "CZ",
        "DE",
        "DJ",
        "DK",
        "DM",
        "DO",
        "DZ",
        "EC",
        "EE",
        "EG",
        "EH",
        "ER",
        "ES",
        "ET",
        "FI",
        "FJ",
        "FK",
        "FM",
        "FO",
        "FR",
        "GA",
        "GB",
        "GD",
        "GE",
        "GF",
        "GG",
        "GH",
        "GI",
        "GL",
        "GM",
        "GN",
        "GP",
        "GQ",
        "GR",
        "GS",
        "GT",
        "GU",
        "GW",
        "GY",
        "HK",
        "HM",
        "HN",
        "HR",
        "HT",
        "HU",
        "ID",
        "IE",
        "IL",
        "IM",
        "IN",
        "IO",
        "IQ",
        "IR",
        "IS",
        "IT",
        "JE",
        "JM",
        "JO",
        "JP",
        "KE",
        "KG",
        "KH",
        "KI",
        "KM",
        "KN",
        "KP",
        "KR",
        "KW",
        "KY",
        "KZ",
        "LA",
        "LB",
        "LC",
        "LI",
        "LK",
        "LR",
        "LS",
        "LT",
        "LU",
        "LV",
        "LY",
        "MA",
        "MC",
        "MD",
        "ME",
        "MF",
        "MG",
        "MH",
        "MK",
        "ML",
        "MM",
        "MN",
        "MO",
        "MP",
        "MQ",
        "MR",
        "MS",
        "MT",
        "MU",
        "MV",
        "MW",
        "MX",
        "MY",
        "MZ",
        "NA",
        "NC",
        "NE",
        "NF",
        "NG",
        "NI",
        "NL",
        "NO",
        "NP",
        "NR",
        "NU",
        "NZ",
        "OM",
        "PA",
        "PE",
        "PF",
        "PG",
        "PH",
        "PK",
        "PL",
        "PM",
        "PN",
        "PR",
        "PS",
        "PT",
        "PW",
        "PY",
        "QA",
        "RE",
        "RO",
        "RS",
        "RU",
        "RW",
        "SA",
        "SB",
        "SC",
        "SD",
        "SE",
        "SG",
        "SH",
        "SI",
        "SJ",
        "SK",
        "SL",
        "SM",
        "SN",
        "SO",
        "SR",
        "SS",
        "ST",
        "SV",
        "SX",
        "SY",
        "SZ",
        "TC",
        "TD",
        "TF",
        "TG",
        "TH",
        "TJ",
        "TK",
        "TL",
        "TM",
        "TN",
        "TO",
        "TR",
        "TT",
        "TV",
        "TW",
        "TZ",
        "UA",
        "UG",
        "UM",
        "US",
        "UY",
        "UZ",
        "VA",
        "VC",
        "VE",
        "VG",
        "VI",
        "VN",
        "VU",
        "WF",
        "WS",
        "YE",
        "YT",
        "ZA",
        "ZM",
        "ZW",
    ]
)

ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
TENANT_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")  # as labvault.domain.identifiers.TENANT_ID_RE
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
AGE_KEY_LEN = 62  # "age1" + 58 bech32 characters (52 data + 6 checksum)


# --- errors (the classes: labvault.instructions.errors) ---------------------------------------


def _err(path: str, reason: str) -> InstructionInvalid:
    return InstructionInvalid(f"instruction: {path}: {reason}")


def _name(key: object) -> str:
    """A key or name safe to repeat in a message (an identifier), else a neutral word."""
    return key if isinstance(key, str) and _SAFE_NAME.fullmatch(key) else "(unnamed)"


# --- the instruction ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    name: str
    country: str
    recipient_age_key: str
    transfer_basis: str | None = None
    receipt_key: str | None = None  # hex of the recipient's Ed25519 public key, if it signs receipts


@dataclass(frozen=True)
class Source:
    name: str
    country: str | None = None


@dataclass(frozen=True)
class Instruction:
    id: str
    tenant: str
    kind: str
    purpose: str
    fields: dict[str, tuple[str, ...]]
    collected_from: date
    collected_to: date
    valid_from: datetime
    valid_until: datetime
    legal_basis: str | None = None
    patients: tuple[str, ...] | None = None
    codes: tuple[tuple[str, str], ...] | None = None
    sensitive: tuple[str, ...] = ()
    destination: Destination | None = None
    source: Source | None = None
    expected_volume: int | None = None
    tolerance: float = 0.10
    deletion_deadline: datetime | None = None
    scope: str = SCOPE_SELECTION  # SCOPE_LAB: a deletion of the whole lab (no selection)

    def __post_init__(self) -> None:
        _cross_check(self)

    def allows(self, category: str, name: str) -> bool:
        return name in self.fields.get(category, ())

    @property
    def max_volume(self) -> int | None:
        """The most results this instruction covers (expected volume plus tolerance), if bounded."""
        if self.expected_volume is None:
            return None
        return math.floor(self.expected_volume * (1 + self.tolerance) + 1e-9)


def _cross_check(i: Instruction) -> None:
    if i.kind not in KINDS:
        raise _err("kind", f"must be one of {', '.join(KINDS)}")
    if i.scope not in SCOPES:
        raise _err("scope", f"must be one of {', '.join(SCOPES)}")
    if i.scope == SCOPE_LAB:
        if i.kind != "deletion":
            raise _err("scope", "lab (the whole lab) is only for kind deletion")
        if (i.collected_from, i.collected_to, i.patients, i.codes, i.sensitive) != (
            date.min,
            date.max,
            None,
            None,
            SENSITIVE,
        ):
            raise _err("selection", "is not used with scope lab (the whole lab)")
    if i.collected_from > i.collected_to:
        raise _err("selection.collected_from", "is after selection.collected_to")
    for name in ("valid_from", "valid_until", "deletion_deadline"):
        v = getattr(i, name)
        if v is not None and (v.tzinfo is None or v.utcoffset() is None):
            raise _err(name, "must carry a time zone (e.g. ...Z)")
    if i.valid_from >= i.valid_until:
        raise _err("valid_until", "must be after valid_from")
    if i.deletion_deadline is not None and i.deletion_deadline < i.valid_from:
        raise _err("deletion_deadline", "must not be before valid_from")
    if i.kind in NEEDS_DEADLINE and i.deletion_deadline is None:
        raise _err("deletion_deadline", f"is required for kind {i.kind}")
    if i.kind in NEEDS_VOLUME and i.expected_volume is None:
        raise _err("expected_volume", f"is required for kind {i.kind}")
    if i.kind in OUTBOUND and i.destination is None:
        raise _err("destination", f"is required for kind {i.kind}")
    if i.kind in ("deletion", "migration_in") and i.destination is not None:
        raise _err("destination", f"is not used by kind {i.kind}")
    if i.kind == "migration_in" and i.source is None:
        raise _err("source", "is required for kind migration_in")
    if i.kind != "migration_in" and i.source is not None:
        raise _err("source", "is only used by kind migration_in")
    if i.kind != "deletion" and not i.fields:
        raise _err("fields", f"must list at least one field for kind {i.kind}")
    d = i.destination
    if d is not None:
        if d.country not in ISO_COUNTRIES:
            raise _err("destination.country", "must be an ISO 3166-1 alpha-2 code (e.g. FR)")
        if d.country not in EEA and d.transfer_basis is None:
            raise _err(
                "destination.transfer_basis", "is required when the destination is outside the EEA (GDPR Chapter V)"
            )
        if not is_age_recipient(d.recipient_age_key):
            raise _err("destination.recipient_age_key", "must be an age X25519 recipient (age1..., 62 characters)")
    if i.expected_volume is not None and i.expected_volume < 0:
        raise _err("expected_volume", "must be 0 or more")
    if not (math.isfinite(i.tolerance) and 0 <= i.tolerance <= 1):
        raise _err("tolerance", "must be between 0 and 1")


# --- age recipients (bech32, BIP-173) -------------------------------------------------------------


def _polymod(values: Iterable[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= gen[i]
    return chk


def is_age_recipient(value: object) -> bool:
    """True for a well-formed age X25519 recipient: ``age1`` + bech32 of 32 bytes, checksum valid."""
    if not isinstance(value, str) or len(value) != AGE_KEY_LEN or not value.startswith("age1"):
        return False
    if any(c not in _BECH32 for c in value[4:]):
        return False
    data = [_BECH32.index(c) for c in value[4:]]
    hrp = "age"
    if _polymod([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + data) != 1:
        return False
    acc = 0
    for v in data[:-6]:
        acc = acc << 5 | v
    return acc & 0xF == 0  # 52 x 5 bits = 32 bytes + 4 zero padding bits


# --- reading ------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """YAML without aliases, duplicate keys or YAML 1.1 booleans such as ``NO`` (Norway)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _err("document", "YAML aliases are not allowed")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (dict, list)):
                raise _err("document", "keys must be text")
            if key in seen:
                raise _err(_name(key), "appears twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load(data: bytes, fmt: str | None) -> object:
    if not isinstance(data, (bytes, bytearray)):
        raise _err("document", "must be bytes")
    if len(data) > MAX_BYTES:
        raise _err("document", f"is larger than {MAX_BYTES} bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise _err("document", "is not UTF-8") from None
    if fmt is None:
        fmt = "json" if text.lstrip("\ufeff \t\r\n").startswith("{") else "yaml"
    if fmt == "json":

        def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in items:
                if k in out:
                    raise _err(_name(k), "appears twice")
                out[k] = v
            return out

        def constant(_: str) -> None:
            raise _err("document", "NaN and Infinity are not allowed")

        try:
            return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
        except json.JSONDecodeError as e:
            raise _err("document", f"is not valid JSON (line {e.lineno})") from None
    if fmt == "yaml":
        try:
            return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise _err("document", f"is not valid YAML{where}") from None
    raise _err("document", "format must be yaml or json")


class _Obj:
    """A mapping being read: every key must be known and read exactly once."""

    def __init__(self, value: object, path: str, known: Iterable[str]) -> None:
        if not isinstance(value, dict):
            raise _err(path or "document", "must be a mapping")
        for k in value:
            if not isinstance(k, str):
                raise _err(path or "document", "keys must be text")
            if k not in known:
                raise _err(_join(path, _name(k)), "unknown key")
        self.value = value
        self.path = path

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def get(self, key: str, required: bool = False) -> object:
        v = self.value.get(key)
        if v is None and required:
            raise _err(self.at(key), "is required")
        return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _text(v: object, path: str, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(v, str):
        raise _err(path, "must be text")
    if not v.strip():
        raise _err(path, "must not be empty")
    if len(v) > limit:
        raise _err(path, f"must be at most {limit} characters")
    if any(not (c.isprintable() or c == "\n") for c in v):
        raise _err(path, "must not contain control characters")
    return v


def _opt_text(v: object, path: str) -> str | None:
    return None if v is None else _text(v, path)


def _ident(v: object, path: str, rx: re.Pattern[str] = ID_RE) -> str:
    if not isinstance(v, str) or not rx.fullmatch(v):
        raise _err(path, "must be an identifier (1-64 of A-Z a-z 0-9 . _ : -)")
    return v


def _date(v: object, path: str) -> date:
    if isinstance(v, datetime):
        raise _err(path, "must be a date (YYYY-MM-DD), not a time")
    if isinstance(v, date):
        return v
    if isinstance(v, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", v):
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
    raise _err(path, "must be a date (YYYY-MM-DD)")


def _datetime(v: object, path: str) -> datetime:
    if isinstance(v, str) and re.fullmatch(
        r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?", v
    ):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise _err(path, "must be a date and time (YYYY-MM-DDTHH:MM:SSZ)") from None
    if not isinstance(v, datetime):
        raise _err(path, "must be a date and time (YYYY-MM-DDTHH:MM:SSZ)")
    if v.tzinfo is None or v.utcoffset() is None:
        raise _err(path, "must carry a time zone (e.g. ...Z)")
    return v.astimezone(UTC)


def _list(v: object, path: str) -> list[object]:
    if not isinstance(v, list):
        raise _err(path, "must be a list")
    if not v:
        raise _err(path, "must not be empty (leave it out instead)")
    return v


def _fields(v: object, path: str) -> dict[str, tuple[str, ...]]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, "must be a mapping of category to fields")
    out: dict[str, tuple[str, ...]] = {}
    for cat, names in v.items():
        if not isinstance(cat, str) or cat not in FIELDS:
            raise _err(_join(path, _name(cat)), f"unknown category (one of {', '.join(FIELDS)})")
        items = _list(names, _join(path, cat))
        seen: set[str] = set()
        for n, name in enumerate(items):
            if not isinstance(name, str):
                raise _err(f"{path}.{cat}[{n}]", "must be a field name")
            if name not in FIELDS[cat]:
                raise _err(f"{path}.{cat}[{n}]", f"unknown field {_name(name)} of category {cat}")
            if name in seen:
                raise _err(f"{path}.{cat}[{n}]", f"field {name} is listed twice")
            seen.add(name)
        out[cat] = tuple(f for f in FIELDS[cat] if f in seen)
    return {c: out[c] for c in FIELDS if c in out}


def _codes(v: object, path: str) -> tuple[tuple[str, str], ...] | None:
    if v is None:
        return None
    out: list[tuple[str, str]] = []
    for n, item in enumerate(_list(v, path)):
        p = f"{path}[{n}]"
        if isinstance(item, str):
            system, sep, code = item.partition("|")
            if not sep:
                raise _err(p, "must be 'system|code' or [system, code]")
        elif isinstance(item, list) and len(item) == 2:
            system, code = item
        else:
            raise _err(p, "must be 'system|code' or [system, code]")
        pair = (_text(system, p, limit=200), _text(code, p, limit=64))
        if "|" in pair[0] or any(c.isspace() for c in "".join(pair)):
            raise _err(p, "a system or code holds no '|' and no spaces")
        if pair in out:
            raise _err(p, "is listed twice")
        out.append(pair)
    return tuple(out)


def _unique_ids(v: object, path: str) -> tuple[str, ...] | None:
    if v is None:
        return None
    out: list[str] = []
    for n, item in enumerate(_list(v, path)):
        pid = _ident(item, f"{path}[{n}]")
        if pid in out:
            raise _err(f"{path}[{n}]", "is listed twice")
        out.append(pid)
    return tuple(out)


def _sensitive(v: object, path: str) -> tuple[str, ...]:
    if v is None:
        return ()
    seen: set[str] = set()
    for n, item in enumerate(_list(v, path)):
        if not isinstance(item, str) or item not in SENSITIVE:
            raise _err(f"{path}[{n}]", f"must be one of {', '.join(SENSITIVE)}")
        seen.add(item)
    return tuple(s for s in SENSITIVE if s in seen)


def _ed25519_hex(v: object, path: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", v):
        raise _err(path, "must be an Ed25519 public key: 64 hexadecimal characters")
    return v.lower()


def _country(v: object, path: str) -> str:
    if not isinstance(v, str) or v not in ISO_COUNTRIES:
        raise _err(path, "must be an ISO 3166-1 alpha-2 code in capitals (e.g. FR)")
    return v


_TOP = (
    "version",
    "id",
    "tenant",
    "kind",
    "purpose",
    "legal_basis",
    "fields",
    "selection",
    "destination",
    "source",
    "expected_volume",
    "tolerance",
    "deletion_deadline",
    "valid_from",
    "valid_until",
    "scope",
)


def from_record(record: object) -> Instruction:
    """An ``Instruction`` from its record (or from a parsed document); strict, one-line errors."""
    top = _Obj(record, "", _TOP)
    version = top.get("version")
    if version is not None and (type(version) is not int or version != VERSION):
        raise _err("version", f"must be {VERSION}")
    kind = top.get("kind", required=True)
    if not isinstance(kind, str) or kind not in KINDS:
        raise _err("kind", f"must be one of {', '.join(KINDS)}")
    scope = top.get("scope")
    if scope is None:
        scope = SCOPE_SELECTION
    elif scope not in SCOPES:
        raise _err("scope", f"must be one of {', '.join(SCOPES)}")
    elif kind != "deletion":
        raise _err("scope", "is only used by kind deletion")
    if scope == SCOPE_LAB:
        if top.get("selection") is not None:
            raise _err("selection", "is not used with scope lab (the whole lab)")
        whole = {"collected_from": date.min, "collected_to": date.max, "sensitive": list(SENSITIVE)}
        sel = _Obj(whole, "selection", ("collected_from", "collected_to", "sensitive"))
    else:
        sel = _Obj(
            top.get("selection", required=True),
            "selection",
            ("collected_from", "collected_to", "patients", "codes", "sensitive"),
        )
    dest = top.get("destination")
    destination = None
    if dest is not None:
        d = _Obj(dest, "destination", ("name", "country", "transfer_basis", "recipient_age_key", "receipt_key"))
        key = d.get("recipient_age_key", required=True)
        if not is_age_recipient(key):
            raise _err("destination.recipient_age_key", "must be an age X25519 recipient (age1..., 62 characters)")
        destination = Destination(
            name=_text(d.get("name", required=True), d.at("name"), limit=200),
            country=_country(d.get("country", required=True), d.at("country")),
            recipient_age_key=key,  # type: ignore[arg-type]
            transfer_basis=_opt_text(d.get("transfer_basis"), d.at("transfer_basis")),
            receipt_key=_ed25519_hex(d.get("receipt_key"), d.at("receipt_key")),
        )
    src = top.get("source")
    source = None
    if src is not None:
        s = _Obj(src, "source", ("name", "country"))
        country = s.get("country")
        source = Source(
            _text(s.get("name", required=True), s.at("name"), limit=200),
            None if country is None else _country(country, s.at("country")),
        )
    volume = top.get("expected_volume")
    if volume is not None and type(volume) is not int:
        raise _err("expected_volume", "must be a whole number of results")
    tolerance = top.get("tolerance")
    if tolerance is None:
        tolerance = 0.10
    elif type(tolerance) not in (int, float):
        raise _err("tolerance", "must be a number between 0 and 1")
    deadline = top.get("deletion_deadline")
    return Instruction(
        id=_ident(top.get("id", required=True), "id"),
        tenant=_ident(top.get("tenant", required=True), "tenant", TENANT_RE),
        kind=kind,
        purpose=_text(top.get("purpose", required=True), "purpose"),
        legal_basis=_opt_text(top.get("legal_basis"), "legal_basis"),
        fields=_fields(top.get("fields"), "fields"),
        collected_from=_date(sel.get("collected_from", required=True), sel.at("collected_from")),
        collected_to=_date(sel.get("collected_to", required=True), sel.at("collected_to")),
        patients=_unique_ids(sel.get("patients"), sel.at("patients")),
        codes=_codes(sel.get("codes"), sel.at("codes")),
        sensitive=_sensitive(sel.get("sensitive"), sel.at("sensitive")),
        destination=destination,
        source=source,
        expected_volume=volume,
        tolerance=float(tolerance),  # type: ignore[arg-type]
        deletion_deadline=None if deadline is None else _datetime(deadline, "deletion_deadline"),
        valid_from=_datetime(top.get("valid_from", required=True), "valid_from"),
        valid_until=_datetime(top.get("valid_until", required=True), "valid_until"),
        scope=scope,
    )


def parse(data: bytes, *, fmt: str | None = None) -> Instruction:
    """Parse a YAML or JSON instruction (``fmt`` 'yaml' or 'json'; detected when None)."""
    return from_record(_load(data, fmt))


# --- writing ------------------------------------------------------------------------------------


def _ts(v: datetime) -> str:
    return v.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_record(i: Instruction) -> dict[str, Any]:
    """The JSON-safe record that is signed (absent options are left out)."""
    sel: dict[str, Any] = {"collected_from": i.collected_from.isoformat(), "collected_to": i.collected_to.isoformat()}
    if i.patients is not None:
        sel["patients"] = list(i.patients)
    if i.codes is not None:
        sel["codes"] = [[s, c] for s, c in i.codes]
    if i.sensitive:
        sel["sensitive"] = list(i.sensitive)
    rec: dict[str, Any] = {
        "version": VERSION,
        "id": i.id,
        "tenant": i.tenant,
        "kind": i.kind,
        "purpose": i.purpose,
        "fields": {c: list(f) for c, f in i.fields.items()},
        "selection": sel,
        "tolerance": i.tolerance,
        "valid_from": _ts(i.valid_from),
        "valid_until": _ts(i.valid_until),
    }
    if i.scope == SCOPE_LAB:
        del rec["selection"]
        rec["scope"] = SCOPE_LAB
    if i.legal_basis is not None:
        rec["legal_basis"] = i.legal_basis
    if i.destination is not None:
        d = i.destination
        rec["destination"] = {"name": d.name, "country": d.country, "recipient_age_key": d.recipient_age_key}
        if d.transfer_basis is not None:
            rec["destination"]["transfer_basis"] = d.transfer_basis
        if d.receipt_key is not None:
            rec["destination"]["receipt_key"] = d.receipt_key
    if i.source is not None:
        rec["source"] = {"name": i.source.name}
        if i.source.country is not None:
            rec["source"]["country"] = i.source.country
    if i.expected_volume is not None:
        rec["expected_volume"] = i.expected_volume
    if i.deletion_deadline is not None:
        rec["deletion_deadline"] = _ts(i.deletion_deadline)
    return rec


# --- signing ------------------------------------------------------------------------------------


def sign(i: Instruction, signer: Signer) -> dict[str, Any]:
    record = to_record(i)
    return {"instruction": record, "signature": signer.sign(record), "signer_public_key": signer.public_key.hex()}


KeySource = Mapping[str, bytes] | Callable[[str], Mapping[str, bytes]]


@dataclass(frozen=True)
class Verified:
    instruction: Instruction
    signer_id: str
    record: dict[str, Any] = field(repr=False)
    signature: str = field(repr=False)


def verify_signed(doc: object, *, public_keys: KeySource, tenant: str, now: datetime) -> Instruction:
    """The instruction of a signed document, or a one-line refusal naming why (see ``check_signed``)."""
    return check_signed(doc, public_keys=public_keys, tenant=tenant, now=now).instruction


def check_signed(doc: object, *, public_keys: KeySource, tenant: str, now: datetime) -> Verified:
    """Verify a document from ``sign``: shape, signature, signer, tenant, validity period, deadline.

    ``public_keys`` are the lab's current (not revoked) signer keys by signer id, as
    ``labvault.instructions.signers.active_keys`` returns, or a function of the tenant returning them.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if not isinstance(doc, dict) or not set(doc) <= {"instruction", "signature", "signer_public_key"}:
        raise InstructionInvalid("instruction: document: must hold instruction, signature and signer_public_key only")
    record = doc.get("instruction")
    if not isinstance(record, dict):
        raise InstructionInvalid("instruction: document: the instruction is missing")
    signature, key_hex = doc.get("signature"), doc.get("signer_public_key")
    if not signature or not key_hex:
        raise InstructionUnsigned("instruction: the document is not signed")
    if not isinstance(signature, str) or not isinstance(key_hex, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", key_hex):
        raise InstructionInvalid("instruction: signature: malformed signature or signer key")
    key = bytes.fromhex(key_hex)
    if record.get("tenant") != tenant:  # said first, though unverified yet: the precise reason to refuse
        raise WrongTenant("instruction: it is for another lab")
    keys = public_keys(tenant) if callable(public_keys) else public_keys
    signer_id = next((sid for sid, k in keys.items() if bytes(k) == key), None)
    if signer_id is None:
        raise UnknownSigner("instruction: the signer is not a current signer of this lab (unknown or revoked)")
    try:
        verify(record, signature, key)
    except SignatureInvalid:
        raise InstructionSignatureInvalid("instruction: the signature does not match the instruction") from None
    except (TypeError, ValueError):
        raise InstructionInvalid("instruction: document: the instruction is not plain JSON") from None
    instr = from_record(record)
    if instr.tenant != tenant:
        raise WrongTenant("instruction: it is for another lab")
    if now < instr.valid_from:
        raise NotYetValid("instruction: it is not valid yet (valid_from is in the future)")
    if now >= instr.valid_until:
        raise Expired("instruction: it has expired (valid_until has passed)")
    if instr.deletion_deadline is not None and now >= instr.deletion_deadline:
        raise DeadlinePassed("instruction: its deletion deadline has passed")
    return Verified(instr, signer_id, record, signature)


# --- comparing a request with the instruction ---------------------------------------------------


def _day(v: date | datetime | None) -> date | None:
    return v.date() if isinstance(v, datetime) else v


def excess(
    i: Instruction,
    asked_fields: Mapping[str, Iterable[str]],
    collected_from: date | datetime | None,
    collected_to: date | datetime | None,
    patients: Iterable[str] | None = None,
    *,
    codes: Iterable[tuple[str, str]] | None = None,
    sensitive: Iterable[str] = (),
    volume: int | None = None,
) -> list[str]:
    """What a request asks beyond the instruction, one line each; empty when it is covered.

    ``None`` for a period bound, ``patients`` or ``codes`` means "no limit". Lines name fields,
    dates of the period and counts; never a patient, a code or any other value.
    """
    out: list[str] = []
    for cat, names in asked_fields.items():
        for n in names:
            if cat not in FIELDS or n not in FIELDS[cat]:
                out.append(f"field {_name(cat)}.{_name(n)} is unknown")
            elif not i.allows(cat, n):
                out.append(f"field {cat}.{n} is not in the instruction")
    lo, hi = _day(collected_from), _day(collected_to)
    if lo is None or lo < i.collected_from:
        out.append(f"period starts before the instruction's collected_from {i.collected_from.isoformat()}")
    if hi is None or hi > i.collected_to:
        out.append(f"period ends after the instruction's collected_to {i.collected_to.isoformat()}")
    if i.patients is not None:
        if patients is None:
            out.append(f"all patients asked; the instruction names {len(i.patients)}")
        else:
            extra = len(set(patients) - set(i.patients))
            if extra:
                out.append(f"{extra} patient(s) not named in the instruction")
    if i.codes is not None:
        if codes is None:
            out.append(f"all codes asked; the instruction names {len(i.codes)}")
        else:
            extra = len({tuple(c) for c in codes} - set(i.codes))
            if extra:
                out.append(f"{extra} code(s) not named in the instruction")
    for s in sorted(set(sensitive)):
        if s not in i.sensitive:
            out.append(f"sensitive category {_name(s)} is not in the instruction")
    if volume is not None and i.max_volume is not None and volume > i.max_volume:
        out.append(
            f"{volume} results exceed the expected volume {i.expected_volume} "
            f"(+{i.tolerance:.0%} allows {i.max_volume})"
        )
    return out


# --- template -----------------------------------------------------------------------------------


def template(kind: str, tenant: str) -> str:
    """A commented YAML instruction for ``kind``; the lab fills every ``null`` it needs, then signs it."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if not TENANT_RE.fullmatch(tenant):
        raise InvalidInput("tenant must be a lab identifier")
    lines = [
        f"# Labvault instruction ({kind}) from lab {tenant} to its processor (GDPR Art. 28(3)(a)).",
        "# Fill every null that applies, sign with 'labvault instruction sign', send the signed file.",
        "# Times carry a time zone, e.g. 2025-01-31T00:00:00Z. Unknown keys are refused.",
        "version: 1",
        "id: null                  # your reference: 1-64 of A-Z a-z 0-9 . _ : -",
        f"tenant: {tenant}",
        f"kind: {kind}",
        "purpose: null             # why, in at most 500 characters",
        "legal_basis: null         # optional",
    ]
    if kind == "deletion":
        lines += [
            "# fields: not used. scope lab: the whole lab is deleted (every record, every package, then its",
            "# keys: 'labvault tenant end --delete', 'labvault tenant shred'); no selection then.",
            "# scope selection: what the selection below names (uncomment it).",
            "scope: lab",
        ]
    else:
        lines += ["fields:                   # only what is listed is included; remove what is not needed"]
        for cat, names in FIELDS.items():
            if cat == FREE_TEXT:
                lines += [
                    "  # free text may hold anything: uncomment only if truly needed",
                    f"  # {cat}: [{', '.join(names)}]",
                ]
            else:
                lines += [f"  {cat}: [{', '.join(names)}]"]
    selection = [
        "selection:",
        "  collected_from: null    # YYYY-MM-DD, specimens collected from this day",
        "  collected_to: null      # YYYY-MM-DD, up to and including this day",
        "  # patients: [patient-id, ...]        # optional: only these patients",
        "  # codes: ['http://loinc.org|718-7']  # optional: only these tests",
        f"  # sensitive: [{', '.join(SENSITIVE)}]  # results in these categories are left out unless listed",
    ]
    lines += ["# " + x for x in selection] if kind == "deletion" else selection
    if kind in (*OUTBOUND, "support_access"):
        opt = "  # optional for support_access" if kind == "support_access" else ""
        lines += [
            f"destination:{opt}",
            "  name: null              # who receives the data",
            "  country: null           # ISO 3166-1 alpha-2, e.g. FR",
            "  transfer_basis: null    # required outside the EEA: adequacy decision, SCCs, ...",
            "  recipient_age_key: null # the recipient's age public key: age1...",
            "  # receipt_key: null     # optional: the recipient's Ed25519 public key (hex) signing its receipt",
        ]
    if kind == "migration_in":
        lines += [
            "source:",
            "  name: null              # where the data comes from",
            "  country: null           # optional",
        ]
    if kind in NEEDS_VOLUME:
        lines += [
            "expected_volume: null     # number of results expected",
            "tolerance: 0.10           # allowed excess, 0..1",
        ]
    deadline = "null" if kind in NEEDS_DEADLINE else "null  # optional"
    what = (
        "by when the deletion is done (afterwards this instruction is refused)"
        if kind == "deletion"
        else "when every copy made under this instruction is deleted"
    )
    lines += [
        f"deletion_deadline: {deadline}   # {what}",
        "valid_from: null",
        "valid_until: null",
    ]
    return "\n".join(lines) + "\n"
