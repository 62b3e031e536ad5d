"""The access gateway: the one module that reads and writes personal data.

Given *who* (a ``Principal``), *why* (a ``Purpose``) and *what* (a lab, objects), a ``Unit`` of
work authorises, encrypts or decrypts through ``labvault.crypto``, reads or writes through
``labvault.store`` and appends an audit event, all in one database transaction: a failure
anywhere leaves nothing half-written. Services never commit; the unit does.

Faces (CLI, later HTTP and MLLP) and domains hold a ``Gateway`` and open units; none of them
touches the personal-data tables or key material.

The unit is made of parts, one module each: ``authorisation`` (scope, principal, allow or refuse),
``trail`` (the audit append), ``tenants`` (labs, their keys, the platform key), ``records`` (personal
records), ``rotation`` (key rotation) and ``work`` (the lab's daily work: requests entered by hand,
specimens, validation, call-back tasks). What domains may use of it is the public interface
below (see docs/dev/application.md); everything else is the gateway's own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Connection, Engine, Executable, Result, select

from labvault.access.advisories import Advisories
from labvault.access.alerts import Alerts
from labvault.access.authorisation import Authorisation
from labvault.access.breach import Breach
from labvault.access.canaries import Canaries
from labvault.access.explain import Explain
from labvault.access.incidents import Incidents
from labvault.access.principal import Principal, Purpose
from labvault.access.records import ENCRYPTED, Records
from labvault.access.rotation import Rotation, rotate_keys
from labvault.access.tenants import SYNTHETIC_MARK, TenantCrypto, Tenants
from labvault.access.trail import AuditAppend
from labvault.access.watch import Watch
from labvault.access.work import Work
from labvault.audit.pin import PinStore
from labvault.crypto.keys import PLATFORM, KeyProvider
from labvault.errors import AccessDenied, NotFound, StoreError
from labvault.store import schema as t

SQLITE_WRITER_WAIT_S = 10.0  # as the busy timeout of SQLite connections (store.engine)

__all__ = ["ENCRYPTED", "SYNTHETIC_MARK", "Gateway", "TenantCrypto", "Unit"]


class Gateway:
    """Holds the engine and the key provider; opens units of work."""

    def __init__(
        self, engine: Engine, keys: KeyProvider, *, tenant_filter: bool = True, pin_path: Path | None = None
    ) -> None:
        self.engine = engine
        self.keys = keys
        # G4: the platform key pinned at init and each lab's last checkpoint, sealed, outside the
        # database (labvault.audit.pin). None: checkpoints are checked against the keys the KEK opens.
        self.pin = PinStore(pin_path, keys) if pin_path is not None else None
        # Tests turn the application's own tenant filter off to prove that row-level security
        # alone keeps labs apart on PostgreSQL. Never off in production.
        self.tenant_filter = tenant_filter
        self._crypto: dict[str, TenantCrypto] = {}
        self._synthetic: set[str] = set()  # labs whose sealed synthetic mark opened (see Unit.is_synthetic)
        self._writer: ThreadPoolExecutor | None = None
        # SQLite has one writer at a time: this process's units queue for it here (see
        # ``Unit._take_writer``); other processes still wait in SQLite's busy handler.
        self.sqlite_writer = threading.Lock() if engine.dialect.name == "sqlite" else None

    @contextmanager
    def unit(self, principal: Principal, purpose: Purpose) -> Iterator[Unit]:
        """One transaction: commits when the block ends, rolls back on any error.

        Refusals and failed attempts are recorded too: their events are written after the
        unit's own transaction ends, in a transaction of their own, so that the rollback of
        the refused work does not erase the trace of the attempt.
        """
        unit = None
        try:
            with self._transaction(principal, purpose) as unit:
                yield unit
            unit._committed_hooks()
        finally:
            self._after(unit, purpose)

    @contextmanager
    def _transaction(self, principal: Principal, purpose: Purpose, *, check: bool = True) -> Iterator[Unit]:
        """A unit in one transaction: its events flushed, then committed when the block ends (rolled
        back on any error); this process's SQLite writer lock, if the unit took it, is released only
        once the transaction has ended."""
        unit = None
        try:
            with self.engine.begin() as conn:
                unit = Unit(self, conn, principal, purpose, check_principal=check)
                yield unit
                unit._flush_events()
        finally:
            if unit is not None:
                unit._release_writer()

    def _after(self, unit: Unit | None, purpose: Purpose) -> None:
        """Run what must outlive the unit's transaction (refusal events, failed-login counters)."""
        if unit is None or not (unit._side_events or unit._side_actions):
            return
        with self._transaction(unit.principal, purpose, check=False) as side:
            side._final = True  # its refusals are written at once: nothing after it rolls back
            for action in unit._side_actions:
                action(side)
            for tenant_id, kwargs in unit._side_events:
                side._write_event(tenant_id, **kwargs)

    @contextmanager
    def bootstrap(self, principal: Principal) -> Iterator[Unit]:
        """The unit ``init`` uses to record the first platform account (nobody to check against yet)."""
        with self._transaction(principal, Purpose.ADMINISTRATION, check=False) as unit:
            yield unit
        unit._committed_hooks()

    @contextmanager
    def auth_unit(self, *, source_addr: str | None = None, user_agent: str | None = None) -> Iterator[Unit]:
        """The unit authentication runs in, before anyone is authenticated (login, enrolment, sessions)."""
        who = Principal(
            "system:authentication", "Authentication", PLATFORM, frozenset(), "system", source_addr, user_agent
        )
        unit = None
        try:
            with self._transaction(who, Purpose.AUTHENTICATION, check=False) as unit:
                yield unit
        finally:
            self._after(unit, Purpose.AUTHENTICATION)

    def writer(self) -> ThreadPoolExecutor:
        """The one thread that runs pipelined bulk inserts (see ``Unit._insert_pipelined``)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labvault-writer")
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def platform_operator(self, email: str | None = None) -> Principal:
        """The platform account operating the CLI: the one ``init`` recorded first, or the named one."""
        q = select(t.account).where(t.account.c.tenant_id == PLATFORM, t.account.c.active == 1)
        if email:
            q = q.where(t.account.c.email == email)
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(t.account.c.created_at)).first()
        if row is None:
            raise NotFound("no such active platform account: run 'labvault init'")
        return Principal(row.account_id, row.name, PLATFORM, frozenset(filter(None, row.roles.split(","))))

    def forget_keys(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self._crypto.clear()
            self._synthetic.clear()
        else:
            self._crypto.pop(tenant_id, None)
            self._synthetic.discard(tenant_id)

    # -- key rotation: many transactions, resumable ------------------------------------------------
    def rotate_keys(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        batch_size: int = 2000,
        max_batches: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, int]:
        """Re-encrypt a lab's data under a new data key version (see ``labvault.access.rotation``)."""
        return rotate_keys(
            self, principal, tenant_id, batch_size=batch_size, max_batches=max_batches, progress=progress
        )


