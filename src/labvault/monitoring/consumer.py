"""The consumer of the audit stream (H1): a durable cursor per lab, the rules, the sweeps.

Each poll (``Consumer.poll``) runs in one unit of work, as the platform's monitoring process (the
system principal ``system:monitor``, ``labvault.access.principal.MONITOR``: no person's account
holds ``monitor:run``), purpose ``monitoring``:

0. take or renew the lease (``monitor_cursor`` row ``rules-lease`` on the platform): one consumer
   evaluates the stream at a time. ``serve``'s thread and a ``labvault monitor run`` started
   beside it share the ``rules`` cursors, but each keeps its windows in memory: were both to
   evaluate, a burst read half by one and half by the other would fill neither's window. The one
   without the lease reads nothing and waits (it says so once); when it takes the lease (the
   holder stopped, or its lease expired), it first warms its windows from the committed cursors;
1. for every active lab (and the platform's own trail), read the events after the lab's cursor
   (``monitor_cursor``, consumer name ``rules``), in ``seq`` order, at most ``batch`` per lab;
2. evaluate them (``labvault.monitoring.engine``), all labs merged by time, so that a rule looking
   across labs (password spraying) sees one stream;
3. hand each finding to the sink (``labvault.monitoring.alerts.raise_alert`` by default), which
   stores the alert in the same unit;
4. move each lab's cursor to the last event read, in the same unit.

The unit commits the alerts and the cursors together, or neither: a crash before the commit
leaves the cursors where they were, and the next run reads the same events again and raises
their findings once (nothing lost, nothing doubled). Why "seq > cursor" misses nothing: a lab's
events are numbered under the lab's write lock, held until the appending transaction commits
(``access/trail.py``), so no event with a smaller number can commit after a larger one is seen.

The windows live in memory. On start, the consumer re-reads each lab's events from (now - the
longest window) up to its cursor, with nothing raised (``Engine.feed(emit=False)``): a burst that
began before a restart is still counted, and a group already raised is not raised again.

A lab seen for the first time has no cursor: its events older than the longest window are skipped
(they are the past, not the watch), the rest are evaluated.

Latency: ``serve`` polls every second (``--monitor-every``) and ``monitor run`` every
``--interval`` seconds; an event is evaluated at the next poll after its commit, and its alert is
stored when that poll commits. PostgreSQL's LISTEN/NOTIFY is not used: a poll of an idle platform
is one indexed ``seq >`` query per lab, and one second is well within the 5-second target.

Sweeps (``sweep``) check state that is not an event, every ``sweep_every`` seconds: packages
past their deadline, overdue critical-value call-backs, a lab whose retention has not run for two
days, events left without a signed checkpoint for longer than ``checkpoint_hours``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from labvault.access.principal import Purpose
from labvault.crypto import tokens
from labvault.crypto.keys import PLATFORM
from labvault.ids import utcnow
from labvault.monitoring.engine import Engine, Event
from labvault.monitoring.findings import Finding, Severity, Sink
from labvault.monitoring.rules import Rule, longest_window

if TYPE_CHECKING:
    from labvault.access.gateway import Gateway, Unit
    from labvault.access.principal import Principal

log = logging.getLogger("labvault.monitoring")

CONSUMER = "rules"
LEASE = "rules-lease"  # one consumer evaluates at a time (see the module's docstring)
LEASE_SECONDS = 30.0  # renewed at every poll; a holder gone is replaced after this
BATCH = 5000
CALLBACK_GRACE = timedelta(minutes=15)
RETENTION_STALE = timedelta(days=2)
CHECKPOINT_HOURS = 26  # serve signs every hour; a day without one is a stopped scheduler


def default_sink(u: Unit, finding: Finding) -> str | None:
    """The alerts' own sink, imported when first used."""
    from labvault.monitoring.alerts import raise_alert  # type: ignore[import-not-found, unused-ignore]

    result: str | None = raise_alert(u, finding)
    return result


