"""the birth date's blind index on identities, for the name search by prefix

Revision ID: 0015
Revises: 0014
Create Date: 2027-01-11 09:00:00

- ``patient_identity.born_bidx``: a keyed hash of the birth date alone (per lab, its own key).
  A name search by prefix selects the patients born that day and compares their decrypted names.
  Rows stored before this revision keep NULL (no key here to compute it): the exact name search
  (``name_bidx``) still finds them. Row-level security already covers the table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patient_identity") as batch:
        batch.add_column(sa.Column("born_bidx", sa.LargeBinary(length=16), nullable=True))
    op.create_index("ix_patient_identity_born", "patient_identity", ["tenant_id", "born_bidx"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_patient_identity_born", table_name="patient_identity")
    with op.batch_alter_table("patient_identity") as batch:
        batch.drop_column("born_bidx")
