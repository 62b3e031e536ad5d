"""HL7 v2 lab messages out: domain objects to one ORU^R01 (bytes), the inverse of ``hl7v2.to_domain``.

``oru_r01(identity, requests, specimens, results, prescribers, sending_facility=..., control_id=...)``
writes one ORU^R01 message: segments ended by CR, UTF-8 bytes, MSH-18 ``UNICODE UTF-8``, encoding
characters ``^~\\&``, trailing empty fields left out. ``hl7v2.to_domain(hl7v2.parse(out))`` gives
back the same values for every field the reader maps (ids differ: the reader derives its own, see
``labvault.crypto.derive``). No personal value ever appears in an exception message.

Where the values go
-------------------
- MSH: MSH-3 ``LABVAULT``, MSH-4 sending facility, MSH-7 ``when`` (default: now, with the local
  offset), MSH-9 ``ORU^R01^ORU_R01`` (``ORU^R01`` in v2.3), MSH-10 control id, MSH-11 ``P``,
  MSH-12 version, MSH-17 ``FRA``, MSH-18 ``UNICODE UTF-8``.
- PID-3: the INS only for a qualified identity (RNIV), ``nir^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS``
  (``-NIA`` and OID .4.9 for an NIA; the test OID .4.10 is accepted too); then each local identifier
  (IPP) ``value^^^authority^PI`` (authority ``&oid&ISO`` for a ``urn:oid:`` system, the namespace of
  ``urn:hl7v2:assigner:``); with neither, ``patient_id^^^LABVAULT^PI``. PID-5: with a birth name or
  a given name used, ``birth_name^first given^other given names^^^^L`` then
  ``family_name^used given^^^^^D``; else one ``family_name^first given^other given names^^^^D``.
  PID-7 birth date, PID-8 sex.
  PID-11: ``address^^^^^^H`` (the whole address in XAD-1), then ``^^^^^^BDL^^birthplace_code`` (the
  French INS convention for the INSEE code of the birthplace). PID-13: ``phone^PRN^PH``, then
  ``^NET^Internet^email`` (after an empty first repetition when there is no phone). PID-32: the
  French PAM identity reliability, ``PROV``, ``RECUP``, ``VALI`` or ``QUAL``.
- Per request: ORC (ORC-1 ``RE``, ORC-3 accession, ORC-12 prescriber) then OBR (OBR-3 accession,
  OBR-4 a fixed local service code, OBR-7 ``requested_at``, OBR-14 the first specimen's reception,
  OBR-16 prescriber, OBR-22 ``reported_at``, OBR-25 the request's status: ``Request.status``, else
  from its results, as ``fhir_out.request_status``: I, A (P with a preliminary result), F, C, X).
  The prescriber is an XCN
  ``rpps^family^given^^^^^^ASIP-SANTE-PS&1.2.250.1.71.4.2.1&ISO^L^^^RPPS``.
- Then the OBX of the results on the request's first specimen (or on none), each followed by one
  NTE for its comment; then SPM for the first specimen; then for each further specimen its SPM
  and its OBX/NTE. SPM-4 ``type^label^HL70487``, SPM-17 collection, SPM-18 reception.
- OBX-2 ``NM`` (number), ``SN`` (a number with its comparator: ``<^0.5``), ``ST``/``TX``/``FT``
  (text: short, long, multi-line), OBX-3 ``code^label^LN``, OBX-5 value (the number as written,
  ``Result.value_repr``: ``105600``, ``12.50``; else the stored float), OBX-6 ``unit^^UCUM`` only
  when ``unit_system`` is UCUM (``unit^^X`` for the sender's ``urn:hl7v2:units:X``, else the unit
  alone), OBX-7 reference range, OBX-8 flag, OBX-11 ``F``/``C``/``P``/``I`` (pending)/``X``
  (cancelled)/``W`` (entered in error), OBX-16 ``^validated_by`` (the name whole in XCN-2), OBX-19 ``validated_at``
  (OBX-14 in versions before 2.5, which have no OBX-19).
- Text is escaped: ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``, a line break as ``\\.br\\``, other control
  characters (CR included) as ``\\Xhh\\``; a space or tab ending a value as ``\\X20\\``/``\\X09\\``
  (the reader strips whitespace at the end of a message). Numbers never use an exponent (the
  reader's NM syntax has none). Times are ``YYYYMMDDHHMMSS[.SSSS][+/-ZZZZ]``.

What cannot come back identical (the writer writes the reader's normal form)
----------------------------------------------------------------------------
- Empty optional strings come back ``None`` (birth_name, address, phone, accession, unit, flag,
  value_text, ref_text, validated_by, comment); an empty specimen type comes back ``"UNK"``.
- ``sex`` is upper-cased; anything but ``M``/``F`` is written ``U``.
- Datetimes keep 100 microseconds (HL7 TS has 4 decimal places of a second): the rest is
  truncated. Naive stays naive; an aware datetime keeps its offset when it is whole minutes of at
  most 14:59 (the reader's limit), otherwise it is written in UTC (same instant, other offset).
- OBX-7 is one string and the reader takes numbers only from a bare range ``lo-hi`` or a bare
  bound ``<x``/``<=x``/``>x``/``>=x`` (and keeps the bound's text as ``ref_text``). So:
  both bounds: ``lo-hi``, and a ``ref_text`` beside them is dropped; one bound: ``ref_text`` as
  is when it is that bare bound, else ``<=hi`` or ``>=lo``, which becomes the ``ref_text``;
  text only: written stripped, and the reader takes numbers out of it when it is a bare range or
  bound. Numbers are kept rather than text when both cannot be.
- ``value_num`` and ``value_text`` both set: the number is written (NM), the text dropped. NaN
  and infinities are refused (``ValueError``).
- ``code_system``: LOINC is ``LN``; ``urn:hl7v2:codesystem:X`` is written ``unquote(X)`` and comes
  back as ``urn:hl7v2:codesystem:`` + ``quote(unquote(X), safe="")`` (``local`` when empty, LOINC
  when ``LN`` in any case); any other system is written as it is and comes back under
  ``urn:hl7v2:codesystem:`` percent-quoted. ``sensitivity`` is derived again by the reader.
- Order: specimens come back grouped by request, results grouped by request and then by specimen
  (the first specimen's and the specimen-less ones first, then each further specimen's). A result
  without a specimen comes back on its request's first specimen.
- A message without any specimen: the reader makes one per request from the OBR (type ``UNK``,
  collected at ``requested_at``, no reception time) and links the request's results to it.
- The reader calls the OBR-7 time (HL7: the observation/collection time) ``requested_at``, so
  OBR-7 carries ``requested_at``; the collection time is in SPM-17.
- Prescribers: a prescriber with neither RPPS nor family name is not read (the request comes
  back without one); two with the same RPPS (or, without RPPS, the same names) come back as one,
  with the names of the first.
- Versions before 2.5 have no SPM segment and no PID-32: they are written anyway (the reader
  reads them), with OBR-15 set to the first specimen's type for older receivers.
- Messages above the reader's limits (segment length, number of segments) are not checked here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import cast
from urllib.parse import unquote

from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, OID_RPPS
from labvault.domain.models import (
    LOINC,
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.interop.fhir_out import request_status, written
from labvault.interop.hl7v2 import SUPPORTED_VERSIONS

__all__ = ["oru_r01"]

_INS_AUTHORITY = {
    OID_NIR: f"ASIP-SANTE-INS-NIR&{OID_NIR}&ISO",
    OID_NIA: f"ASIP-SANTE-INS-NIA&{OID_NIA}&ISO",
    OID_INS_TEST: f"ASIP-SANTE-INS-NIR-TEST&{OID_INS_TEST}&ISO",
}
_RPPS_AUTHORITY = f"ASIP-SANTE-PS&{OID_RPPS}&ISO"
_STATUS = {
    ResultStatus.FINAL: "F",
    ResultStatus.CORRECTED: "C",
    ResultStatus.PRELIMINARY: "P",
    ResultStatus.PENDING: "I",
    ResultStatus.CANCELLED: "X",
    ResultStatus.ENTERED_IN_ERROR: "W",
}
# OBR-25 (table 0123) of a request's status; a partial request with a preliminary result says P.
_ORDER_STATUS = {
    RequestStatus.REGISTERED: "I",
    RequestStatus.PARTIAL: "A",
    RequestStatus.FINAL: "F",
    RequestStatus.CORRECTED: "C",
    RequestStatus.AMENDED: "C",
    RequestStatus.CANCELLED: "X",
}
# PID-32 (the French PAM profile's identity reliability) of each RNIV status.
_RELIABILITY = {
    IdentityStatus.PROVISIONAL: "PROV",
    IdentityStatus.RECOVERED: "RECUP",
    IdentityStatus.VALIDATED: "VALI",
    IdentityStatus.QUALIFIED: "QUAL",
}
_UCUM = "http://unitsofmeasure.org"
_UNITS_URN = "urn:hl7v2:units:"
_ASSIGNER_URN = "urn:hl7v2:assigner:"
_SPECIMEN_LABELS = {
    "BLD": "Whole blood",
    "SER": "Serum",
    "PLAS": "Plasma",
    "UR": "Urine",
    "SAL": "Saliva",
    "CSF": "Cerebral spinal fluid",
    "STL": "Stool",
    "SPT": "Sputum",
}
_SERVICE = "LAB^Analyses de biologie medicale^L"
_CODESYSTEM_URN = "urn:hl7v2:codesystem:"
_MODERN = {"2.5", "2.5.1"}
_BARE_BOUND = re.compile(r"[ \t]*(<=|>=|<|>)[ \t]*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))[ \t]*\Z")

# Every character that cannot stand as itself in a field, with its HL7 escape.
_ESCAPES: dict[int, str] = {c: f"\\X{c:02X}\\" for c in range(0x20) if c != 0x09}
_ESCAPES.update(
    {
        ord("\\"): "\\E\\",
        ord("|"): "\\F\\",
        ord("^"): "\\S\\",
        ord("&"): "\\T\\",
        ord("~"): "\\R\\",
        ord("\n"): "\\.br\\",
        0x7F: "\\X7F\\",
    }
)


def _e(s: str) -> str:
    """HL7-escape a text value (encoding characters ``|^~\\&``)."""
    if s.isprintable() and not ("\\" in s or "|" in s or "^" in s or "&" in s or "~" in s):
        if s and s[-1] == " ":
            return s[:-1] + "\\X20\\"
        return s
    s = s.translate(_ESCAPES)
    if s[-1] in " \t":
        s = s[:-1] + ("\\X20\\" if s[-1] == " " else "\\X09\\")
    return s


def _ts(d: datetime) -> str:
    """HL7 TS with seconds, 4 decimal places when there are any, and the offset of an aware time."""
    off = d.utcoffset()
    if off is not None:
        secs = off.days * 86400 + off.seconds
        if off.microseconds or secs % 60 or abs(secs) > 14 * 3600 + 59 * 60:
            d = d.astimezone(UTC)
            secs = 0
    s = f"{d.year:04d}{d.month:02d}{d.day:02d}{d.hour:02d}{d.minute:02d}{d.second:02d}"
    us = d.microsecond // 100
    if us:
        s = f"{s}.{us:04d}"
    if off is not None:
        sign = "-" if secs < 0 else "+"
        m = abs(secs) // 60
        s = f"{s}{sign}{m // 60:02d}{m % 60:02d}"
    return s


def _ts_opt(d: datetime | None) -> str:
    return "" if d is None else _ts(d)


def _num(x: float, what: str, *, keep_point: bool = False) -> str:
    """A finite number as the reader's NM syntax: no exponent, shortest digits that read back equal
    (``.0`` dropped unless ``keep_point``)."""
    x = float(x)
    r = repr(x)
    if "e" in r or "n" in r:  # exponent, or inf/nan
        if not math.isfinite(x):
            raise ValueError(f"{what}: not a finite number")
        r = format(Decimal(r), "f")
    if r.endswith(".0") and not keep_point:
        r = r[:-2]
    return r


def _bound(text: str) -> tuple[str, float] | None:
    """('<' or '>', number) when ``text`` is a bare bound like ``< 5`` or ``>=10``."""
    m = _BARE_BOUND.match(text)
    return (m.group(1)[0], float(m.group(2))) if m else None


def _ref(low: float | None, high: float | None, text: str | None, what: str) -> str:
    """OBX-7 for a reference range (see the module docstring for what reads back)."""
    if low is not None and high is not None:
        return f"{_num(low, what)}-{_num(high, what)}"
    if low is None and high is None:
        return _e(text.strip()) if text else ""
    if text:
        b = _bound(text)
        if b is not None and (
            (b[0] == "<" and low is None and b[1] == high) or (b[0] == ">" and high is None and b[1] == low)
        ):
            return _e(text.strip())
    if low is not None:
        return f">={_num(low, what)}"
    return f"<={_num(high, what)}" if high is not None else ""


def _code_system(system: str, cache: dict[str, str]) -> str:
    name = cache.get(system)
    if name is None:
        if system == LOINC:
            name = "LN"
        elif system.startswith(_CODESYSTEM_URN):
            name = _e(unquote(system[len(_CODESYSTEM_URN) :]))
        else:
            name = _e(system)
        cache[system] = name
    return name


def _xcn(p: Prescriber) -> str:
    auth = f"^^^^^^{_RPPS_AUTHORITY}^L^^^RPPS" if p.rpps else ""
    return f"{_e(p.rpps)}^{_e(p.family_name)}^{_e(p.given_name)}{auth}"


def _authority(system: str) -> str:
    """HD of a local identifier's system: ``&oid&ISO`` for ``urn:oid:``, the namespace of
    ``urn:hl7v2:assigner:``, else the system itself."""
    if system.startswith("urn:oid:"):
        return f"&{_e(system[8:])}&ISO"
    if system.startswith(_ASSIGNER_URN):
        return _e(unquote(system[len(_ASSIGNER_URN) :]))
    return _e(system)


def _pid3(ident: Identity) -> str:
    """PID-3: the INS of a qualified identity (RNIV: only a qualified INS goes out), then the local
    identifiers (IPP, ``PI``) with their assigning authorities; with neither, the patient id as
    LABVAULT's own."""
    reps = []
    if ident.qualified:
        authority = _INS_AUTHORITY.get(ident.ins_oid)
        if authority is None:
            raise ValueError("identity: ins_oid is not the INS-NIR, INS-NIA or test INS OID")
        reps.append(f"{_e(cast(str, ident.nir))}^^^{authority}^INS")
    reps.extend(f"{_e(value)}^^^{_authority(system)}^PI" for system, value in ident.local_ids if value)
    if not reps:
        if not ident.patient_id:
            raise ValueError("identity: no qualified INS, local identifier or patient id")
        reps.append(f"{_e(ident.patient_id)}^^^LABVAULT^PI")
    return "~".join(reps)


