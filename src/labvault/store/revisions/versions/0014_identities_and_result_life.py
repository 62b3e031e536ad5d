"""identities per the RNIV, the identity-vigilance queue, merges, order keys and result versions

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 06:10:00

- ``tenant.timezone``: a local time without a zone is read in the lab's zone (Europe/Paris).
- ``patient_identity``: the INS becomes optional (``nir_bidx``, ``nir_enc``, ``ins_oid``
  nullable); the strict traits' blind index, the first and used given names, the merge link and
  the last status change.
- ``patient_local_id``: the identifiers each sending system gave a patient (IPP).
- ``identity_queue``: messages waiting for the lab's identity vigilance (sealed).
- ``identity_merge``: merges and the requests they moved.
- ``request``: the order key, status and numbers; ``result.version``; ``result_version``: every
  version of a result received.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_NEW_TABLES = ("patient_local_id", "identity_queue", "identity_merge", "result_version")


def upgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("timezone", sa.String(length=64), nullable=False, server_default="Europe/Paris"))
    with op.batch_alter_table("patient_identity") as batch:
        batch.alter_column("ins_oid", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("nir_bidx", existing_type=sa.LargeBinary(length=16), nullable=True)
        batch.alter_column("nir_enc", existing_type=sa.LargeBinary(), nullable=True)
        batch.add_column(sa.Column("traits_bidx", sa.LargeBinary(length=16), nullable=True))
        batch.add_column(sa.Column("first_given_enc", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("used_given_enc", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("merged_into", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("status_changed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("status_evidence", sa.String(length=64), nullable=True))
    op.create_index("ix_patient_identity_traits", "patient_identity", ["tenant_id", "traits_bidx"], unique=False)
    op.create_table(
        "patient_local_id",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("local_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("id_bidx", sa.LargeBinary(length=16), nullable=False),
        sa.Column("ident_enc", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "local_id", name=op.f("pk_patient_local_id")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_patient_local_id_bidx", "patient_local_id", ["tenant_id", "id_bidx"], unique=False)
    op.create_index("ix_patient_local_id_patient", "patient_local_id", ["tenant_id", "patient_id"], unique=False)
    op.create_table(
        "identity_queue",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("queue_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("feed", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("candidate_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("raw_enc", sa.LargeBinary(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.Column("resolved_to", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "queue_id", name=op.f("pk_identity_queue")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_identity_queue_status", "identity_queue", ["tenant_id", "status"], unique=False)
    op.create_table(
        "identity_merge",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("merge_id", sa.String(length=64), nullable=False),
        sa.Column("kept_id", sa.String(length=64), nullable=False),
        sa.Column("merged_id", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.Text(), nullable=False),
        sa.Column("merged_by", sa.String(length=64), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("undone_by", sa.String(length=64), nullable=True),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "merge_id", name=op.f("pk_identity_merge")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("order_bidx", sa.LargeBinary(length=16), nullable=True))
        batch.add_column(sa.Column("placer_bidx", sa.LargeBinary(length=16), nullable=True))
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("order_enc", sa.LargeBinary(), nullable=True))
    op.create_index("ix_request_order", "request", ["tenant_id", "order_bidx"], unique=False)
    op.create_index("ix_request_placer", "request", ["tenant_id", "placer_bidx"], unique=False)
    with op.batch_alter_table("result") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_table(
        "result_version",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("observation_enc", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "version_id", name=op.f("pk_result_version")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_result_version_result", "result_version", ["tenant_id", "result_id"], unique=False)
    op.create_index("ix_result_version_request", "result_version", ["tenant_id", "request_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        for table in _NEW_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_index("ix_result_version_request", table_name="result_version")
    op.drop_index("ix_result_version_result", table_name="result_version")
    op.drop_table("result_version")
    with op.batch_alter_table("result") as batch:
        batch.drop_column("version")
    op.drop_index("ix_request_placer", table_name="request")
    op.drop_index("ix_request_order", table_name="request")
    with op.batch_alter_table("request") as batch:
        batch.drop_column("order_enc")
        batch.drop_column("status")
        batch.drop_column("placer_bidx")
        batch.drop_column("order_bidx")
    op.drop_table("identity_merge")
    op.drop_index("ix_identity_queue_status", table_name="identity_queue")
    op.drop_table("identity_queue")
    op.drop_index("ix_patient_local_id_patient", table_name="patient_local_id")
    op.drop_index("ix_patient_local_id_bidx", table_name="patient_local_id")
    op.drop_table("patient_local_id")
    op.drop_index("ix_patient_identity_traits", table_name="patient_identity")
    with op.batch_alter_table("patient_identity") as batch:
        for col in (
            "status_evidence",
            "status_changed_at",
            "status_changed_by",
            "merged_into",
            "used_given_enc",
            "first_given_enc",
            "traits_bidx",
        ):
            batch.drop_column(col)
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("timezone")
