"""FHIR R4 writer in Labvault's own lab profile: domain objects to plain dicts and ndjson files.

No pydantic at run time, no network. Each function returns a new plain ``dict`` (the resource as FHIR
JSON); ``NdjsonWriter`` streams resources to one ndjson file per resource type, in constant memory,
and has a fast path for Observations (``write_observation``) that writes the very bytes
``dumps(observation(...))`` would, several times faster.

The profile (read back by ``labvault.interop.fhir`` without loss):

- Patient: the INS as ``identifier`` (system ``urn:oid:`` + ``ins_oid``, FR Core identifier type)
  only when the identity is qualified (RNIV); every local identifier (IPP) as an ``identifier`` of
  type ``PI`` with its system (a bare OID as ``urn:oid:``); FR Core ``fr-core-identity-reliability``
  extension with the status (``PROV``, ``RECUP``, ``VALI``, ``QUAL``). Names: the name used as use
  ``usual`` (with the given name used when known, else every given name), and, when there is a
  birth name or a given name used, the birth name (``family_name`` when none) with every given
  name at birth in order as use ``official``. Birth place as ``patient-birthPlace`` with the FR
  Core INSEE-code extension, the address as ``address.text``; ``meta.source`` names the lab
  (``urn:labvault:tenant:<tenant id>``).
- Practitioner: RPPS as identifier ``urn:oid:1.2.250.1.71.4.2.1`` with value ``8`` + RPPS (IDNPS); an
  ``rpps`` that is not 11 digits is written as it is and not read back as an RPPS.
- ServiceRequest: ``authoredOn`` (requested_at), accession as identifier of type ``ACSN``, requester;
  status from the request's (``request_status``): active (registered, partial), completed (final,
  corrected, amended), revoked (cancelled).
- Specimen: type in HL7 table 0487, ``collection.collectedDateTime``, ``receivedTime``, ``request``.
- Observation: ``status`` (a pending result is ``registered``), ``code`` (system, code, display =
  label), ``valueQuantity`` or ``valueString``. The quantity's value is the number as the sender
  wrote it (``Result.value_repr``: ``105600``, ``12.50``, written verbatim by ``dumps``; a row
  without it gives its stored float, ``16.0``), its ``comparator`` (``<0.5``), its unit with
  ``system`` and ``code`` only when ``unit_system`` is known (UCUM only for a UCUM unit, else the
  sender's own), else the unit alone; ``referenceRange``, ``interpretation`` (v3
  ObservationInterpretation = flag), ``issued`` (validated_at), ``performer.display``
  (validated_by), ``note`` (comment), ``basedOn``,
  ``specimen``, ``subject``. A text next to a numeric value goes to the ``result-value-text`` extension.
- DiagnosticReport (one per request, id = request id): ``basedOn``, ``issued`` (reported_at),
  ``result``; status the request's (``Request.status``, else from its results' statuses: a
  request with only pending results is ``registered``, never ``final``).

Serialise with ``dumps`` (or ``NdjsonWriter``): a value as written may be a ``Decimal``, which the
standard library's ``json`` does not write.

Datetimes are written with their own offset. A naive one (lab local time) is written with the offset
of Europe/Paris at that wall time, and its element gets the ``unzoned-datetime`` extension so that the
reader gives a naive datetime back. Empty strings are written as absent (FHIR has none).

Ids: a resource id is the domain id, or ``id_map(resource_type, domain_id)`` when given; it must be a
FHIR id (1 to 64 of ``A-Za-z0-9-.``), else ``ValueError``. ``ValueError`` is also raised for a value
FHIR cannot carry (a code with leading or doubled whitespace, a code system with spaces, a non-finite
number): the writer never emits invalid JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import IO, Any
from zoneinfo import ZoneInfo

from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, OID_RPPS
from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.interop.fhir import (
    CS_FR_IDENTITY_STATUS,
    CS_FR_V2_0203,
    CS_INSEE_COMMUNE,
    CS_INTERPRETATION,
    CS_OBS_CATEGORY,
    CS_V2_0074,
    CS_V2_0203,
    CS_V2_0487,
    EXT_BIRTH_PLACE,
    EXT_FR_IDENTITY_RELIABILITY,
    EXT_FR_INSEE_CODE,
    EXT_UNZONED,
    EXT_VALUE_TEXT,
    UCUM,  # noqa: F401 - re-exported: the unit system the writer codes UCUM units with
)

IdMap = Callable[[str, str], str]

LAB_TIME = ZoneInfo("Europe/Paris")  # what a naive datetime means (as in the API)
TENANT_SOURCE = "urn:labvault:tenant:"
LOINC_LAB_REPORT = ("http://loinc.org", "11502-2", "Laboratory report")
SNOMED_LAB_PROCEDURE = ("http://snomed.info/sct", "108252007", "Laboratory procedure")

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")
_CODE = re.compile(r"[^\s]+( [^\s]+)*\Z")
_URI = re.compile(r"\S+\Z")
_RPPS = re.compile(r"\d{11}\Z")
_INS_TYPE = {OID_NIR: "INS-NIR", OID_NIA: "INS-NIA", OID_INS_TEST: "INS-NIR-TEST"}
_GENDER = {"M": "male", "F": "female"}
_MAX_OFFSET = timedelta(hours=14)

_quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) uses for strings
_float = float.__repr__  # what json.dumps uses for finite floats
_IDENTITY_STATUS = {
    IdentityStatus.PROVISIONAL: "PROV",
    IdentityStatus.RECOVERED: "RECUP",
    IdentityStatus.VALIDATED: "VALI",
    IdentityStatus.QUALIFIED: "QUAL",
}
# Observation.status of each result status (a pending result is FHIR "registered").
OBSERVATION_STATUS = {s: ("registered" if s is ResultStatus.PENDING else s.value) for s in ResultStatus}
# ServiceRequest.status of each request status.
SERVICE_REQUEST_STATUS = {
    RequestStatus.REGISTERED: "active",
    RequestStatus.PARTIAL: "active",
    RequestStatus.FINAL: "completed",
    RequestStatus.CORRECTED: "completed",
    RequestStatus.AMENDED: "completed",
    RequestStatus.CANCELLED: "revoked",
}
_COMPARATORS = ("<", "<=", ">=", ">")

# A number written as it was received: a Decimal in the resource dicts, written verbatim by ``dumps``
# (the standard library's encoder cannot write a Decimal, nor a float with its trailing zeros).
_NUMBER_MARK = "\x00number:" + os.urandom(6).hex() + ":"
_NUMBER_MARK_JSON = json.dumps(_NUMBER_MARK)[1:-1]
_NUMBER_MARKED = re.compile('"' + re.escape(_NUMBER_MARK_JSON) + r'([-+.0-9eE]+)"')


def _decimal_default(o: object) -> str:
    if isinstance(o, Decimal):
        if not o.is_finite():
            raise ValueError("a number is not finite")
        return _NUMBER_MARK + str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_decimal_default).encode


def dumps(resource: Any) -> str:
    """A resource as compact JSON text; a ``Decimal`` (a value as written: ``12.50``) is written as
    the JSON number it is, digits kept."""
    text = _encode(resource)
    if _NUMBER_MARK_JSON in text:
        text = _NUMBER_MARKED.sub(r"\1", text)
    return text


_dumps = dumps
_WRITTEN = re.compile(r"[ \t]*([+-]?)([0-9]*)(?:[.,]([0-9]*))?[ \t]*\Z")
_WRITTEN_CACHE: dict[str, str | None] = {}


def written(value_repr: str | None) -> str | None:
    """The number as the sender wrote it (``Result.value_repr``) in JSON number syntax, digits kept
    (``105600``, ``12.50``; ``+5`` -> ``5``, ``.5`` -> ``0.5``, ``007`` -> ``7``, a decimal comma a
    point); None when there is none or it is not a plain decimal number."""
    if not value_repr:
        return None
    text = _WRITTEN_CACHE.get(value_repr, "")
    if text != "":
        return text
    m = _WRITTEN.match(value_repr)
    out: str | None = None
    if m is not None and (m.group(2) or m.group(3)):
        sign, whole, frac = m.groups()
        out = ("-" if sign == "-" else "") + (whole.lstrip("0") or "0") + ("." + frac if frac else "")
    if len(_WRITTEN_CACHE) < 65536:
        _WRITTEN_CACHE[value_repr] = out
    return out


def number_text(value_repr: str | None, value: float | None, what: str = "Result value") -> str | None:
    """The text of a result's number: as written when the row keeps it, else the stored float as
    Python writes it (rows stored before the value as written was kept: ``16.0`` is not guessed to
    have been ``16``). ``ValueError`` for a non-finite float."""
    text = written(value_repr)
    if text is not None:
        return text
    if value is None:
        return None
    if value - value != 0:
        raise ValueError(f"{what} is not a finite number")
    return _float(float(value))


def _json_number(text: str) -> int | float | Decimal:
    """A number text as the JSON value that writes it back the same: int, float, or Decimal."""
    if "." not in text and "e" not in text and "E" not in text:
        n = int(text)
        if str(n) == text:
            return n
    f = float(text)
    return f if _float(f) == text else Decimal(text)


def request_status(request: Request, result_statuses: Iterable[ResultStatus] | None = None) -> RequestStatus:
    """A request's status: as stored when set; else from its results' statuses (none with a value:
    registered; some final, others pending or preliminary: partial; every one cancelled or entered
    in error: cancelled); without the results, final when reported, else registered."""
    if request.status is not None:
        return request.status
    if result_statuses is None:
        return RequestStatus.FINAL if request.reported_at is not None else RequestStatus.REGISTERED
    statuses = list(result_statuses)
    gone = (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)
    live = [x for x in statuses if x not in gone]
    if not live:
        return RequestStatus.CANCELLED if statuses else RequestStatus.REGISTERED
    done = (ResultStatus.FINAL, ResultStatus.CORRECTED)
    if all(x in done for x in live):
        return RequestStatus.CORRECTED if ResultStatus.CORRECTED in live else RequestStatus.FINAL
    if any(x in done or x is ResultStatus.PRELIMINARY for x in live):
        return RequestStatus.PARTIAL
    return RequestStatus.REGISTERED


def _rid(rtype: str, domain_id: str, id_map: IdMap | None) -> str:
    rid = id_map(rtype, domain_id) if id_map is not None else domain_id
    if not isinstance(rid, str) or not ((rid.isalnum() and rid.isascii() and len(rid) <= 64) or _ID.match(rid)):
        raise ValueError(f"{rtype} id is not a FHIR id (1 to 64 of A-Za-z0-9-.)")
    return rid


def _code(value: str, what: str) -> str:
    if not _CODE.match(value):
        raise ValueError(f"{what} is not a FHIR code (no leading, trailing or repeated whitespace)")
    return value


def _uri(value: str, what: str) -> str:
    if not _URI.match(value):
        raise ValueError(f"{what} is not a URI (no whitespace)")
    return value


CS_DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
_NOT_FINITE = {
    "coding": [{"system": CS_DATA_ABSENT, "code": "error"}],
    "text": "the stored value is not a finite number",
}


def _finite(value: float | None) -> bool:
    return value is not None and value - value == 0  # False for inf and NaN


def _num(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number")
    return float(value)


_OFFSETS: dict[timedelta, str] = {}


def _offset_text(off: timedelta) -> str | None:
    text = _OFFSETS.get(off)
    if text is None:
        seconds = int(off.total_seconds())
        if off.microseconds or seconds % 60 or abs(off) > _MAX_OFFSET:
            return None
        sign = "-" if seconds < 0 else "+"
        hours, minutes = divmod(abs(seconds) // 60, 60)
        text = _OFFSETS[off] = f"{sign}{hours:02d}:{minutes:02d}"
    return text


_NAIVE_OFFSETS: dict[str, str] = {}


def _datetime(value: datetime) -> tuple[str, bool]:
    """(FHIR dateTime/instant text, True if the value was naive)."""
    off = value.utcoffset()
    if off is None:
        iso = value.isoformat()
        text = _NAIVE_OFFSETS.get(iso[:13])  # Europe/Paris changes offset on the hour
        if text is None:
            if len(_NAIVE_OFFSETS) > 65536:
                _NAIVE_OFFSETS.clear()
            lab_offset = LAB_TIME.utcoffset(value.replace(fold=0))
            text = (_offset_text(lab_offset) if lab_offset is not None else None) or "+00:00"
            _NAIVE_OFFSETS[iso[:13]] = text
        return iso + text, True
    if off in _OFFSETS or _offset_text(off) is not None:
        return value.isoformat(), False  # the offset as +hh:mm, as FHIR wants it
    # an offset FHIR cannot write (seconds, beyond 14 h): the same instant in UTC
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z", False


def _unzoned() -> dict:
    return {"extension": [{"url": EXT_UNZONED, "valueBoolean": True}]}


def _put_datetime(d: dict, key: str, value: datetime | None) -> None:
    if value is None:
        return
    text, naive = _datetime(value)
    d[key] = text
    if naive:
        d["_" + key] = _unzoned()


def _given(names: str) -> list[str]:
    """Given names split on single spaces; kept whole when that would not join back to the same text."""
    if not names:
        return []
    parts = names.split(" ")
    return parts if all(parts) else [names]


def _human_name(use: str | None, family: str | None, given: str) -> dict:
    n: dict = {}
    if use:
        n["use"] = use
    if family:
        n["family"] = family
    parts = _given(given)
    if parts:
        n["given"] = parts
    return n


# ------------------------------------------------------------------------------------------ resources


def _local_system(system: str) -> str:
    """A local identifier's system as a FHIR identifier system (a URI; a bare OID as ``urn:oid:``)."""
    if re.fullmatch(r"[0-2](\.[0-9]+)+", system):
        return "urn:oid:" + system
    return _uri(system, "Identity.local_ids system")