def _pid(ident: Identity) -> str:
    if not ident.family_name:
        raise ValueError("identity: family name is empty")
    given = ident.given_names.split(" ")
    if all(given) and (not ident.first_given_name or ident.first_given_name == given[0]):
        first, others = given[0], _e(" ".join(given[1:]))
    else:  # names that would not join back the same (doubled or edge spaces): whole in XPN-2
        first, others = ident.given_names, ""
    if ident.birth_name or ident.used_given_name:
        # L: the birth name, the first given name at birth (XPN-2) and the others in order (XPN-3);
        # D: the name used with the given name used.
        names = (
            f"{_e(ident.strict_birth_name)}^{_e(first)}^{others}^^^^L"
            f"~{_e(ident.family_name)}^{_e(ident.used_given_name or ident.first_given)}^^^^^D"
        )
    else:  # one name: used and at birth
        names = f"{_e(ident.family_name)}^{_e(first)}^{others}^^^^D"
    bd = ident.birth_date
    sex = ident.sex.upper() if ident.sex else "U"
    if sex not in ("M", "F"):
        sex = "U"
    addr = f"{_e(ident.address)}^^^^^^H" if ident.address else ""
    if ident.birthplace_code:
        bdl = f"^^^^^^BDL^^{_e(ident.birthplace_code)}"
        addr = f"{addr}~{bdl}" if addr else bdl
    tel = f"{_e(ident.phone)}^PRN^PH" if ident.phone else ""
    if ident.email:
        tel = f"{tel}~^NET^Internet^{_e(ident.email)}"
    reliability = _RELIABILITY.get(ident.identity_status, "PROV")
    return (
        f"PID|1||{_pid3(ident)}||{names}||{bd.year:04d}{bd.month:02d}{bd.day:02d}"
        f"|{sex}|||{addr}||{tel}|||||||||||||||||||{reliability}"
    )


