"""FHIR R4 JSON: a pure reader and mapper to domain objects (bytes in, dataclasses out).

No database, no socket, no network; mirrors ``labvault.interop.hl7v2`` and produces the same
``Mapped``. Every failure a sender can cause is a ``FhirError`` (an ``InvalidInput``) whose one-line
message says *where* (file, bundle entry or ndjson line, resource type, element path such as
``Observation.valueQuantity.value``) and *what* is wrong, never a value the sender wrote: not a
resource id (a NIR is sometimes used as one: M3, G2), a code, a status or a reference. Any other
exception is a bug of the reader and escapes; only nesting too deep is turned into a refusal.
A JSON number that ``number_fault`` refuses (too long or too precise, ``1e400``, ``1e-400``, a
900,000-digit value) is refused at its element.

- ``read(data)``: one JSON document, a Bundle (collection, transaction, batch, searchset, message,
  document) or a single resource. References are resolved inside the document: ``fullUrl``
  (``urn:uuid:``, absolute URLs), relative ``Type/id``, and ``#id`` for contained resources.
- ``read_ndjson(files)``: a Bulk Data export, several ndjson files (one resource per line,
  references across files).
- ``detect(data)``: ``"fhir-json"``, ``"fhir-ndjson"`` or ``None``, from the first bytes.
- ``map_document`` / ``map_ndjson``: the same, with the count of what was skipped.

One ``Mapped`` per patient that has lab data. How resources map:

- Patient -> Identity. The INS is the identifier whose system is ``urn:oid:1.2.250.1.213.1.4.8``
  (INS-NIR) or ``.4.9`` (NIA), or, without a system, whose FR Core type is ``INS-NIR``/``INS-NIA``;
  ``.4.10`` (test INS) only with ``test_mode``. The INS is optional (``nir`` None): every other
  identifier is a local one (IPP), in ``Identity.local_ids`` (a ``urn:oid:`` system as the bare
  OID) and ``other_identifiers`` (its system as written). Identity status from the FR Core
  identity-reliability extension: ``PROV`` provisional, ``RECUP`` recovered, ``VALI`` validated,
  ``QUAL`` qualified; none (or another code: ``VIDE``, ``DOUTE``, ``FICTI``...) is provisional; without
  an INS, qualified becomes validated and recovered provisional (RNIV). A Patient without any
  identifier is read from its traits (name, birth date) and matched on them. Names (FR Core):
  ``usual`` = used name, ``official`` (else ``maiden``) = birth name; the used name falls back to
  the official one, then to the first name (one without a family name is passed over). Given names
  at birth: the official name's ``birth-list-given-name`` extension, else its given names joined
  with one space (else the used name's); the first given name is the official name's first; the
  used given name is the usual name's given names when they differ. Birth place: INSEE code from
  the ``patient-birthPlace`` extension (FR Core ``inseeCode`` extension inside, else ``district``).
- Practitioner (directly or through PractitionerRole.practitioner) named as ServiceRequest.requester
  -> Prescriber; RPPS from an identifier with system ``urn:oid:1.2.250.1.71.4.2.1`` (value
  ``8`` + 11 digits, or the 11 digits).
- ServiceRequest -> Request. DiagnosticReport links its results to the ServiceRequest it is
  ``basedOn`` and gives ``reported_at`` (issued); without a ServiceRequest it becomes the Request.
  Order numbers: identifiers of type ``PLAC`` / ``FILL`` (of the ServiceRequest, else of its
  reports, else of a ``basedOn`` reference by identifier, untyped there = placer) ->
  ``placer_number`` / ``filler_number``, ``sender`` the identifier's system, else the input's
  ``meta.source``. ``message_at`` (requests and results): ``Bundle.timestamp``, else the Bundle's
  (or the single resource's) ``meta.lastUpdated``; a result's own ``meta.lastUpdated`` first.
  Observations reached by neither get one Request per (patient, day of effective date/time).
- Specimen -> Specimen, attached to the request it names, else to that of its observations or report.
- Observation -> Result: the LOINC coding of ``code`` if any, else the first coding (its system kept);
  ``observation_key`` ``system|code`` (a component: its Observation's key, ``/``, its own). Status:
  registered -> pending, preliminary, final, amended/corrected -> corrected, cancelled,
  entered-in-error. ``valueQuantity``: the number as written (``value_repr``: the JSON text,
  ``105600``, ``12.50``), its ``comparator`` apart, the unit's system by ``_common.unit_system``
  (a claim of UCUM holds for a valid UCUM code only, else the unit is kept as text; another system
  is kept with the code; none: UCUM for a valid UCUM unit).
  Components are flattened: each becomes a Result of its own (status, issued, performer, note and
  specimen taken from the Observation). Panels (``hasMember`` without a value) are skipped, their
  members mapped (inheriting the panel's specimen and report).

Skipped and counted, not errors: resource types that carry no lab data (Organization, Location,
AuditEvent, Device, Provenance, ...), Observations whose category is not ``laboratory`` (vital signs
...), reports without results, patients without lab data. A lab resource whose patient is not in
the input is refused ("patient not in the input"): its identity traits are needed. An input with
nothing left to map is refused.

Datetimes keep their offset; one without an offset (allowed here, not in FHIR) is read as a naive
datetime, and so is one marked with the ``unzoned-datetime`` extension of our own profile (see
``fhir_out``). Domain ids are deterministic (``labvault.crypto.derive``, the same rule as the other
readers): the records of an order from its number, else from its place in the input; patients and
prescribers from facility, control id and their place in the input (``domain_id``).
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from datetime import date as date_type  # the name ``date`` is a method of _Res below
from typing import Any, cast

from labvault.crypto.derive import Order, Orders, fingerprint, message_scope
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR, OID_RPPS
from labvault.domain.mapped import Mapped
from labvault.domain.models import LOINC, Identity, IdentityStatus, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.interop._common import NUMBER_NOT_FINITE, number_fault, unit_system
from labvault.interop.errors import FhirError

MAX_INPUT_BYTES = 32 * 1024 * 1024  # one JSON document
MAX_NDJSON_BYTES = 512 * 1024 * 1024  # all files of one Bulk Data export together
MAX_RESOURCES = 500_000  # resources (contained ones included) in one input
MAX_PANEL_DEPTH = 16  # Observation.hasMember nesting followed upwards

# Our own profile (see fhir_out). The canonical base is a placeholder until the project owns a domain.
PROFILE_BASE = "https://labvault.invalid/fhir"
EXT_UNZONED = f"{PROFILE_BASE}/StructureDefinition/unzoned-datetime"
EXT_VALUE_TEXT = f"{PROFILE_BASE}/StructureDefinition/result-value-text"
NO_SYSTEM = "urn:labvault:fhir:no-system"  # code or identifier given without a system

UCUM = "http://unitsofmeasure.org"
CS_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CS_V2_0487 = "http://terminology.hl7.org/CodeSystem/v2-0487"
CS_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
CS_V2_0078 = "http://terminology.hl7.org/CodeSystem/v2-0078"
CS_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CS_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CS_FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
CS_FR_IDENTITY_STATUS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identity-status"
EXT_FR_IDENTITY_RELIABILITY = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
EXT_BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"
EXT_FR_INSEE_CODE = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-address-insee-code"
CS_INSEE_COMMUNE = "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM"

BUNDLE_TYPES = ("collection", "transaction", "batch", "searchset", "message", "document")
_REFUSED_BUNDLE_TYPES = ("transaction-response", "batch-response", "history")
_LAB_TYPES = ("ServiceRequest", "DiagnosticReport", "Observation", "Specimen")
_RESOLVED_ONLY = ("Patient", "Practitioner", "PractitionerRole")
_OBS_STATUS = {
    "registered": ResultStatus.PENDING,  # asked, nothing measured yet
    "preliminary": ResultStatus.PRELIMINARY,
    "final": ResultStatus.FINAL,
    "amended": ResultStatus.CORRECTED,
    "corrected": ResultStatus.CORRECTED,
    "cancelled": ResultStatus.CANCELLED,
    "entered-in-error": ResultStatus.ENTERED_IN_ERROR,
}
_VALUE_KEYS = (
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)
_UNSUPPORTED_VALUES = ("valueRange", "valueRatio", "valueSampledData", "valuePeriod")
_GENDER = {"male": "M", "female": "F"}
# FR Core identity-reliability codes (fr-core-cs-identity-status, v2-0445) to the RNIV status; the
# others (VIDE, DOUTE, FICTI, ...) say no more than provisional.
_IDENTITY_STATUS = {
    "PROV": IdentityStatus.PROVISIONAL,
    "RECUP": IdentityStatus.RECOVERED,
    "VALI": IdentityStatus.VALIDATED,
    "QUAL": IdentityStatus.QUALIFIED,
}
# Without an INS an identity is neither qualified nor recovered: a document seen stays validated.
_WITHOUT_INS = {
    IdentityStatus.QUALIFIED: IdentityStatus.VALIDATED,
    IdentityStatus.RECOVERED: IdentityStatus.PROVISIONAL,
}
_INS_TYPE_OID = {"INS-NIR": OID_NIR, "INS-NIA": OID_NIA, "INS-NIR-TEST": OID_INS_TEST}
# A few SNOMED CT specimen types seen in real files, to their HL7 table 0487 code.
_SNOMED_SPECIMEN = {
    "119297000": "BLD",
    "122555007": "BLDV",
    "122554006": "BLDC",
    "119364003": "SER",
    "119361006": "PLAS",
    "122575003": "UR",
    "445295009": "BLD",
    "119339001": "STL",
    "258580003": "BLD",
}
_SNOMED = "http://snomed.info/sct"

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")
_RTYPE = re.compile(r"[A-Z][A-Za-z]{1,63}\Z")
# The resource types of FHIR R4 (4.0.1): a type outside this list is named "resource" in a message.
R4_TYPES = frozenset(
    [
        "Account",
        "ActivityDefinition",
        "AdverseEvent",
        "AllergyIntolerance",
        "Appointment",
        "AppointmentResponse",
        "AuditEvent",
        "Basic",
        "Binary",
        "BiologicallyDerivedProduct",
        "BodyStructure",
        "Bundle",
        "CapabilityStatement",
        "CarePlan",
        "CareTeam",
        "CatalogEntry",
        "ChargeItem",
        "ChargeItemDefinition",
        "Claim",
        "ClaimResponse",
        "ClinicalImpression",
        "CodeSystem",
        "Communication",
        "CommunicationRequest",
        "CompartmentDefinition",
        "Composition",
        "ConceptMap",
        "Condition",
        "Consent",
        "Contract",
        "Coverage",
        "CoverageEligibilityRequest",
        "CoverageEligibilityResponse",
        "DetectedIssue",
        "Device",
        "DeviceDefinition",
        "DeviceMetric",
        "DeviceRequest",
        "DeviceUseStatement",
        "DiagnosticReport",
        "DocumentManifest",
        "DocumentReference",
        "EffectEvidenceSynthesis",
        "Encounter",
        "Endpoint",
        "EnrollmentRequest",
        "EnrollmentResponse",
        "EpisodeOfCare",
        "EventDefinition",
        "Evidence",
        "EvidenceVariable",
        "ExampleScenario",
        "ExplanationOfBenefit",
        "FamilyMemberHistory",
        "Flag",
        "Goal",
        "GraphDefinition",
        "Group",
        "GuidanceResponse",
        "HealthcareService",
        "ImagingStudy",
        "Immunization",
        "ImmunizationEvaluation",
        "ImmunizationRecommendation",
        "ImplementationGuide",
        "InsurancePlan",
        "Invoice",
        "Library",
        "Linkage",
        "List",
        "Location",
        "Measure",
        "MeasureReport",
        "Media",
        "Medication",
        "MedicationAdministration",
        "MedicationDispense",
        "MedicationKnowledge",
        "MedicationRequest",
        "MedicationStatement",
        "MedicinalProduct",
        "MedicinalProductAuthorization",
        "MedicinalProductContraindication",
        "MedicinalProductIndication",
        "MedicinalProductIngredient",
        "MedicinalProductInteraction",
        "MedicinalProductManufactured",
        "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical",
        "MedicinalProductUndesirableEffect",
        "MessageDefinition",
        "MessageHeader",
        "MolecularSequence",
        "NamingSystem",
        "NutritionOrder",
        "Observation",
        "ObservationDefinition",
        "OperationDefinition",
        "OperationOutcome",
        "Organization",
        "OrganizationAffiliation",
        "Parameters",
        "Patient",
        "PaymentNotice",
        "PaymentReconciliation",
        "Person",
        "PlanDefinition",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "Provenance",
        "Questionnaire",
        "QuestionnaireResponse",
        "RelatedPerson",
        "RequestGroup",
        "ResearchDefinition",
        "ResearchElementDefinition",
        "ResearchStudy",
        "ResearchSubject",
        "RiskAssessment",
        "RiskEvidenceSynthesis",
        "Schedule",
        "SearchParameter",
        "ServiceRequest",
        "Slot",
        "Specimen",
        "SpecimenDefinition",
        "StructureDefinition",
        "StructureMap",
        "Subscription",
        "Substance",
        "SubstanceNucleicAcid",
        "SubstancePolymer",
        "SubstanceProtein",
        "SubstanceReferenceInformation",
        "SubstanceSourceMaterial",
        "SubstanceSpecification",
        "SupplyDelivery",
        "SupplyRequest",
        "Task",
        "TerminologyCapabilities",
        "TestReport",
        "TestScript",
        "ValueSet",
        "VerificationResult",
        "VisionPrescription",
    ]
)
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+\Z")
_REF = re.compile(r"(?:(.*)/)?([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?\Z")
_DT = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?\Z"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_RPPS = re.compile(r"8?(\d{11})\Z")
_FSH_START = re.compile(
    rb"\s*(?://[^\n]*\n\s*)*(?:Instance|Profile|Extension|Alias|CodeSystem|ValueSet|Logical|Invariant|RuleSet"
    rb"|Mapping|Resource):"
)
_BOM = b"\xef\xbb\xbf"


def _local_system(system: str) -> str:
    """A local identifier's system as stored: a bare OID for ``urn:oid:`` (as HL7 v2 names an
    assigning authority; the writers add the prefix back), the URI otherwise."""
    if system.startswith("urn:oid:") and _OID.match(system[8:]):
        return system[8:]
    return system


def _type_name(rtype: str) -> str:
    """A resource type fit to appear in a message: an R4 type name, else "resource" (a sender's own text)."""
    return rtype if rtype in R4_TYPES else "resource"


class _BadNumber(float):
    """A JSON number that is no value to store (``number_fault``: too long, too precise, overflowing
    or underflowing): never read as one, ``_Res.num`` refuses it at its element with ``reason``. Its
    float value is derived from the text, so that two documents differing only there still hash
    apart (``_canonical``)."""

    reason: str

    def __new__(cls, text: str, reason: str) -> _BadNumber:
        digest = fingerprint([text.encode("ascii", "replace")])
        self = super().__new__(cls, float(int(digest[:12], 16)))
        self.reason = reason
        return self


class _Written(float):
    """A JSON number with a fraction or an exponent, with its text as written (``12.50``, ``1e3``):
    ``Result.value_repr`` keeps those digits, which a float loses. It is a float everywhere else
    (``json.dumps`` writes it with ``float.__repr__``, so ``_canonical`` is unchanged)."""

    text: str

    def __new__(cls, text: str) -> _Written:
        self = super().__new__(cls, float(text))
        self.text = text
        return self


def _parse_number(text: str) -> int | float:
    if fault := number_fault(text):
        return _BadNumber(text, fault)
    return _Written(text) if any(c in text for c in ".eE") else int(text)


def _as_written(v: int | float) -> str:
    """The text a JSON number was written with (an integer's text is its ``str``)."""
    if isinstance(v, _Written):
        return v.text
    return str(v) if isinstance(v, int) else repr(v)


def _kind(v: object) -> str:
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    return "null"


@dataclass(slots=True)
class _Value:
    """An Observation's (or component's) value as read."""

    num: float | None = None
    text: str | None = None
    unit: str | None = None
    written: str | None = None  # the number's text as written (``105600``, ``12.50``)
    comparator: str | None = None
    unit_system: str | None = None


def _last_updated(r: _Res) -> datetime | None:
    meta = r.obj(r.data, "meta", _type_name(r.rtype))
    return r.dt(meta, "lastUpdated", f"{_type_name(r.rtype)}.meta") if meta is not None else None


@dataclass(slots=True)
class Outcome:
    """What one input gave: a ``Mapped`` per patient, and what was skipped (by kind, counted)."""

    mapped: list[Mapped]
    skipped: dict[str, int]


# ------------------------------------------------------------------------------------------ resources


@dataclass(slots=True, eq=False)
class _Res:
    """One resource of the input, with typed access that fails as a located ``FhirError``."""

    rtype: str
    rid: str | None
    data: dict
    key: str  # unique within the input; hashed into domain ids
    label: str  # Type/id, for messages
    file: str | None
    entry: int | None
    line: int | None
    full_url: str | None = None
    parent: _Res | None = None
    contained: dict[str, _Res] = field(default_factory=dict)
    order: int = 0

    def err(self, path: str | None, reason: str) -> FhirError:
        return FhirError(reason, file=self.file, entry=self.entry, line=self.line, resource=self.label, field=path)

    # typed access: d[key] with path prefix ``path``; absent (or JSON null) is None / []
    def obj(self, d: dict, key: str, path: str) -> dict | None:
        v = d.get(key)
        if v is None or isinstance(v, dict):
            return v
        raise self.err(f"{path}.{key}", f"expected an object, found {_kind(v)}")

    def lst(self, d: dict, key: str, path: str) -> list:
        v = d.get(key)
        if v is None:
            return []
        if isinstance(v, list):
            return v
        raise self.err(f"{path}.{key}", f"expected an array, found {_kind(v)}")

    def objs(self, d: dict, key: str, path: str) -> list[tuple[str, dict]]:
        out = []
        for i, v in enumerate(self.lst(d, key, path)):
            if not isinstance(v, dict):
                raise self.err(f"{path}.{key}[{i}]", f"expected an object, found {_kind(v)}")
            out.append((f"{path}.{key}[{i}]", v))
        return out

    def str(self, d: dict, key: str, path: str) -> str | None:
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise self.err(f"{path}.{key}", f"expected a string, found {_kind(v)}")
        if _SURROGATE.search(v):
            raise self.err(f"{path}.{key}", "string is not valid Unicode (lone surrogate)")
        return v or None  # FHIR has no empty strings: "" is read as absent

    def strs(self, d: dict, key: builtins.str, path: builtins.str) -> list[builtins.str]:
        out = []
        for i, v in enumerate(self.lst(d, key, path)):
            if v is None:
                continue
            if not isinstance(v, str):
                raise self.err(f"{path}.{key}[{i}]", f"expected a string, found {_kind(v)}")
            if _SURROGATE.search(v):
                raise self.err(f"{path}.{key}[{i}]", "string is not valid Unicode (lone surrogate)")
            if v:
                out.append(v)
        return out

    def num(self, d: dict, key: builtins.str, path: builtins.str) -> int | float | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.err(f"{path}.{key}", f"expected a number, found {_kind(v)}")
        if isinstance(v, _BadNumber):
            raise self.err(f"{path}.{key}", v.reason)
        try:
            ok = math.isfinite(float(v))
        except OverflowError:
            ok = False
        if not ok:
            raise self.err(f"{path}.{key}", NUMBER_NOT_FINITE)
        return v

    def dt(self, d: dict, key: builtins.str, path: builtins.str) -> datetime | None:
        s = self.str(d, key, path)
        if s is None:
            return None
        value = _parse_dt(s)
        if value is None:
            raise self.err(
                f"{path}.{key}", "not a FHIR date/time (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff]+hh:mm)"
            )
        if value is _OUT_OF_RANGE:
            raise self.err(f"{path}.{key}", "date/time out of range")
        if value.tzinfo is not None and _is_unzoned(d.get("_" + key)):
            value = value.replace(tzinfo=None)
        return value

    def date(self, d: dict, key: builtins.str, path: builtins.str) -> date_type | None:
        value = self.dt(d, key, path)
        return None if value is None else value.date()


_OUT_OF_RANGE = datetime(1, 1, 1)


def _parse_dt(s: str) -> datetime | None:
    """FHIR date, dateTime or instant; a date is midnight, partial dates take the 1st. None if malformed."""
    m = _DT.match(s)
    if not m:
        return None
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    try:
        tzinfo = None
        if tz == "Z":
            tzinfo = UTC
        elif tz:
            hours, minutes = int(tz[1:3]), int(tz[4:6])
            if hours > 14 or minutes > 59:
                raise ValueError
            delta = timedelta(hours=hours, minutes=minutes)
            tzinfo = timezone(-delta if tz[0] == "-" else delta)
        micro = int((frac or "0")[:6].ljust(6, "0"))
        return datetime(
            int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(sec or 0), micro, tzinfo=tzinfo
        )
    except ValueError:
        return _OUT_OF_RANGE


def _is_unzoned(element: object) -> bool:
    if not isinstance(element, dict):
        return False
    exts = element.get("extension")
    if not isinstance(exts, list):
        return False
    return any(isinstance(e, dict) and e.get("url") == EXT_UNZONED and e.get("valueBoolean") is True for e in exts)


def domain_id(mapped: Mapped, resource_type: str, resource_id: str) -> str:
    """The domain id the reader gave to the resource ``Type/id`` of the input ``mapped`` came from,
    for a resource named by its place in the input: a Patient, a Practitioner (the records of an
    order are named by the order, see ``labvault.crypto.derive``)."""
    return message_scope("fhir", mapped.sending_facility, mapped.control_id).id(f"{resource_type}/{resource_id}")


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# ------------------------------------------------------------------------------------------ input


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _decode(data: object, file: str | None, limit: int) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise FhirError("input is not bytes", file=file)
    data = bytes(data)
    if len(data) > limit:
        raise FhirError(f"input of {len(data)} bytes exceeds the limit of {limit} bytes", file=file)
    if data.startswith(_BOM):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data.lstrip()[:1]
        if head in (b"{", b"["):
            raise FhirError(f"not UTF-8 (byte offset {exc.start}): FHIR JSON is UTF-8", file=file) from None
        raise FhirError("not FHIR JSON: not UTF-8 text", file=file) from None


def _is_fsh(text: str) -> bool:
    return bool(_FSH_START.match(text[:4096].encode("utf-8", "surrogatepass")))


def _not_json_reason(text: str, exc: Exception) -> str:
    head = text.lstrip()[:1]
    if not head:
        return "not FHIR JSON: empty input"
    if head == "<":
        return "not FHIR JSON: XML (only the JSON format is read)"
    if _is_fsh(text):
        return "not FHIR JSON (FSH source): FHIR Shorthand must be compiled (SUSHI) to JSON first"
    if head not in ("{", "["):
        return "not FHIR JSON: the input does not start with '{'"
    if isinstance(exc, RecursionError):
        return "not readable: JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        if exc.msg == "Extra data":
            return (
                f"not valid JSON: extra data after the document at line {exc.lineno} column {exc.colno}"
                " (one resource a line is ndjson: read it with read_ndjson)"
            )
        return f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    return f"not valid JSON: {exc}" if str(exc).endswith("is not a JSON number") else "not valid JSON"


def _loads(text: str) -> object:
    """JSON, without NaN or Infinity; a number that is no value to store is kept as a ``_BadNumber``
    (refused where it is read, with its path; never converted, so never an overflow or a slow ``int``)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_parse_number, parse_int=_parse_number)


_BLANK = re.compile(rb"[ \t\r\n]*")


def _after_blanks(data: bytes, pos: int) -> int:
    m = _BLANK.match(data, pos)  # matches at every position (possibly empty)
    return m.end() if m is not None else pos


def detect(data: bytes) -> str | None:
    """``"fhir-json"``, ``"fhir-ndjson"`` or ``None``; looks at the first non-blank byte and ``resourceType``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return None
    data = bytes(data)
    start = _after_blanks(data, 3 if data.startswith(_BOM) else 0)
    if data[start : start + 1] != b"{":
        return None
    nl = data.find(b"\n", start)
    if nl != -1:
        first = data[start:nl].rstrip()
        after = _after_blanks(data, nl)
        if first.endswith(b"}") and data[after : after + 1] == b"{":
            return "fhir-ndjson" if b'"resourceType"' in first else None
    return "fhir-json" if b'"resourceType"' in data else None


class _Graph:
    """The resources of one input, indexed for reference resolution."""

    def __init__(self) -> None:
        self.roots: list[_Res] = []
        self.by_url: dict[str, _Res] = {}
        self.by_type_id: dict[tuple[str, str], _Res] = {}
        self.skipped: Counter[str] = Counter()
        self.count = 0

    def make(
        self,
        data: object,
        *,
        file: str | None,
        entry: int | None,
        line: int | None,
        full_url: str | None,
        fallback_key: str,
    ) -> _Res:
        where: dict[str, Any] = dict(file=file, entry=entry, line=line)
        if not isinstance(data, dict):
            raise FhirError(f"not a FHIR resource: expected an object, found {_kind(data)}", **where)
        rtype = data.get("resourceType")
        if not isinstance(rtype, str) or not _RTYPE.match(rtype):
            reason = "resourceType missing" if rtype is None else "resourceType is not a resource type name"
            raise FhirError(f"not a FHIR resource: {reason}", **where)
        rid = data.get("id")
        label = _type_name(rtype)
        if rid is not None and (not isinstance(rid, str) or not _ID.match(rid)):
            raise FhirError(
                "not a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .)", resource=label, field=f"{label}.id", **where
            )
        key = f"{rtype}/{rid}" if rid else fallback_key
        res = _Res(rtype, rid, data, key, label, file, entry, line, full_url, order=len(self.roots))
        self._count(res)
        for path, c in res.objs(data, "contained", rtype):
            cid = c.get("id")
            ctype = c.get("resourceType")
            if not isinstance(ctype, str) or not _RTYPE.match(ctype):
                raise res.err(f"{path}.resourceType", "contained resource without a valid resourceType")
            if not isinstance(cid, str) or not _ID.match(cid):
                raise res.err(f"{path}.id", "contained resource without a valid id")
            if cid in res.contained:
                raise res.err(f"{path}.id", "duplicate contained id")
            child = _Res(
                ctype,
                cid,
                c,
                f"{key}#{cid}",
                f"{path} ({_type_name(ctype)})",
                file,
                entry,
                line,
                parent=res,
                order=res.order,
            )
            self._count(child)
            res.contained[cid] = child
        return res

    def _count(self, res: _Res) -> None:
        self.count += 1
        if self.count > MAX_RESOURCES:
            raise res.err(None, f"more than {MAX_RESOURCES} resources in one input")

    def add(self, res: _Res) -> None:
        if res.rid is not None:
            other = self.by_type_id.get((res.rtype, res.rid))
            if other is not None:
                at = f"entry {other.entry}" if other.entry else f"line {other.line}" if other.line else "elsewhere"
                raise res.err(None, f"duplicate resource: the same type and id as the one at {at}")
            self.by_type_id[(res.rtype, res.rid)] = res
        if res.full_url is not None:
            if res.full_url in self.by_url:
                raise res.err(None, "duplicate Bundle.entry.fullUrl")
            self.by_url[res.full_url] = res
        self.roots.append(res)

    def resolve(self, res: _Res, ref: dict, path: str) -> tuple[_Res | None, str | None, str | None]:
        """(target, type, id) of a Reference; target None when it is not in the input."""
        text = res.str(ref, "reference", path)
        if text is None:
            return None, res.str(ref, "type", path), None
        root = res.parent or res
        if text.startswith("#"):
            if text == "#":
                return root, root.rtype, root.rid
            hit = root.contained.get(text[1:])
            return hit, (hit.rtype if hit else res.str(ref, "type", path)), None
        hit = self.by_url.get(text)
        if hit is not None:
            return hit, hit.rtype, hit.rid
        m = _REF.match(text)
        if m is None:
            return None, res.str(ref, "type", path), None
        base, rtype, rid = m.groups()
        if base is not None and "://" in base:  # absolute: only a fullUrl may match it
            return None, rtype, rid
        if root.full_url:  # relative to the referring entry's base
            bm = _REF.match(root.full_url)
            if bm and bm.group(1):
                hit = self.by_url.get(f"{bm.group(1)}/{rtype}/{rid}")
                if hit is not None:
                    return hit, rtype, rid
        return self.by_type_id.get((rtype, rid)), rtype, rid


# ------------------------------------------------------------------------------------------ linking


_NOT_PATIENT = ("", None, "")


@dataclass(slots=True, eq=False)
class _Anchor:
    """What a Request is made from: a ServiceRequest, a DiagnosticReport, or a (patient, day)."""

    kind: str  # "sr", "dr", "day"
    res: _Res  # the ServiceRequest / DiagnosticReport / first Observation or Specimen of the day
    group: _Group
    key: str
    when: datetime | None = None
    reports: list[_Res] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class _Group:
    """Everything of one patient."""

    key: str
    patient: _Res | None
    label: str
    referrer: _Res
    referrer_path: str
    anchors: list[_Anchor] = field(default_factory=list)
    observations: list[tuple[_Res, _Anchor, _Res | None]] = field(default_factory=list)
    specimens: list[tuple[_Res, _Anchor]] = field(default_factory=list)


class _Linker:
    """Attributes every lab resource of a graph to a patient and a request anchor (no domain objects yet)."""

    def __init__(self, g: _Graph) -> None:
        self.g = g
        self.groups: dict[str, _Group] = {}
        self.sr_anchor: dict[str, _Anchor] = {}
        self.dr_anchor: dict[str, _Anchor] = {}
        self.day_anchor: dict[tuple[str, str], _Anchor] = {}
        self.report_sr: dict[str, _Anchor | None] = {}
        self.obs_report: dict[str, _Res] = {}
        self.obs_parent: dict[str, _Res] = {}
        self.spec_hint: dict[str, _Anchor] = {}
        self.spec_group: dict[str, str] = {}
        self.extra_specimens: list[_Res] = []

    def run(self) -> list[_Group]:
        g = self.g
        srs: list[_Res] = []
        drs: list[_Res] = []
        obss: list[_Res] = []
        specs: list[_Res] = []
        for r in g.roots:
            if r.rtype == "ServiceRequest":
                srs.append(r)
            elif r.rtype == "DiagnosticReport":
                drs.append(r)
            elif r.rtype == "Observation":
                obss.append(r)
            elif r.rtype == "Specimen":
                specs.append(r)
            elif r.rtype not in _RESOLVED_ONLY:
                g.skipped[_type_name(r.rtype)] += 1
        for sr in srs:
            self._service_request(sr)
        for dr in drs:
            self._report_links(dr)
        for o in obss:
            for path, ref in o.objs(o.data, "hasMember", "Observation"):
                target, _, _ = g.resolve(o, ref, path)
                if target is not None and target.rtype == "Observation" and target is not o:
                    self.obs_parent.setdefault(target.key, o)
        for o in obss:
            self._observation(o)
        for dr in drs:
            anchor = self.report_sr.get(dr.key) or self.dr_anchor.get(dr.key)
            if anchor is None:
                g.skipped["DiagnosticReport (no result)"] += 1
                continue
            for path, ref in dr.objs(dr.data, "specimen", "DiagnosticReport"):
                self._hint_specimen(dr, ref, path, anchor)
        for sr in srs:
            for path, ref in sr.objs(sr.data, "specimen", "ServiceRequest"):
                self._hint_specimen(sr, ref, path, self.sr_anchor[sr.key])
        seen: set[str] = set()
        for s in specs + self.extra_specimens:
            if s.key not in seen:
                seen.add(s.key)
                self._specimen(s)
        patients = {grp.patient.key for grp in self.groups.values() if grp.patient is not None}
        for r in g.roots:
            if r.rtype == "Patient" and r.key not in patients:
                g.skipped["Patient (no lab data)"] += 1
            for c in r.contained.values():
                if c.rtype == "Observation":
                    g.skipped["Observation (contained)"] += 1
        return list(self.groups.values())

    # patients ------------------------------------------------------------------------------------
    def _subject(self, r: _Res, d: dict, path: str) -> tuple[str, _Res | None, str] | None:
        """(group key, Patient or None, label); None if no subject; ``_NOT_PATIENT`` for a Group, Device..."""
        ref = r.obj(d, "subject", path)
        if ref is None:
            return None
        target, rtype, rid = self.g.resolve(r, ref, f"{path}.subject")
        if target is not None:
            return (target.key, target, "Patient") if target.rtype == "Patient" else _NOT_PATIENT
        if rtype is not None and rtype != "Patient":
            return _NOT_PATIENT
        if rid is not None:
            return f"Patient/{rid}", None, f"Patient/{rid}"
        text = r.str(ref, "reference", f"{path}.subject")
        if text is not None:
            return f"reference:{text}", None, "(unresolvable reference)"
        ident = r.obj(ref, "identifier", f"{path}.subject")
        if ident is not None:
            return "identifier:" + _canonical(ident).decode(), None, "(patient given by identifier)"
        return None

    def _group(self, subject: tuple[str, _Res | None, str], referrer: _Res, path: str) -> _Group:
        key, patient, label = subject
        grp = self.groups.get(key)
        if grp is None:
            grp = self.groups[key] = _Group(key, patient, label, referrer, path)
        return grp

    # requests ------------------------------------------------------------------------------------
    def _service_request(self, sr: _Res) -> None:
        subject = self._subject(sr, sr.data, "ServiceRequest")
        if subject is None:
            raise sr.err("ServiceRequest.subject", "subject missing: no patient for this order")
        if subject is _NOT_PATIENT:
            self.g.skipped["ServiceRequest (subject not a Patient)"] += 1
            return
        grp = self._group(subject, sr, "ServiceRequest.subject")
        anchor = _Anchor("sr", sr, grp, sr.key)
        grp.anchors.append(anchor)
        self.sr_anchor[sr.key] = anchor

    def _first_sr(self, r: _Res, path: str) -> _Anchor | None:
        for p, ref in r.objs(r.data, "basedOn", path):
            target, _, _ = self.g.resolve(r, ref, p)
            if target is not None and target.key in self.sr_anchor:
                return self.sr_anchor[target.key]
        return None

    def _report_links(self, dr: _Res) -> None:
        anchor = self._first_sr(dr, "DiagnosticReport")
        self.report_sr[dr.key] = anchor
        if anchor is not None:
            anchor.reports.append(dr)
        for path, ref in dr.objs(dr.data, "result", "DiagnosticReport"):
            target, _, _ = self.g.resolve(dr, ref, path)
            if target is not None and target.rtype == "Observation":
                self.obs_report.setdefault(target.key, dr)

    def _ancestors(self, o: _Res) -> list[_Res]:
        """o, then the panels it is a member of (nearest first)."""
        chain = [o]
        seen = {o.key}
        while len(chain) <= MAX_PANEL_DEPTH:
            parent = self.obs_parent.get(chain[-1].key)
            if parent is None or parent.key in seen:
                break
            seen.add(parent.key)
            chain.append(parent)
        return chain

    def _day(self, subject: tuple[str, _Res | None, str], when: datetime, r: _Res, path: str) -> _Anchor:
        grp = self._group(subject, r, path)
        day = when.date().isoformat()
        anchor = self.day_anchor.get((grp.key, day))
        if anchor is None:
            anchor = _Anchor("day", r, grp, f"{grp.key}/request/{day}", when=when)
            self.day_anchor[(grp.key, day)] = anchor
            grp.anchors.append(anchor)
        return anchor

    # observations --------------------------------------------------------------------------------
    def _is_lab(self, o: _Res) -> bool:
        codes = set()
        for path, cat in o.objs(o.data, "category", "Observation"):
            for p, coding in o.objs(cat, "coding", path):
                if o.str(coding, "system", p) == CS_OBS_CATEGORY:
                    codes.add(o.str(coding, "code", p))
        return not codes or "laboratory" in codes

    def _observation(self, o: _Res) -> None:
        d = o.data
        P = "Observation"
        if not self._is_lab(o):
            self.g.skipped["Observation (not laboratory)"] += 1
            return
        status = o.str(d, "status", P)
        if status is None:
            raise o.err("Observation.status", "status missing")
        if status not in _OBS_STATUS:
            raise o.err(
                "Observation.status",
                "status cannot be imported (expected registered, preliminary, final, amended, corrected,"
                " cancelled or entered-in-error)",
            )
        has_value = any(k in d for k in _VALUE_KEYS)
        components = o.lst(d, "component", P)
        if o.lst(d, "hasMember", P) and not has_value and not components:
            self.g.skipped["Observation (panel)"] += 1
            return
        chain = self._ancestors(o)
        subject = None
        for r in chain:
            subject = self._subject(r, r.data, P)
            if subject is not None:
                break
        if subject is _NOT_PATIENT:
            self.g.skipped["Observation (subject not a Patient)"] += 1
            return
        anchor = self._first_sr(o, P)
        if anchor is None:
            report = next((self.obs_report[r.key] for r in chain if r.key in self.obs_report), None)
            if report is not None:
                anchor = self.report_sr.get(report.key) or self._report_anchor(report, subject, o)
        if anchor is None:
            if subject is None:
                raise o.err("Observation.subject", "subject missing: no patient for this observation")
            when = self._effective(o) or o.dt(d, "issued", P)
            if when is None:
                raise o.err(
                    "Observation.effective[x]",
                    "effective date/time missing (needed to make a request for an observation without order or report)",
                )
            anchor = self._day(subject, when, o, "Observation.subject")
        if subject is not None and subject[0] != anchor.group.key:
            raise o.err("Observation.subject", "subject differs from the subject of its request or report")
        specimen = None
        for r in chain:
            ref = r.obj(r.data, "specimen", P)
            if ref is not None:
                specimen, _, _ = self.g.resolve(r, ref, "Observation.specimen")
                if specimen is not None and specimen.rtype != "Specimen":
                    specimen = None
                if specimen is not None:
                    break
        if specimen is not None:
            self.spec_hint.setdefault(specimen.key, anchor)
            if specimen.parent is not None:
                self.extra_specimens.append(specimen)
        anchor.group.observations.append((o, anchor, specimen))

    def _effective(self, o: _Res) -> datetime | None:
        d = o.data
        when = o.dt(d, "effectiveDateTime", "Observation") or o.dt(d, "effectiveInstant", "Observation")
        period = o.obj(d, "effectivePeriod", "Observation")
        if when is None and period is not None:
            when = o.dt(period, "start", "Observation.effectivePeriod")
        return when

    def _report_anchor(self, dr: _Res, subject: tuple[str, _Res | None, str] | None, o: _Res) -> _Anchor:
        anchor = self.dr_anchor.get(dr.key)
        if anchor is not None:
            return anchor
        own = self._subject(dr, dr.data, "DiagnosticReport")
        if own is _NOT_PATIENT:
            own = None
        if own is None and subject is None:
            raise o.err(
                "Observation.subject", "subject missing: neither the observation nor its report names a patient"
            )
        grp = self._group(cast(tuple[str, "_Res | None", str], own or subject), dr, "DiagnosticReport.subject")
        anchor = _Anchor("dr", dr, grp, f"{dr.key}/request", reports=[dr])
        grp.anchors.append(anchor)
        self.dr_anchor[dr.key] = anchor
        return anchor

    # specimens -----------------------------------------------------------------------------------
    def _hint_specimen(self, r: _Res, ref: dict, path: str, anchor: _Anchor) -> None:
        target, _, _ = self.g.resolve(r, ref, path)
        if target is not None and target.rtype == "Specimen":
            self.spec_hint.setdefault(target.key, anchor)
            if target.parent is not None:
                self.extra_specimens.append(target)

    def _specimen(self, s: _Res) -> None:
        d = s.data
        P = "Specimen"
        subject = self._subject(s, d, P)
        if subject is _NOT_PATIENT:
            self.g.skipped["Specimen (subject not a Patient)"] += 1
            return
        anchor = self._first_sr_request(s) or self.spec_hint.get(s.key)
        if anchor is None:
            collection = s.obj(d, "collection", P)
            when = None
            if collection is not None:
                when = s.dt(collection, "collectedDateTime", "Specimen.collection")
                period = s.obj(collection, "collectedPeriod", "Specimen.collection")
                if when is None and period is not None:
                    when = s.dt(period, "start", "Specimen.collection.collectedPeriod")
            when = when or s.dt(d, "receivedTime", P)
            if subject is None or when is None:
                self.g.skipped["Specimen (no request, no patient or no date)"] += 1
                return
            anchor = self._day(subject, when, s, "Specimen.subject")
        if subject is not None and subject[0] != anchor.group.key:
            raise s.err("Specimen.subject", "subject differs from the subject of its request")
        anchor.group.specimens.append((s, anchor))
        self.spec_group[s.key] = anchor.group.key

    def _first_sr_request(self, s: _Res) -> _Anchor | None:
        for p, ref in s.objs(s.data, "request", "Specimen"):
            target, _, _ = self.g.resolve(s, ref, p)
            if target is not None and target.key in self.sr_anchor:
                return self.sr_anchor[target.key]
        return None


# ------------------------------------------------------------------------------------------ mapping


class _Builder:
    """Domain objects of one patient group."""

    def __init__(
        self,
        g: _Graph,
        grp: _Group,
        facility: str,
        control_id: str,
        test_mode: bool,
        spec_group: dict[str, str],
        message_at: datetime | None = None,
    ) -> None:
        self.g = g
        self.message_at = message_at  # Bundle.timestamp, else its meta.lastUpdated
        self.source = facility.removeprefix("fhir:") or None  # the input's meta.source
        self.spec_group = spec_group
        self.grp = grp
        self.facility = facility
        self.control_id = control_id
        self.test_mode = test_mode
        self.prescribers: dict[str, Prescriber] = {}
        self.scope = message_scope("fhir", facility, control_id)

    def id(self, what: str) -> str:
        return self.scope.id(what)

    def run(self) -> Mapped:
        grp = self.grp
        if grp.patient is None:
            raise grp.referrer.err(
                grp.referrer_path,
                "patient not in the input: no Patient resource for the patient named here (its identity"
                " traits are needed to match it)",
            )
        patient_id = self.id(grp.patient.key)
        identity, others = self._identity(grp.patient, patient_id)
        requests: list[Request] = []
        by_anchor: dict[str, Request] = {}
        for anchor in grp.anchors:
            req = self._request(anchor, patient_id)
            if anchor.kind != "day":
                req.placer_number, req.filler_number, req.sender = self._order_numbers(anchor)
            req.message_at = self.message_at or _last_updated(anchor.res)
            requests.append(req)
            by_anchor[anchor.key] = req
        numbers = {a.key: self._lab_number(a.res, a.res.rtype) if a.kind != "day" else None for a in grp.anchors}
        for s, anchor in grp.specimens:  # the lab's accession number, when the order gave none
            req = by_anchor[anchor.key]
            if req.accession is None:
                acc = s.obj(s.data, "accessionIdentifier", "Specimen")
                if acc is not None:
                    req.accession = numbers[anchor.key] = s.str(acc, "value", "Specimen.accessionIdentifier")
        orders: dict[str, Order] = {}
        ranks = Orders(self.scope)
        for anchor in grp.anchors:  # ids once the order's number is known (see labvault.crypto.derive)
            orders[anchor.key] = order = ranks.order(anchor.key)
            by_anchor[anchor.key].request_id = order.request_id()
        specimens: list[Specimen] = []
        spec_ids: dict[str, str] = {}
        for s, anchor in grp.specimens:
            sp = self._specimen(s, by_anchor[anchor.key], orders[anchor.key])
            specimens.append(sp)
            spec_ids[s.key] = sp.specimen_id
        results: list[Result] = []
        for o, anchor, spec in grp.observations:
            specimen_id = spec_ids.get(spec.key) if spec is not None else None
            if spec is not None and specimen_id is None and self.spec_group.get(spec.key, grp.key) != grp.key:
                raise o.err("Observation.specimen", "the specimen belongs to another patient")
            results.extend(self._results(o, by_anchor[anchor.key].request_id, specimen_id, orders[anchor.key]))
        return Mapped(
            identity=identity,
            prescribers=list(self.prescribers.values()),
            requests=requests,
            specimens=specimens,
            results=results,
            other_identifiers=others,
            z_segments=[],
            control_id=self.control_id,
            sending_facility=self.facility,
        )

    # identity -----------------------------------------------------------------------------------
    def _identity(self, p: _Res, patient_id: str) -> tuple[Identity, list[tuple[str, str]]]:
        d = p.data
        P = "Patient"
        nir: tuple[str, str] | None = None
        nia: tuple[str, str] | None = None
        others: list[tuple[str, str]] = []
        for path, ident in p.objs(d, "identifier", P):
            system = p.str(ident, "system", path)
            value = p.str(ident, "value", path)
            if value is None:
                continue
            oid = system[8:] if system and system.startswith("urn:oid:") else system
            if oid is None:  # FR Core: the INS slices are also named by their type
                oid = _INS_TYPE_OID.get(self._type_code(p, ident, path) or "")
            if oid == OID_INS_TEST and not self.test_mode:
                raise p.err(f"{path}.system", f"test INS (OID {OID_INS_TEST}) refused outside test mode")
            if oid in (OID_NIR, OID_INS_TEST):
                nir = nir or (value, oid)
            elif oid == OID_NIA:
                nia = nia or (value, oid)
            else:  # a local identifier (IPP), kept with its system
                others.append((system or NO_SYSTEM, value))
        ins = nir or nia
        names = p.objs(d, "name", P)
        if not names:
            raise p.err("Patient.name", "patient name missing")
        by_use: dict[str, tuple[str, dict]] = {}
        family_of: dict[str, str | None] = {}
        for path, n in names:
            by_use.setdefault(p.str(n, "use", path) or "", (path, n))
            family_of[path] = p.str(n, "family", path)
        # the used name: usual, else official, else the first; one without a family name is passed over
        candidates = [by_use.get("usual"), by_use.get("official"), *names]
        chosen = next((c for c in candidates if c is not None and family_of[c[0]] is not None), None)
        if chosen is None:
            first = by_use.get("usual") or by_use.get("official") or names[0]
            raise p.err(f"{first[0]}.family", "patient family name missing")
        family = family_of[chosen[0]]
        # FR Core: "official" is the birth name, with the first given name at birth in ``given`` and
        # every given name at birth in the birth-list-given-name extension; "usual" the name used.
        birth = by_use.get("official") or by_use.get("maiden")
        birth_name = family_of[birth[0]] if birth is not None else None
        chosen_given = " ".join(p.strs(chosen[1], "given", chosen[0]))
        usual = by_use.get("usual")  # its given names are the ones used, even without a family name
        used_from = usual if usual is not None else chosen
        used_given = "" if birth is not None and used_from[0] == birth[0] else chosen_given
        if usual is not None:
            used_given = " ".join(p.strs(usual[1], "given", usual[0]))
        given = first_given = None
        if birth is not None:
            bp, bn = birth
            birth_given = p.strs(bn, "given", bp)
            for ep, ext in p.objs(bn, "extension", bp):
                if (p.str(ext, "url", ep) or "").endswith("birth-list-given-name"):
                    given = given or p.str(ext, "valueString", ep)
            given = given or " ".join(birth_given) or None
            first_given = birth_given[0] if birth_given else None
        given = given or chosen_given
        first_given = first_given or (given.split()[0] if given.split() else None)
        born = p.date(d, "birthDate", P)
        if born is None:
            raise p.err("Patient.birthDate", "birth date missing")
        gender = p.str(d, "gender", P)
        status: IdentityStatus | None = None
        birthplace: str | None = None
        for path, ext in p.objs(d, "extension", P):
            url = p.str(ext, "url", path) or ""
            if url == EXT_FR_IDENTITY_RELIABILITY or url.endswith(("identity-reliability", "ident-reliability")):
                status = status or self._identity_status(p, ext, path)
            elif url == EXT_BIRTH_PLACE or url.endswith("patient-birth-place"):
                birthplace = birthplace or self._birthplace(p, ext, path)
        status = status or IdentityStatus.PROVISIONAL
        if ins is None:  # RNIV: no INS, no qualified or recovered identity
            status = _WITHOUT_INS.get(status, status)
        phone = email = None
        for path, t in p.objs(d, "telecom", P):
            system = p.str(t, "system", path)
            value = p.str(t, "value", path)
            if system == "phone" and phone is None:
                phone = value
            elif system == "email" and email is None:
                email = value
        address = None
        addresses = p.objs(d, "address", P)
        if addresses:
            path, a = addresses[0]
            address = p.str(a, "text", path)
            if address is None:
                parts = p.strs(a, "line", path)
                parts += [x for x in (p.str(a, k, path) for k in ("postalCode", "city", "country")) if x]
                address = ", ".join(parts) or None
        identity = Identity(
            patient_id=patient_id,
            nir=ins[0] if ins else None,
            identity_status=status,
            family_name=cast(str, family),  # checked above: a patient without a family name is refused
            given_names=given,
            birth_date=born,
            sex=_GENDER.get(gender or "", "U"),
            birth_name=birth_name,
            birthplace_code=birthplace,
            address=address,
            phone=phone,
            email=email,
            ins_oid=ins[1] if ins else OID_NIR,
            first_given_name=first_given,
            used_given_name=used_given if used_given and used_given != given else None,
            local_ids=[(_local_system(system), value) for system, value in others],
        )
        return identity, others

    @staticmethod
    def _type_code(r: _Res, ident: dict, path: str) -> str | None:
        t = r.obj(ident, "type", path)
        for cp, c in r.objs(t, "coding", f"{path}.type") if t is not None else []:
            if code := r.str(c, "code", cp):
                return code
        return None

    @staticmethod
    def _identity_status(p: _Res, ext: dict, path: str) -> IdentityStatus | None:
        """The RNIV status the FR Core identity-reliability extension gives (``identityStatus``
        sub-extension, or a ``valueCoding`` of its own); None when it gives none that maps."""
        codings = []
        own = p.obj(ext, "valueCoding", path)
        if own is not None:
            codings.append((f"{path}.valueCoding", own))
        for sp, sub in p.objs(ext, "extension", path):
            if p.str(sub, "url", sp) in ("identityStatus", "identityreliability"):
                coding = p.obj(sub, "valueCoding", sp)
                if coding is not None:
                    codings.append((f"{sp}.valueCoding", coding))
        for cp, c in codings:
            status = _IDENTITY_STATUS.get(p.str(c, "code", cp) or "")
            if status is not None:
                return status
        return None

    @staticmethod
    def _birthplace(p: _Res, ext: dict, path: str) -> str | None:
        addr = p.obj(ext, "valueAddress", path)
        if addr is None:
            return None
        ap = f"{path}.valueAddress"
        for sp, sub in p.objs(addr, "extension", ap):
            url = p.str(sub, "url", sp) or ""
            if url == EXT_FR_INSEE_CODE or url.endswith("insee-code") or url == "inseeCode":
                coding = p.obj(sub, "valueCoding", sp)
                code = p.str(coding, "code", f"{sp}.valueCoding") if coding is not None else None
                if code is not None:
                    return code
        return p.str(addr, "district", ap)

    # prescribers --------------------------------------------------------------------------------
    def _prescriber(self, r: _Res, ref: dict, path: str) -> str | None:
        target, _, _ = self.g.resolve(r, ref, path)
        if target is not None and target.rtype == "PractitionerRole":
            pref = target.obj(target.data, "practitioner", "PractitionerRole")
            target = self.g.resolve(target, pref, "PractitionerRole.practitioner")[0] if pref is not None else None
        if target is None or target.rtype != "Practitioner":
            return None
        known = self.prescribers.get(target.key)
        if known is not None:
            return known.prescriber_id
        d = target.data
        P = "Practitioner"
        rpps = ""
        for ip, ident in target.objs(d, "identifier", P):
            system = target.str(ident, "system", ip) or ""
            value = target.str(ident, "value", ip)
            if value is None:
                continue
            itype = target.obj(ident, "type", ip)
            type_codes = (
                {target.str(c, "code", cp) for cp, c in target.objs(itype, "coding", f"{ip}.type")}
                if itype is not None
                else set()
            )
            if system in (f"urn:oid:{OID_RPPS}", OID_RPPS) or type_codes & {"RPPS", "IDNPS"}:
                m = _RPPS.match(value)  # 8 + RPPS (IDNPS) or the RPPS; 0 + ADELI shares the OID and is not one
                if m:
                    rpps = m.group(1)
                    break
        family = given = ""
        names = target.objs(d, "name", P)
        if names:
            np, n = next(((x, y) for x, y in names if target.str(y, "use", x) == "official"), names[0])
            family = target.str(n, "family", np) or ""
            given = " ".join(target.strs(n, "given", np))
        pres = Prescriber(prescriber_id=self.id(target.key), rpps=rpps, family_name=family, given_name=given)
        self.prescribers[target.key] = pres
        return pres.prescriber_id

    # requests -----------------------------------------------------------------------------------
    @staticmethod
    def _accession(r: _Res, path: str) -> str | None:
        idents = r.objs(r.data, "identifier", path)
        ranked: dict[str, str] = {}
        first = None
        for ip, ident in idents:
            value = r.str(ident, "value", ip)
            if value is None:
                continue
            first = first or value
            t = r.obj(ident, "type", ip)
            for cp, c in r.objs(t, "coding", f"{ip}.type") if t is not None else []:
                code = r.str(c, "code", cp)
                if code in ("ACSN", "FILL", "PLAC"):
                    ranked.setdefault(code, value)
        for code in ("ACSN", "FILL"):
            if code in ranked:
                return ranked[code]
        if path == "ServiceRequest":
            req = r.obj(r.data, "requisition", path)
            if req is not None and (value := r.str(req, "value", f"{path}.requisition")):
                return ranked.get("PLAC") or value
        return ranked.get("PLAC") or first

    def _order_numbers(self, anchor: _Anchor) -> tuple[str | None, str | None, str | None]:
        """(placer number, filler number, sender) of an order: identifiers of type PLAC and FILL of
        its ServiceRequest, else of its reports, else of the ServiceRequest a report is ``basedOn``
        by identifier (an untyped one there is the placer's). The sender is the system of the
        identifier the number came from (the placer's first), else the input's ``meta.source``."""
        found: dict[str, tuple[str, str | None]] = {}
        for r in [anchor.res, *(dr for dr in anchor.reports if dr is not anchor.res)]:
            path = _type_name(r.rtype)
            for ip, ident in r.objs(r.data, "identifier", path):
                value = r.str(ident, "value", ip)
                code = self._type_code(r, ident, ip)
                if value is not None and code in ("PLAC", "FILL"):
                    found.setdefault(code, (value, r.str(ident, "system", ip)))
            for bp, ref in r.objs(r.data, "basedOn", path):
                by_id = r.obj(ref, "identifier", bp)
                value = r.str(by_id, "value", f"{bp}.identifier") if by_id is not None else None
                if by_id is None or value is None:
                    continue
                code = self._type_code(r, by_id, f"{bp}.identifier") or "PLAC"
                if code in ("PLAC", "FILL"):
                    found.setdefault(code, (value, r.str(by_id, "system", f"{bp}.identifier")))
        placer, filler = found.get("PLAC"), found.get("FILL")
        if placer is None and filler is None:
            return None, None, None
        system = (placer and placer[1]) or (filler and filler[1])
        return (placer[0] if placer else None, filler[0] if filler else None, system or self.source)

    @staticmethod
    def _lab_number(r: _Res, path: str) -> str | None:
        """The lab's number of an order (identifier of type ACSN, else FILL), which names its records
        in every format; not a placer's number nor an untyped identifier."""
        ranked: dict[str, str] = {}
        for ip, ident in r.objs(r.data, "identifier", path):
            t = r.obj(ident, "type", ip)
            value = r.str(ident, "value", ip)
            if t is None or value is None:
                continue
            for cp, c in r.objs(t, "coding", f"{ip}.type"):
                code = r.str(c, "code", cp)
                if code in ("ACSN", "FILL"):
                    ranked.setdefault(code, value)
        return ranked.get("ACSN") or ranked.get("FILL")

    def _report_dates(self, dr: _Res) -> tuple[datetime | None, datetime | None]:
        d = dr.data
        P = "DiagnosticReport"
        issued = dr.dt(d, "issued", P)
        effective = dr.dt(d, "effectiveDateTime", P)
        period = dr.obj(d, "effectivePeriod", P)
        if effective is None and period is not None:
            effective = dr.dt(period, "start", "DiagnosticReport.effectivePeriod")
        return effective, issued

    def _request(self, anchor: _Anchor, patient_id: str) -> Request:
        """The order of an anchor; its id is given once its number is known (``run``)."""
        reported = None
        effective = None
        for dr in anchor.reports:
            eff, issued = self._report_dates(dr)
            reported = reported or issued
            effective = effective or eff or issued
        if anchor.kind == "sr":
            sr = anchor.res
            d = sr.data
            P = "ServiceRequest"
            when = sr.dt(d, "authoredOn", P) or sr.dt(d, "occurrenceDateTime", P)
            period = sr.obj(d, "occurrencePeriod", P)
            if when is None and period is not None:
                when = sr.dt(period, "start", "ServiceRequest.occurrencePeriod")
            when = when or effective
            if when is None:
                raise sr.err(
                    "ServiceRequest.authoredOn",
                    "order date missing (authoredOn, occurrence[x] or a DiagnosticReport date)",
                )
            requester = sr.obj(d, "requester", P)
            prescriber = self._prescriber(sr, requester, "ServiceRequest.requester") if requester else None
            return Request(
                request_id="",
                patient_id=patient_id,
                prescriber_id=prescriber,
                requested_at=when,
                accession=self._accession(sr, P),
                reported_at=reported,
            )
        if anchor.kind == "dr":
            dr = anchor.res
            if effective is None:
                raise dr.err("DiagnosticReport.effective[x]", "report date missing (effective[x] or issued)")
            return Request(
                request_id="",
                patient_id=patient_id,
                prescriber_id=None,
                requested_at=effective,
                accession=self._accession(dr, "DiagnosticReport"),
                reported_at=reported,
            )
        return Request(
            request_id="",
            patient_id=patient_id,
            prescriber_id=None,
            requested_at=cast(datetime, anchor.when),
            accession=None,
            reported_at=None,
        )

    # specimens ----------------------------------------------------------------------------------
    def _specimen(self, s: _Res, request: Request, order: Order) -> Specimen:
        d = s.data
        P = "Specimen"
        collection = s.obj(d, "collection", P)
        collected = None
        if collection is not None:
            collected = s.dt(collection, "collectedDateTime", "Specimen.collection")
            period = s.obj(collection, "collectedPeriod", "Specimen.collection")
            if collected is None and period is not None:
                collected = s.dt(period, "start", "Specimen.collection.collectedPeriod")
        return Specimen(
            specimen_id=order.specimen_id(),
            request_id=request.request_id,
            type=self._specimen_type(s),
            collected_at=collected or request.requested_at,
            received_at=s.dt(d, "receivedTime", P),
        )

    @staticmethod
    def _specimen_type(s: _Res) -> str:
        cc = s.obj(s.data, "type", "Specimen")
        if cc is None:
            return "UNK"
        codings = [(s.str(c, "system", p), s.str(c, "code", p)) for p, c in s.objs(cc, "coding", "Specimen.type")]
        for system, code in codings:
            if system == CS_V2_0487 and code:
                return code
        for system, code in codings:
            if system == _SNOMED and code in _SNOMED_SPECIMEN:
                return _SNOMED_SPECIMEN[code]
        for _, code in codings:
            if code:
                return code
        return s.str(cc, "text", "Specimen.type") or "UNK"

    # results ------------------------------------------------------------------------------------
    def _results(self, o: _Res, request_id: str, specimen_id: str | None, order: Order) -> list[Result]:
        d = o.data
        P = "Observation"
        status = _OBS_STATUS[cast(str, o.str(d, "status", P))]
        issued = o.dt(d, "issued", P)
        validated_by = None
        fallback = None
        for path, ref in o.objs(d, "performer", P):
            target, rtype, _ = self.g.resolve(o, ref, path)
            name = o.str(ref, "display", path)
            if rtype in ("Practitioner", "PractitionerRole"):
                if name is None and target is not None and target.rtype == "Practitioner":
                    name = self._person_name(target)
                if name is not None:
                    validated_by = name
                    break
            fallback = fallback or name
        validated_by = validated_by or fallback
        notes = [t for path, n in o.objs(d, "note", P) if (t := o.str(n, "text", path)) is not None]
        common = dict(
            request_id=request_id,
            specimen_id=specimen_id,
            status=status,
            validated_by=validated_by,
            validated_at=issued,
            comment="\n".join(notes) or None,
            message_at=_last_updated(o) or self.message_at,
        )
        components = o.objs(d, "component", P)
        out = []
        own = self._result(o, d, P, order, common, None)
        if not components or any(k in d for k in _VALUE_KEYS):
            out.append(own)
        for path, comp in components:  # a component's place: its observation's code, then its own
            out.append(self._result(o, comp, path, order, common, own.observation_key))
        return out

    @staticmethod
    def _person_name(r: _Res) -> str | None:
        names = r.objs(r.data, "name", r.rtype)
        if not names:
            return None
        path, n = names[0]
        text = " ".join([*r.strs(n, "given", path), r.str(n, "family", path) or ""]).strip()
        return text or r.str(n, "text", path)

    def _result(self, o: _Res, d: dict, path: str, order: Order, common: dict, parent: str | None) -> Result:
        cc = o.obj(d, "code", path)
        if cc is None:
            raise o.err(f"{path}.code", "observation code missing")
        chosen = None
        for cp, c in o.objs(cc, "coding", f"{path}.code"):
            code = o.str(c, "code", cp)
            if code is None:
                continue
            system = o.str(c, "system", cp)
            item = (system or NO_SYSTEM, code, o.str(c, "display", cp))
            if system == LOINC:
                chosen = item
                break
            chosen = chosen or item
        if chosen is None:
            raise o.err(f"{path}.code.coding", "observation code missing (no coding with a code)")
        system, code, display = chosen
        label = display or o.str(cc, "text", f"{path}.code") or ""
        val = self._value(o, d, path)
        key = f"{system}|{code}"
        ref_low = ref_high = ref_text = None
        ranges = o.objs(d, "referenceRange", path)
        if ranges:
            rp, rr = ranges[0]
            for bound in ("low", "high"):
                q = o.obj(rr, bound, rp)
                v = o.num(q, "value", f"{rp}.{bound}") if q is not None else None
                if bound == "low":
                    ref_low = None if v is None else float(v)
                else:
                    ref_high = None if v is None else float(v)
            ref_text = o.str(rr, "text", rp)
        return Result(
            result_id=order.result_id(code),
            code=code,
            label=label,
            code_system=system,
            value_num=val.num,
            value_text=val.text,
            unit=val.unit,
            ref_low=ref_low,
            ref_high=ref_high,
            ref_text=ref_text,
            flag=self._flag(o, d, path),
            value_repr=val.written,
            comparator=val.comparator,
            unit_system=val.unit_system,
            observation_key=f"{parent}/{key}" if parent else key,
            **common,
        )

    def _value(self, o: _Res, d: dict, path: str) -> _Value:
        present = [k for k in _VALUE_KEYS if k in d and d[k] is not None]
        unknown = next((k for k in d if k.startswith("value") and k not in _VALUE_KEYS), None)
        if unknown is not None:
            raise o.err(f"{path}.value[x]", "unknown value[x] type")
        if len(present) > 1:
            raise o.err(f"{path}.value[x]", "more than one value[x]")
        v = _Value()
        for ep, ext in o.objs(d, "extension", path):
            if o.str(ext, "url", ep) == EXT_VALUE_TEXT:
                v.text = o.str(ext, "valueString", ep)
        if not present:
            return v
        key = present[0]
        vp = f"{path}.{key}"
        if key in _UNSUPPORTED_VALUES:
            raise o.err(
                vp,
                f"{key} is not supported (expected Quantity, CodeableConcept, string, boolean, "
                "integer, time or dateTime)",
            )
        if key == "valueQuantity":
            q = o.obj(d, key, path) or {}
            number = o.num(q, "value", vp)
            comparator = o.str(q, "comparator", vp)
            qsystem = o.str(q, "system", vp)
            qcode = o.str(q, "code", vp)
            qunit = o.str(q, "unit", vp)
            if qsystem is None:  # no system named: UCUM when the unit is UCUM
                v.unit = qunit or qcode
                v.unit_system = unit_system(v.unit)
            else:  # a claim of UCUM holds only for a valid UCUM code; another system is kept
                v.unit = qcode or qunit
                v.unit_system = unit_system(v.unit, qsystem)
                if v.unit_system is None:
                    v.unit = qunit or qcode  # not UCUM after all: the unit as the sender wrote it
            if comparator is not None and comparator not in ("<", "<=", ">=", ">"):
                raise o.err(f"{vp}.comparator", "comparator is not <, <=, >= or >")
            if number is not None:
                v.num = float(number)
                v.written = _as_written(number)
                v.comparator = comparator
        elif key == "valueCodeableConcept":
            cc = o.obj(d, key, path) or {}
            v.text = o.str(cc, "text", vp)
            for cp, c in o.objs(cc, "coding", vp):
                v.text = v.text or o.str(c, "display", cp) or o.str(c, "code", cp)
        elif key == "valueInteger":
            number = o.num(d, key, path)
            if not isinstance(number, int):
                raise o.err(vp, "expected an integer")
            v.num = float(number)
            v.written = str(number)
        elif key == "valueBoolean":
            b = d[key]
            if not isinstance(b, bool):
                raise o.err(vp, f"expected a boolean, found {_kind(b)}")
            v.text = "true" if b else "false"
        else:  # valueString, valueTime, valueDateTime: kept as text
            v.text = o.str(d, key, path)
        return v

    @staticmethod
    def _flag(o: _Res, d: dict, path: str) -> str | None:
        items = o.objs(d, "interpretation", path)
        if not items:
            return None
        ip, cc = items[0]
        first = None
        for cp, c in o.objs(cc, "coding", ip):
            code = o.str(c, "code", cp)
            if code is None:
                continue
            if o.str(c, "system", cp) in (CS_INTERPRETATION, CS_V2_0078):
                return code
            first = first or code
        return first or o.str(cc, "text", ip)


# ------------------------------------------------------------------------------------------ entry points


def _control_from_bundle(doc: dict) -> str | None:
    rid = doc.get("id")
    if isinstance(rid, str) and rid:
        return rid
    ident = doc.get("identifier")
    if isinstance(ident, dict) and isinstance(ident.get("value"), str) and ident["value"]:
        return ident["value"]
    return None


def _source(data: dict) -> str:
    meta = data.get("meta")
    src = meta.get("source") if isinstance(meta, dict) else None
    return src if isinstance(src, str) else ""


def _count_unused(g: _Graph, builders: list[_Builder]) -> dict[str, int]:
    used = {key for b in builders for key in b.prescribers}
    for r in g.roots:
        if r.rtype == "Practitioner" and r.key not in used:
            g.skipped["Practitioner (not a requester)"] += 1
        elif r.rtype == "PractitionerRole":
            g.skipped["PractitionerRole (read through requesters only)"] += 1
    return dict(g.skipped)


def _nothing(g: _Graph, file: str | None) -> FhirError:
    _count_unused(g, [])
    seen = ", ".join(f"{k} {v}" for k, v in sorted(g.skipped.items()))
    return FhirError(
        "nothing to map: no laboratory data (Observation, DiagnosticReport with results, "
        "ServiceRequest or Specimen of a patient)" + (f"; skipped: {seen}" if seen else ""),
        file=file,
    )


def _guard(fn, file: str | None):
    """The located ``FhirError``; nesting too deep (a fault of the input) as one. Any other
    exception is a bug of the reader and escapes."""
    try:
        return fn()
    except FhirError as exc:
        raise exc.located(file=file) from None
    except RecursionError:
        raise FhirError("not readable: structure nested too deeply", file=file) from None


def map_document(data: bytes, *, file: str | None = None, test_mode: bool = False) -> Outcome:
    """Read one FHIR JSON document (Bundle or single resource). Every failure is a ``FhirError``."""
    return _guard(lambda: _map_document(data, file, test_mode), file)


def _map_document(data: bytes, file: str | None, test_mode: bool) -> Outcome:
    text = _decode(data, file, MAX_INPUT_BYTES)
    try:
        doc = _loads(text)
    except (ValueError, RecursionError) as exc:
        raise FhirError(_not_json_reason(text, exc), file=file) from None
    g = _Graph()
    if not isinstance(doc, dict):
        raise FhirError(f"not a FHIR resource: the JSON document is {_kind(doc)}, not an object", file=file)
    if doc.get("resourceType") == "Bundle":
        root = g.make(
            {k: v for k, v in doc.items() if k != "entry"},
            file=file,
            entry=None,
            line=None,
            full_url=None,
            fallback_key="Bundle",
        )
        btype = root.str(doc, "type", "Bundle")
        if btype is None:
            raise root.err("Bundle.type", "Bundle.type missing")
        if btype in _REFUSED_BUNDLE_TYPES:
            raise root.err(
                "Bundle.type", f"Bundle of type {btype!r} refused: a server's response or history, not data to import"
            )
        if btype not in BUNDLE_TYPES:
            raise root.err("Bundle.type", f"Bundle type unknown (expected one of {', '.join(BUNDLE_TYPES)})")
        for i, entry in enumerate(root.lst(doc, "entry", "Bundle"), start=1):
            if not isinstance(entry, dict):
                raise FhirError(f"expected an object, found {_kind(entry)}", file=file, entry=i, field="Bundle.entry")
            resource = entry.get("resource")
            if resource is None:
                g.skipped["entry without resource"] += 1
                continue
            full_url = entry.get("fullUrl")
            if full_url is not None and not isinstance(full_url, str):
                raise FhirError(
                    f"expected a string, found {_kind(full_url)}", file=file, entry=i, field="Bundle.entry.fullUrl"
                )
            res = g.make(
                resource,
                file=file,
                entry=i,
                line=None,
                full_url=full_url or None,
                fallback_key=f"fullUrl:{full_url}" if full_url else f"entry {i}",
            )
            if res.rtype == "Bundle":
                g.skipped["Bundle (nested)"] += 1
                continue
            g.add(res)
        control = _control_from_bundle(doc)
        message_at = root.dt(doc, "timestamp", "Bundle") or _last_updated(root)
    else:
        single = g.make(doc, file=file, entry=None, line=None, full_url=None, fallback_key="resource")
        g.add(single)
        control = None
        message_at = _last_updated(single)
    control = control or fingerprint([_canonical(doc)])
    facility = "fhir:" + _source(doc)
    linker = _Linker(g)
    groups = linker.run()
    if not groups:
        raise _nothing(g, file)
    builders = [_Builder(g, grp, facility, control, test_mode, linker.spec_group, message_at) for grp in groups]
    mapped = [b.run() for b in builders]
    return Outcome(mapped, _count_unused(g, builders))


def map_ndjson(files: Mapping[str, bytes], *, test_mode: bool = False) -> Outcome:
    """Read a Bulk Data export: {file name: ndjson bytes}. Every failure is a ``FhirError``."""
    return _guard(lambda: _map_ndjson(files, test_mode), None)


def _map_ndjson(files: Mapping[str, bytes], test_mode: bool) -> Outcome:
    if not isinstance(files, Mapping):
        raise FhirError("input is not a mapping of file names to bytes")
    names = list(files)
    if not all(isinstance(n, str) for n in names):
        raise FhirError("file names must be strings")
    names.sort()
    if not names:
        raise FhirError("no ndjson file given")
    total = 0
    g = _Graph()
    for name in names:
        data = files[name]
        size = len(data) if isinstance(data, bytes | bytearray | memoryview) else 0
        total += size
        if total > MAX_NDJSON_BYTES:
            raise FhirError(f"export of more than {MAX_NDJSON_BYTES} bytes", file=name)
        text = _decode(data, name, MAX_NDJSON_BYTES)
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                obj = _loads(line)
            except (ValueError, RecursionError) as exc:
                reason = _not_json_reason(text if lineno == 1 and _is_fsh(text) else line, exc)
                raise FhirError(reason, file=name, line=lineno) from None
            if isinstance(obj, dict) and "resourceType" not in obj:
                raise FhirError(
                    "not a FHIR resource (no resourceType): not part of the export's resources", file=name, line=lineno
                )
            res = g.make(obj, file=name, entry=None, line=lineno, full_url=None, fallback_key=f"{name}:{lineno}")
            if res.rtype == "Bundle":
                g.skipped["Bundle (nested)"] += 1
                continue
            g.add(res)
    linker = _Linker(g)
    groups = linker.run()
    if not groups:
        raise _nothing(g, names[0] if len(names) == 1 else None)
    builders = []
    for grp in groups:
        roots = {grp.patient.key: grp.patient} if grp.patient is not None else {}
        for anchor in grp.anchors:
            roots.setdefault(anchor.res.key, anchor.res)
            for dr in anchor.reports:
                roots.setdefault(dr.key, dr)
        for o, _, _ in grp.observations:
            roots.setdefault(o.key, o)
        for s, _ in grp.specimens:
            roots.setdefault(s.key, s)
        ordered = sorted(roots.values(), key=lambda r: (r.file or "", r.line or 0, r.key))
        digest = fingerprint(part for r in ordered for part in (_canonical((r.parent or r).data), b"\n"))
        facility = "fhir:" + (_source(grp.patient.data) if grp.patient is not None else "")
        builders.append(_Builder(g, grp, facility, digest, test_mode, linker.spec_group))
    mapped = [b.run() for b in builders]
    return Outcome(mapped, _count_unused(g, builders))


def read(data: bytes, *, file: str | None = None, test_mode: bool = False) -> list[Mapped]:
    """One ``Mapped`` per patient of a FHIR JSON document; the first failure is raised as a ``FhirError``."""
    return map_document(data, file=file, test_mode=test_mode).mapped


def read_ndjson(files: Mapping[str, bytes], *, test_mode: bool = False) -> list[Mapped]:
    """One ``Mapped`` per patient of a Bulk Data export ({file name: ndjson bytes})."""
    return map_ndjson(files, test_mode=test_mode).mapped
