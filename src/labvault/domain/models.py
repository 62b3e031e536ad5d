"""The core model: a lab (tenant), its patients' identities, prescribers, requests, specimens, results.

These are plain dataclasses: no database, no keys. Identity and medical data are separate objects;
a request names its patient by ``patient_id`` only, and the gateway turns that into a per-tenant
pseudonym before anything is stored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime

LOINC = "http://loinc.org"


class IdentityStatus(enum.StrEnum):
    """The four statuses of the national identity-vigilance rules (RNIV): an identity is
    *provisional* until checked; *recovered* when its INS was fetched from the national teleservice
    without an identity document seen; *validated* when a document was seen, INS not fetched;
    *qualified* when both. Only a qualified identity's INS may be sent out with its data."""

    PROVISIONAL = "provisional"
    RECOVERED = "recovered"
    VALIDATED = "validated"
    QUALIFIED = "qualified"


class ResultStatus(enum.StrEnum):
    """A result's status, as every format says it (HL7 OBX-11, HPRIM, FHIR Observation.status)."""

    PENDING = "pending"  # asked, no value yet (FHIR "registered")
    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"


class RequestStatus(enum.StrEnum):
    """A request's status, following its results (FHIR DiagnosticReport.status)."""

    REGISTERED = "registered"  # no result with a value yet
    PARTIAL = "partial"  # some results final, others pending or preliminary
    FINAL = "final"
    CORRECTED = "corrected"  # a result was corrected after it was final
    AMENDED = "amended"  # a result was added or cancelled after the request was final
    CANCELLED = "cancelled"  # every result cancelled or entered in error


class Urgency(enum.StrEnum):
    """How soon a request entered by hand is to be done."""

    ROUTINE = "routine"
    URGENT = "urgent"


class SpecimenStatus(enum.StrEnum):
    """A specimen's life in the lab (see ``labvault.access.work``: the moves allowed)."""

    COLLECTED = "collected"
    RECEIVED = "received"
    REJECTED = "rejected"
    IN_ANALYSIS = "in-analysis"
    STORED = "stored"
    DISCARDED = "discarded"


class Nonconformity(enum.StrEnum):
    """Why a specimen was rejected (a code: never a value)."""

    HAEMOLYSED = "haemolysed"
    INSUFFICIENT = "insufficient"
    UNLABELLED = "unlabelled"
    WRONG_CONTAINER = "wrong-container"
    DELAY_EXCEEDED = "delay-exceeded"


class Workflow(enum.StrEnum):
    """Where a result stands in the lab's work: ordered (no value yet), entered (by hand or from an
    analyser), technically validated, biologically validated, or released by an auto-validation rule."""

    ORDERED = "ordered"
    ENTERED = "entered"
    TECHNICAL = "technical"
    BIOLOGICAL = "biological"
    AUTO_RELEASED = "auto-released"


class Sensitivity(enum.StrEnum):
    HIV = "hiv"
    VIRAL_HEPATITIS = "viral_hepatitis"
    GENETICS = "genetics"
    PREGNANCY = "pregnancy"
    ONCOLOGY = "oncology"
    OTHER = "other"


@dataclass(slots=True)
class Tenant:
    """A medical biology lab: the data controller."""

    id: str
    name: str
    finess: str
    status: str = "active"
    created_at: datetime | None = None
    synthetic: bool = False  # generated data only: may be generated into, deleted without an instruction
    timezone: str = "Europe/Paris"  # a local time received without a zone is read in this zone
    address: str = ""  # the lab's postal address, printed on its reports
    working_hours: str = ""  # "mon-fri 07:00-19:00; sat 08:00-12:00" (empty: the default hours)


@dataclass(slots=True)
class Identity:
    """Who a patient is. Stored encrypted, apart from every medical row.

    The strict traits of the RNIV are ``birth_name`` (``family_name`` when not given), the given
    names at birth in order (``given_names``, space separated), the first of them
    (``first_given_name``), ``birth_date``, ``sex`` and ``birthplace_code``; ``family_name`` is the
    name used, ``used_given_name`` the given name used. ``local_ids`` are the identifiers each
    sending system gave the patient (IPP): (system, value) pairs. ``nir`` is the INS (NIR or NIA,
    with ``ins_oid``), None when the sender gave none."""

    patient_id: str
    nir: str | None  # INS-NIR (13 digits + 2-digit key) or NIA; None: no INS known
    identity_status: IdentityStatus
    family_name: str
    given_names: str
    birth_date: date
    sex: str  # "M", "F" or "U"
    birth_name: str | None = None
    birthplace_code: str | None = None  # INSEE commune code
    address: str | None = None
    phone: str | None = None
    email: str | None = None
    ins_oid: str = "1.2.250.1.213.1.4.8"  # INS-NIR; 1.2.250.1.213.1.4.9 for an NIA
    first_given_name: str | None = None  # None: the first of ``given_names``
    used_given_name: str | None = None
    local_ids: list[tuple[str, str]] = field(default_factory=list)  # (system, value): IPPs
    merged_into: str | None = None  # set when the lab merged this identity into another

    @property
    def strict_birth_name(self) -> str:
        return self.birth_name or self.family_name

    @property
    def first_given(self) -> str:
        if self.first_given_name:
            return self.first_given_name
        parts = self.given_names.replace(",", " ").split()
        return parts[0] if parts else ""

    @property
    def qualified(self) -> bool:
        """Only a qualified identity's INS goes out with its data (RNIV)."""
        return self.nir is not None and self.identity_status is IdentityStatus.QUALIFIED


