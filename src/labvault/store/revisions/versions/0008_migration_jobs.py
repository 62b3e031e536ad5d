"""exports and migrations out of a lab: the procedure's state and evidence

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 20:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "migration_job",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("migration_id", sa.String(length=64), nullable=False),
        sa.Column("instruction_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("planned_by", sa.String(length=64), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approvals", sa.Text(), server_default="[]", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("package_path", sa.String(length=1000), nullable=True),
        sa.Column("package_scope", sa.String(length=100), nullable=True),
        sa.Column("package_key_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("receipt_key_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("fingerprint_key_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("fingerprint_key_id", sa.String(length=64), nullable=True),
        sa.Column("manifest", sa.Text(), nullable=True),
        sa.Column("manifest_signature", sa.String(length=128), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purge_reason", sa.String(length=32), nullable=True),
        sa.Column("destroyed", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "migration_id", name=op.f("pk_migration_job")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        op.execute("ALTER TABLE migration_job ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE migration_job FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON migration_job USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_table("migration_job")
