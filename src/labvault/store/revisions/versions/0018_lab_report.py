"""each lab's issued reports

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 10:00:00

- ``lab_report``: one row per version of a request's report (compte rendu): its status (partial,
  final, corrected), when and by whom it was issued, the report it replaces, the SHA-256 of its PDF
  and of its results' state (result ids, versions and statuses). No personal value: the PDF holds
  personal data and is not stored; it is rendered again on demand. Under row-level security on
  PostgreSQL, as every lab's table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lab_report",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("replaces", sa.String(length=64), nullable=True),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("results_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "report_id", name=op.f("pk_lab_report")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_lab_report_request", "lab_report", ["tenant_id", "request_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        op.execute("ALTER TABLE lab_report ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE lab_report FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON lab_report USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_index("ix_lab_report_request", table_name="lab_report")
    op.drop_table("lab_report")
