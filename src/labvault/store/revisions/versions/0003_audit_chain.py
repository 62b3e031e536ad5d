"""audit chain

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 15:47:02.998858
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_checkpoint",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("head", sa.LargeBinary(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("signer_public_key", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "size", name=op.f("pk_audit_checkpoint")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prev_hash", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.LargeBinary(length=32), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _append_only()
    elif op.get_bind().dialect.name == "sqlite":
        for table in ("audit_event", "audit_checkpoint"):
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'labvault: audit records are append-only'); END"
                )


# On PostgreSQL the audit table is append-only for the application: no UPDATE, DELETE or
# TRUNCATE privilege (revoked from the role that runs the application, even as the owner) and a
# trigger that refuses them anyway. Checkpoints get the same row-level security as the events.
def _append_only() -> None:
    op.execute("ALTER TABLE audit_checkpoint ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE audit_checkpoint FORCE ROW LEVEL SECURITY")
    cond = "(tenant_id = current_setting('labvault.tenant', true) OR current_setting('labvault.tenant', true) = '*')"
    op.execute(f"CREATE POLICY tenant_isolation ON audit_checkpoint USING {cond} WITH CHECK {cond}")
    op.execute(
        """
        CREATE FUNCTION labvault_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'labvault: % on % refused: audit records are append-only', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    for table in ("audit_event", "audit_checkpoint"):
        op.execute(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION labvault_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION labvault_append_only()"
        )
        op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM PUBLIC, CURRENT_USER")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in ("audit_event", "audit_checkpoint"):
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_event", "audit_checkpoint"):
            op.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {table} TO CURRENT_USER")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS labvault_append_only()")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")

    op.drop_table("audit_checkpoint")
