"""monitoring: alerts, notification channels, canaries, outside reports; the lab's address and hours

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-09 09:00:00

- ``tenant``: ``address`` (printed on reports) and ``working_hours`` (the lab's opening hours, read
  by the off-hours rule), neither personal.
- ``request``: ``patient_enc``, the patient id sealed with the lab's data key (bound to the row),
  so that the lab's own work finds a request's patient without trying every identity.
- ``result``: a partial index on the results waiting in the lab's workflow (ordered, entered,
  technically validated): worklists read those rows only.
- ``monitor_cursor``: each consumer's durable position in each lab's audit trail.
- ``alert``: alerts raised by the monitoring rules (references only, never a personal value),
  their state, owner, acknowledgement deadline and escalation level.
- ``alert_delivery``: each message to a channel (alert, checkpoint, digest), its attempts.
- ``notify_channel``: where a lab's or the platform's alerts go (e-mail, signed webhook, syslog),
  with the on-call level; a webhook's signing key is wrapped by the platform key.
- ``canary``: markers of each lab's planted synthetic patients (a keyed hash of the patient id:
  the table alone does not say which patients they are), under row-level security.
- ``advisory``: reports from outside (national agency, a lab's IT, researcher, press, employee),
  their owner, severity, deadline, assessment and decision; the free text sealed.
Administrative tables (alerts, channels, cursors, advisories) accept the cross-lab scope '*' under
row-level security, as the audit trail does.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_ADMINISTRATIVE = ("monitor_cursor", "alert", "alert_delivery", "notify_channel", "advisory")
_PERSONAL = ("canary",)
_WAITING = "workflow IN ('ordered', 'entered', 'technical')"


def _id(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=64), nullable=nullable)


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("tenant") as batch:
        batch.add_column(sa.Column("address", sa.Text(), nullable=True))
        batch.add_column(sa.Column("working_hours", sa.String(length=100), nullable=True))
    with op.batch_alter_table("request") as batch:
        batch.add_column(sa.Column("patient_enc", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_result_waiting",
        "result",
        ["tenant_id", "workflow"],
        unique=False,
        sqlite_where=sa.text(_WAITING),
        postgresql_where=sa.text(_WAITING),
    )
    op.create_table(
        "monitor_cursor",
        _id("tenant_id"),
        sa.Column("consumer", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        _at("updated_at", False),
        sa.PrimaryKeyConstraint("tenant_id", "consumer", name=op.f("pk_monitor_cursor")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "alert",
        _id("tenant_id"),
        _id("alert_id"),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("refs", sa.Text(), nullable=True),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        _at("first_at"),
        _at("last_at"),
        _at("opened_at", False),
        _at("ack_due", False),
        sa.Column("level", sa.Integer(), nullable=False),
        _id("owner", True),
        _id("acknowledged_by", True),
        _at("acknowledged_at"),
        _id("resolved_by", True),
        _at("resolved_at"),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "alert_id", name=op.f("pk_alert")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_alert_state", "alert", ["tenant_id", "state"], unique=False)
    op.create_index("ix_alert_dedup", "alert", ["tenant_id", "dedup_key"], unique=False)
    op.create_table(
        "alert_delivery",
        _id("tenant_id"),
        _id("delivery_id"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _id("subject_id"),
        _id("channel_id"),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _at("next_at"),
        _at("delivered_at"),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "delivery_id", name=op.f("pk_alert_delivery")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_alert_delivery_due", "alert_delivery", ["tenant_id", "delivered_at"], unique=False)
    op.create_table(
        "notify_channel",
        _id("tenant_id"),
        _id("channel_id"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("min_severity", sa.String(length=16), nullable=False),
        sa.Column("secret_wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("active", sa.Integer(), nullable=False),
        _id("created_by"),
        _at("created_at", False),
        sa.PrimaryKeyConstraint("tenant_id", "channel_id", name=op.f("pk_notify_channel")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "canary",
        _id("tenant_id"),
        sa.Column("marker", sa.LargeBinary(length=16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        _id("package_id", True),
        _at("created_at", False),
        _id("created_by"),
        sa.PrimaryKeyConstraint("tenant_id", "marker", name=op.f("pk_canary")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "advisory",
        _id("tenant_id"),
        _id("advisory_id"),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        _at("received_at", False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _id("owner"),
        _at("deadline", False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("labs", sa.Text(), nullable=True),
        sa.Column("summary_enc", sa.LargeBinary(), nullable=True),
        sa.Column("assessment_enc", sa.LargeBinary(), nullable=True),
        sa.Column("breach", sa.String(length=16), nullable=True),
        sa.Column("notify_labs", sa.Integer(), nullable=True),
        _id("assessed_by", True),
        _at("assessed_at"),
        _id("closed_by", True),
        _at("closed_at"),
        _id("created_by"),
        sa.PrimaryKeyConstraint("tenant_id", "advisory_id", name=op.f("pk_advisory")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        setting = "current_setting('labvault.tenant', true)"
        for table in _ADMINISTRATIVE + _PERSONAL:
            cond = f"tenant_id = {setting}"
            if table in _ADMINISTRATIVE:
                cond = f"({cond} OR {setting} = '*')"
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({cond}) WITH CHECK ({cond})")


def downgrade() -> None:
    for table in ("advisory", "canary", "notify_channel", "alert_delivery", "alert", "monitor_cursor"):
        op.drop_table(table)
    op.drop_index("ix_result_waiting", table_name="result")
    with op.batch_alter_table("request") as batch:
        batch.drop_column("patient_enc")
    with op.batch_alter_table("tenant") as batch:
        batch.drop_column("working_hours")
        batch.drop_column("address")
