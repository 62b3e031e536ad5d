"""ingest idempotency and the encrypted quarantine

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 17:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLES = ("ingest_message", "quarantine")


def upgrade() -> None:
    op.create_table(
        "ingest_message",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("message_key", sa.String(length=64), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("feed", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "message_key", name=op.f("pk_ingest_message")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "quarantine",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("quarantine_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("feed", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("raw_enc", sa.LargeBinary(), nullable=True),
        sa.Column("reason_enc", sa.LargeBinary(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "quarantine_id", name=op.f("pk_quarantine")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_quarantine_status", "quarantine", ["tenant_id", "status"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_index("ix_quarantine_status", table_name="quarantine")
    op.drop_table("quarantine")
    op.drop_table("ingest_message")
