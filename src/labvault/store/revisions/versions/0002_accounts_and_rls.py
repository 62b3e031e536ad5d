"""accounts, sessions, tokens, grants, row-level security

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 15:00:00.591957
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_grant",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("ticket", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("scope_patients", sa.Text(), nullable=True),
        sa.Column("scope_fields", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "grant_id", name=op.f("pk_access_grant")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "api_token",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "token_id", name=op.f("pk_api_token")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "login_session",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mfa_passed", sa.Integer(), nullable=False),
        sa.Column("source_addr", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "session_hash", name=op.f("pk_login_session")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.create_index("ix_login_session_account", ["tenant_id", "account_id"], unique=False)

    op.create_table(
        "login_throttle",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("source_addr", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "source_addr", name=op.f("pk_login_throttle")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("totp_secret_wrapped", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("mfa_enabled", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("enrolment_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("enrolment_expires", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("commitment_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("commitment_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("service_purpose", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("actor_roles", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("object_refs", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("grant_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("source_addr", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("user_agent", sa.String(length=300), nullable=True))

    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sensitive_access", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        _enable_rls()


# Row-level security (PostgreSQL): every query sees only the rows of the lab named by the
# transaction-local setting labvault.tenant, which the access gateway sets before each operation.
# Tables of personal data accept exactly one lab; administrative tables also accept '*' (listing
# labs, logging in by e-mail, a security officer's cross-lab audit search). FORCE makes the
# table owner subject to the policies too; only a superuser or BYPASSRLS role escapes them, and
# the application must not connect as one.
PERSONAL = ("patient_identity", "prescriber", "request", "specimen", "result", "tenant_key")
ADMINISTRATIVE = (
    "tenant",
    "account",
    "login_session",
    "api_token",
    "access_grant",
    "audit_event",
    "signed_record",
    "login_throttle",
)
_SETTING = "current_setting('labvault.tenant', true)"


def _enable_rls() -> None:
    for table in PERSONAL + ADMINISTRATIVE:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        condition = f"tenant_id = {_SETTING}"
        if table in ADMINISTRATIVE:
            condition = f"({condition} OR {_SETTING} = '*')"
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({condition}) WITH CHECK ({condition})")


def _disable_rls() -> None:
    for table in PERSONAL + ADMINISTRATIVE:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _disable_rls()
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("sensitive_access")

    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_column("user_agent")
        batch_op.drop_column("source_addr")
        batch_op.drop_column("grant_id")
        batch_op.drop_column("object_refs")
        batch_op.drop_column("actor_roles")

    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_column("deactivated_at")
        batch_op.drop_column("locked_until")
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("service_purpose")
        batch_op.drop_column("commitment_ref")
        batch_op.drop_column("commitment_at")
        batch_op.drop_column("enrolment_expires")
        batch_op.drop_column("enrolment_hash")
        batch_op.drop_column("mfa_enabled")
        batch_op.drop_column("totp_secret_wrapped")
        batch_op.drop_column("password_hash")

    op.drop_table("login_throttle")
    with op.batch_alter_table("login_session", schema=None) as batch_op:
        batch_op.drop_index("ix_login_session_account")

    op.drop_table("login_session")
    op.drop_table("api_token")
    op.drop_table("access_grant")
