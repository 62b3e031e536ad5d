"""The gateway's part for monitoring: the consumer's reads (a lab's audit events after a cursor,
the cursors) and the state the sweeps check.

Every method authorises ``monitor:run`` (the vendor's security_officer and platform_admin; the CLI
operator running ``labvault monitor run`` or ``serve``) on the lab it reads, which also names that
lab for PostgreSQL's row-level security: the consumer reads each lab in turn, under its scope.

What is read is references only: sequence numbers, times, account ids, action names, the
pseudonymous ids of ``object_refs``, counts and deadlines; never a personal value. These reads are
not audited one by one: the consumer polls every second, and an event per poll would feed the
stream it reads (it would never be idle). ``monitor_started`` records that the consumer runs, and
who runs it, once per start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from labvault.access.state import UnitState
from labvault.crypto.keys import PLATFORM
from labvault.ids import stored_utc, utcnow
from labvault.store import schema as t

# The columns the rules read, in ``labvault.monitoring.engine.Event`` order ('at' as a time).
EVENT_COLUMNS = (
    "tenant_id",
    "seq",
    "at",
    "actor",
    "action",
    "object_type",
    "purpose",
    "outcome",
    "actor_roles",
    "object_refs",
    "source_addr",
)
OPEN_PACKAGE_STATES = ("planned", "approved", "running", "packaged", "verified", "received")


class Watch(UnitState):
    """Mixed into Unit; every method authorises through the policy table."""

    # -- the consumer's stream ---------------------------------------------------------------------
    def monitor_started(self, consumer: str, labs: int, rules_sha256: str = "") -> None:
        """One audit event in the platform's trail: this account started the consumer."""
        self._authorise(PLATFORM, "monitor:run")
        self._record(PLATFORM, "monitor:start", "monitor", labs, refs=[consumer[:32], rules_sha256[:64]])

    def monitor_cursors(self, consumer: str) -> dict[str, int]:
        """Per lab, the last sequence number the consumer has handled (committed with its findings)."""
        self._authorise(PLATFORM, "monitor:run")
        c = t.monitor_cursor
        self._scope("*")
        rows = self.conn.execute(select(c.c.tenant_id, c.c.seq).where(c.c.consumer == consumer)).all()
        return {r.tenant_id: int(r.seq) for r in rows}

    def monitor_advance(self, consumer: str, tenant_id: str, seq: int) -> None:
        """Move the consumer's cursor on a lab to ``seq`` (in this unit's transaction: it commits
        with the findings handed to the sink in the same unit, or not at all)."""
        self._authorise(PLATFORM, "monitor:run")
        c = t.monitor_cursor
        self._scope("*")
        where = (c.c.tenant_id == tenant_id, c.c.consumer == consumer)
        done = self.conn.execute(update(c).where(*where).values(seq=seq, updated_at=utcnow()))
        if done.rowcount == 0:
            self.conn.execute(insert(c).values(tenant_id=tenant_id, consumer=consumer, seq=seq, updated_at=utcnow()))

    def monitor_events(
        self,
        tenant_id: str,
        after: int,
        limit: int,
        *,
        upto: int | None = None,
        since: datetime | None = None,
    ) -> list[tuple[Any, ...]]:
        """A lab's events with ``after`` < seq (<= ``upto``; at or after ``since``), in seq order,
        at most ``limit``: tuples of ``EVENT_COLUMNS``, the time as seconds since the epoch."""
        self._authorise(tenant_id, "monitor:run")
        self._flush_events()
        e = t.audit_event
        q = select(*(e.c[n] for n in EVENT_COLUMNS)).where(self._tf(e, tenant_id), e.c.seq > after)
        if upto is not None:
            q = q.where(e.c.seq <= upto)
        if since is not None:
            q = q.where(e.c.at >= since)
        rows = self.conn.execute(q.order_by(e.c.seq).limit(limit)).all()
        return [(r[0], int(r[1]), stored_utc(r[2]).timestamp(), *r[3:]) for r in rows]

    def monitor_seq_before(self, tenant_id: str, at: datetime) -> int:
        """The lab's last sequence number of an event before ``at`` (0: none)."""
        self._authorise(tenant_id, "monitor:run")
        e = t.audit_event
        got = self.conn.execute(select(func.max(e.c.seq)).where(self._tf(e, tenant_id), e.c.at < at)).scalar()
        return int(got or 0)

    def monitor_head(self, tenant_id: str) -> int:
        """The lab's last sequence number (0: no event yet)."""
        self._authorise(tenant_id, "monitor:run")
        e = t.audit_event
        return int(self.conn.execute(select(func.max(e.c.seq)).where(self._tf(e, tenant_id))).scalar() or 0)

    # -- sweeps: state that is not an event ----------------------------------------------------------
    def overdue_packages(self, tenant_id: str, now: datetime) -> list[tuple[str, str, datetime]]:
        """Migration and export packages past their deadline and not purged: (id, state, deadline)."""
        self._authorise(tenant_id, "monitor:run")
        m = t.migration_job
        rows = self.conn.execute(
            select(m.c.migration_id, m.c.state, m.c.deadline).where(
                self._tf(m, tenant_id), m.c.deadline < now, m.c.state.in_(OPEN_PACKAGE_STATES)
            )
        ).all()
        return [(r.migration_id, r.state, stored_utc(r.deadline)) for r in rows]

    def overdue_callbacks(self, tenant_id: str, before: datetime) -> list[tuple[str, str, datetime]]:
        """Critical-value call-back tasks still open and due before ``before``: (task, result, due)."""
        self._authorise(tenant_id, "monitor:run")
        c = t.callback_task
        rows = self.conn.execute(
            select(c.c.task_id, c.c.result_id, c.c.due_at).where(
                self._tf(c, tenant_id), c.c.state == "open", c.c.due_at < before
            )
        ).all()
        return [(r.task_id, r.result_id, stored_utc(r.due_at)) for r in rows]

    def checkpoint_lag(self, tenant_id: str) -> tuple[int, datetime | None]:
        """The lab's last signed checkpoint size, and the time of its first event not covered by a
        checkpoint (None: every event is covered)."""
        self._authorise(tenant_id, "monitor:run")
        cp, e = t.audit_checkpoint, t.audit_event
        size = int(self.conn.execute(select(func.max(cp.c.size)).where(self._tf(cp, tenant_id))).scalar() or 0)
        first = self.conn.execute(
            select(func.min(e.c.at)).where(self._tf(e, tenant_id), e.c.seq > size, e.c.action != "audit:checkpoint")
        ).scalar()
        return size, stored_utc(first) if first is not None else None

    def retention_state(self, tenant_id: str) -> tuple[bool, datetime | None, bool]:
        """Whether the lab has a retention rule for results, when its last purge ran (an event
        ``retention:purge`` or ``retention:purge:held``), and whether it holds any result."""
        self._authorise(tenant_id, "monitor:run")
        r, e, res = t.retention_rule, t.audit_event, t.result
        has_rule = (
            self.conn.execute(
                select(r.c.category).where(self._tf(r, tenant_id), r.c.category == "results").limit(1)
            ).first()
            is not None
        )
        last = self.conn.execute(
            select(func.max(e.c.at)).where(
                self._tf(e, tenant_id), e.c.action.in_(("retention:purge", "retention:purge:held"))
            )
        ).scalar()
        holds = self.conn.execute(select(res.c.result_id).where(self._tf(res, tenant_id)).limit(1)).first() is not None
        return has_rule, stored_utc(last) if last is not None else None, holds

    def monitored_labs(self) -> list[tuple[str, str, str]]:
        """Every active lab: (id, working hours, time zone), for the off-hours rule."""
        self._authorise(PLATFORM, "monitor:run")
        return [(x.id, x.working_hours, x.timezone) for x in self.list_tenants() if x.status == "active"]  # type: ignore[attr-defined]


def event_columns() -> Sequence[str]:
    return EVENT_COLUMNS
