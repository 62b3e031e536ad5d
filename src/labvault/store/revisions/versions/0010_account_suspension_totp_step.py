"""accounts: the last TOTP time step used (single-use codes) and a vendor's security suspension

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("totp_last_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("suspended_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("suspended_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("suspended_reason")
        batch.drop_column("suspended_by")
        batch.drop_column("suspended_at")
        batch.drop_column("totp_last_step")