def _value(r: Result, what: str) -> tuple[str, str]:
    """OBX-2 and OBX-5: a number as written (``105600``, ``12.50``), with its comparator as SN
    (``<^0.5``); else the stored float; else text."""
    text = written(r.value_repr)
    if text is None and r.value_num is not None:
        text = _num(r.value_num, what, keep_point=True)  # a row without the text: ``16.0``, not guessed ``16``
    if text is not None:
        if r.comparator in ("<", "<=", ">=", ">"):
            return "SN", f"{_e(r.comparator)}^{text}"
        return "NM", text
    if r.value_text:
        t = r.value_text
        return ("FT" if ("\n" in t or "\r" in t) else "ST" if len(t) < 200 else "TX"), _e(t)
    return "", ""


def _units(r: Result) -> str:
    """OBX-6: ``unit^^UCUM`` only when the unit is UCUM; the sender's own system's name when known;
    else the unit alone."""
    if not r.unit:
        return ""
    system = r.unit_system
    if system == _UCUM:
        return f"{_e(r.unit)}^^UCUM"
    if system and system.startswith(_UNITS_URN):
        return f"{_e(r.unit)}^^{_e(unquote(system[len(_UNITS_URN) :]))}"
    return _e(r.unit)


def _obx(n: int, r: Result, modern: bool, systems: dict[str, str], what: str) -> str:
    if not r.code:
        raise ValueError(f"{what}: code is empty")
    vtype, value = _value(r, what)
    status = _STATUS.get(r.status)
    if status is None:
        raise ValueError(f"{what}: unknown result status")
    unit = _units(r)
    if r.ref_low is None and r.ref_high is None and not r.ref_text:
        ref = ""
    else:
        ref = _ref(r.ref_low, r.ref_high, r.ref_text, what)
    observer = f"^{_e(r.validated_by)}" if r.validated_by else ""
    at = _ts_opt(r.validated_at)
    tail = f"|||{at}||{observer}|||" if not modern else f"|||||{observer}|||{at}"
    seg = (
        f"OBX|{n}|{vtype}|{_e(r.code)}^{_e(r.label)}^{_code_system(r.code_system, systems)}||{value}"
        f"|{unit}|{ref}|{_e(r.flag) if r.flag else ''}|||{status}{tail}"
    ).rstrip("|")
    if r.comment:
        return f"{seg}\rNTE|1|L|{_e(r.comment)}"
    return seg


