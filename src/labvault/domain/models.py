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
    PROVISIONAL = "provisional"
    QUALIFIED = "qualified"


class ResultStatus(enum.StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"
    CORRECTED = "corrected"


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


@dataclass(slots=True)
class Identity:
    """Who a patient is. Stored encrypted, apart from every medical row."""

    patient_id: str
    nir: str  # INS-NIR (13 digits + 2-digit key) or NIA
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


@dataclass(slots=True)
class Specimen:
    specimen_id: str
    request_id: str
    type: str  # HL7 table 0487 code, e.g. BLD, SER, UR
    collected_at: datetime
    received_at: datetime | None = None


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