class Unit(
    Authorisation,
    AuditAppend,
    Tenants,
    Records,
    Rotation,
    Work,
    Watch,
    Alerts,
    Canaries,
    Advisories,
    Explain,
    Breach,
    Incidents,
):
    """One unit of work for one principal and purpose.

    Every operation on personal data (and every refusal) is audited; reads of a lab's own
    settings (``tenant``, ``list_tenants``, ``key_versions``) are not personal data and are not.
    """

    def __init__(
        self,
        gateway: Gateway,
        conn: Connection,
        principal: Principal,
        purpose: Purpose,
        *,
        check_principal: bool = True,
    ) -> None:
        self._gw = gateway
        self.conn = conn
        self.principal = principal
        self.purpose = purpose
        self._seq: dict[str, tuple[int, bytes]] = {}  # per lab: (last sequence number, its hash)
        self._scoped: str | None = None
        self._grant = None
        # A lab's signed instruction this unit works under (see labvault.access.instructed.enter):
        # the only way a vendor operator reads lab data, within that instruction's scope.
        self._instruction = None
        # Per lab, the ground on which this unit may delete it (set by instructed.authorise_deletion).
        self._deletion_ground: dict[str, dict[str, Any]] = {}
        self._side_events: list[tuple[str, dict[str, Any]]] = []
        self._side_actions: list[Callable[[Unit], None]] = []
        self._pending_events: list[dict[str, Any]] = []
        self._unit_crypto: dict[str, TenantCrypto] = {}
        self._holds_writer = False
        self._on_commit: list[Callable[[], None]] = []
        self._committed = True
        self._service_purpose: str | None = None
        self._check = check_principal
        self._final = False
        if check_principal:
            self._check_principal()

    # -- the public interface domains use (everything else on a unit is the gateway's own) ----------

    @property
    def checked(self) -> bool:
        """Whether this unit checks its principal (False only in ``bootstrap`` and ``auth_unit``)."""
        return self._check

    def authorise(self, tenant_id: str, action: str, *, vendor_refusal: str | None = None) -> None:
        """Allow ``action`` on ``tenant_id`` for this unit's principal, or record a refusal and raise.
        The policy table decides; ``vendor_refusal`` only words the refusal of a lab's people action
        (``policy.LAB_PEOPLE``) to a vendor account for the operation at hand."""
        self._authorise(tenant_id, action, vendor_refusal)

    def refuse(self, tenant_id: str, action: str, reason: str) -> NoReturn:
        """A refusal a domain's state rule decides (not a role: roles are the policy table's): it is
        recorded in the lab's trail, then ``AccessDenied(reason)`` is raised."""
        self._deny(tenant_id, action, reason)

    def audit(
        self,
        tenant_id: str,
        action: str,
        object_type: str,
        count: int,
        *,
        outcome: str = "allowed",
        refs: Sequence[str] | None = None,
    ) -> None:
        """Append an audit event to the lab's chain (refusals and alerts outlive a rollback)."""
        self._record(tenant_id, action, object_type, count, outcome=outcome, refs=refs)

    def execute(self, tenant_id: str, statement: Executable) -> Result[Any]:
        """Run a statement on a domain's own records (settings, jobs, accounts), scoped to one lab for
        row-level security ('*': a lookup across labs, where the store's policies allow it).
        Personal-data tables are refused here: they are read and written only by the gateway's
        typed methods, which seal, open and audit."""
        from sqlalchemy import Delete, Insert, Select, Table, Update
        from sqlalchemy.sql import visitors

        from labvault.store.schema import PERSONAL_TABLES

        if not isinstance(statement, Select | Insert | Update | Delete):
            raise AccessDenied("a domain's records are reached by select, insert, update or delete statements only")
        # Every table the statement names, in joins, subqueries, CTEs and unions too.
        touched = {node.name for node in visitors.iterate(statement) if isinstance(node, Table)}
        if touched & PERSONAL_TABLES:
            raise AccessDenied("personal-data tables are reached only through the gateway's typed methods")
        if "audit_event" in touched:  # a read of the trail sees this unit's own events
            self._flush_events()
        self._scope(tenant_id)
        return self.conn.execute(statement)

    @property
    def dialect(self) -> str:
        """The database's kind (``sqlite``, ``postgresql``), as certificates name the store."""
        return str(self.conn.dialect.name)

    @property
    def pin(self) -> PinStore | None:
        """G4: the platform key and each lab's last checkpoint, sealed outside the database (or None)."""
        return self._gw.pin

    def after(self, action: Callable[[Unit], None]) -> None:
        """Run ``action`` in a transaction of its own once this unit ends, committed or not."""
        self._side_actions.append(action)

    def on_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this unit's transaction has committed (never if it rolls back)."""
        self._on_commit.append(action)

    def _committed_hooks(self) -> None:
        actions, self._on_commit = self._on_commit, []
        for action in actions:
            action()

    def _take_writer(self) -> None:
        """Queue for this process's SQLite write lock (``Gateway.sqlite_writer``), held until the unit
        ends. Not when this unit already writes: SQLite's lock is then its own, and a thread that
        holds the gateway's lock while waiting for SQLite's must not wait for this unit in turn."""
        lock = self._gw.sqlite_writer
        if lock is None or self._holds_writer:
            return
        dbapi = self.conn.connection.dbapi_connection
        if dbapi is not None and getattr(dbapi, "in_transaction", False):
            return
        if not lock.acquire(timeout=SQLITE_WRITER_WAIT_S):
            raise StoreError("the database is busy: try again")
        self._holds_writer = True

    def _release_writer(self) -> None:
        if self._holds_writer:
            self._holds_writer = False
            lock = self._gw.sqlite_writer
            if lock is not None:
                lock.release()
