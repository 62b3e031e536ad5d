"""synthetic labs; a support grant's period scope

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:45:00

``tenant.synthetic`` marks a lab created with generated data only (``tenant add --synthetic``,
the demo, ``generate``, the benchmarks): only such a lab may be generated into or deleted
without the lab's signed deletion instruction. Labs existing before this revision are real.
``access_grant.scope_from``/``scope_to`` (ISO dates) bound a grant to a period.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("synthetic", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("access_grant") as batch:
        batch.add_column(sa.Column("scope_from", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("scope_to", sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_grant") as batch:
        batch.drop_column("scope_to")
        batch.drop_column("scope_from")
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("synthetic")
