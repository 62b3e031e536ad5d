"""The audit append: every unit's events chained to each lab's trail (``labvault.audit.chain``),
written in the unit's transaction (allowed work) or after it (refusals, errors, alerts)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select

from labvault.access.state import UnitState
from labvault.audit import chain
from labvault.ids import utcnow
from labvault.store import schema as t
from labvault.store.engine import bulk_insert, delete_audit_range, iter_audit_rows

_EVENT_COLUMNS = (*chain.FIELDS, "prev_hash", "hash")


class AuditAppend(UnitState):
    """The chain head, the event, the flush: mixed into ``Unit``."""

    def _record(
        self,
        tenant_id: str,
        action: str,
        object_type: str,
        count: int,
        *,
        outcome: str = "allowed",
        refs: Sequence[str] | None = None,
    ) -> None:
        """Append an audit event. Allowed operations: in this transaction, so no data change
        commits without its event. Refusals and errors: after this unit, in their own."""
        p = self.principal
        event = {
            "actor": p.account_id,
            "actor_roles": ",".join(sorted(p.roles)),
            "action": action,
            "object_type": object_type,
            "object_refs": json.dumps(list(refs)) if refs else None,
            "record_count": count,
            "purpose": str(self.purpose),
            "grant_id": self._grant.grant_id if self._grant is not None else None,
            "source_addr": p.source_addr,
            "user_agent": p.user_agent,
            "outcome": outcome,
        }
        if outcome in ("denied", "error", "alert") and not self._final:  # kept even when the work is rolled back
            self._side_events.append((tenant_id, event))
            return
        self._write_event(tenant_id, **event)

    def _chain_lock(self, tenant_id: str) -> None:
        """One appender (or checkpoint signer) per lab at a time: a write lock until the unit ends."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("labvault.audit." + tenant_id))))
        else:
            # Python's sqlite3 opens its transaction at the first write: this write (of no row)
            # takes SQLite's write lock before the head is read. The threads of this process queue
            # for it on the gateway's own lock first (woken the moment it is free) rather than in
            # SQLite's busy handler, which sleeps up to 100 ms between tries.
            self._take_writer()
            self.conn.exec_driver_sql("UPDATE audit_event SET seq = seq WHERE 0")

    def _write_event(self, tenant_id: str, **event: object) -> None:
        """Queue an event of this unit; it is chained and inserted by ``_flush_events``."""
        self._pending_events.append({"tenant_id": tenant_id, **event})

    def _flush_events(self) -> None:
        """Chain the events queued so far to their labs' trails and insert them, in one batch,
        inside this unit's transaction.

        The chain's head is read (under the lab's write lock) only here, when the unit is about to
        commit, not at its first event: a unit that reads for 10 ms holds no lock meanwhile, so
        concurrent units (pages, API reads, feeds) queue only for the insert and the commit. Each
        event's time is taken here too, so times never go backwards along a lab's chain."""
        if not self._pending_events:
            return
        queued, self._pending_events = self._pending_events, []
        previous = self._scoped
        # Labs in one order (their ids sorted): two units appending to the same two trails take
        # the two locks in the same order, never each holding one and waiting for the other.
        for tenant_id in sorted({r["tenant_id"] for r in queued}):
            self._scope(tenant_id)
            head = self._seq.get(tenant_id)
            if head is None:
                # One appender per lab at a time: the chain's head is read under a write lock.
                self._chain_lock(tenant_id)
                last = self.conn.execute(
                    select(t.audit_event.c.seq, t.audit_event.c.hash)
                    .where(t.audit_event.c.tenant_id == tenant_id)
                    .order_by(t.audit_event.c.seq.desc())
                    .limit(1)
                ).first()
                head = (0, chain.GENESIS) if last is None else (last.seq, last.hash)
            at = utcnow()  # under the lab's lock: no later appender can have an earlier time
            rows = []
            for event in queued:
                if event["tenant_id"] != tenant_id:
                    continue
                seq = head[0] + 1
                row = {**event, "seq": seq, "at": at}
                digest = chain.event_hash(head[1], row)
                row["prev_hash"], row["hash"] = head[1], digest
                if self.conn.dialect.name == "sqlite":  # stored as SQLAlchemy stores times there: UTC text
                    row["at"] = chain.at_text(at)
                head = (seq, digest)
                rows.append(tuple(row[c] for c in _EVENT_COLUMNS))
            self._seq[tenant_id] = head
            bulk_insert(self.conn, t.audit_event, _EVENT_COLUMNS, rows)
        if previous is not None:  # back to the lab this unit works on (its reads rely on the scope)
            self._scope(previous)

    # -- what the audit domain reads, deletes and locks (it authorises, the policy table decides) ---
    def lock_trail(self, tenant_id: str) -> None:
        """Hold the lab's trail until this unit ends: one appender or checkpoint signer at a time."""
        self._scope(tenant_id)
        self._chain_lock(tenant_id)

    def trail_rows(self, tenant_id: str, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """The lab's events as stored (``columns`` of ``audit_event``), in order, streamed; this
        unit's own events are written first."""
        self._authorise(tenant_id, "audit:verify")
        self._flush_events()
        self._scope(tenant_id)
        rows: Iterator[tuple[Any, ...]] = iter_audit_rows(self.conn, tenant_id, columns)
        return rows

    def delete_trail(self, tenant_id: str, after: int, upto: int) -> int:
        """Delete the lab's events ``after`` < seq <= ``upto`` (a retention cut signed before); how many."""
        self._authorise(tenant_id, "audit:purge")
        self._flush_events()
        self._scope(tenant_id)
        return delete_audit_range(self.conn, tenant_id, after, upto)


@contextmanager
def benchmark_without_events() -> Iterator[None]:
    """For ``labvault bench audit`` only: the same work with no event written, to measure what the
    trail costs. Process-wide while the block runs; nothing else may run in the process meanwhile."""
    original = AuditAppend._record

    def nothing(self: AuditAppend, *args: Any, **kwargs: Any) -> None:
        return None

    AuditAppend._record = nothing  # type: ignore[method-assign]
    try:
        yield
    finally:
        AuditAppend._record = original  # type: ignore[method-assign]