def oru_r01(
    identity: Identity,
    requests: Sequence[Request],
    specimens: Sequence[Specimen],
    results: Sequence[Result],
    prescribers: Mapping[str, Prescriber],
    *,
    sending_facility: str,
    control_id: str,
    when: datetime | None = None,
    version: str = "2.5.1",
) -> bytes:
    """One ORU^R01 message for one patient's requests, their specimens and results.

    ``prescribers`` maps ``Request.prescriber_id`` to the prescriber. Specimens and results are
    attached to their request by ``request_id``; every one must name a request of ``requests``.
    Raises ``ValueError`` (never naming a personal value) for what the reader would refuse: no
    request, an empty control id, INS, family name or result code, an INS OID that is not one,
    an unknown prescriber id, a non-finite number, text that is not encodable as UTF-8.
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError("version must be one of 2.3, 2.3.1, 2.4, 2.5, 2.5.1")
    if not control_id:
        raise ValueError("control id is empty")
    if not requests:
        raise ValueError("at least one request is needed (the reader refuses a message without OBR)")
    modern = version in _MODERN
    stamp = _ts(when if when is not None else datetime.now(UTC).astimezone())
    mtype = "ORU^R01" if version == "2.3" else "ORU^R01^ORU_R01"
    segs = [
        f"MSH|^~\\&|LABVAULT|{_e(sending_facility)}|||{stamp}||{mtype}|{_e(control_id)}|P|{version}"
        "|||||FRA|UNICODE UTF-8",
        _pid(identity),
    ]

    groups: dict[str, tuple[list[Specimen], list[Result]]] = {}
    for req in requests:
        if req.request_id in groups:
            raise ValueError("two requests share one request_id")
        groups[req.request_id] = ([], [])
    for i, sp in enumerate(specimens, start=1):
        g = groups.get(sp.request_id)
        if g is None:
            raise ValueError(f"specimen {i}: its request_id is not among the requests")
        g[0].append(sp)
    for i, res in enumerate(results, start=1):
        g = groups.get(res.request_id)
        if g is None:
            raise ValueError(f"result {i}: its request_id is not among the requests")
        g[1].append(res)

    xcns: dict[str, str] = {}
    systems: dict[str, str] = {}
    for k, req in enumerate(requests, start=1):
        specs, ress = groups[req.request_id]
        xcn = ""
        if req.prescriber_id is not None:
            xcn = xcns.get(req.prescriber_id, "")
            if not xcn:
                p = prescribers.get(req.prescriber_id)
                if p is None:
                    raise ValueError(f"request {k}: its prescriber_id is not among the prescribers")
                xcn = xcns[req.prescriber_id] = _xcn(p)
        acc = _e(req.accession) if req.accession else ""
        order_status = request_status(req, [r.status for r in ress])
        overall = _ORDER_STATUS[order_status]
        if order_status is RequestStatus.PARTIAL and any(r.status == ResultStatus.PRELIMINARY for r in ress):
            overall = "P"
        first = specs[0] if specs else None
        received = _ts_opt(first.received_at) if first is not None else ""
        source = _e(first.type or "UNK") if first is not None and not modern else ""
        segs.append(f"ORC|RE||{acc}|||||||||{xcn}".rstrip("|"))
        segs.append(
            f"OBR|{k}||{acc}|{_SERVICE}|||{_ts(req.requested_at)}|||||||{received}|{source}|{xcn}"
            f"||||||{_ts_opt(req.reported_at)}|||{overall}".rstrip("|")
        )

        # results of the first specimen (or of none) before any SPM; each further specimen's after its SPM
        later: dict[str, list[Result]] = {sp.specimen_id: [] for sp in specs[1:]}
        n = 0
        for res in ress:
            bucket = later.get(res.specimen_id) if res.specimen_id is not None else None
            if bucket is not None:
                bucket.append(res)
            else:
                n += 1
                segs.append(_obx(n, res, modern, systems, f"request {k}, result {n}"))
        for j, sp in enumerate(specs, start=1):
            typ = _e(sp.type) if sp.type else "UNK"
            segs.append(
                f"SPM|{j}|||{typ}^{_SPECIMEN_LABELS.get(sp.type, '')}^HL70487|||||||||||||"
                f"{_ts(sp.collected_at)}|{_ts_opt(sp.received_at)}".rstrip("|")
            )
            if j > 1:
                for res in later[sp.specimen_id]:
                    n += 1
                    segs.append(_obx(n, res, modern, systems, f"request {k}, result {n}"))
    segs.append("")
    try:
        return "\r".join(segs).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not encodable as UTF-8 (a lone surrogate)") from None