@dataclass(slots=True)
class Prescriber:
    prescriber_id: str
    rpps: str
    family_name: str
    given_name: str


@dataclass(slots=True)
class Request:
    """An order: what a prescriber asked the lab to do for one patient."""

    request_id: str
    patient_id: str
    prescriber_id: str | None
    requested_at: datetime
    accession: str | None = None  # the lab's own request number
    reported_at: datetime | None = None
    # The order's numbers as the sender gave them (HL7 ORC-2/OBR-2 placer, ORC-3/OBR-3 filler; HPRIM
    # OBR); the same order from the same sender updates its request, whatever the message.
    placer_number: str | None = None
    filler_number: str | None = None
    sender: str | None = None  # the sending system (HL7 MSH-3/4, HPRIM H sender) the numbers belong to
    status: RequestStatus | None = None  # computed from the results when stored
    message_at: datetime | None = None  # when the message saying this was written (orders versions)
    # Entered by hand in the lab (None: received through ingest): routine or urgent, the account
    # that entered it, and its clinical information, pregnancy and collector (sealed).
    urgency: Urgency | None = None
    entered_by: str | None = None
    clinical: str | None = None
    pregnant: bool | None = None
    collector: str | None = None


@dataclass(slots=True)
class Specimen:
    """A specimen; its id is the barcode its label carries."""

    specimen_id: str
    request_id: str
    type: str  # HL7 table 0487 code, e.g. BLD, SER, UR
    collected_at: datetime
    received_at: datetime | None = None
    status: SpecimenStatus | None = None  # None: received through ingest, outside the lab's workflow
    status_at: datetime | None = None
    nonconformity: Nonconformity | None = None
    container: str | None = None  # sealed
    # The id the specimen's label carries as a sender read it (HL7 SPM-2): an analyser's results
    # name the lab's specimen by it (``access.orders``). Not stored: the lab's own id is the barcode.
    label: str | None = None


@dataclass(slots=True)
class Result:
    result_id: str
    request_id: str
    code: str
    label: str
    code_system: str = LOINC
    specimen_id: str | None = None
    value_num: float | None = None
    value_text: str | None = None
    unit: str | None = None  # UCUM
    ref_low: float | None = None
    ref_high: float | None = None
    ref_text: str | None = None
    flag: str | None = None  # HL7 table 0078: L, H, LL, HH, N, A, POS, NEG
    status: ResultStatus = ResultStatus.FINAL
    validated_by: str | None = None
    validated_at: datetime | None = None
    comment: str | None = None
    # Derived from (code_system, code) through the package's code sets; see sensitivity.py.
    sensitivity: Sensitivity = field(default=Sensitivity.OTHER)
    # The number as written (``105600``, ``12.50``: significant digits kept), with its comparator
    # (``<``, ``<=``, ``>=``, ``>``) when the value is a bound such as ``<0.5``.
    value_repr: str | None = None
    comparator: str | None = None
    # The unit's system: UCUM (``http://unitsofmeasure.org``) only when the unit is valid UCUM;
    # otherwise the sender's own (``urn:hl7v2:units:…``) or None.
    unit_system: str | None = None
    observation_key: str | None = None  # the result's place in its order (code + sub-id): versions share it
    version: int = 1  # 1 for the first value received; each correction adds one
    message_at: datetime | None = None  # when the message saying this was written (orders versions)
    # The lab's workflow (None: received through ingest, outside it): where the result stands, who
    # entered it, who validated it technically and biologically (account ids), the catalogue
    # version it was judged by and the auto-validation rule that released it ("<version>:<rule>").
    workflow: Workflow | None = None
    entered_by: str | None = None
    technical_by: str | None = None
    biological_by: str | None = None
    catalogue_version: int | None = None
    released_by_rule: str | None = None


@dataclass(frozen=True, slots=True)
class OrderedTest:
    """A test asked on a request entered by hand, as the lab's catalogue describes it: one result
    is created per test, one specimen per distinct container."""

    code_system: str
    code: str
    label: str
    unit: str | None
    specimen_type: str  # HL7 table 0487 code, e.g. SER, BLD, UR
    container: str  # e.g. "SST gold", "EDTA lavender": specimens are derived per container


@dataclass(frozen=True, slots=True)
class CallbackTask:
    """A critical value's call-back task: ``called`` and ``read_back`` once done (sealed)."""

    task_id: str
    request_id: str
    result_id: str
    opened_at: datetime
    due_at: datetime
    state: str  # open, done
    overdue: bool = False
    closed_by: str | None = None
    closed_at: datetime | None = None
    called: str | None = None
    read_back: bool | None = None


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event of a specimen's timeline, drawn from the lab's audit trail (ids only)."""

    at: datetime
    action: str
    actor: str
    outcome: str
