"""login sessions record when their TOTP code was last checked (step-up before approvals)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:50:00

Sessions opened before this revision have no time: they must step up before an approval.
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("login_session") as batch:
        batch.add_column(sa.Column("totp_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("login_session") as batch:
        batch.drop_column("totp_at")