def patient(identity: Identity, tenant_id: str, *, id_map: IdMap | None = None) -> dict:
    """Patient with its identifiers, names, identity status, birth place, contact; ``meta.source``
    names the lab. The INS goes out only for a qualified identity (RNIV); otherwise the local
    identifiers the senders gave (IPP, type ``PI``) and the traits do."""
    i = identity
    status = _IDENTITY_STATUS.get(i.identity_status, "PROV")
    extensions: list[dict] = [
        {
            "url": EXT_FR_IDENTITY_RELIABILITY,
            "extension": [{"url": "identityStatus", "valueCoding": {"system": CS_FR_IDENTITY_STATUS, "code": status}}],
        }
    ]
    if i.birthplace_code:
        if _CODE.match(i.birthplace_code):
            place: dict[str, Any] = {
                "extension": [
                    {"url": EXT_FR_INSEE_CODE, "valueCoding": {"system": CS_INSEE_COMMUNE, "code": i.birthplace_code}}
                ]
            }
        else:
            place = {"district": i.birthplace_code}
        extensions.append({"url": EXT_BIRTH_PLACE, "valueAddress": place})
    identifiers: list[dict] = []
    if i.qualified:
        ins: dict = {"use": "official"}
        ins_type = _INS_TYPE.get(i.ins_oid)
        if ins_type:
            ins["type"] = {"coding": [{"system": CS_FR_V2_0203, "code": ins_type}]}
        ins["system"] = "urn:oid:" + _uri(i.ins_oid, "Identity.ins_oid")
        ins["value"] = i.nir
        identifiers.append(ins)
    for system, value in i.local_ids:
        if value:
            identifiers.append(
                {
                    "use": "usual",
                    "type": {"coding": [{"system": CS_V2_0203, "code": "PI"}]},
                    "system": _local_system(system),
                    "value": value,
                }
            )
    p: dict = {
        "resourceType": "Patient",
        "id": _rid("Patient", i.patient_id, id_map),
        "meta": {"source": TENANT_SOURCE + _uri(tenant_id, "tenant id")},
        "extension": extensions,
    }
    if identifiers:
        p["identifier"] = identifiers
    # The name used (with the given name used, when known) and the birth name with every given name
    # at birth, in order (FR Core: usual and official).
    if i.used_given_name:
        p["name"] = [_human_name("usual", i.family_name, i.used_given_name)]
    else:
        p["name"] = [_human_name("usual", i.family_name, i.given_names)]
    if i.birth_name or i.used_given_name:
        p["name"].append(_human_name("official", i.strict_birth_name, i.given_names))
    telecom = []
    if i.phone:
        telecom.append({"system": "phone", "value": i.phone})
    if i.email:
        telecom.append({"system": "email", "value": i.email})
    if telecom:
        p["telecom"] = telecom
    p["gender"] = _GENDER.get(i.sex, "unknown")
    p["birthDate"] = i.birth_date.isoformat() if isinstance(i.birth_date, date) else str(i.birth_date)
    if i.address:
        p["address"] = [{"text": i.address}]
    return p


