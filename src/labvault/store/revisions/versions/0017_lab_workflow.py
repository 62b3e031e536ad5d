"""the lab's daily work: requests entered by hand, specimens' life, validation, call-back tasks

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 18:00:00

- ``request``: ``urgency`` (routine, urgent), ``entered_by`` (an account id) and ``clinical_enc``
  (clinical information, pregnancy, collector; sealed with the lab's data key).
- ``specimen``: ``status`` (collected, received, rejected, in-analysis, stored, discarded),
  ``status_at``, ``nonconformity`` (a code) and ``container_enc`` (sealed).
- ``result``: ``workflow`` (ordered, entered, technical, biological, auto-released), the accounts
  that entered and validated it, ``catalogue_version`` and ``released_by_rule``.
- ``callback_task``: critical values' call-back tasks (who was called and the read-back sealed),
  under row-level security on PostgreSQL, as every lab's table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("urgency", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("entered_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("clinical_enc", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("specimen") as batch:
        batch.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("status_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("nonconformity", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("container_enc", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("result") as batch:
        batch.add_column(sa.Column("workflow", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("entered_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("technical_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("biological_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("catalogue_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("released_by_rule", sa.String(length=100), nullable=True))
    op.create_table(
        "callback_task",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("closed_by", sa.String(length=64), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("detail_enc", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "task_id", name=op.f("pk_callback_task")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_callback_task_state", "callback_task", ["tenant_id", "state"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        cond = "tenant_id = current_setting('labvault.tenant', true)"
        op.execute("ALTER TABLE callback_task ENABLE ROW LEVEL SECURITY")
        op.execute("ALTER TABLE callback_task FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON callback_task USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    op.drop_index("ix_callback_task_state", table_name="callback_task")
    op.drop_table("callback_task")
    with op.batch_alter_table("result") as batch:
        for col in ("released_by_rule", "catalogue_version", "biological_by", "technical_by", "entered_by", "workflow"):
            batch.drop_column(col)
    with op.batch_alter_table("specimen") as batch:
        for col in ("container_enc", "nonconformity", "status_at", "status"):
            batch.drop_column(col)
    with op.batch_alter_table("request") as batch:
        for col in ("clinical_enc", "entered_by", "urgency"):
            batch.drop_column(col)
