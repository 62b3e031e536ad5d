"""received instructions sealed with the lab's data key (they may name patients)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 20:45:00

Instructions received before this revision keep their clear ``body`` until the lab re-sends
them; the application reads either form and writes only the sealed one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instruction") as batch:
        batch.alter_column("body", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("body_enc", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("key_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instruction") as batch:
        batch.drop_column("body_sha256")
        batch.drop_column("key_version")
        batch.drop_column("body_enc")
        batch.alter_column("body", existing_type=sa.Text(), nullable=False)