def practitioner(p: Prescriber, *, id_map: IdMap | None = None) -> dict:
    """Practitioner with the RPPS as IDNPS identifier (``8`` + RPPS) and one name."""
    out: dict = {"resourceType": "Practitioner", "id": _rid("Practitioner", p.prescriber_id, id_map)}
    if p.rpps:
        out["identifier"] = [
            {
                "type": {"coding": [{"system": CS_FR_V2_0203, "code": "IDNPS"}]},
                "system": f"urn:oid:{OID_RPPS}",
                "value": "8" + p.rpps if _RPPS.match(p.rpps) else p.rpps,
            }
        ]
    name = _human_name(None, p.family_name, p.given_name)
    if name:
        out["name"] = [name]
    return out


def service_request(
    r: Request, *, id_map: IdMap | None = None, result_statuses: Iterable[ResultStatus] | None = None
) -> dict:
    """ServiceRequest: the order, with the lab's accession number and the prescriber. Its status
    follows the request's (``request_status``: active until final, completed, revoked when cancelled)."""
    out: dict = {"resourceType": "ServiceRequest", "id": _rid("ServiceRequest", r.request_id, id_map)}
    if r.accession:
        out["identifier"] = [{"type": {"coding": [{"system": CS_V2_0203, "code": "ACSN"}]}, "value": r.accession}]
    out["status"] = SERVICE_REQUEST_STATUS[request_status(r, result_statuses)]
    out["intent"] = "order"
    system, code, display = SNOMED_LAB_PROCEDURE
    out["category"] = [{"coding": [{"system": system, "code": code, "display": display}]}]
    out["subject"] = {"reference": "Patient/" + _rid("Patient", r.patient_id, id_map)}
    _put_datetime(out, "authoredOn", r.requested_at)
    if r.prescriber_id:
        out["requester"] = {"reference": "Practitioner/" + _rid("Practitioner", r.prescriber_id, id_map)}
    return out


