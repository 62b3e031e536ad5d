"""breach response: analyses of leaked files, the incident register, per-lab clocks and versions

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-10 09:00:00

- ``leak_analysis``: an analysis of a leaked file: the files read (hashed names, sizes, layouts,
  recognised column kinds), the counts of rows matched, ambiguous and unmatched, the labs concerned.
  Nothing of the leaked content.
- ``leak_match``: one lab's part of an analysis: counts, categories exposed, probable source, and
  the affected patients' ids sealed with the lab's key (under row-level security, shredded with
  the lab).
- ``incident``: the register (GDPR Art. 33(5)), the processor's or a lab's own; facts, effects and
  remedial action sealed with the owner's key; the ENISA severity score.
- ``incident_lab``: each lab's part of an incident: its 72-hour clock, reminders, the processor's
  notice, its decisions (Art. 33 notification, Art. 34 letters or exemption), reasons sealed.
- ``incident_version``: the phased versions (initial, complementary) of the notice and the
  Art. 33 draft, sealed, with their SHA-256.
- ``incident_step``: an incident's timeline, references only.
Administrative tables accept the cross-lab scope '*' under row-level security, as the audit trail does.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_ADMINISTRATIVE = ("leak_analysis", "incident", "incident_lab", "incident_version", "incident_step")
_PERSONAL = ("leak_match",)


def _id(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length=64), nullable=nullable)


def _at(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "leak_analysis",
        _id("tenant_id"),
        _id("analysis_id"),
        _id("incident_id", True),
        sa.Column("files", sa.Text(), nullable=False),
        _int("rows_total"),
        _int("rows_matched"),
        _int("rows_ambiguous"),
        _int("rows_unmatched"),
        sa.Column("labs", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        _id("created_by"),
        _at("created_at", False),
        sa.PrimaryKeyConstraint("tenant_id", "analysis_id", name=op.f("pk_leak_analysis")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "leak_match",
        _id("tenant_id"),
        _id("analysis_id"),
        _int("patients"),
        _int("records"),
        _int("ambiguous"),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        _int("key_version"),
        sa.Column("patients_enc", sa.LargeBinary(), nullable=False),
        _at("created_at", False),
        sa.PrimaryKeyConstraint("tenant_id", "analysis_id", name=op.f("pk_leak_match")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "incident",
        _id("tenant_id"),
        _id("incident_id"),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _at("aware_at", False),
        _at("occurred_at"),
        _id("advisory_id", True),
        _id("analysis_id", True),
        sa.Column("labs", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=True),
        sa.Column("facts_enc", sa.LargeBinary(), nullable=True),
        _id("opened_by"),
        _at("opened_at", False),
        _id("closed_by", True),
        _at("closed_at"),
        sa.PrimaryKeyConstraint("tenant_id", "incident_id", name=op.f("pk_incident")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "incident_lab",
        _id("tenant_id"),
        _id("incident_id"),
        _id("owner"),
        sa.Column("state", sa.String(length=16), nullable=False),
        _at("aware_at", False),
        _at("deadline", False),
        _int("reminders"),
        _at("notice_at"),
        _int("patients", True),
        _int("records", True),
        sa.Column("categories", sa.Text(), nullable=True),
        sa.Column("severity", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        _id("decided_by", True),
        _at("decided_at"),
        _at("notified_at"),
        sa.Column("authority_ref", sa.String(length=100), nullable=True),
        sa.Column("art34", sa.String(length=16), nullable=True),
        _at("letters_at"),
        _int("letters", True),
        _int("key_version", True),
        sa.Column("reasons_enc", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "incident_id", name=op.f("pk_incident_lab")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_incident_lab_deadline", "incident_lab", ["tenant_id", "state", "deadline"], unique=False)
    op.create_table(
        "incident_version",
        _id("tenant_id"),
        _id("incident_id"),
        sa.Column("document", sa.String(length=16), nullable=False),
        _int("version"),
        sa.Column("phase", sa.String(length=16), nullable=False),
        _int("key_version", True),
        sa.Column("body_enc", sa.LargeBinary(), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        _id("created_by"),
        _at("created_at", False),
        sa.PrimaryKeyConstraint("tenant_id", "incident_id", "document", "version", name=op.f("pk_incident_version")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "incident_step",
        _id("tenant_id"),
        _id("incident_id"),
        _int("seq"),
        _at("at", False),
        sa.Column("step", sa.String(length=32), nullable=False),
        _id("by"),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "incident_id", "seq", name=op.f("pk_incident_step")),
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
    for table in ("incident_step", "incident_version", "incident_lab", "incident", "leak_match", "leak_analysis"):
        op.drop_table(table)
