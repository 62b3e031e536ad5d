"""The gateway's part for monitoring: the consumer's reads (a lab's audit events after a cursor,
the cursors) and the state the sweeps check.

Every method authorises ``monitor:run`` on the lab it reads, which also names that lab for
PostgreSQL's row-level security: the consumer reads each lab in turn, under its scope. Only the
platform's own process holds ``monitor:run`` (the system principal ``system:monitor`` that
``labvault serve``'s threads, ``labvault monitor run`` and ``labvault alerts dispatch`` act as), never a
person's account: a cursor moved by hand silences a lab's rules.

Cursors move forward only, and never beyond what exists (``advance_cursor``): the ``rules``
cursor never past the lab's last audit event, the ``checkpoints`` one never past its last signed
checkpoint. The lease (``monitor_lease``) lets one consumer evaluate the stream at a time: a row of
``monitor_cursor`` on the platform, consumer ``rules-lease``, whose ``seq`` is the holder's id and
``updated_at`` the lease's expiry, taken or renewed by one conditional update.

What is read is references only: sequence numbers, times, account ids, action names, the
pseudonymous ids of ``object_refs``, counts and deadlines; never a personal value. These reads are
not audited one by one: the consumer polls every second, and an event per poll would feed the
stream it reads (it would never be idle). ``monitor_started`` records that the consumer runs, and
who runs it, once per start.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update

from labvault.access.state import UnitState
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput
from labvault.ids import stored_utc, utcnow
from labvault.store import schema as t

LEASE_RELEASED = datetime(2000, 1, 1, tzinfo=UTC)  # a released lease's expiry: long passed
# The longest a lease runs: no holder renews beyond ``now`` + this, so a stored expiry further
# ahead (a row written by hand, a holder's clock far ahead) is no one's and is taken over.
LEASE_MAX = timedelta(hours=1)

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
        """Move the consumer's cursor on a lab forward to ``seq`` (in this unit's transaction: it
        commits with the findings handed to the sink in the same unit, or not at all); never back,
        never past the lab's last audit event."""
        self._authorise(tenant_id, "monitor:run")
        if consumer.endswith(LEASE_SUFFIX):
            raise InvalidInput("a lease is not a cursor")
        self._flush_events()
        advance_cursor(self, tenant_id, consumer, seq, self.monitor_head(tenant_id), utcnow())

    def monitor_lease(self, lease: str, holder: int, now: datetime, seconds: float) -> bool:
        """Take or renew the lease ``lease`` for ``holder`` until ``now`` + ``seconds``: True when
        this holder has it (it held it, or nobody did, or the last holder's lease has expired).
        One statement decides (on PostgreSQL, a second taker waits for the first's commit and then
        finds the lease held); the lease commits with the unit's work."""
        self._authorise(PLATFORM, "monitor:run")
        if not lease.endswith(LEASE_SUFFIX):
            raise InvalidInput(f"a lease's name ends with '{LEASE_SUFFIX}'")
        if not 0 <= seconds <= LEASE_MAX.total_seconds():
            raise InvalidInput(f"a lease runs from 0 to {int(LEASE_MAX.total_seconds())} seconds")
        c = t.monitor_cursor
        until = now + timedelta(seconds=seconds)
        taken = self.conn.execute(
            update(c)
            .where(
                c.c.tenant_id == PLATFORM,
                c.c.consumer == lease,
                or_(c.c.seq == holder, c.c.updated_at < now, c.c.updated_at > now + LEASE_MAX),
            )
            .values(seq=holder, updated_at=until)
            .returning(c.c.seq)
        ).first()
        if taken is not None:
            return True
        values = {"tenant_id": PLATFORM, "consumer": lease, "seq": holder, "updated_at": until}
        dialect = self.conn.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt: Any = pg_insert(c).values(**values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(c).values(**values).on_conflict_do_nothing()
        else:  # pragma: no cover - the store runs on PostgreSQL or SQLite
            raise InvalidInput(f"no lease on a {dialect} store")
        # RETURNING, not rowcount: a driver may not count the rows of an INSERT ... ON CONFLICT
        return self.conn.execute(stmt.returning(c.c.seq)).first() is not None

    def monitor_release(self, lease: str, holder: int) -> None:
        """Give the lease up (a consumer that stops): the next taker need not wait for its expiry."""
        self._authorise(PLATFORM, "monitor:run")
        c = t.monitor_cursor
        self.conn.execute(
            update(c)
            .where(c.c.tenant_id == PLATFORM, c.c.consumer == lease, c.c.seq == holder)
            .values(updated_at=LEASE_RELEASED)
        )

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


LEASE_SUFFIX = "-lease"


def advance_cursor(u: UnitState, tenant_id: str, consumer: str, seq: int, last: int, at: datetime) -> None:
    """Move the lab's cursor ``consumer`` forward to ``seq``: a cursor never goes back (nothing is
    read or sent twice by a cursor moved back, and none is skipped by one moved past what exists:
    ``seq`` beyond ``last``, the lab's last event or checkpoint, is refused)."""
    if seq < 0 or seq > last:
        raise InvalidInput(f"cursor '{consumer}' of lab '{tenant_id}' cannot move past what exists ({last})")
    c = t.monitor_cursor
    where = (u._tf(c, tenant_id), c.c.tenant_id == tenant_id, c.c.consumer == consumer)
    row = u.conn.execute(select(c.c.seq).where(*where)).first()
    if row is None:
        u.conn.execute(insert(c).values(tenant_id=tenant_id, consumer=consumer, seq=seq, updated_at=at))
    elif seq > int(row.seq):
        u.conn.execute(update(c).where(*where, c.c.seq < seq).values(seq=seq, updated_at=at))


def event_columns() -> Sequence[str]:
    return EVENT_COLUMNS