def specimen(s: Specimen, *, patient_id: str | None = None, id_map: IdMap | None = None) -> dict:
    """Specimen of a request (``subject`` only when ``patient_id`` is given: the request names the patient)."""
    out: dict = {"resourceType": "Specimen", "id": _rid("Specimen", s.specimen_id, id_map)}
    if s.type:
        if _CODE.match(s.type):
            out["type"] = {"coding": [{"system": CS_V2_0487, "code": s.type}]}
        else:
            out["type"] = {"text": s.type}
    if patient_id:
        out["subject"] = {"reference": "Patient/" + _rid("Patient", patient_id, id_map)}
    _put_datetime(out, "receivedTime", s.received_at)
    out["request"] = [{"reference": "ServiceRequest/" + _rid("ServiceRequest", s.request_id, id_map)}]
    collection: dict = {}
    _put_datetime(collection, "collectedDateTime", s.collected_at)
    out["collection"] = collection
    return out


def _unit(q: dict, unit: str | None, unit_system: str | None) -> None:
    """A Quantity's unit: coded (system and code) only when its system is known (UCUM only when the
    unit is UCUM; else the sender's own); otherwise the unit as text alone."""
    if unit:
        q["unit"] = unit
        if unit_system and _CODE.match(unit) and _URI.match(unit_system):
            q["system"] = unit_system
            q["code"] = unit


