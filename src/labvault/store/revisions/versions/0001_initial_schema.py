"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-24 14:48:38.644300
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="person", nullable=False),
        sa.Column("roles", sa.String(length=200), server_default="", nullable=False),
        sa.Column("active", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "account_id", name=op.f("pk_account")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index("ix_account_email", ["email"], unique=True)

    op.create_table(
        "audit_event",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_type", sa.String(length=32), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "seq", name=op.f("pk_audit_event")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "patient_identity",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("identity_status", sa.String(length=16), nullable=False),
        sa.Column("ins_oid", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("nir_bidx", sa.LargeBinary(length=16), nullable=False),
        sa.Column("name_bidx", sa.LargeBinary(length=16), nullable=False),
        sa.Column("nir_enc", sa.LargeBinary(), nullable=False),
        sa.Column("family_name_enc", sa.LargeBinary(), nullable=False),
        sa.Column("birth_name_enc", sa.LargeBinary(), nullable=True),
        sa.Column("given_names_enc", sa.LargeBinary(), nullable=False),
        sa.Column("birth_date_enc", sa.LargeBinary(), nullable=False),
        sa.Column("sex_enc", sa.LargeBinary(), nullable=False),
        sa.Column("birthplace_enc", sa.LargeBinary(), nullable=True),
        sa.Column("address_enc", sa.LargeBinary(), nullable=True),
        sa.Column("phone_enc", sa.LargeBinary(), nullable=True),
        sa.Column("email_enc", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "patient_id", name=op.f("pk_patient_identity")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("patient_identity", schema=None) as batch_op:
        batch_op.create_index("ix_patient_identity_name", ["tenant_id", "name_bidx"], unique=False)
        batch_op.create_index("ix_patient_identity_nir", ["tenant_id", "nir_bidx"], unique=False)

    op.create_table(
        "prescriber",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("prescriber_id", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("rpps_bidx", sa.LargeBinary(length=16), nullable=False),
        sa.Column("rpps_enc", sa.LargeBinary(), nullable=False),
        sa.Column("name_enc", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "prescriber_id", name=op.f("pk_prescriber")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("prescriber", schema=None) as batch_op:
        batch_op.create_index("ix_prescriber_rpps", ["tenant_id", "rpps_bidx"], unique=False)

    op.create_table(
        "request",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("prescriber_id", sa.String(length=64), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("accession_enc", sa.LargeBinary(), nullable=True),
        sa.Column("requested_at_enc", sa.LargeBinary(), nullable=False),
        sa.Column("reported_at_enc", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name=op.f("pk_request")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.create_index("ix_request_pseudonym", ["tenant_id", "pseudonym"], unique=False)

    op.create_table(
        "result",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("specimen_id", sa.String(length=64), nullable=True),
        sa.Column("pseudonym", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("observation_enc", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "result_id", name=op.f("pk_result")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.create_index("ix_result_request", ["tenant_id", "request_id"], unique=False)

    op.create_table(
        "signed_record",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signer_public_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "record_id", name=op.f("pk_signed_record")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "specimen",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("specimen_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("type_enc", sa.LargeBinary(), nullable=False),
        sa.Column("collected_at_enc", sa.LargeBinary(), nullable=False),
        sa.Column("received_at_enc", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "specimen_id", name=op.f("pk_specimen")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("specimen", schema=None) as batch_op:
        batch_op.create_index("ix_specimen_request", ["tenant_id", "request_id"], unique=False)

    op.create_table(
        "tenant",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant")),
    )
    op.create_table(
        "tenant_key",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "purpose", "version", name=op.f("pk_tenant_key")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("tenant_key")
    op.drop_table("tenant")
    with op.batch_alter_table("specimen", schema=None) as batch_op:
        batch_op.drop_index("ix_specimen_request")

    op.drop_table("specimen")
    op.drop_table("signed_record")
    with op.batch_alter_table("result", schema=None) as batch_op:
        batch_op.drop_index("ix_result_request")

    op.drop_table("result")
    with op.batch_alter_table("request", schema=None) as batch_op:
        batch_op.drop_index("ix_request_pseudonym")

    op.drop_table("request")
    with op.batch_alter_table("prescriber", schema=None) as batch_op:
        batch_op.drop_index("ix_prescriber_rpps")

    op.drop_table("prescriber")
    with op.batch_alter_table("patient_identity", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_identity_nir")
        batch_op.drop_index("ix_patient_identity_name")

    op.drop_table("patient_identity")
    op.drop_table("audit_event")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index("ix_account_email")

    op.drop_table("account")
