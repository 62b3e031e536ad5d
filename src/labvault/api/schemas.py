"""Request and response bodies (they make the OpenAPI schema that clients and tests read)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(BaseModel):
    error: str


class LoginIn(Strict):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(BaseModel):
    mfa_required: bool
    csrf_token: str | None = None


class MfaIn(Strict):
    code: str = Field(min_length=6, max_length=8, pattern=r"^[0-9 ]+$")


class EnrolIn(Strict):
    token: str = Field(min_length=10, max_length=200)
    password: str = Field(min_length=1, max_length=1024)
    accept_commitment: bool


class EnrolOut(BaseModel):
    mfa_required: bool
    totp_uri: str | None = None
    qr_svg: str | None = None


class EnrolConfirmIn(Strict):
    token: str = Field(min_length=10, max_length=200)
    code: str = Field(min_length=6, max_length=8, pattern=r"^[0-9 ]+$")


class MeOut(BaseModel):
    account_id: str
    name: str
    tenant: str
    roles: list[str]


class TenantOut(BaseModel):
    id: str
    name: str
    finess: str
    status: str
    synthetic: bool  # generated data only (may be deleted without the lab's deletion instruction)


class PatientOut(BaseModel):
    patient_id: str
    nir: str | None  # None: no INS known (an identity stored on its traits alone)
    ins_oid: str
    identity_status: str
    family_name: str
    birth_name: str | None
    given_names: str
    birth_date: date
    sex: str
    birthplace_code: str | None
    address: str | None
    phone: str | None
    email: str | None


class ResultOut(BaseModel):
    result_id: str
    request_id: str
    specimen_id: str | None
    code_system: str
    code: str
    label: str
    value_num: float | None
    value_text: str | None
    unit: str | None
    ref_low: float | None
    ref_high: float | None
    ref_text: str | None
    flag: str | None
    status: str
    validated_by: str | None
    validated_at: datetime | None
    comment: str | None
    sensitivity: str


class ResultVersionOut(ResultOut):
    """One version of a result: the first value received is version 1, the current the highest."""

    version: int
    message_at: datetime | None  # when the message that said it was written


class RequestOut(BaseModel):
    request_id: str
    prescriber_id: str | None
    requested_at: datetime
    accession: str | None
    reported_at: datetime | None


class GrantIn(Strict):
    ticket: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=500)
    hours: int = Field(ge=1, le=8)
    fields: list[str] = Field(min_length=1, max_length=3)
    patients: list[str] | None = Field(default=None, max_length=1000)
    # The scope is named: patients, or a period (requests dated in it, inclusive), or both.
    period_from: date | None = None
    period_to: date | None = None


class PersonOut(BaseModel):
    name: str | None
    email: str | None
    account: str


class GrantPeriodOut(BaseModel):
    start: date | None = Field(serialization_alias="from")
    end: date | None = Field(serialization_alias="to")


class GrantOut(BaseModel):
    grant_id: str
    tenant: str
    account: str
    requested_by: PersonOut  # who asks, as the lab's admin sees it before approving
    ticket: str
    reason: str
    state: str
    fields: list[str]
    patients: list[str] | None
    period: GrantPeriodOut | None
    scope: str  # the exact scope in words
    hours: int
    requested_at: datetime | None
    expires_at: datetime | None


class AccountOut(BaseModel):
    account_id: str
    tenant: str
    name: str
    email: str
    kind: str
    roles: str
    active: bool
    mfa: bool
    commitment: bool
    suspended: dict[str, str | None] | None = None  # a vendor's security suspension: at, by, reason


class TokenIn(Strict):
    scopes: list[str] = Field(min_length=1, max_length=2)
    days: int = Field(ge=1, le=365)
    # a lab_admin minting for one of its lab's service accounts; otherwise the token is the caller's own
    email: str | None = Field(default=None, min_length=3, max_length=320)


class TokenOut(BaseModel):
    token_id: str
    token: str


class SignedInstructionIn(Strict):
    """A lab's signed instruction, as ``labvault instruction sign`` writes it."""

    instruction: dict[str, Any]
    signature: str | None = Field(default=None, max_length=200)
    signer_public_key: str | None = Field(default=None, max_length=200)


class InstructionDraftIn(Strict):
    """An instruction to sign: the fields of ``labvault instruction new``'s template, as JSON."""

    instruction: dict[str, Any]


class InstructionDraftOut(BaseModel):
    record: dict[str, Any]  # the instruction as it will be signed and kept
    canonical: str  # base64 of the exact bytes to sign (Ed25519)
    next: str


class InstructionOut(BaseModel):
    id: str
    kind: str
    signer: str
    valid_until: datetime
    received_at: datetime


class SignedInstructionOut(BaseModel):
    """A received instruction as kept: its signed body and signature, re-verifiable by anyone."""

    instruction: dict[str, Any]
    signature: str
    signer: str
    signer_public_key: str | None
    received_at: datetime


class MigrationOut(BaseModel):
    """A migration's state and figures (``Job.public()``): never a personal value."""

    migration: str
    tenant: str
    instruction: str
    kind: str
    state: str
    attempts: int
    plan: dict[str, Any]
    approvals: list[dict[str, Any]]
    deadline: datetime
    planned_at: datetime
    package: list[dict[str, Any]] | None
    destroyed: list[dict[str, Any]]
    purged_at: datetime | None
    closed_at: datetime | None


class ApprovalRecordOut(BaseModel):
    """What a lab signer signs (Ed25519 over its canonical JSON) to approve a planned migration."""

    approve: str
    migration: str
    tenant: str
    instruction: str
    plan_sha256: str


class LabApprovalIn(Strict):
    public_key: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    signature: str = Field(min_length=1, max_length=200)


class ReceiptIn(Strict):
    """The recipient's receipt, as ``labvault migrate acknowledge`` writes it."""

    receipt: dict[str, Any]
    mac: str = Field(min_length=1, max_length=128)
    signature: str | None = Field(default=None, min_length=1, max_length=128)  # when the recipient signs
    public_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


class IngestOutcomeOut(BaseModel):
    """What became of one message of an ingested body: ``accepted`` (stored), ``duplicate`` (stored
    before: nothing created), ``queued`` (received: its identity conflicts with a stored one and
    waits for the lab's staff), ``rejected`` (the reason; kept in the lab's encrypted quarantine)."""

    message: int
    status: str
    reason: str | None = None
    quarantine_id: str | None = None


class IngestOut(BaseModel):
    """The answer to ``POST /api/v1/tenants/{tenant}/ingest``: the fields of ``labvault ingest
    --json``, and each message's outcome. With a refused message the answer is 422 and adds ``error``."""

    tenant: str
    format: str
    messages: int
    accepted: int
    duplicates: int
    rejected: int
    queued: int = 0  # received; waiting in the identity-vigilance queue
    results: int
    reasons: list[str]
    quarantine_ids: list[str]
    outcomes: list[IngestOutcomeOut]
    error: str | None = None