def _quantity(value: float | None, unit: str | None, unit_system: str | None = None) -> dict:
    q: dict = {}
    if value is not None:
        q["value"] = _num(value, "Result value")
    _unit(q, unit, unit_system)
    return q


def _value_quantity(res: Result) -> dict:
    """An Observation's valueQuantity: the number as written, its comparator, its unit."""
    q: dict = {}
    text = number_text(res.value_repr, res.value_num)
    if text is not None:
        q["value"] = _json_number(text)
        if res.comparator in _COMPARATORS:
            q["comparator"] = res.comparator
    _unit(q, res.unit, res.unit_system)
    return q


def observation(res: Result, patient_id: str, *, id_map: IdMap | None = None) -> dict:
    """Observation of one result: subject Patient/<patient_id>, basedOn its ServiceRequest, its Specimen.

    A number stored before the readers refused them (NaN, infinity) is never written: the value is
    left out with ``dataAbsentReason`` ``error``, a reference bound is left out; the rest is served."""
    o: dict = {"resourceType": "Observation", "id": _rid("Observation", res.result_id, id_map)}
    broken = res.value_num is not None and not _finite(res.value_num)
    quantity = not broken and (res.value_num is not None or written(res.value_repr) is not None or bool(res.unit))
    if quantity and res.value_text:
        o["extension"] = [{"url": EXT_VALUE_TEXT, "valueString": res.value_text}]
    o["basedOn"] = [{"reference": "ServiceRequest/" + _rid("ServiceRequest", res.request_id, id_map)}]
    o["status"] = OBSERVATION_STATUS[res.status]
    o["category"] = [{"coding": [{"system": CS_OBS_CATEGORY, "code": "laboratory"}]}]
    coding = {"system": _uri(res.code_system, "Result.code_system"), "code": _code(res.code, "Result.code")}
    if res.label:
        coding["display"] = res.label
    o["code"] = {"coding": [coding]}
    o["subject"] = {"reference": "Patient/" + _rid("Patient", patient_id, id_map)}
    _put_datetime(o, "issued", res.validated_at)
    if res.validated_by:
        o["performer"] = [{"display": res.validated_by}]
    if quantity:
        o["valueQuantity"] = _value_quantity(res)
    elif broken:
        o["dataAbsentReason"] = _NOT_FINITE
    elif res.value_text:
        o["valueString"] = res.value_text
    if res.flag:
        if _CODE.match(res.flag):
            o["interpretation"] = [{"coding": [{"system": CS_INTERPRETATION, "code": res.flag}]}]
        else:
            o["interpretation"] = [{"text": res.flag}]
    if res.comment:
        o["note"] = [{"text": res.comment}]
    if res.specimen_id:
        o["specimen"] = {"reference": "Specimen/" + _rid("Specimen", res.specimen_id, id_map)}
    low = res.ref_low if _finite(res.ref_low) else None
    high = res.ref_high if _finite(res.ref_high) else None
    if low is not None or high is not None or res.ref_text:
        rr: dict = {}
        if low is not None:
            rr["low"] = _quantity(low, res.unit, res.unit_system)
        if high is not None:
            rr["high"] = _quantity(high, res.unit, res.unit_system)
        if res.ref_text:
            rr["text"] = res.ref_text
        o["referenceRange"] = [rr]
    return o


