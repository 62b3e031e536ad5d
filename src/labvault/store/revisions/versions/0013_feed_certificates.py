"""feed client certificates pinned on service accounts

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 23:45:00

A lab's ``lab_admin`` pins the client certificate of a feed (``labvault feed pin``) on the lab's
service account: its SHA-256 fingerprint (unique: one certificate, one account) and the
certificate itself (public; the MLLP listener trusts exactly the pinned certificates).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("feed_cert_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("feed_cert_pem", sa.Text(), nullable=True))
    op.create_index("ix_account_feed_cert_sha256", "account", ["feed_cert_sha256"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_account_feed_cert_sha256", table_name="account")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("feed_cert_pem")
        batch.drop_column("feed_cert_sha256")
