"""audit retention

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 16:17:33.988406
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_cut",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(length=32), nullable=False),
        sa.Column("frontier", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signer_public_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "size", name=op.f("pk_audit_cut")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("audit_retention_days", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("audit_retention_reason", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE audit_cut ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE audit_cut FORCE ROW LEVEL SECURITY")
        cond = (
            "(tenant_id = current_setting('labvault.tenant', true) OR current_setting('labvault.tenant', true) = '*')"
        )
        op.execute(f"CREATE POLICY tenant_isolation ON audit_cut USING {cond} WITH CHECK {cond}")


def downgrade() -> None:
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("audit_retention_reason")
        batch_op.drop_column("audit_retention_days")

    op.drop_table("audit_cut")