def diagnostic_report(
    request: Request,
    result_ids: Iterable[str],
    *,
    id_map: IdMap | None = None,
    result_statuses: Iterable[ResultStatus] | None = None,
) -> dict:
    """The lab report of a request (id = the request id): its date and the Observations it holds.
    Its status is the request's (``request_status``: from its results when the row has none)."""
    out: dict = {
        "resourceType": "DiagnosticReport",
        "id": _rid("DiagnosticReport", request.request_id, id_map),
        "basedOn": [{"reference": "ServiceRequest/" + _rid("ServiceRequest", request.request_id, id_map)}],
        "status": request_status(request, result_statuses).value,
        "category": [{"coding": [{"system": CS_V2_0074, "code": "LAB"}]}],
        "code": {"coding": [dict(zip(("system", "code", "display"), LOINC_LAB_REPORT, strict=True))]},
        "subject": {"reference": "Patient/" + _rid("Patient", request.patient_id, id_map)},
    }
    _put_datetime(out, "effectiveDateTime", request.requested_at)
    _put_datetime(out, "issued", request.reported_at)
    refs = [{"reference": "Observation/" + _rid("Observation", rid, id_map)} for rid in result_ids]
    if refs:
        out["result"] = refs
    return out


# ------------------------------------------------------------------------------------------ ndjson


_FLUSH_CHARS = 1 << 18  # per resource type, characters kept before they are written out