@dataclass
class Consumer:
    gateway: Gateway
    principal: Principal
    rules: list[Rule]
    sink: Sink = default_sink
    consumer: str = CONSUMER
    batch: int = BATCH
    checkpoint_hours: float = CHECKPOINT_HOURS
    clock: Callable[[], datetime] = utcnow
    lease_seconds: float = LEASE_SECONDS
    notice: Callable[[str], None] | None = None  # told once when this consumer starts waiting
    engine: Engine = field(init=False)
    started: bool = field(default=False, init=False)
    raised: int = field(default=0, init=False)
    last_read: int = field(default=0, init=False)
    waiting: bool = field(default=False, init=False)  # another consumer holds the lease

    def __post_init__(self) -> None:
        self.engine = Engine(self.rules)
        self.window = timedelta(seconds=longest_window(self.rules))
        self.holder = tokens.random_id()  # this consumer's id in the lease

    # -- the lease ----------------------------------------------------------------------------------
    def _lease(self, u: Unit) -> bool:
        """Take or renew the lease; on losing it (or never having had it), wait and say so once."""
        if u.monitor_lease(LEASE, self.holder, utcnow(), self.lease_seconds):
            if self.waiting:
                log.info("monitoring: this consumer now evaluates the audit stream (lease taken)")
            self.waiting = False
            return True
        if not self.waiting:
            message = "another consumer evaluates the audit stream (it holds the lease): this one waits"
            log.warning("monitoring: %s", message)
            if self.notice is not None:
                self.notice(message)
        self.waiting = True
        # Its windows go stale while it waits: warmed again from the cursors when it takes over.
        self.started = False
        self.engine = Engine(self.rules)
        return False

    def release(self) -> None:
        """Give the lease up (this consumer stops): another takes over at its next poll."""
        with self.gateway.unit(self.principal, Purpose.MONITORING) as u:
            u.monitor_release(LEASE, self.holder)

    # -- the stream ---------------------------------------------------------------------------------
    def _labs(self, u: Unit) -> list[str]:
        labs = u.monitored_labs()
        for lab, hours, zone in labs:
            self.engine.set_hours(lab, hours, zone)
        return [PLATFORM, *(lab for lab, _, _ in labs)]

    def start(self) -> None:
        """Warm the windows from (now - the longest window) up to each cursor, raising nothing."""
        with self.gateway.unit(self.principal, Purpose.MONITORING) as u:
            self._warm(u)

    def _warm(self, u: Unit) -> None:
        since = self.clock() - self.window
        self.engine = Engine(self.rules)
        labs = self._labs(u)
        cursors = u.monitor_cursors(self.consumer)
        events: list[Event] = []
        for lab in labs:
            upto = cursors.get(lab)
            if upto is None:
                continue
            after = 0
            while True:
                rows = u.monitor_events(lab, after, self.batch, upto=upto, since=since)
                events.extend(Event(*r) for r in rows)
                if len(rows) < self.batch:
                    break
                after = rows[-1][1]
        events.sort(key=lambda e: e.at)
        self.engine.feed(events, emit=False)
        u.monitor_started(self.consumer, len(labs), rules_sha256=self.engine.digest)
        self.started = True

    def poll(self) -> list[Finding]:
        """One round: the lease, then new events of every lab, evaluated; findings and cursors
        committed together. Returns the findings handed to the sink (none while another consumer
        holds the lease)."""
        try:
            return self._poll()
        except BaseException:
            # Nothing of this round committed: the windows are rebuilt from the committed cursors.
            self.started = False
            self.engine = Engine(self.rules)
            raise

    def _poll(self) -> list[Finding]:
        with self.gateway.unit(self.principal, Purpose.MONITORING) as u:
            self.last_read = 0
            if not self._lease(u):
                return []
            if not self.started:
                self._warm(u)
            labs = self._labs(u)
            cursors = u.monitor_cursors(self.consumer)
            events: list[Event] = []
            moved: dict[str, int] = {}
            for lab in labs:
                after = cursors.get(lab)
                if after is None:  # first time: the past older than the longest window is skipped
                    after = u.monitor_seq_before(lab, self.clock() - self.window)
                    moved[lab] = after
                rows = u.monitor_events(lab, after, self.batch)
                if rows:
                    events.extend(Event(*r) for r in rows)
                    moved[lab] = rows[-1][1]
            events.sort(key=lambda e: e.at)
            self.last_read = len(events)
            findings = self.engine.feed(events)
            for f in findings:
                self.sink(u, f)
            for lab, seq in moved.items():
                u.monitor_advance(self.consumer, lab, seq)
        self.raised += len(findings)
        return findings

    def drain(self) -> list[Finding]:
        """Poll until every lab's cursor reaches its head (a backlog larger than one batch)."""
        out: list[Finding] = []
        while True:
            out.extend(self.poll())
            if self.last_read == 0:
                return out

    # -- the sweeps ---------------------------------------------------------------------------------
    def sweep(self) -> list[Finding]:
        """State checks that are not events; their findings go to the sink (same key while the
        state lasts: one open alert)."""
        now = self.clock()
        # Windows no event can still reach are dropped here: memory stays bounded however many
        # actors, addresses or networks the stream has shown.
        self.engine.forget_before(now.timestamp() - self.window.total_seconds())
        findings: list[Finding] = []
        with self.gateway.unit(self.principal, Purpose.MONITORING) as u:
            for lab in self._labs(u):
                findings.extend(sweep_lab(u, lab, now, checkpoint_hours=self.checkpoint_hours))
            for f in findings:
                self.sink(u, f)
        self.raised += len(findings)
        return findings

    def run(
        self,
        *,
        interval: float = 1.0,
        sweep_every: float = 60.0,
        stop: Callable[[], bool] = lambda: False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Poll every ``interval`` seconds and sweep every ``sweep_every`` until ``stop()`` (sweeps
        by the lease's holder only); the lease is given up on the way out. The lease lasts at least
        three polls, so that the holder keeps it between two."""
        self.lease_seconds = max(self.lease_seconds, 3 * interval)
        next_sweep = 0.0
        try:
            while not stop():
                began = time.monotonic()
                try:
                    self.poll()
                    if not self.waiting and began >= next_sweep:
                        self.sweep()
                        next_sweep = began + sweep_every
                except Exception as exc:  # reported by the caller; the next round tries again
                    if on_error is None:
                        raise
                    on_error(exc)
                time.sleep(max(0.0, interval - (time.monotonic() - began)))
        finally:
            try:
                self.release()
            except Exception:  # noqa: BLE001 - the lease then expires by itself
                log.warning("monitoring: the lease could not be given up; it expires in %g s", self.lease_seconds)


def sweep_lab(u: Unit, lab: str, now: datetime, *, checkpoint_hours: float = CHECKPOINT_HOURS) -> list[Finding]:
    """The sweeps of one lab (the platform's trail: the checkpoint only)."""
    out: list[Finding] = []
    size, first_open = u.checkpoint_lag(lab)
    if first_open is not None and first_open < now - timedelta(hours=checkpoint_hours):
        out.append(
            Finding(
                "checkpoint-missing",
                Severity.HIGH,
                lab,
                "Événements du journal sans point de contrôle signé",
                "lab",
                refs=(f"checkpoint:{size}",),
                first_at=first_open,
                last_at=now,
            )
        )
    if lab == PLATFORM:
        return out
    for migration_id, state, deadline in u.overdue_packages(lab, now):
        out.append(
            Finding(
                "package-overdue",
                Severity.HIGH,
                lab,
                "Paquet d'export ou de migration non purgé après son échéance",
                f"migration={migration_id}",
                refs=(migration_id, f"state:{state}"),
                first_at=deadline,
                last_at=now,
            )
        )
    late = u.overdue_callbacks(lab, now - CALLBACK_GRACE)
    if late:
        out.append(
            Finding(
                "callback-overdue",
                Severity.HIGH,
                lab,
                "Rappels de valeurs critiques en retard",
                "lab",
                refs=tuple(task for task, _, _ in late[:20]),
                event_count=len(late),
                first_at=min(due for _, _, due in late),
                last_at=now,
            )
        )
    has_rule, last_purge, holds = u.retention_state(lab)
    if has_rule and holds and (last_purge is None or last_purge < now - RETENTION_STALE):
        out.append(
            Finding(
                "retention-not-run",
                Severity.MEDIUM,
                lab,
                "Durées de conservation : aucune purge depuis plus de deux jours",
                "lab",
                refs=("retention:purge",),
                first_at=last_purge,
                last_at=now,
            )
        )
    return out


def sweep_ids() -> tuple[str, ...]:
    return ("checkpoint-missing", "package-overdue", "callback-overdue", "retention-not-run")
