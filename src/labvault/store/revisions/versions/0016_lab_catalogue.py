"""each lab's test catalogue and auto-validation rules, versioned

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 16:00:00

- ``lab_catalogue``: every version of a lab's test catalogue (the TOML the lab loaded, its
  SHA-256, who loaded it and when). The newest version is in force; a result records the version
  it was judged by. No personal value: codes, labels, units, ranges, rules.
- ``autovalidation_rules``: every version of a lab's auto-validation rules, written by a lab
  account and in force only once a named biologist activated it (``activated_by``, ``activated_at``).
Both under row-level security on PostgreSQL, as every lab's table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_TABLES = ("lab_catalogue", "autovalidation_rules")


def upgrade() -> None:
    op.create_table(
        "lab_catalogue",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("loaded_by", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_lab_catalogue")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "autovalidation_rules",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("written_by", sa.String(length=64), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_by", sa.String(length=64), nullable=True),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "version", name=op.f("pk_autovalidation_rules")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        for table in _TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_table("autovalidation_rules")
    op.drop_table("lab_catalogue")