class NdjsonWriter:
    """Streams resources to one ndjson file per resource type (``<Type>.ndjson`` in ``directory``) or
    to the binary streams given per type; memory stays bounded (a buffer per type).

    ``write(resource)`` takes any resource dict; ``write_observation(result, patient_id)`` is the fast
    path for Observations, byte for byte the same line as ``write(observation(result, patient_id))``.
    Use as a context manager, or call ``close()``: files it opened are closed, given streams flushed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        streams: Mapping[str, IO[bytes]] | None = None,
        id_map: IdMap | None = None,
    ) -> None:
        if (directory is None) == (streams is None):
            raise ValueError("give either a directory or streams")
        self._dir = None if directory is None else os.fspath(directory)
        self._streams: dict[str, IO[bytes]] = dict(streams or {})
        self._owned: list[IO[bytes]] = []
        self._buffers: dict[str, list[str]] = {}  # lines not yet written out, per type
        self._sizes: dict[str, int] = {}  # their characters
        self._written: dict[str, int] = {}  # lines written out, per type
        self._id_map = id_map
        self._unit_frags: dict[tuple[str, str | None], str] = {}
        self._bare_units: dict[str, str] = {}  # units without a system (most stored rows)
        self._flag_frags: dict[str, str] = {}
        self._ref_caches: dict[str, dict[str, str]] = {t: {} for t in ("ServiceRequest", "Patient", "Specimen")}
        self._req_refs = self._ref_caches["ServiceRequest"]
        self._pat_refs = self._ref_caches["Patient"]
        self._spec_refs = self._ref_caches["Specimen"]
        self._heads: dict[tuple, str] = {}
        self._last_when: tuple = (None, None, "")
        self._obs_buf: list[str] | None = None
        self._closed = False

    # plumbing -----------------------------------------------------------------------------------
    def _stream(self, rtype: str) -> IO[bytes]:
        stream = self._streams.get(rtype)
        if stream is None:
            if self._dir is None:
                raise ValueError(f"no stream given for {rtype}")
            if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", rtype):
                raise ValueError("resourceType is not a resource type name")
            stream = open(os.path.join(self._dir, f"{rtype}.ndjson"), "wb")  # noqa: SIM115 - closed in close()
            self._owned.append(stream)
            self._streams[rtype] = stream
        return stream

    def _buffer(self, rtype: str) -> list[str]:
        if self._closed:
            raise ValueError("writer is closed")
        buf = self._buffers.get(rtype)
        if buf is None:
            self._stream(rtype)
            buf = self._buffers[rtype] = []
            self._sizes[rtype] = 0
            self._written[rtype] = 0
        return buf

    def _flush_type(self, rtype: str) -> None:
        buf = self._buffers[rtype]
        if buf:
            self._streams[rtype].write("".join(buf).encode("utf-8"))
            self._written[rtype] += len(buf)
            buf.clear()
        self._sizes[rtype] = 0

    def _emit(self, rtype: str, line: str) -> None:
        buf = self._buffers.get(rtype) if not self._closed else None
        if buf is None:
            buf = self._buffer(rtype)
        buf.append(line)
        size = self._sizes[rtype] + len(line)
        self._sizes[rtype] = size
        if size > _FLUSH_CHARS:
            self._flush_type(rtype)

    def flush(self) -> None:
        for rtype in self._buffers:
            self._flush_type(rtype)
            self._streams[rtype].flush()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        for stream in self._owned:
            stream.close()
        self._closed = True
        self._obs_buf = None

    def __enter__(self) -> NdjsonWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def counts(self) -> dict[str, int]:
        """Resources written so far, per resource type."""
        return {t: self._written[t] + len(buf) for t, buf in self._buffers.items()}

    # writing ------------------------------------------------------------------------------------
    def write(self, resource: Mapping) -> None:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise ValueError("resource without resourceType")
        self._emit(rtype, _dumps(resource) + "\n")

    def _ref(self, rtype: str, domain_id: str) -> str:
        """'"Type/id"' (quoted), the last few cached: results of one request share most references."""
        cache = self._ref_caches[rtype]
        text = cache.get(domain_id)
        if text is None:
            if len(cache) > 4096:
                cache.clear()
            text = cache[domain_id] = f'"{rtype}/{_rid(rtype, domain_id, self._id_map)}"'
        return text

    def _unit_frag(self, unit: str, system: str | None) -> str:
        key = (unit, system)
        frag = self._unit_frags.get(key)
        if frag is None:
            q: dict = {}
            _unit(q, unit, system)
            frag = _dumps(q)[1:-1]
            if len(self._unit_frags) < 65536:
                self._unit_frags[key] = frag
                if system is None:
                    self._bare_units[unit] = frag
        return frag

    def _flag_frag(self, flag: str) -> str:
        frag = self._flag_frags.get(flag)
        if frag is None:
            if _CODE.match(flag):
                frag = f'[{{"coding":[{{"system":"{CS_INTERPRETATION}","code":' + _quote(flag) + "}]}]"
            else:
                frag = '[{"text":' + _quote(flag) + "}]"
            if len(self._flag_frags) < 65536:
                self._flag_frags[flag] = frag
        return frag

    def _when(self, value: datetime) -> str:
        """',"issued":"..."' (with its unzoned marker when naive)."""
        text, naive = _datetime(value)
        frag = ',"issued":"' + text + ('",' + _UNZONED_ISSUED if naive else '"')
        self._last_when = (value, value.tzinfo, frag)  # a lab validates the results of a request together
        return frag

    def _head(self, res: Result) -> str:
        """',"status":...,"category":...,"code":{...}' for a (status, system, code, label)."""
        key = (res.status, res.code_system, res.code, res.label)
        frag = self._heads.get(key)
        if frag is None:
            coding = {"system": _uri(res.code_system, "Result.code_system"), "code": _code(res.code, "Result.code")}
            if res.label:
                coding["display"] = res.label
            frag = _STATUS_CATEGORY[res.status] + _dumps({"coding": [coding]})
            if len(self._heads) > 65536:
                self._heads.clear()
            self._heads[key] = frag
        return frag

    def write_observation(self, res: Result, patient_id: str) -> None:
        """Fast path: the line of ``observation(res, patient_id, id_map=...)`` without building the dict."""
        rid = res.result_id
        if not all(x is None or x - x == 0 for x in (res.value_num, res.ref_low, res.ref_high)):
            self.write(observation(res, patient_id, id_map=self._id_map))  # a number stored non-finite
            return
        if self._id_map is not None or not (rid.isalnum() and rid.isascii() and len(rid) <= 64):
            rid = _rid("Observation", rid, self._id_map)
        unit = res.unit
        value = res.value_num
        text = res.value_text
        number = number_text(res.value_repr, value) if res.value_repr else None
        quantity = value is not None or bool(unit) or number is not None
        line = (
            '{"resourceType":"Observation","id":"'
            + rid
            + '"'
            + (_EXT_TEXT_HEAD + _quote(text) + "}]" if quantity and text else "")
            + ',"basedOn":[{"reference":'
            + (self._req_refs.get(res.request_id) or self._ref("ServiceRequest", res.request_id))
            + "}]"
            + (self._heads.get((res.status, res.code_system, res.code, res.label)) or self._head(res))
            + ',"subject":{"reference":'
            + (self._pat_refs.get(patient_id) or self._ref("Patient", patient_id))
            + "}"
        )
        when = res.validated_at
        if when is not None:
            last = self._last_when
            if when == last[0] and when.tzinfo is last[1]:
                line += last[2]
            else:
                line += self._when(when)
        if res.validated_by:
            line += ',"performer":[{"display":' + _quote(res.validated_by) + "}]"
        if unit:
            system = res.unit_system
            unit_frag = (
                self._bare_units.get(unit) if system is None else self._unit_frags.get((unit, system))
            ) or self._unit_frag(unit, system)
        else:
            unit_frag = None
        if quantity:
            if number is None and value is not None:
                if value - value != 0:  # inf or nan
                    raise ValueError("Result value is not a finite number")
                number = _float(float(value))
            if number is None:
                line += ',"valueQuantity":{' + (unit_frag or "") + "}"
            else:
                if res.comparator and res.comparator in _COMPARATORS:
                    number += ',"comparator":"' + res.comparator + '"'
                if unit_frag:
                    line += ',"valueQuantity":{"value":' + number + "," + unit_frag + "}"
                else:
                    line += ',"valueQuantity":{"value":' + number + "}"
        elif text:
            line += ',"valueString":' + _quote(text)
        if res.flag:
            line += ',"interpretation":' + (self._flag_frags.get(res.flag) or self._flag_frag(res.flag))
        if res.comment:
            line += ',"note":[{"text":' + _quote(res.comment) + "}]"
        if res.specimen_id:
            line += (
                ',"specimen":{"reference":'
                + (self._spec_refs.get(res.specimen_id) or self._ref("Specimen", res.specimen_id))
                + "}"
            )
        low = res.ref_low
        high = res.ref_high
        if low is not None or high is not None or res.ref_text:
            if (low is not None and low - low != 0) or (high is not None and high - high != 0):
                raise ValueError("Result value is not a finite number")
            tail = "," + unit_frag + "}" if unit_frag else "}"
            rr = []
            if low is not None:
                rr.append('"low":{"value":' + _float(float(low)) + tail)
            if high is not None:
                rr.append('"high":{"value":' + _float(float(high)) + tail)
            if res.ref_text:
                rr.append('"text":' + _quote(res.ref_text))
            line += ',"referenceRange":[{' + ",".join(rr) + "}]"
        buf = self._obs_buf
        if buf is None:
            buf = self._obs_buf = self._buffer("Observation")
        buf.append(line + "}\n")
        if len(buf) >= 512:
            self._flush_type("Observation")


_EXT_TEXT_HEAD = f',"extension":[{{"url":"{EXT_VALUE_TEXT}","valueString":'
_UNZONED_ISSUED = '"_issued":' + _dumps(_unzoned())
_STATUS_CATEGORY = {
    status: f',"status":"{OBSERVATION_STATUS[status]}","category":'
    + _dumps([{"coding": [{"system": CS_OBS_CATEGORY, "code": "laboratory"}]}])
    + ',"code":'
    for status in ResultStatus
}
