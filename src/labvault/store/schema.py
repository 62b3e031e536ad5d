"""The tables. Every primary key starts with ``tenant_id`` (ready to shard by lab, e.g. Citus).

Columns ending in ``_enc`` hold AES-256-GCM ciphertexts (see ``labvault.crypto.fields``); columns
ending in ``_bidx`` hold blind indexes. Medical rows (request, specimen, result) carry the patient's
per-lab pseudonym, never ``patient_id``: re-linking them to an identity needs the lab's identity
key. Only ``labvault.access`` reads or writes the personal-data tables (``PERSONAL_TABLES``).
Vendor-side rows (platform accounts, the platform signing key) use ``tenant_id = 'platform'``.
On SQLite the tables are WITHOUT ROWID: the composite primary key is the table's own B-tree,
which saves one index write per row.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TENANT_ID = 64
ID = 64
# The workflow states a result waits at (labvault.domain.models.Workflow): ordered, entered,
# technically validated. The partial index ix_result_waiting holds these rows only.
WAITING_SQL = "workflow IN ('ordered', 'entered', 'technical')"


def _tenant_col() -> Column:
    return Column("tenant_id", String(TENANT_ID), primary_key=True)


tenant = Table(
    "tenant",
    metadata,
    _tenant_col(),
    Column("name", String(200), nullable=False),
    Column("finess", String(9), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("shredded_at", DateTime(timezone=True)),
    # Which lab roles may read each sensitive category, as the lab decided (JSON object).
    Column("sensitive_access", Text),
    # Rolling retention of the lab's audit trail (NULL: 365 days); longer needs a recorded reason.
    Column("audit_retention_days", Integer),
    Column("audit_retention_reason", Text),
    # 1: created with generated data only (tenant add --synthetic, demo, generate, benchmarks): may be
    # generated into, and deleted without the lab's signed deletion instruction. 0: a real lab.
    Column("synthetic", Integer, nullable=False, server_default="0"),
    # The lab's time zone (IANA name): a local time received without a zone is read in it.
    Column("timezone", String(64), nullable=False, server_default="Europe/Paris"),
    # Revision 0019: the lab's postal address (printed on its reports) and opening hours
    # ("mon-fri 07:00-19:00; sat 08:00-12:00", read by the off-hours monitoring rule).
    Column("address", Text),
    Column("working_hours", String(100)),
)

account = Table(
    "account",
    metadata,
    _tenant_col(),
    Column("account_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("kind", String(16), nullable=False, server_default="person"),
    Column("roles", String(200), nullable=False, server_default=""),
    Column("active", Integer, nullable=False, server_default="1"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_hash", String(200)),  # argon2id
    Column("totp_secret_wrapped", LargeBinary),  # wrapped by the platform KEK
    Column("mfa_enabled", Integer, nullable=False, server_default="0"),
    Column("enrolment_hash", String(64)),  # sha256 of the one-time enrolment token
    Column("enrolment_expires", DateTime(timezone=True)),
    Column("commitment_at", DateTime(timezone=True)),  # confidentiality commitment, Art. 28(3)(b)
    Column("commitment_ref", String(200)),
    Column("service_purpose", String(32)),  # service accounts: the one purpose they act for
    Column("failed_logins", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True)),
    Column("deactivated_at", DateTime(timezone=True)),
    # Service accounts of a feed: the pinned client certificate (SHA-256 of its DER, and its PEM).
    Column("feed_cert_sha256", String(64)),
    Column("feed_cert_pem", Text),
    Column("totp_last_step", BigInteger),  # the last TOTP time step accepted: a code works once
    # a vendor's security suspension: who, when, why (shown to the lab; only the lab re-enables)
    Column("suspended_at", DateTime(timezone=True)),
    Column("suspended_by", String(ID)),
    Column("suspended_reason", String(500)),
    Index("ix_account_email", "email", unique=True),
    Index("ix_account_feed_cert_sha256", "feed_cert_sha256", unique=True),
    sqlite_with_rowid=False,
)

# Sessions and API tokens are found by the sha256 of their secret; the secret itself is never stored.
login_session = Table(
    "login_session",
    metadata,
    _tenant_col(),
    Column("session_hash", String(64), primary_key=True),
    Column("account_id", String(ID), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("mfa_passed", Integer, nullable=False),
    Column("source_addr", String(64)),
    Column("user_agent", String(300)),
    Column("revoked_at", DateTime(timezone=True)),
    # when this session's account last proved its TOTP code (at login, or POST /api/v1/auth/step-up)
    Column("totp_at", DateTime(timezone=True)),
    Index("ix_login_session_account", "tenant_id", "account_id"),
    sqlite_with_rowid=False,
)

api_token = Table(
    "api_token",
    metadata,
    _tenant_col(),
    Column("token_id", String(ID), primary_key=True),
    Column("account_id", String(ID), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("last_used", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# Break-glass access of vendor support to one lab's personal data, approved by that lab.
access_grant = Table(
    "access_grant",
    metadata,
    _tenant_col(),
    Column("grant_id", String(ID), primary_key=True),
    Column("account_id", String(ID), nullable=False),  # the support account it is for
    Column("ticket", String(100), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("scope_patients", Text),  # JSON list of patient ids; NULL: not bounded by patients (then by a period)
    Column("scope_fields", Text, nullable=False),  # JSON list: identity, results, requests
    # The period the grant covers (ISO dates, inclusive): requests dated in it, their results, and
    # the identities of their patients. A grant names patients, or a period, or both.
    Column("scope_from", String(10)),
    Column("scope_to", String(10)),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("hours", Integer, nullable=False),
    Column("approved_by", String(ID)),
    Column("approved_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(ID)),
    sqlite_with_rowid=False,
)

# Failed logins per source address (per account: on the account row).
login_throttle = Table(
    "login_throttle",
    metadata,
    _tenant_col(),
    Column("source_addr", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("locked_until", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

tenant_key = Table(
    "tenant_key",
    metadata,
    _tenant_col(),
    Column("purpose", String(16), primary_key=True),  # "data", "index", "signing"
    Column("version", Integer, primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("public", LargeBinary),  # public half of a signing key
    Column("state", String(16), nullable=False),  # active, retiring, retired
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

patient_identity = Table(
    "patient_identity",
    metadata,
    _tenant_col(),
    Column("patient_id", String(ID), primary_key=True),
    Column("identity_status", String(16), nullable=False),
    Column("ins_oid", String(64)),  # NULL: no INS known
    Column("key_version", Integer, nullable=False),
    Column("nir_bidx", LargeBinary(16)),  # NULL: no INS known
    Column("name_bidx", LargeBinary(16), nullable=False),
    # The strict traits (birth name, first given name, birth date, sex), normalised: an identity
    # without an INS is found again by them (labvault.access.matching).
    Column("traits_bidx", LargeBinary(16)),
    # The birth date alone (a name search by prefix reads the patients born that day and compares
    # their decrypted names). NULL: stored before revision 0015, found by the exact name search.
    Column("born_bidx", LargeBinary(16)),
    Column("nir_enc", LargeBinary),
    Column("family_name_enc", LargeBinary, nullable=False),
    Column("birth_name_enc", LargeBinary),
    Column("given_names_enc", LargeBinary, nullable=False),
    Column("first_given_enc", LargeBinary),
    Column("used_given_enc", LargeBinary),
    Column("birth_date_enc", LargeBinary, nullable=False),
    Column("sex_enc", LargeBinary, nullable=False),
    Column("birthplace_enc", LargeBinary),
    Column("address_enc", LargeBinary),
    Column("phone_enc", LargeBinary),
    Column("email_enc", LargeBinary),
    Column("merged_into", String(ID)),  # the identity this one was merged into (undone: NULL)
    # The last change of status: by whom (an account id, or ``ingest``), when, on what evidence
    # (a code such as ``id-card``, ``insi``; never a value of the document).
    Column("status_changed_by", String(ID)),
    Column("status_changed_at", DateTime(timezone=True)),
    Column("status_evidence", String(64)),
    Index("ix_patient_identity_nir", "tenant_id", "nir_bidx"),
    Index("ix_patient_identity_name", "tenant_id", "name_bidx"),
    Index("ix_patient_identity_traits", "tenant_id", "traits_bidx"),
    Index("ix_patient_identity_born", "tenant_id", "born_bidx"),
    sqlite_with_rowid=False,
)

# The identifiers each sending system gave a patient (IPP): found by a blind index of
# (system, value), the value sealed.
patient_local_id = Table(
    "patient_local_id",
    metadata,
    _tenant_col(),
    Column("local_id", String(ID), primary_key=True),
    Column("patient_id", String(ID), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("id_bidx", LargeBinary(16), nullable=False),
    Column("ident_enc", LargeBinary, nullable=False),  # packed (system, value)
    Index("ix_patient_local_id_bidx", "tenant_id", "id_bidx"),
    Index("ix_patient_local_id_patient", "tenant_id", "patient_id"),
    sqlite_with_rowid=False,
)

# Messages whose INS or local identifier points to an identity with other traits: neither merged
# nor created, they wait here (sealed like the quarantine) for the lab's staff to attach, create or
# reject. ``reason`` is a code, never a value.
identity_queue = Table(
    "identity_queue",
    metadata,
    _tenant_col(),
    Column("queue_id", String(ID), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("format", String(16), nullable=False),
    Column("feed", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("candidate_id", String(ID)),  # the stored identity the message points to
    Column("status", String(16), nullable=False),  # held, attached, created, rejected
    Column("key_version", Integer, nullable=False),
    Column("raw_enc", LargeBinary),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(ID)),
    Column("resolved_to", String(ID)),  # the identity the message was stored under
    Index("ix_identity_queue_status", "tenant_id", "status"),
    sqlite_with_rowid=False,
)

# Merges of two identities of a lab: the requests moved, so that an unmerge moves exactly them back.
identity_merge = Table(
    "identity_merge",
    metadata,
    _tenant_col(),
    Column("merge_id", String(ID), primary_key=True),
    Column("kept_id", String(ID), nullable=False),
    Column("merged_id", String(ID), nullable=False),
    Column("requests", Text, nullable=False),  # JSON list of request ids moved
    Column("merged_by", String(ID), nullable=False),
    Column("merged_at", DateTime(timezone=True), nullable=False),
    Column("source", String(16), nullable=False),  # cli, api, hl7-a40
    Column("undone_by", String(ID)),
    Column("undone_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

prescriber = Table(
    "prescriber",
    metadata,
    _tenant_col(),
    Column("prescriber_id", String(ID), primary_key=True),
    Column("key_version", Integer, nullable=False),
    Column("rpps_bidx", LargeBinary(16), nullable=False),
    Column("rpps_enc", LargeBinary, nullable=False),
    Column("name_enc", LargeBinary, nullable=False),
    Index("ix_prescriber_rpps", "tenant_id", "rpps_bidx"),
    sqlite_with_rowid=False,
)

request = Table(
    "request",
    metadata,
    _tenant_col(),
    Column("request_id", String(ID), primary_key=True),
    Column("pseudonym", String(32), nullable=False),
    Column("prescriber_id", String(ID)),
    Column("key_version", Integer, nullable=False),
    Column("accession_enc", LargeBinary),
    Column("requested_at_enc", LargeBinary, nullable=False),
    Column("reported_at_enc", LargeBinary),
    # The order keys: blind indexes of (patient, filler number) and (patient, sender, placer
    # number), so that the same order received again (a resend, a correction, another format)
    # updates this request (labvault.access.orders).
    Column("order_bidx", LargeBinary(16)),
    Column("placer_bidx", LargeBinary(16)),
    Column("status", String(16)),  # RequestStatus, from the results
    Column("order_enc", LargeBinary),  # packed: placer number, filler number, sender, message time
    # Entered by hand (revision 0017): routine or urgent, the account that entered it, and the
    # clinical information, pregnancy and collector, sealed (packed, see access/work.py).
    Column("urgency", String(16)),
    Column("entered_by", String(ID)),
    Column("clinical_enc", LargeBinary),
    # The patient id sealed with the lab's data key, bound to the row (revision 0019): the lab's
    # own work finds a request's patient by opening it, not by trying every identity's pseudonym.
    # NULL on requests written before; they are found the old way.
    Column("patient_enc", LargeBinary),
    Index("ix_request_pseudonym", "tenant_id", "pseudonym"),
    Index("ix_request_order", "tenant_id", "order_bidx"),
    Index("ix_request_placer", "tenant_id", "placer_bidx"),
    sqlite_with_rowid=False,
)

specimen = Table(
    "specimen",
    metadata,
    _tenant_col(),
    Column("specimen_id", String(ID), primary_key=True),
    Column("request_id", String(ID), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("type_enc", LargeBinary, nullable=False),
    Column("collected_at_enc", LargeBinary, nullable=False),
    Column("received_at_enc", LargeBinary),
    # The specimen's life (revision 0017): collected, received, rejected, in-analysis, stored,
    # discarded; when it last changed; a non-conformity code (never a value); its container, sealed.
    Column("status", String(16)),
    Column("status_at", DateTime(timezone=True)),
    Column("nonconformity", String(32)),
    Column("container_enc", LargeBinary),
    Index("ix_specimen_request", "tenant_id", "request_id"),
    sqlite_with_rowid=False,
)

result = Table(
    "result",
    metadata,
    _tenant_col(),
    Column("result_id", String(ID), primary_key=True),
    Column("request_id", String(ID), nullable=False),
    Column("specimen_id", String(ID)),
    Column("pseudonym", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("key_version", Integer, nullable=False),
    # One sealed value per result: code system, code, label, value (numeric or text), unit,
    # reference range, flag, validating biologist and time, comment (see access/codec.py).
    # One AES-GCM operation per row instead of four: this is the hot path of every ingest.
    Column("observation_enc", LargeBinary, nullable=False),
    Column("version", Integer, nullable=False, server_default="1"),  # of the value in observation_enc
    # The lab's workflow (revision 0017): ordered, entered, technical, biological, auto-released;
    # the accounts that entered and validated it (ids), the catalogue version it was judged by, and
    # the auto-validation rule that released it ("<rules version>:<rule id>"). NULL: received
    # through ingest, outside the workflow.
    Column("workflow", String(16)),
    Column("entered_by", String(ID)),
    Column("technical_by", String(ID)),
    Column("biological_by", String(ID)),
    Column("catalogue_version", Integer),
    Column("released_by_rule", String(100)),
    # A patient's results are found through their requests (indexed by pseudonym); an index on
    # the result's own pseudonym would put a random-order B-tree write on every ingested row.
    Index("ix_result_request", "tenant_id", "request_id"),
    # The results waiting in the lab's workflow, and only those (a partial index: ingested rows,
    # whose workflow is NULL, and released ones add no entry).
    Index(
        "ix_result_waiting",
        "tenant_id",
        "workflow",
        sqlite_where=text(WAITING_SQL),
        postgresql_where=text(WAITING_SQL),
    ),
    sqlite_with_rowid=False,
)

# Every version of a result that was received (the first value, each correction, a cancellation),
# sealed as the result is: the result row holds the current one.
result_version = Table(
    "result_version",
    metadata,
    _tenant_col(),
    Column("version_id", String(ID), primary_key=True),
    Column("result_id", String(ID), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("key_version", Integer, nullable=False),
    Column("observation_enc", LargeBinary, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("message_key", String(64)),  # the message that said it (see ingest_message)
    Index("ix_result_version_result", "tenant_id", "result_id"),
    Index("ix_result_version_request", "tenant_id", "request_id"),
    sqlite_with_rowid=False,
)

# Call-back tasks of critical values (revision 0017): a critical result's prescriber or patient is
# to be called before ``due_at``; who was called and the read-back confirmation are sealed.
callback_task = Table(
    "callback_task",
    metadata,
    _tenant_col(),
    Column("task_id", String(ID), primary_key=True),
    Column("request_id", String(ID), nullable=False),
    Column("result_id", String(ID), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),  # open, done
    Column("closed_by", String(ID)),
    Column("closed_at", DateTime(timezone=True)),
    Column("key_version", Integer, nullable=False),
    Column("detail_enc", LargeBinary),  # packed: who was called, read-back confirmed
    Index("ix_callback_task_state", "tenant_id", "state"),
    sqlite_with_rowid=False,
)

signed_record = Table(
    "signed_record",
    metadata,
    _tenant_col(),
    Column("record_id", String(ID), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("body", Text, nullable=False),  # canonical JSON, no personal value
    Column("signature", String(128), nullable=False),
    Column("signer_public_key", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

audit_event = Table(
    "audit_event",
    metadata,
    _tenant_col(),
    Column("seq", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(ID), nullable=False),
    Column("action", String(64), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("actor_roles", String(200)),
    Column("object_refs", Text),  # pseudonymous ids only (JSON list)
    Column("grant_id", String(ID)),
    Column("source_addr", String(64)),
    Column("user_agent", String(300)),
    Column("prev_hash", LargeBinary(32)),  # the chain: see labvault.audit.chain
    Column("hash", LargeBinary(32)),
    sqlite_with_rowid=False,
)

# Signed Merkle roots (RFC 6962) over a lab's audit events 1..size; each lab can export and keep them.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    _tenant_col(),
    Column("size", BigInteger, primary_key=True),
    Column("root", LargeBinary(32), nullable=False),
    Column("head", LargeBinary(32), nullable=False),  # hash of event `size`
    Column("at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),  # the signed canonical JSON
    Column("signature", String(128), nullable=False),
    Column("signer_public_key", String(64), nullable=False),
    sqlite_with_rowid=False,
)

# Where a lab's audit trail was cut by retention: events 1..size are gone; what verification
# needs to go on from there (the head hash and the Merkle compact range at the cut) is kept, signed.
audit_cut = Table(
    "audit_cut",
    metadata,
    _tenant_col(),
    Column("size", BigInteger, primary_key=True),
    Column("head", LargeBinary(32), nullable=False),
    Column("frontier", Text, nullable=False),  # JSON: merkle.CompactRange.state()
    Column("at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("signature", String(128), nullable=False),
    Column("signer_public_key", String(64), nullable=False),
    sqlite_with_rowid=False,
)

# Messages already stored, by idempotency key (a hash of sending facility + control id, or of a
# FHIR bundle's id): the same message received twice creates nothing new.
ingest_message = Table(
    "ingest_message",
    metadata,
    _tenant_col(),
    Column("message_key", String(64), primary_key=True),
    Column("format", String(16), nullable=False),
    Column("feed", String(16), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("requests", Integer, nullable=False),
    Column("results", Integer, nullable=False),
    sqlite_with_rowid=False,
)

# Messages refused at ingest, kept encrypted (raw bytes and the reason, which names the file) for
# the lab to inspect, replay or drop. Dropping erases the ciphertexts, not the row.
quarantine = Table(
    "quarantine",
    metadata,
    _tenant_col(),
    Column("quarantine_id", String(ID), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("format", String(16), nullable=False),
    Column("feed", String(16), nullable=False),
    Column("size", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # held, replayed, dropped
    Column("key_version", Integer, nullable=False),
    Column("raw_enc", LargeBinary),
    Column("reason_enc", LargeBinary),
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_by", String(ID)),
    Index("ix_quarantine_status", "tenant_id", "status"),
    sqlite_with_rowid=False,
)

# The people a lab authorises to sign its instructions (GDPR Art. 28(3)(a)), with their Ed25519
# public keys; registered and revoked by the lab's lab_admin. Revoked keys stay, for verification
# of what they signed before.
instruction_signer = Table(
    "instruction_signer",
    metadata,
    _tenant_col(),
    Column("signer_id", String(ID), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("public_key", String(64), nullable=False),  # hex of the 32-byte Ed25519 key
    Column("added_by", String(ID), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("revoked_by", String(ID)),
    Column("revoked_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# Signed instructions received from a lab, as signed (canonical JSON and signature).
instruction = Table(
    "instruction",
    metadata,
    _tenant_col(),
    Column("instruction_id", String(ID), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("signer_id", String(ID), nullable=False),
    # The signed record, sealed with the lab's data key: it may name patients (by INS, for an
    # import) and its purpose is free text. ``body`` held it in clear before revision 0009.
    Column("body", Text),
    Column("body_enc", LargeBinary),
    Column("key_version", Integer),
    Column("body_sha256", String(64)),  # of the canonical record: evidence that survives the lab's keys
    Column("signature", String(128), nullable=False),
    Column("valid_until", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("received_by", String(ID), nullable=False),
    sqlite_with_rowid=False,
)

# How long a lab keeps each category of its data (``results``, a sensitive category, ``quarantine``),
# as the lab decided, with the legal reference it relies on. No default: a lab cannot be created
# without its ``results`` rule (see labvault.retention).
retention_rule = Table(
    "retention_rule",
    metadata,
    _tenant_col(),
    Column("category", String(32), primary_key=True),
    Column("days", Integer, nullable=False),
    Column("legal_reference", Text, nullable=False),
    Column("set_by", String(ID), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# Legal holds: while one is active (not released), retention deletes nothing in its scope (a
# category, or '*' for everything). A hold is placed only with its recorded basis.
legal_hold = Table(
    "legal_hold",
    metadata,
    _tenant_col(),
    Column("hold_id", String(ID), primary_key=True),
    Column("basis", Text, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("set_by", String(ID), nullable=False),
    Column("set_at", DateTime(timezone=True), nullable=False),
    Column("released_by", String(ID)),
    Column("released_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# Each lab's test catalogue, every version (revision 0016): the newest is in force; a result
# records the version it was judged by. No personal value.
lab_catalogue = Table(
    "lab_catalogue",
    metadata,
    _tenant_col(),
    Column("version", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("loaded_by", String(ID), nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# Each lab's auto-validation rules, every version: in force only once a named biologist
# activated it.
autovalidation_rules = Table(
    "autovalidation_rules",
    metadata,
    _tenant_col(),
    Column("version", Integer, primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("written_by", String(ID), nullable=False),
    Column("written_at", DateTime(timezone=True), nullable=False),
    Column("activated_by", String(ID)),
    Column("activated_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# Each lab's issued reports (revision 0018): one row per version of a request's report, its
# status, who issued it and when, the report it replaces, the SHA-256 of its PDF and of its
# results' state (ids, versions, statuses). No personal value: the PDF is rendered again on demand.
lab_report = Table(
    "lab_report",
    metadata,
    _tenant_col(),
    Column("report_id", String(ID), primary_key=True),
    Column("request_id", String(ID), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("issued_by", String(ID), nullable=False),
    Column("replaces", String(ID)),
    Column("pdf_sha256", String(64), nullable=False),
    Column("results_sha256", String(64), nullable=False),
    Index("ix_lab_report_request", "tenant_id", "request_id"),
    sqlite_with_rowid=False,
)

# Exports and migrations out of a lab (labvault.migration): one row per procedure, its state and
# the evidence of each step (plan figures, approvals, manifest, receipt, purge, certificate). No
# personal value: figures, field names, hashes, ids, and keys wrapped by the key provider.
migration_job = Table(
    "migration_job",
    metadata,
    _tenant_col(),
    Column("migration_id", String(ID), primary_key=True),
    Column("instruction_id", String(ID), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("plan", Text, nullable=False),  # JSON: fields per record type, counts
    Column("planned_by", String(ID), nullable=False),
    Column("planned_at", DateTime(timezone=True), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("approvals", Text, nullable=False, server_default="[]"),  # JSON list
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("started_at", DateTime(timezone=True)),
    Column("package_path", String(1000)),  # where the package is written (ciphertext only)
    Column("package_scope", String(100)),  # key-provider scope of the package key
    Column("package_key_wrapped", LargeBinary),
    Column("receipt_key_wrapped", LargeBinary),
    Column("fingerprint_key_wrapped", LargeBinary),  # kept after the purge: traces a leaked copy
    Column("fingerprint_key_id", String(64)),
    Column("manifest", Text),  # JSON, signed by the platform
    Column("manifest_signature", String(128)),
    Column("verified_at", DateTime(timezone=True)),
    Column("receipt", Text),
    Column("received_at", DateTime(timezone=True)),
    Column("purged_at", DateTime(timezone=True)),
    Column("purge_reason", String(32)),
    Column("destroyed", Text),  # JSON: each copy and when it was destroyed
    Column("closed_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# -- monitoring (revision 0019) -----------------------------------------------------------------
# Each consumer's position in each lab's audit trail (the last event it has dealt with).
monitor_cursor = Table(
    "monitor_cursor",
    metadata,
    _tenant_col(),
    Column("consumer", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# Alerts raised by monitoring rules (tenant_id: the lab concerned, or the platform). References
# only (account ids, event sequence numbers, pseudonymous ids), never a personal value.
alert = Table(
    "alert",
    metadata,
    _tenant_col(),
    Column("alert_id", String(ID), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("severity", String(16), nullable=False),  # low, medium, high, critical
    Column("state", String(16), nullable=False),  # open, acknowledged, resolved
    Column("title", String(200), nullable=False),
    Column("dedup_key", String(200), nullable=False),  # rule and group: one open alert per key
    Column("refs", Text),  # JSON list of references
    Column("event_count", Integer, nullable=False),
    Column("first_seq", BigInteger),
    Column("last_seq", BigInteger),
    Column("first_at", DateTime(timezone=True)),
    Column("last_at", DateTime(timezone=True)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("ack_due", DateTime(timezone=True), nullable=False),
    Column("level", Integer, nullable=False),  # on-call level reached (1 first)
    Column("owner", String(ID)),
    Column("acknowledged_by", String(ID)),
    Column("acknowledged_at", DateTime(timezone=True)),
    Column("resolved_by", String(ID)),
    Column("resolved_at", DateTime(timezone=True)),
    Column("reason", String(500)),
    Index("ix_alert_state", "tenant_id", "state"),
    Index("ix_alert_dedup", "tenant_id", "dedup_key"),
    sqlite_with_rowid=False,
)

# Each message owed to a channel: an alert (at an on-call level), a signed checkpoint, a digest.
alert_delivery = Table(
    "alert_delivery",
    metadata,
    _tenant_col(),
    Column("delivery_id", String(ID), primary_key=True),
    Column("kind", String(16), nullable=False),  # alert, checkpoint, digest, advisory
    Column("subject_id", String(ID), nullable=False),
    Column("channel_id", String(ID), nullable=False),
    Column("level", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_error", String(200)),
    Index("ix_alert_delivery_due", "tenant_id", "delivered_at"),
    sqlite_with_rowid=False,
)

# Where alerts go: a lab's own channels, or the platform's on-call levels.
notify_channel = Table(
    "notify_channel",
    metadata,
    _tenant_col(),
    Column("channel_id", String(ID), primary_key=True),
    Column("kind", String(16), nullable=False),  # email, webhook, syslog
    Column("target", String(500), nullable=False),  # address, URL, host:port
    Column("level", Integer, nullable=False),
    Column("min_severity", String(16), nullable=False),
    Column("secret_wrapped", LargeBinary),  # a webhook's HMAC key, wrapped by the platform key
    Column("active", Integer, nullable=False),
    Column("created_by", String(ID), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# A lab's planted synthetic patients, by a keyed hash of their id (the lab's blind-index key):
# the table alone does not say which patients they are.
canary = Table(
    "canary",
    metadata,
    _tenant_col(),
    Column("marker", LargeBinary(16), primary_key=True),
    Column("key_version", Integer, nullable=False),
    Column("package_id", String(ID)),  # the export or migration package it was planted in
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(ID), nullable=False),
    sqlite_with_rowid=False,
)

# Reports from outside (tenant_id: the platform, or the lab that received it): owner, severity,
# deadline; closed only with a recorded assessment and a decision on telling the labs.
advisory = Table(
    "advisory",
    metadata,
    _tenant_col(),
    Column("advisory_id", String(ID), primary_key=True),
    Column("source", String(32), nullable=False),  # anssi, cert, lab-it, researcher, press, police, employee
    Column("reference", String(200)),  # the sender's own reference
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # open, assessed, closed
    Column("owner", String(ID), nullable=False),
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("level", Integer, nullable=False),
    Column("labs", Text),  # JSON list of the labs concerned
    Column("summary_enc", LargeBinary),  # sealed with the platform key: may quote personal data
    Column("assessment_enc", LargeBinary),
    Column("breach", String(16)),  # yes, no, possible
    Column("notify_labs", Integer),
    Column("assessed_by", String(ID)),
    Column("assessed_at", DateTime(timezone=True)),
    Column("closed_by", String(ID)),
    Column("closed_at", DateTime(timezone=True)),
    Column("created_by", String(ID), nullable=False),
    sqlite_with_rowid=False,
)

# -- breach response (revision 0020) -------------------------------------------------------------
# An analysis of a leaked file (tenant_id: the platform, or the lab that ran it): the files read (names
# hashed, sizes, layouts), the columns recognised (kinds, never a value), the counts, and the per-lab
# scope in ``leak_match``. Nothing of the leaked content is kept here.
leak_analysis = Table(
    "leak_analysis",
    metadata,
    _tenant_col(),
    Column("analysis_id", String(ID), primary_key=True),
    Column("incident_id", String(ID)),  # the incident it was run for, if any
    Column("files", Text, nullable=False),  # JSON: per file sha256, size, format, encoding, rows, column kinds
    Column("rows_total", Integer, nullable=False),
    Column("rows_matched", Integer, nullable=False),  # rows matched to a patient of some lab
    Column("rows_ambiguous", Integer, nullable=False),  # rows matching several patients of one lab
    Column("rows_unmatched", Integer, nullable=False),  # counted, never guessed
    Column("labs", Text, nullable=False),  # JSON list of the labs concerned
    Column("summary", Text, nullable=False),  # JSON: references and counts only
    Column("seconds", Float),
    Column("created_by", String(ID), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# One lab's part of an analysis (tenant_id: that lab): counts, categories, probable source, and the
# affected patients' ids sealed with the lab's key (bound to the analysis), opened only for the lab.
leak_match = Table(
    "leak_match",
    metadata,
    _tenant_col(),
    Column("analysis_id", String(ID), primary_key=True),
    Column("patients", Integer, nullable=False),  # affected patients, exact
    Column("records", Integer, nullable=False),  # leaked rows of this lab's patients
    Column("ambiguous", Integer, nullable=False),
    Column("categories", Text, nullable=False),  # JSON: category -> rows (hiv, genetics, ...)
    Column("fields", Text, nullable=False),  # JSON list: the kinds of data exposed (nir, names, ...)
    Column("source", Text),  # JSON: package id, method (fingerprint, canary, selection), score
    Column("key_version", Integer, nullable=False),
    Column("patients_enc", LargeBinary, nullable=False),  # sealed JSON: patient ids (and their rows)
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# The incident register (GDPR Art. 33(5)): every incident, notified or not. tenant_id: the platform
# for the processor's incident (which may concern several labs), or a lab for its own.
incident = Table(
    "incident",
    metadata,
    _tenant_col(),
    Column("incident_id", String(ID), primary_key=True),
    Column("title", String(200), nullable=False),  # no personal value
    Column("kind", String(32), nullable=False),  # confidentiality, integrity, availability
    Column("state", String(16), nullable=False),  # open, contained, closed
    Column("aware_at", DateTime(timezone=True), nullable=False),  # the owner's awareness
    Column("occurred_at", DateTime(timezone=True)),
    Column("advisory_id", String(ID)),  # the outside report it came from
    Column("analysis_id", String(ID)),  # the latest analysis of the leaked file
    Column("labs", Text, nullable=False),  # JSON list
    Column("severity", Text),  # JSON: the ENISA score, its parts and their reasons
    Column("facts_enc", LargeBinary),  # sealed JSON: facts, effects, remedial action (owner's key)
    Column("opened_by", String(ID), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("closed_by", String(ID)),
    Column("closed_at", DateTime(timezone=True)),
    sqlite_with_rowid=False,
)

# Each lab's part of an incident (tenant_id: the lab): its 72-hour clock, the processor's notice to
# it, its decisions (Art. 33 notification to the authority, Art. 34 letters or exemption).
incident_lab = Table(
    "incident_lab",
    metadata,
    _tenant_col(),
    Column("incident_id", String(ID), primary_key=True),
    Column("owner", String(ID), nullable=False),  # the incident row's tenant (platform or this lab)
    Column("state", String(16), nullable=False),  # open, notified, not-notified, closed
    Column("aware_at", DateTime(timezone=True), nullable=False),  # the lab's awareness: the clock starts
    Column("deadline", DateTime(timezone=True), nullable=False),  # aware_at + 72 h
    Column("reminders", Integer, nullable=False),  # reminders sent (24, 48, 66 h)
    Column("notice_at", DateTime(timezone=True)),  # the processor's notice to the lab
    Column("patients", Integer),
    Column("records", Integer),
    Column("categories", Text),  # JSON
    Column("severity", Text),  # JSON: the lab's ENISA score
    Column("decision", String(16)),  # notify, no-risk
    Column("decided_by", String(ID)),
    Column("decided_at", DateTime(timezone=True)),
    Column("notified_at", DateTime(timezone=True)),  # the authority notified (Art. 33)
    Column("authority_ref", String(100)),  # the authority's reference of the notification
    Column("art34", String(16)),  # letters, exempt-encrypted, exempt-measures, public
    Column("letters_at", DateTime(timezone=True)),
    Column("letters", Integer),
    Column("key_version", Integer),
    Column("reasons_enc", LargeBinary),  # sealed JSON: decision reasoning, delay reason, exemption reason
    Index("ix_incident_lab_deadline", "tenant_id", "state", "deadline"),
    sqlite_with_rowid=False,
)

# The phased versions of what is told (the processor's notice, the Art. 33 draft): initial, then
# complementary; each sealed, with its SHA-256 (tenant_id: the lab it is for, or the platform).
incident_version = Table(
    "incident_version",
    metadata,
    _tenant_col(),
    Column("incident_id", String(ID), primary_key=True),
    Column("document", String(16), primary_key=True),  # notice, art33
    Column("version", Integer, primary_key=True),
    Column("phase", String(16), nullable=False),  # initial, complementary
    Column("key_version", Integer),
    Column("body_enc", LargeBinary, nullable=False),
    Column("body_sha256", String(64), nullable=False),
    Column("created_by", String(ID), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_with_rowid=False,
)

# An incident's timeline (tenant_id: the lab, or the platform): steps and who took them, references
# only.
incident_step = Table(
    "incident_step",
    metadata,
    _tenant_col(),
    Column("incident_id", String(ID), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("step", String(32), nullable=False),  # opened, analysed, notice, reminder-24h, decided, ...
    Column("by", String(ID), nullable=False),
    Column("detail", Text),  # JSON: references and counts only
    sqlite_with_rowid=False,
)

# Tables holding personal or health data (ciphertexts, blind indexes, pseudonyms) and keys.
PERSONAL_TABLES = frozenset(
    {
        "patient_identity",
        "patient_local_id",
        "identity_queue",
        "identity_merge",
        "prescriber",
        "request",
        "specimen",
        "result",
        "result_version",
        "callback_task",
        "tenant_key",
        "quarantine",
        "canary",
        "leak_match",
    }
)
