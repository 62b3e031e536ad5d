"""instruction signers and signed instructions

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 19:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLES = ("instruction_signer", "instruction")


def upgrade() -> None:
    op.create_table(
        "instruction_signer",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("signer_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "signer_id", name=op.f("pk_instruction_signer")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "instruction",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("instruction_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("signer_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "instruction_id", name=op.f("pk_instruction")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_table("instruction")
    op.drop_table("instruction_signer")
