"""The access gateway: the one module that reads and writes personal data.

Given *who* (a ``Principal``), *why* (a ``Purpose``) and *what* (a lab, objects), a ``Unit`` of
work authorises, encrypts or decrypts through ``labvault.crypto``, reads or writes through
``labvault.store`` and appends an audit event, all in one database transaction: a failure
anywhere leaves nothing half-written. Services never commit; the unit does.

Faces (CLI, later HTTP and MLLP) and domains hold a ``Gateway`` and open units; none of them
touches the personal-data tables or key material.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from hashlib import sha256
from pathlib import Path
from typing import NoReturn

from sqlalchemy import Connection, Engine, and_, func, insert, select, true, update
from sqlalchemy.exc import IntegrityError

from labvault.access import codec, policy
from labvault.access.principal import Principal, Purpose
from labvault.audit import chain
from labvault.crypto.blind import BlindIndex
from labvault.crypto.fields import FieldCipher
from labvault.crypto.keys import PLATFORM, KeyProvider
from labvault.crypto.signing import Signer
from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Prescriber,
    Sensitivity,
    Request,
    Result,
    ResultStatus,
    Specimen,
    Tenant,
)
from labvault.domain.identifiers import OBJECT_ID_RE, TENANT_ID_RE, normalise_nir, validate_finess, validate_nir
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import (
    AccessDenied,
    InvalidInput,
    NotFound,
    TenantExists,
    TenantKeyMissing,
    TenantShredded,
    UnknownTenant,
)
from labvault.ids import new_id, utcnow
from labvault.store import schema as t
from labvault.store.engine import bulk_insert

_STATUSES = {s.value for s in ResultStatus}
_EVENT_COLUMNS = (*chain.FIELDS, "prev_hash", "hash")
_PART = 1000  # rows per pipelined insert


@dataclass(frozen=True)
class TenantCrypto:
    """A lab's unwrapped keys, held in memory only."""

    cipher: FieldCipher
    index: BlindIndex
    # (purpose, version, state) of the lab's wrapped keys these were unwrapped from: a cached copy
    # is used only while the database still says the same (another process may have rotated).
    versions: tuple[tuple[str, int, str], ...] = ()


# The encrypted columns of each personal table, with the column naming the row id.
ENCRYPTED: dict[str, tuple[str, tuple[str, ...]]] = {
    tbl.name: (
        [c.name for c in tbl.primary_key.columns if c.name != "tenant_id"][0],
        tuple(c.name for c in tbl.columns if c.name.endswith("_enc")),
    )
    for tbl in (t.patient_identity, t.prescriber, t.request, t.specimen, t.result, t.quarantine, t.instruction)
}


def _valid_id(value: str) -> bool:
    """Ids are short tokens; anything else (NUL bytes, 10 kB strings) cannot name a row."""
    return isinstance(value, str) and OBJECT_ID_RE.match(value) is not None


def _check_id(value: str, kind: str) -> None:
    if not _valid_id(value):
        raise NotFound(f"no such {kind} in this lab")


# A synthetic lab's mark: a tenant_key row of this purpose, sealed under the lab's KEK at creation.
SYNTHETIC_MARK = "synthetic"


def _synthetic_secret(tenant_id: str) -> bytes:
    return f"labvault synthetic lab {tenant_id}".encode()


class Gateway:
    """Holds the engine and the key provider; opens units of work."""

    def __init__(self, engine: Engine, keys: KeyProvider, *, tenant_filter: bool = True,
                 pin_path: Path | None = None) -> None:
        self.engine = engine
        self.keys = keys
        # G4: the platform key pinned at init and each lab's last checkpoint, sealed, outside the
        # database (labvault.audit.pin). None: checkpoints are checked against the keys the KEK opens.
        from labvault.audit.pin import PinStore

        self.pin = PinStore(pin_path, keys) if pin_path is not None else None
        # Tests turn the application's own tenant filter off to prove that row-level security
        # alone keeps labs apart on PostgreSQL. Never off in production.
        self.tenant_filter = tenant_filter
        self._crypto: dict[str, TenantCrypto] = {}
        self._synthetic: set[str] = set()  # labs whose sealed synthetic mark opened (see Unit.is_synthetic)
        self._writer: ThreadPoolExecutor | None = None

    @contextmanager
    def unit(self, principal: Principal, purpose: Purpose) -> Iterator[Unit]:
        """One transaction: commits when the block ends, rolls back on any error.

        Refusals and failed attempts are recorded too: their events are written after the
        unit's own transaction ends, in a transaction of their own, so that the rollback of
        the refused work does not erase the trace of the attempt.
        """
        unit = None
        try:
            with self.engine.begin() as conn:
                unit = Unit(self, conn, principal, purpose)
                yield unit
                unit._flush_events()
            unit._committed_hooks()
        finally:
            self._after(unit, purpose)

    def _after(self, unit: Unit | None, purpose: Purpose) -> None:
        """Run what must outlive the unit's transaction (refusal events, failed-login counters)."""
        if unit is None or not (unit._side_events or unit._side_actions):
            return
        with self.engine.begin() as conn:
            side = Unit(self, conn, unit.principal, purpose, check_principal=False)
            for action in unit._side_actions:
                action(side)
            for tenant_id, kwargs in unit._side_events:
                side._write_event(tenant_id, **kwargs)
            side._flush_events()

    @contextmanager
    def bootstrap(self, principal: Principal) -> Iterator[Unit]:
        """The unit ``init`` uses to record the first platform account (nobody to check against yet)."""
        with self.engine.begin() as conn:
            unit = Unit(self, conn, principal, Purpose.ADMINISTRATION, check_principal=False)
            yield unit
            unit._flush_events()
        unit._committed_hooks()

    @contextmanager
    def auth_unit(self, *, source_addr: str | None = None, user_agent: str | None = None) -> Iterator[Unit]:
        """The unit authentication runs in, before anyone is authenticated (login, enrolment, sessions)."""
        who = Principal("system:authentication", "Authentication", PLATFORM, frozenset(), "system", source_addr,
                        user_agent)
        unit = None
        try:
            with self.engine.begin() as conn:
                unit = Unit(self, conn, who, Purpose.AUTHENTICATION, check_principal=False)
                yield unit
                unit._flush_events()
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
        """Re-encrypt a lab's data under a new data key version, in resumable batches.

        Starts a new version unless a rotation is already under way (a version in state
        ``retiring``), in which case it resumes. Each batch commits on its own, so an
        interruption loses at most one batch of work and leaves every row readable.
        """
        if batch_size < 1:
            raise InvalidInput("the batch size must be at least 1")
        with self.unit(principal, Purpose.ADMINISTRATION) as u:
            new_version, resumed = u._start_rotation(tenant_id)
        self.forget_keys(tenant_id)
        with self.unit(principal, Purpose.ADMINISTRATION) as u:
            total = u._rows_below(tenant_id, new_version)
        done = batches = 0
        finished = False
        while max_batches is None or batches < max_batches:
            with self.unit(principal, Purpose.ADMINISTRATION) as u:
                n = u._reencrypt_batch(tenant_id, new_version, batch_size)
            if n == 0:
                finished = True
                break
            done += n
            batches += 1
            if progress:
                progress(done, total)
        if finished:
            with self.unit(principal, Purpose.ADMINISTRATION) as u:
                u._finish_rotation(tenant_id)
        return {"version": new_version, "resumed": int(resumed), "rows": done, "finished": int(finished)}


class Unit:
    """One unit of work for one principal and purpose.

    Every operation on personal data (and every refusal) is audited; reads of a lab's own
    settings (``tenant``, ``list_tenants``, ``key_versions``) are not personal data and are not.
    """

    def __init__(
        self, gateway: Gateway, conn: Connection, principal: Principal, purpose: Purpose, *, check_principal: bool = True
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
        self._deletion_ground: dict[str, dict] = {}
        self._side_events: list[tuple[str, dict]] = []
        self._side_actions: list[Callable[[Unit], None]] = []
        self._pending_events: list[dict] = []
        self._on_commit: list[Callable[[], None]] = []
        self._committed = True
        self._service_purpose: str | None = None
        self._check = check_principal
        if check_principal:
            self._check_principal()

    # -- scoping, authorisation and audit ----------------------------------------------------------
    def _tf(self, table, tenant_id: str):
        """The application's tenant filter on ``table`` (row-level security is the second wall)."""
        return table.c.tenant_id == tenant_id if self._gw.tenant_filter else true()

    def _scope(self, tenant_id: str) -> None:
        """Name the lab this transaction works on for PostgreSQL's row-level security policies."""
        if self._scoped == tenant_id or self.conn.dialect.name != "postgresql":
            self._scoped = tenant_id
            return
        self.conn.execute(select(func.set_config("labvault.tenant", tenant_id, True)))
        self._scoped = tenant_id

    def _check_principal(self) -> None:
        """The account must exist and be active; its roles are read from the store, not trusted."""
        p = self.principal
        self._scope(p.tenant_id)
        row = self.conn.execute(
            select(t.account).where(t.account.c.tenant_id == p.tenant_id, t.account.c.account_id == p.account_id)
        ).first()
        if row is None or not row.active:
            raise AccessDenied("no active account for this principal")
        roles = frozenset(filter(None, row.roles.split(",")))
        self.principal = dataclasses.replace(p, roles=roles)
        self._committed = row.commitment_at is not None
        self._service_purpose = row.service_purpose

    # -- the public interface domains use (everything else on a unit is the gateway's own) ----------
    @property
    def checked(self) -> bool:
        """Whether this unit checks its principal (False only in ``bootstrap`` and ``auth_unit``)."""
        return self._check

    def authorise(self, tenant_id: str, action: str) -> None:
        """Allow ``action`` on ``tenant_id`` for this unit's principal, or record a refusal and raise."""
        self._authorise(tenant_id, action)

    def refuse(self, tenant_id: str, action: str, reason: str) -> NoReturn:
        """A refusal a domain's state rule decides (not a role: roles are the policy table's): it is
        recorded in the lab's trail, then ``AccessDenied(reason)`` is raised."""
        self._deny(tenant_id, action, reason)

    def audit(
        self, tenant_id: str, action: str, object_type: str, count: int, *, outcome: str = "allowed",
        refs: Sequence[str] | None = None,
    ) -> None:
        """Append an audit event to the lab's chain (refusals and alerts outlive a rollback)."""
        self._record(tenant_id, action, object_type, count, outcome=outcome, refs=refs)

    def execute(self, tenant_id: str, statement):  # noqa: ANN001, ANN201 - SQLAlchemy statement and result
        """Run a statement on a domain's own records (settings, jobs, accounts), scoped to one lab for
        row-level security ('*': a lookup across labs, where the store's policies allow it).
        Personal-data tables are refused here: they are read and written only by the gateway's
        typed methods, which seal, open and audit."""
        from labvault.store.schema import PERSONAL_TABLES

        touched = {getattr(f, "name", None) for f in getattr(statement, "get_final_froms", lambda: [])()}
        table = getattr(statement, "table", None)
        touched.add(getattr(table, "name", None))
        if touched & PERSONAL_TABLES:
            raise AccessDenied("personal-data tables are reached only through the gateway's typed methods")
        self._scope(tenant_id)
        return self.conn.execute(statement)

    def _deny(self, tenant_id: str, action: str, reason: str) -> NoReturn:
        self._record(tenant_id, action, action.split(":")[0], 0, outcome="denied")
        raise AccessDenied(reason)

    def _authorise(self, tenant_id: str, action: str) -> None:
        """Deny by default: the policy table, lab isolation, grants for vendor support."""
        self._scope(tenant_id)
        self._grant = None  # a grant covers the operation that found it, not the ones after
        if not self._check:
            return
        p = self.principal
        known = None
        if p.is_platform and tenant_id != PLATFORM:
            known = self.tenant(tenant_id)  # vendor staff may list labs anyway: an unknown one is a 404
        personal = action in policy.READ_PERSONAL or action in policy.WRITE_PERSONAL or action in policy.MANAGE_PERSONAL
        if personal and not self._committed and p.kind == "person":
            self._deny(tenant_id, action, "this account has not recorded its confidentiality commitment")
        if p.is_platform:
            if action in policy.READ_PERSONAL:
                instr = self._instruction
                if instr is not None and instr.tenant == tenant_id and action in policy.INSTRUCTED_READS \
                        and policy.Role.OPERATOR in p.roles:
                    return
                grant = self._active_grant(tenant_id) if "support" in p.roles else None
                if grant is None or action not in grant.actions:
                    self._deny(tenant_id, action, "vendor accounts reach lab data only through a grant the lab approved")
                self._grant = grant
                return
            if action in policy.LAB_PEOPLE and tenant_id != PLATFORM:
                self._deny(tenant_id, action, "only the lab's own lab_admin manages its accounts, roles and tokens")
            if action in policy.WRITE_PERSONAL:
                # Generated data, into a lab created synthetic only: the purpose the caller names
                # never unlocks anything on a real lab.
                if self.purpose in (Purpose.GENERATE, Purpose.BENCHMARK) and policy.allowed(p.roles, "generate"):
                    if known is not None and known.synthetic and self.is_synthetic(tenant_id):
                        return
                    self._deny(tenant_id, action, f"lab '{tenant_id}' is not a synthetic lab: "
                                                  "vendor accounts do not write generated data into a real lab")
                self._deny(tenant_id, action, "vendor accounts do not write lab data")
            if not policy.allowed(p.roles, action):
                self._deny(tenant_id, action, f"'{action}' is not allowed for roles {', '.join(sorted(p.roles)) or 'none'}")
            return
        if p.tenant_id != tenant_id:
            # In the named lab's trail when it exists; else in the caller's own (what the caller
            # wrote in a path, a NIR say, never opens an audit chain of its own).
            known_lab = self.conn.execute(select(t.tenant.c.tenant_id).where(self._tf(t.tenant, tenant_id))).first()
            self._deny(tenant_id if known_lab is not None else p.tenant_id, action,
                       f"account of lab '{p.tenant_id}' cannot act on lab '{tenant_id}'")
        if self._service_purpose and self._service_purpose != str(self.purpose):
            self._deny(tenant_id, action, f"this service account acts for '{self._service_purpose}' only")
        if not policy.allowed(p.roles, action):
            self._deny(tenant_id, action, f"'{action}' is not allowed for roles {', '.join(sorted(p.roles)) or 'none'}")

    def _active_grant(self, tenant_id: str):
        from labvault.access.grants import active_grant

        return active_grant(self, tenant_id, self.principal.account_id)

    def _in_grant_scope(self, patient_id: str, tenant_id: str | None = None) -> bool:
        """Whether a support grant (if one is in use) covers this patient: named in it, and, for a
        grant bounded to a period, with a request dated in that period."""
        g = self._grant
        if g is None:
            return True
        if g.patients is not None and patient_id not in g.patients:
            return False
        if g.has_period:
            c = self._crypto(tenant_id)
            q = t.request
            ids = [r.request_id for r in self.conn.execute(select(q.c.request_id).where(
                self._tf(q, tenant_id), q.c.pseudonym == c.index.pseudonym(patient_id))).all()]
            return bool(self._requests_collected_between(c, tenant_id, ids, g.period_from, g.period_to))
        return True

    def _readable_categories(self, tenant_id: str) -> frozenset[str] | None:
        """Sensitive categories this principal may read in this lab (None: all)."""
        if not self._check:
            return None
        if self._grant is not None:
            return frozenset()  # support under a grant never sees sensitive categories
        if self._instruction is not None and self.principal.is_platform:
            return frozenset(self._instruction.sensitive)  # only what the lab listed
        row = self.conn.execute(select(t.tenant.c.sensitive_access).where(t.tenant.c.tenant_id == tenant_id)).first()
        access = json.loads(row.sensitive_access) if row and row.sensitive_access else policy.DEFAULT_SENSITIVE_ACCESS
        return frozenset(cat for cat, roles in access.items() if self.principal.roles & set(roles))

    def _record(
        self, tenant_id: str, action: str, object_type: str, count: int, *, outcome: str = "allowed",
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
        if outcome in ("denied", "error", "alert"):  # kept even when the work is rolled back
            self._side_events.append((tenant_id, event))
            return
        self._write_event(tenant_id, **event)

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

    def _chain_lock(self, tenant_id: str) -> None:
        """One appender (or checkpoint signer) per lab at a time: a write lock until the unit ends."""
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(select(func.pg_advisory_xact_lock(func.hashtext("labvault.audit." + tenant_id))))
        else:
            # Python's sqlite3 opens its transaction at the first write: this write (of no row)
            # takes SQLite's write lock before the head is read.
            self.conn.exec_driver_sql("UPDATE audit_event SET seq = seq WHERE 0")

    def _write_event(self, tenant_id: str, **event: object) -> None:
        previous = self._scoped
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
        seq = head[0] + 1
        row = {"tenant_id": tenant_id, "seq": seq, "at": utcnow(), **event}
        digest = chain.event_hash(head[1], row)
        self._seq[tenant_id] = (seq, digest)
        row["prev_hash"], row["hash"] = head[1], digest
        self._pending_events.append(row)
        if previous is not None:  # back to the lab this unit works on (its reads rely on the scope)
            self._scope(previous)

    def _flush_events(self) -> None:
        """Insert the events chained so far, in one batch, inside this unit's transaction."""
        if not self._pending_events:
            return
        rows, self._pending_events = self._pending_events, []
        previous = self._scoped
        for tenant_id in {r["tenant_id"] for r in rows}:
            self._scope(tenant_id)
            mine = [r for r in rows if r["tenant_id"] == tenant_id]
            if self.conn.dialect.name == "sqlite":  # stored as SQLAlchemy stores times there: UTC text
                for r in mine:
                    r["at"] = chain.at_text(r["at"])
            bulk_insert(self.conn, t.audit_event, _EVENT_COLUMNS, [tuple(r[c] for c in _EVENT_COLUMNS) for r in mine])
        if previous is not None:
            self._scope(previous)

    # -- tenants --------------------------------------------------------------------------------
    def create_tenant(
        self, tenant_id: str, name: str, finess: str, *, retention: Mapping[str, tuple[int, str]],
        synthetic: bool = False,
    ) -> Tenant:
        """A lab with its own keys and its retention rules (category -> (days, legal reference),
        ``results`` at least), all in this transaction: no lab exists without its rules.

        ``synthetic``: a lab for generated data only (the demo, ``generate``, the benchmarks). Only
        such a lab may be generated into by vendor accounts, or deleted without the lab's signed
        deletion instruction; the mark is set here, once, and never changed afterwards."""
        from labvault.retention import records as ret
        if self._check and not policy.allowed(self.principal.roles, "tenant:create"):
            raise AccessDenied("creating labs is not allowed for this account")
        if not TENANT_ID_RE.match(tenant_id) or tenant_id == PLATFORM:
            raise InvalidInput(
                "a lab id is 2-63 characters: lower-case letters, digits and '-', starting with a letter or digit"
            )
        if not name.strip():
            raise InvalidInput("a lab needs a name")
        finess = validate_finess(finess)
        rules = ret.check_rules(retention)
        self._scope(tenant_id)
        if self.conn.execute(select(t.tenant.c.tenant_id).where(self._tf(t.tenant, tenant_id))).first():
            raise TenantExists(f"lab '{tenant_id}' already exists")
        now = utcnow()
        self.conn.execute(
            insert(t.tenant).values(tenant_id=tenant_id, name=name.strip(), finess=finess, status="active",
                                    created_at=now, synthetic=int(bool(synthetic)))
        )
        keys = self._gw.keys
        keys.create_scope(tenant_id)
        for purpose in ("data", "index"):
            secret = secrets.token_bytes(32)
            self.conn.execute(
                insert(t.tenant_key).values(
                    tenant_id=tenant_id,
                    purpose=purpose,
                    version=1,
                    wrapped=keys.wrap(tenant_id, secret, f"{purpose}:v1".encode()),
                    state="active",
                    created_at=now,
                )
            )
        if synthetic:  # the mark sealed under the lab's own KEK: an UPDATE of tenant.synthetic cannot make one
            self.conn.execute(insert(t.tenant_key).values(
                tenant_id=tenant_id, purpose=SYNTHETIC_MARK, version=1, state="active", created_at=now,
                wrapped=keys.wrap(tenant_id, _synthetic_secret(tenant_id), f"{SYNTHETIC_MARK}:v1".encode())))
        self._record(tenant_id, "tenant:create", "synthetic-tenant" if synthetic else "tenant", 1)
        ret.write_rules(self, tenant_id, rules)
        return Tenant(tenant_id, name.strip(), finess, "active", now, bool(synthetic))

    def is_synthetic(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` was created synthetic, as the decisions it unlocks need it proved:
        ``tenant.synthetic`` set AND the mark ``create_tenant`` sealed under the lab's own KEK opens.
        Someone who sets the column on a real lab (an UPDATE in the database) has no such mark and
        cannot make one without the lab's KEK. ``Tenant.synthetic`` is the column, for display."""
        from labvault.errors import LabvaultError

        if tenant_id in self._gw._synthetic:
            return True
        self._scope(tenant_id)
        flagged = self.conn.execute(select(t.tenant.c.synthetic).where(self._tf(t.tenant, tenant_id))).scalar()
        row = self.conn.execute(select(t.tenant_key.c.wrapped).where(
            self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose == SYNTHETIC_MARK,
            t.tenant_key.c.version == 1)).first()
        if not flagged or row is None:
            return False
        try:
            sealed = self._gw.keys.unwrap(tenant_id, row.wrapped, f"{SYNTHETIC_MARK}:v1".encode())
        except LabvaultError:
            return False
        if sealed != _synthetic_secret(tenant_id):
            return False
        self._gw._synthetic.add(tenant_id)
        return True

    def list_tenants(self) -> list[Tenant]:
        if not self.principal.is_platform:
            self._authorise(self.principal.tenant_id, "tenant:read")
            rows = self.conn.execute(select(t.tenant).where(t.tenant.c.tenant_id == self.principal.tenant_id)).all()
        else:
            if self._check and not policy.allowed(self.principal.roles, "tenant:list"):
                raise AccessDenied("listing labs is not allowed for this account")
            self._scope("*")
            rows = self.conn.execute(select(t.tenant).order_by(t.tenant.c.tenant_id)).all()
        return [Tenant(r.tenant_id, r.name, r.finess, r.status, r.created_at, bool(r.synthetic)) for r in rows]

    def tenant(self, tenant_id: str) -> Tenant:
        self._scope(tenant_id)
        row = self.conn.execute(select(t.tenant).where(self._tf(t.tenant, tenant_id))).first()
        if row is None:
            raise UnknownTenant(f"unknown lab '{tenant_id}' (see 'labvault tenant list')")
        return Tenant(row.tenant_id, row.name, row.finess, row.status, row.created_at, bool(row.synthetic))

    def _crypto(self, tenant_id: str) -> TenantCrypto:
        tenant = self.tenant(tenant_id)
        if tenant.status == "shredded":
            raise TenantShredded(f"lab '{tenant_id}' was crypto-shredded: its data can no longer be read")
        tk = t.tenant_key
        versions = tuple(
            tuple(r) for r in self.conn.execute(
                select(tk.c.purpose, tk.c.version, tk.c.state)
                .where(self._tf(tk, tenant_id), tk.c.purpose.in_(["data", "index"]))
                .order_by(tk.c.purpose, tk.c.version)
            )
        )
        cached = self._gw._crypto.get(tenant_id)
        if cached is not None and cached.versions == versions:  # else another process rotated: reload
            # C3: another process may have shredded the lab since these keys were unwrapped (and
            # this database may be a copy taken before): the KEK must still be there to use them.
            if self._gw.keys.has_scope(tenant_id):
                return cached
            self._gw.forget_keys(tenant_id)
            raise TenantKeyMissing(f"no key for '{tenant_id}' in the key provider (destroyed)")
        rows = self.conn.execute(
            select(t.tenant_key).where(self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose.in_(["data", "index"]))
        ).all()
        keys = self._gw.keys
        data: dict[int, bytes] = {}
        current = 0
        index_key = None
        for r in rows:
            secret = keys.unwrap(tenant_id, r.wrapped, f"{r.purpose}:v{r.version}".encode())
            if r.purpose == "data":
                data[r.version] = secret
                if r.state == "active":
                    current = r.version
            else:
                index_key = secret
        if not data or index_key is None or current == 0:
            raise TenantShredded(f"lab '{tenant_id}' has no usable keys")
        crypto = TenantCrypto(FieldCipher(tenant_id, data, current), BlindIndex(tenant_id, index_key), versions)
        self._gw._crypto[tenant_id] = crypto
        return crypto

    def shred_tenant(self, tenant_id: str, *, instruction_id: str | None = None) -> dict:
        """Destroy a lab's keys: all its data, in every backup, becomes unreadable. Signed record.

        A real lab only under its signed deletion instruction (``instruction_id``), re-checked now;
        a synthetic lab without one (see ``labvault.access.instructed.authorise_deletion``). Inside
        the end of a contract, the ground that unit checked before deleting the rows is used."""
        from labvault.access import instructed

        self._authorise(tenant_id, "tenant:shred")
        # The lab's row locked first (PostgreSQL; SQLite has one writer): a concurrent shred of the
        # same lab waits here, then finds it shredded.
        self.conn.execute(select(t.tenant.c.status).where(self._tf(t.tenant, tenant_id)).with_for_update()).first()
        tenant = self.tenant(tenant_id)
        if tenant.status == "shredded":
            raise TenantShredded(f"lab '{tenant_id}' was already crypto-shredded")
        deletion = self._deletion_ground.get(tenant_id)
        if deletion is None or (deletion["instruction"] or {}).get("id") != instruction_id:
            deletion = instructed.authorise_deletion(self, tenant_id, instruction_id, action="tenant:shred")
        # An earlier attempt may have destroyed the KEK and then failed to commit: this one marks the
        # lab (and says so in the record) instead of failing on a key that is gone (C3).
        kek_present = self._gw.keys.has_scope(tenant_id)
        rows = self.conn.execute(select(t.tenant_key).where(self._tf(t.tenant_key, tenant_id))).all()
        now = utcnow()
        body = {
            "kind": "tenant-shred",
            "tenant": tenant_id,
            "finess": tenant.finess,
            "at": now.isoformat(),
            "actor": self.principal.account_id,
            "actor_name": self.principal.name,
            "key_provider": self._gw.keys.name,
            "synthetic": deletion["synthetic"],
            "instruction": deletion["instruction"],
            "keys_destroyed": [
                {"purpose": r.purpose, "version": r.version, "wrapped_sha256": sha256(r.wrapped).hexdigest()} for r in rows
                if r.purpose not in (SYNTHETIC_MARK, "signer")  # seals, not keys (gone with the rows and the KEK)
            ],
        }
        if not kek_present:
            body["kek_destroyed_earlier"] = True
        signer, public = self._platform_signer()
        record = {"record_id": new_id(), "body": body, "signature": signer.sign(body), "public_key": public.hex()}
        self.conn.execute(t.tenant_key.delete().where(self._tf(t.tenant_key, tenant_id)))
        self.conn.execute(
            update(t.tenant).where(self._tf(t.tenant, tenant_id)).values(status="shredded", shredded_at=now)
        )
        self.conn.execute(
            insert(t.signed_record).values(
                tenant_id=tenant_id,
                record_id=record["record_id"],
                kind="tenant-shred",
                body=json.dumps(body, sort_keys=True),
                signature=record["signature"],
                signer_public_key=record["public_key"],
                created_at=now,
            )
        )
        self._record(tenant_id, "tenant:shred", "tenant", 1,
                     refs=[deletion["instruction"]["id"]] if deletion["instruction"] else None)
        # Last, once the database changes are in this transaction: destroy the KEK itself.
        # Should the commit then fail, the lab is unreadable but not marked: a retry marks it.
        self._gw.forget_keys(tenant_id)
        if kek_present:
            self._gw.keys.destroy_scope(tenant_id)  # TenantKeyMissing if another process did meanwhile
        return record

    def signed_records(self, tenant_id: str, kind: str | None = None) -> list[dict]:
        self._authorise(tenant_id, "tenant:read")
        q = select(t.signed_record).where(self._tf(t.signed_record, tenant_id))
        if kind:
            q = q.where(t.signed_record.c.kind == kind)
        return [
            {"record_id": r.record_id, "body": json.loads(r.body), "signature": r.signature, "public_key": r.signer_public_key}
            for r in self.conn.execute(q.order_by(t.signed_record.c.created_at)).all()
        ]

    # -- platform signing key ---------------------------------------------------------------------
    def ensure_platform_keys(self) -> bytes:
        """Create the platform's Ed25519 signing key if absent, and pin it (G4); return its public key.

        The public key pinned is the one derived from the private key the KEK opens, never the
        ``public`` column of the row."""
        keys = self._gw.keys
        keys.create_scope(PLATFORM)
        self._scope(PLATFORM)
        row = self.conn.execute(
            select(t.tenant_key).where(t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing")
            .order_by(t.tenant_key.c.version)
        ).first()
        if row is not None:
            pub = Signer(keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode())).public_key
        else:
            priv, pub = Signer.generate()
            self.conn.execute(
                insert(t.tenant_key).values(
                    tenant_id=PLATFORM,
                    purpose="signing",
                    version=1,
                    wrapped=keys.wrap(PLATFORM, priv, b"signing:v1"),
                    public=pub,
                    state="active",
                    created_at=utcnow(),
                )
            )
        pin = self._gw.pin
        if pin is not None and not pin.exists():
            self.on_commit(lambda: pin.create(pub))
        return pub

    def _platform_signer(self) -> tuple[Signer, bytes]:
        previous = self._scoped
        self._scope(PLATFORM)
        row = self.conn.execute(
            select(t.tenant_key).where(
                t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing", t.tenant_key.c.state == "active"
            ).order_by(t.tenant_key.c.version.desc())
        ).first()
        if previous is not None:
            self._scope(previous)
        if row is None:
            raise NotFound("no platform signing key: run 'labvault init'")
        signer = Signer(self._gw.keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode()))
        return signer, signer.public_key  # derived from the private key, not read from the row

    def platform_keys(self) -> list[bytes]:
        """G4: the platform's signing keys a checkpoint may be verified with, oldest first.

        The first is the key pinned at ``init`` (the sealed pin file; without one, the first key the
        KEK opens); each later one only through a rotation record signed by the key before it
        (``rotate_platform_key``). Nothing here is taken from a checkpoint's row."""
        from labvault.audit.pin import fingerprint
        from labvault.crypto.signing import SignatureInvalid, verify

        previous = self._scoped
        self._scope(PLATFORM)
        if self._gw.pin is not None:
            trusted = [bytes.fromhex(k["public"]) for k in self._gw.pin.read()["keys"]]
        else:
            row = self.conn.execute(
                select(t.tenant_key).where(t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing")
                .order_by(t.tenant_key.c.version)
            ).first()
            if row is None:
                raise NotFound("no platform signing key: run 'labvault init'")
            trusted = [Signer(self._gw.keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode())).public_key]
        records = self._platform_key_rows()
        if previous is not None:
            self._scope(previous)
        for r in records:  # a rotation counts only when the key before it signed it
            body = json.loads(r.body)
            try:
                new = bytes.fromhex(body["public"])
                prev = next(k for k in trusted if fingerprint(k) == body["previous"])
                verify(body, r.signature, prev)
            except (StopIteration, KeyError, ValueError, TypeError, SignatureInvalid):
                continue
            if new not in trusted:
                trusted.append(new)
        return trusted

    def platform_key_records(self) -> list[dict]:
        """The platform's key rotation records (each signed by the key before it), for a lab's file."""
        previous = self._scoped
        self._scope(PLATFORM)
        rows = self._platform_key_rows()
        if previous is not None:
            self._scope(previous)
        return [{"type": "platform-key", "body": json.loads(r.body), "signature": r.signature} for r in rows]

    def _platform_key_rows(self) -> list:
        """The platform key's rotation records, oldest first (the caller has scoped to the platform)."""
        return self.conn.execute(
            select(t.signed_record).where(t.signed_record.c.tenant_id == PLATFORM,
                                          t.signed_record.c.kind == "platform-key")
            .order_by(t.signed_record.c.created_at)
        ).all()

    def rotate_platform_key(self) -> dict:
        """A new platform signing key; the rotation record is signed by the key it replaces (G4)."""
        from labvault.audit.pin import fingerprint

        self._authorise(PLATFORM, "keys:rotate")
        old_signer, old_public = self._platform_signer()
        self._scope(PLATFORM)
        version = (self.conn.execute(
            select(func.max(t.tenant_key.c.version)).where(t.tenant_key.c.tenant_id == PLATFORM,
                                                           t.tenant_key.c.purpose == "signing")
        ).scalar() or 0) + 1
        priv, pub = Signer.generate()
        now = utcnow()
        body = {"kind": "platform-key", "version": version, "public": pub.hex(), "fingerprint": fingerprint(pub),
                "previous": fingerprint(old_public), "at": now.isoformat()}
        signature = old_signer.sign(body)
        self.conn.execute(update(t.tenant_key).where(
            t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing").values(state="retired"))
        self.conn.execute(insert(t.tenant_key).values(
            tenant_id=PLATFORM, purpose="signing", version=version,
            wrapped=self._gw.keys.wrap(PLATFORM, priv, f"signing:v{version}".encode()), public=pub, state="active",
            created_at=now))
        self.conn.execute(insert(t.signed_record).values(
            tenant_id=PLATFORM, record_id=new_id(), kind="platform-key", body=json.dumps(body, sort_keys=True),
            signature=signature, signer_public_key=old_public.hex(), created_at=now))
        self._record(PLATFORM, "keys:platform:rotate", "key", 1)
        pin = self._gw.pin
        if pin is not None:
            self.on_commit(lambda: pin.add_key(version, pub))
        return {"version": version, "fingerprint": fingerprint(pub), "previous": fingerprint(old_public),
                "record": {"body": body, "signature": signature}}

    # -- accounts (named actors; the access-control issue adds authentication and roles) -------
    def ensure_account(
        self, tenant_id: str, account_id: str, name: str, email: str, roles: Iterable[str], *,
        commitment: str | None = None,
    ) -> bool:
        """Record a named account; returns False when it already existed."""
        self._scope(tenant_id)
        exists = self.conn.execute(
            select(t.account.c.account_id).where(self._tf(t.account, tenant_id), t.account.c.account_id == account_id)
        ).first()
        if exists:
            return False
        self.conn.execute(
            insert(t.account).values(
                tenant_id=tenant_id,
                account_id=account_id,
                name=name,
                email=email,
                kind="person",
                roles=",".join(sorted(roles)),
                active=1,
                created_at=utcnow(),
                commitment_at=utcnow() if commitment else None,
                commitment_ref=commitment,
            )
        )
        return True

    # -- writes ---------------------------------------------------------------------------------
    def add_prescribers(self, tenant_id: str, prescribers: Sequence[Prescriber]) -> int:
        self._authorise(tenant_id, "prescriber:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        rpps, name = (c.cipher.column("prescriber", col) for col in ("rpps_enc", "name_enc"))
        rows = []
        for p in prescribers:
            i = p.prescriber_id
            rows.append(
                (tenant_id, i, v, c.index.rpps(p.rpps), rpps.seal(i, p.rpps.encode()),
                 name.seal(i, codec.pack((p.family_name, p.given_name))))
            )
        self._insert(t.prescriber, ("tenant_id", "prescriber_id", "key_version", "rpps_bidx", "rpps_enc", "name_enc"), rows)
        self._record(tenant_id, "prescriber:create", "prescriber", len(rows))
        return len(rows)

    def add_patients(self, tenant_id: str, identities: Sequence[Identity]) -> int:
        self._authorise(tenant_id, "patient:identity:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        col = {n: c.cipher.column("patient_identity", n) for n in ENCRYPTED["patient_identity"][1]}

        def opt(name: str, pid: str, value: str | None) -> bytes | None:
            return None if value is None else col[name].seal(pid, value.encode())

        rows = []
        for p in identities:
            i = p.patient_id
            nir = validate_nir(p.nir) if p.ins_oid.endswith(".8") else normalise_nir(p.nir)
            rows.append(
                (
                    tenant_id, i, str(IdentityStatus(p.identity_status)), p.ins_oid, v,
                    c.index.nir(nir), c.index.name(p.family_name, p.given_names, p.birth_date),
                    col["nir_enc"].seal(i, nir.encode()),
                    col["family_name_enc"].seal(i, p.family_name.encode()),
                    opt("birth_name_enc", i, p.birth_name),
                    col["given_names_enc"].seal(i, p.given_names.encode()),
                    col["birth_date_enc"].seal(i, p.birth_date.isoformat().encode()),
                    col["sex_enc"].seal(i, p.sex.encode()),
                    opt("birthplace_enc", i, p.birthplace_code),
                    opt("address_enc", i, p.address),
                    opt("phone_enc", i, p.phone),
                    opt("email_enc", i, p.email),
                )
            )
        self._insert(
            t.patient_identity,
            ("tenant_id", "patient_id", "identity_status", "ins_oid", "key_version", "nir_bidx", "name_bidx")
            + ENCRYPTED["patient_identity"][1],
            rows,
        )
        self._record(tenant_id, "patient:identity:create", "patient", len(rows))
        return len(rows)

    def add_requests(self, tenant_id: str, requests: Sequence[Request]) -> int:
        self._authorise(tenant_id, "patient:request:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        acc, req_at, rep_at = (c.cipher.column("request", n) for n in ENCRYPTED["request"][1])
        rows = []
        for r in requests:
            i = r.request_id
            rows.append(
                (
                    tenant_id, i, c.index.pseudonym(r.patient_id), r.prescriber_id, v,
                    None if r.accession is None else acc.seal(i, r.accession.encode()),
                    req_at.seal(i, r.requested_at.isoformat().encode()),
                    None if r.reported_at is None else rep_at.seal(i, r.reported_at.isoformat().encode()),
                )
            )
        self._insert(t.request, ("tenant_id", "request_id", "pseudonym", "prescriber_id", "key_version")
                     + ENCRYPTED["request"][1], rows)
        self._record(tenant_id, "patient:request:create", "request", len(rows))
        return len(rows)

    def add_specimens(self, tenant_id: str, specimens: Sequence[Specimen]) -> int:
        self._authorise(tenant_id, "patient:specimen:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        typ, col_at, rec_at = (c.cipher.column("specimen", n) for n in ENCRYPTED["specimen"][1])
        rows = [
            (
                tenant_id, s.specimen_id, s.request_id, v,
                typ.seal(s.specimen_id, s.type.encode()),
                col_at.seal(s.specimen_id, s.collected_at.isoformat().encode()),
                None if s.received_at is None else rec_at.seal(s.specimen_id, s.received_at.isoformat().encode()),
            )
            for s in specimens
        ]
        self._insert(t.specimen, ("tenant_id", "specimen_id", "request_id", "key_version") + ENCRYPTED["specimen"][1], rows)
        self._record(tenant_id, "patient:specimen:create", "specimen", len(rows))
        return len(rows)

    def pseudonym_of(self, tenant_id: str, patient_id: str) -> str:
        """The pseudonym a patient's medical rows carry (computing it needs the lab's identity key)."""
        self._authorise(tenant_id, "patient:request:create")
        return self._crypto(tenant_id).index.pseudonym(patient_id)

    def _pseudonyms_of_requests(self, tenant_id: str, request_ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = list(request_ids)
        for k in range(0, len(ids), 500):
            chunk = ids[k : k + 500]
            found.update(
                self.conn.execute(
                    select(t.request.c.request_id, t.request.c.pseudonym).where(
                        self._tf(t.request, tenant_id), t.request.c.request_id.in_(chunk)
                    )
                ).all()
            )
        return found

    def add_results(self, tenant_id: str, results: Sequence[Result], *, pseudonyms: dict[str, str] | None = None) -> int:
        """Store results; each names a request already stored (or in ``pseudonyms``)."""
        self._authorise(tenant_id, "patient:result:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        observation = c.cipher.column("result", "observation_enc")
        known = dict(pseudonyms or {})
        missing = {r.request_id for r in results} - known.keys()
        if missing:
            known.update(self._pseudonyms_of_requests(tenant_id, missing))
            if missing - known.keys():
                raise InvalidInput(f"{len(missing - known.keys())} result(s) name a request that is not stored")
        if {str(r.status) for r in results} - _STATUSES:
            raise InvalidInput("a result status must be preliminary, final or corrected")
        pack_result = codec.result_packer()

        def sealed(part: Sequence[Result]) -> list[tuple]:
            blobs = observation.seal_many([r.result_id for r in part], [pack_result(r) for r in part])
            return [
                (tenant_id, r.result_id, r.request_id, r.specimen_id, known[r.request_id], str(r.status), v, blob)
                for r, blob in zip(part, blobs, strict=True)
            ]

        columns = ("tenant_id", "result_id", "request_id", "specimen_id", "pseudonym", "status", "key_version",
                   "observation_enc")
        self._insert_pipelined(t.result, columns, (sealed(results[k : k + _PART]) for k in range(0, len(results), _PART)))
        self._record(tenant_id, "patient:result:create", "result", len(results))
        return len(results)

    def _insert_pipelined(self, table, columns: Sequence[str], parts: Iterator[list[tuple]]) -> None:
        """Insert parts of rows while the next part is being encrypted.

        The database driver releases the GIL while the engine writes, so one writer thread
        inserting part k while this thread seals part k+1 puts both cores to work. Only one
        thread uses the connection at any time; the caller's transaction is unchanged.
        """
        pending = None
        try:
            for rows in parts:
                if pending is not None:
                    pending.result()
                pending = self._gw.writer().submit(self._insert, table, columns, rows)
            if pending is not None:
                pending.result()
                pending = None
        finally:
            if pending is not None:  # an error while sealing: let the write finish before rollback
                pending.exception()

    def _insert(self, table, columns: Sequence[str], rows: list[tuple]) -> None:
        try:
            bulk_insert(self.conn, table, columns, rows)
        except IntegrityError:
            raise InvalidInput(f"a {table.name} with the same id is already stored") from None
        except Exception as exc:  # sqlite3 / psycopg integrity errors raised below SQLAlchemy
            if type(exc).__name__ in ("IntegrityError", "UniqueViolation"):
                raise InvalidInput(f"a {table.name} with the same id is already stored") from None
            raise

    # -- reads ----------------------------------------------------------------------------------
    def _identity(self, c: TenantCrypto, row) -> Identity:
        col = c.cipher.column
        i = row.patient_id

        def o(name: str) -> str | None:
            blob = getattr(row, name)
            return None if blob is None else col("patient_identity", name).open(i, blob).decode()

        return Identity(
            patient_id=i,
            nir=o("nir_enc"),
            identity_status=IdentityStatus(row.identity_status),
            family_name=o("family_name_enc"),
            given_names=o("given_names_enc"),
            birth_date=date.fromisoformat(o("birth_date_enc")),
            sex=o("sex_enc"),
            birth_name=o("birth_name_enc"),
            birthplace_code=o("birthplace_enc"),
            address=o("address_enc"),
            phone=o("phone_enc"),
            email=o("email_enc"),
            ins_oid=row.ins_oid,
        )

    def find_patients_by_nir(self, tenant_id: str, nir: str) -> list[Identity]:
        """Exact match on the NIR/INS through the blind index."""
        value = validate_nir(nir)  # bad input first: it says nothing about the lab
        self._authorise(tenant_id, "patient:identity:search")
        c = self._crypto(tenant_id)
        rows = self.conn.execute(
            select(t.patient_identity).where(
                self._tf(t.patient_identity, tenant_id), t.patient_identity.c.nir_bidx == c.index.nir(value)
            )
        ).all()
        found = [self._identity(c, r) for r in rows if self._in_grant_scope(r.patient_id, tenant_id)]
        self._record(tenant_id, "patient:identity:search", "patient", len(found), refs=[p.patient_id for p in found])
        return found

    def find_patients_by_name(self, tenant_id: str, family_name: str, given_name: str, birth_date: date) -> list[Identity]:
        """Exact match on normalised family name + first given name + birth date."""
        self._authorise(tenant_id, "patient:identity:search")
        if not family_name.strip() or not given_name.strip():
            raise InvalidInput("a name search needs a family name, a given name and a birth date")
        c = self._crypto(tenant_id)
        rows = self.conn.execute(
            select(t.patient_identity).where(
                self._tf(t.patient_identity, tenant_id),
                t.patient_identity.c.name_bidx == c.index.name(family_name, given_name, birth_date),
            )
        ).all()
        found = [self._identity(c, r) for r in rows if self._in_grant_scope(r.patient_id, tenant_id)]
        self._record(tenant_id, "patient:identity:search", "patient", len(found), refs=[p.patient_id for p in found])
        return found

    def _authorise_identity_search(self, tenant_id: str) -> None:
        """G5, G6: searching the audit trail by a patient's identity (NIR, INS) is for the lab's own
        ``lab_admin`` and ``lab_dpo``; a vendor account only under a grant the lab approved that
        names identity search. Decided before the identity is even read, so that a refusal says
        the same thing whether or not the person is a patient of the lab (no oracle)."""
        p = self.principal
        if self._check and p.is_platform:
            self._authorise(tenant_id, "audit:read")
            grant = self._active_grant(tenant_id)
            if grant is None or "patient:identity:search" not in grant.actions:
                self._deny(tenant_id, "audit:identity", "vendor accounts search the audit trail by pseudonymous "
                                                        "reference (--ref), by identity only under a grant the lab "
                                                        "approved")
            self._grant = grant  # the patients it names bound the answer
            return
        self._authorise(tenant_id, "audit:identity")

    def patient_id_for_nir(self, tenant_id: str, nir: str) -> str | None:
        """The pseudonymous id behind a NIR, through the blind index, nothing decrypted (for the
        DPO's answer to a patient's access request: 'who looked at my results')."""
        self._authorise_identity_search(tenant_id)
        value = validate_nir(nir)
        c = self._crypto(tenant_id)
        row = self.conn.execute(
            select(t.patient_identity.c.patient_id).where(
                self._tf(t.patient_identity, tenant_id), t.patient_identity.c.nir_bidx == c.index.nir(value)
            )
        ).first()
        return None if row is None or not self._in_grant_scope(row.patient_id, tenant_id) else row.patient_id

    def get_patient(self, tenant_id: str, patient_id: str) -> Identity:
        self._authorise(tenant_id, "patient:identity:read")
        _check_id(patient_id, "patient")
        c = self._crypto(tenant_id)
        row = self.conn.execute(
            select(t.patient_identity).where(
                self._tf(t.patient_identity, tenant_id), t.patient_identity.c.patient_id == patient_id
            )
        ).first()
        if row is None or not self._in_grant_scope(patient_id, tenant_id):
            self._record(tenant_id, "patient:identity:read", "patient", 0, outcome="error")
            raise NotFound("no such patient in this lab")
        self._record(tenant_id, "patient:identity:read", "patient", 1, refs=[patient_id])
        return self._identity(c, row)

    def requests_of(self, tenant_id: str, patient_id: str) -> list[Request]:
        self._authorise(tenant_id, "patient:request:read")
        if not _valid_id(patient_id):
            return []
        if not self._in_grant_scope(patient_id, tenant_id):
            self._deny(tenant_id, "patient:request:read", "this patient is outside the grant's scope")
        c = self._crypto(tenant_id)
        rows = self.conn.execute(
            select(t.request).where(self._tf(t.request, tenant_id), t.request.c.pseudonym == c.index.pseudonym(patient_id))
        ).all()
        out = [self._request(c, r, patient_id) for r in rows]
        if self._grant is not None and self._grant.has_period:
            out = [q for q in out if self._grant.in_period(q.requested_at.date())]
        out.sort(key=lambda q: q.requested_at)
        self._record(tenant_id, "patient:request:read", "request", len(out), refs=[patient_id])
        return out

    def _request(self, c: TenantCrypto, r, patient_id: str) -> Request:
        col = c.cipher.column
        i = r.request_id
        return Request(
            request_id=i,
            patient_id=patient_id,
            prescriber_id=r.prescriber_id,
            requested_at=codec.to_dt(col("request", "requested_at_enc").open(i, r.requested_at_enc).decode()),
            accession=None if r.accession_enc is None else col("request", "accession_enc").open(i, r.accession_enc).decode(),
            reported_at=None if r.reported_at_enc is None
            else codec.to_dt(col("request", "reported_at_enc").open(i, r.reported_at_enc).decode()),
        )

    def results_of(
        self, tenant_id: str, patient_id: str, *, code: str | None = None,
        collected_from: date | None = None, collected_to: date | None = None,
    ) -> list[Result]:
        """A patient's results, decrypted, without the sensitive categories this principal may not read."""
        self._authorise(tenant_id, "patient:result:read")
        if not _valid_id(patient_id):
            return []
        if not self._in_grant_scope(patient_id, tenant_id):
            self._deny(tenant_id, "patient:result:read", "this patient is outside the grant's scope")
        c = self._crypto(tenant_id)
        req = t.request
        q = select(req.c.request_id).where(self._tf(req, tenant_id), req.c.pseudonym == c.index.pseudonym(patient_id))
        request_ids = [r.request_id for r in self.conn.execute(q).all()]
        if collected_from or collected_to:
            request_ids = self._requests_collected_between(c, tenant_id, request_ids, collected_from, collected_to)
        if self._grant is not None and self._grant.has_period:
            request_ids = self._requests_collected_between(c, tenant_id, request_ids, self._grant.period_from,
                                                           self._grant.period_to)
        out = self._results_of_requests(c, tenant_id, request_ids, code)
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=[patient_id])
        return out

    def results_of_request(self, tenant_id: str, request_id: str) -> list[Result]:
        """One request's results (the patient must be within a support grant's scope)."""
        self._authorise(tenant_id, "patient:result:read")
        _check_id(request_id, "request")
        c = self._crypto(tenant_id)
        row = self.conn.execute(
            select(t.request.c.pseudonym).where(self._tf(t.request, tenant_id), t.request.c.request_id == request_id)
        ).first()
        if row is None:
            self._record(tenant_id, "patient:result:read", "request", 0, outcome="error")
            raise NotFound("no such request in this lab")
        if self._grant is not None and self._grant.patients is not None:
            if row.pseudonym not in {c.index.pseudonym(pid) for pid in self._grant.patients}:
                self._deny(tenant_id, "patient:result:read", "this request is outside the grant's scope")
        if self._grant is not None and self._grant.has_period:
            if not self._requests_collected_between(c, tenant_id, [request_id], self._grant.period_from,
                                                    self._grant.period_to):
                self._deny(tenant_id, "patient:result:read", "this request is outside the grant's period")
        out = self._results_of_requests(c, tenant_id, [request_id], None)
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=[request_id])
        return out

    def _requests_collected_between(self, c, tenant_id, request_ids, start, end) -> list[str]:
        if not request_ids:
            return []
        rows = self.conn.execute(
            select(t.request.c.request_id, t.request.c.requested_at_enc).where(
                self._tf(t.request, tenant_id), t.request.c.request_id.in_(request_ids)
            )
        ).all()
        col = c.cipher.column("request", "requested_at_enc")
        keep = []
        for r in rows:
            day = codec.to_dt(col.open(r.request_id, r.requested_at_enc).decode()).date()
            if (start is None or day >= start) and (end is None or day <= end):
                keep.append(r.request_id)
        return keep

    def _results_of_requests(self, c, tenant_id: str, request_ids: list[str], code: str | None) -> list[Result]:
        if not request_ids:
            return []
        rows = self.conn.execute(
            select(t.result)
            .where(self._tf(t.result, tenant_id), t.result.c.request_id.in_(request_ids))
            .order_by(t.result.c.request_id, t.result.c.result_id)
        ).all()
        readable = self._readable_categories(tenant_id)
        out = []
        for r in rows:
            res = self._result(c, r)
            if code is not None and res.code != code:
                continue
            if readable is not None and res.sensitivity is not Sensitivity.OTHER and res.sensitivity not in readable:
                continue
            out.append(res)
        return out

    def _result(self, c: TenantCrypto, r) -> Result:
        fields = codec.unpack_result(c.cipher.column("result", "observation_enc").open(r.result_id, r.observation_enc))
        return Result(
            result_id=r.result_id,
            request_id=r.request_id,
            specimen_id=r.specimen_id,
            status=ResultStatus(r.status),
            sensitivity=sensitivity_of(fields["code_system"], fields["code"]),
            **fields,
        )

    def iter_results(self, tenant_id: str, *, batch: int = 5000) -> Iterator[Result]:
        """Every result of a lab, decrypted, in batches (for checks and exports)."""
        self._authorise(tenant_id, "patient:result:read")
        c = self._crypto(tenant_id)
        n = 0
        readable = self._readable_categories(tenant_id)
        if self._grant is not None:
            raise AccessDenied("a support grant does not cover whole-lab result scans")
        for r in self.conn.execute(
            select(t.result).where(self._tf(t.result, tenant_id)).execution_options(yield_per=batch)
        ):
            res = self._result(c, r)
            if readable is not None and res.sensitivity is not Sensitivity.OTHER and res.sensitivity not in readable:
                continue
            n += 1
            yield res
        self._record(tenant_id, "patient:result:read", "result", n)

    def drop_tenant_rows(self, tenant_id: str) -> None:
        """Delete every row of a scratch lab (benchmarks); a real lab is shredded, not dropped."""
        self._authorise(tenant_id, "tenant:drop")
        if not tenant_id.startswith("bench-") or not self.is_synthetic(tenant_id):
            self._deny(tenant_id, "tenant:drop", "only synthetic scratch benchmark labs can be dropped")
        for tbl in reversed(t.metadata.sorted_tables):
            if tbl.name not in ("audit_event", "audit_checkpoint"):  # append-only, even for a scratch lab
                self.conn.execute(tbl.delete().where(self._tf(tbl, tenant_id)))

    def raw_identity_row(self, tenant_id: str, patient_id: str) -> dict[str, object]:
        """What the database holds for one identity, as stored (ciphertexts in hex): for demos and checks."""
        if self.purpose is not Purpose.DEMO:
            raise AccessDenied("raw rows are shown by the demo only")
        self._authorise(tenant_id, "tenant:read")
        row = self.conn.execute(
            select(t.patient_identity).where(
                self._tf(t.patient_identity, tenant_id), t.patient_identity.c.patient_id == patient_id
            )
        ).first()
        if row is None:
            raise NotFound("no such patient in this lab")
        self._record(tenant_id, "patient:identity:raw", "patient", 1)
        return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row._mapping.items()}

    def counts(self, tenant_id: str) -> dict[str, int]:
        """How many rows a lab has per table (no personal value)."""
        self._authorise(tenant_id, "tenant:read")
        self.tenant(tenant_id)
        out = {}
        for tbl in (t.patient_identity, t.prescriber, t.request, t.specimen, t.result):
            out[tbl.name] = self.conn.execute(
                select(func.count()).select_from(tbl).where(self._tf(tbl, tenant_id))
            ).scalar_one()
        self._record(tenant_id, "tenant:counts", "tenant", 1)
        return out

    def key_versions(self, tenant_id: str) -> dict[str, object]:
        """Data key versions with their states, and how many rows each version still seals."""
        self._authorise(tenant_id, "keys:rotate")
        self.tenant(tenant_id)
        keys = self.conn.execute(
            select(t.tenant_key.c.version, t.tenant_key.c.state).where(
                self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose == "data"
            ).order_by(t.tenant_key.c.version)
        ).all()
        rows: dict[int, int] = {}
        for name in ENCRYPTED:
            tbl = t.metadata.tables[name]
            for version, n in self.conn.execute(
                select(tbl.c.key_version, func.count()).where(self._tf(tbl, tenant_id)).group_by(tbl.c.key_version)
            ).all():
                rows[version] = rows.get(version, 0) + n
        return {"keys": [{"version": k.version, "state": k.state} for k in keys], "rows_by_version": rows}

    # -- rotation steps (driven by Gateway.rotate_keys) -------------------------------------------
    def _start_rotation(self, tenant_id: str) -> tuple[int, bool]:
        self._authorise(tenant_id, "keys:rotate")
        self._crypto(tenant_id)  # refuses shredded or unknown labs
        tk = t.tenant_key
        rows = self.conn.execute(
            select(tk.c.version, tk.c.state).where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data")
        ).all()
        if any(r.state == "retiring" for r in rows):
            current = max(r.version for r in rows if r.state == "active")
            self._record(tenant_id, "keys:rotate:resume", "key", 1)
            return current, True
        new = max(r.version for r in rows) + 1
        self.conn.execute(
            update(tk).where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data", tk.c.state == "active").values(state="retiring")
        )
        self.conn.execute(
            insert(tk).values(
                tenant_id=tenant_id,
                purpose="data",
                version=new,
                wrapped=self._gw.keys.wrap(tenant_id, secrets.token_bytes(32), f"data:v{new}".encode()),
                state="active",
                created_at=utcnow(),
            )
        )
        self._record(tenant_id, "keys:rotate:start", "key", 1)
        return new, False

    def _rows_below(self, tenant_id: str, version: int) -> int:
        self._authorise(tenant_id, "keys:rotate")
        total = 0
        for name in ENCRYPTED:
            tbl = t.metadata.tables[name]
            total += self.conn.execute(
                select(func.count()).select_from(tbl).where(self._tf(tbl, tenant_id), tbl.c.key_version < version)
            ).scalar_one()
        return total

    def _reencrypt_batch(self, tenant_id: str, version: int, batch_size: int) -> int:
        """Re-encrypt up to ``batch_size`` rows still sealed under an older version; 0 when none is left."""
        from sqlalchemy import bindparam

        self._authorise(tenant_id, "keys:rotate")
        c = self._crypto(tenant_id)
        if c.cipher.current_version != version:
            raise InvalidInput("another rotation changed the lab's key version meanwhile; run it again")
        left = batch_size
        for name, (pk, enc_cols) in ENCRYPTED.items():
            tbl = t.metadata.tables[name]
            rows = self.conn.execute(
                select(tbl.c[pk], *[tbl.c[col] for col in enc_cols])
                .where(self._tf(tbl, tenant_id), tbl.c.key_version < version)
                .limit(left)
            ).all()
            if not rows:
                continue
            ciphers = [c.cipher.column(name, col) for col in enc_cols]
            params = []
            for row in rows:
                rid = row[0]
                p = {"_id": rid, "key_version": version}
                for cipher, col, blob in zip(ciphers, enc_cols, row[1:], strict=True):
                    p[col] = None if blob is None else cipher.seal(rid, cipher.open(rid, blob))
                params.append(p)
            stmt = (
                update(tbl)
                .where(and_(self._tf(tbl, tenant_id), tbl.c[pk] == bindparam("_id")))
                .values({col: bindparam(col) for col in (*enc_cols, "key_version")})
            )
            self.conn.execute(stmt, params)
            self._record(tenant_id, "keys:rotate:batch", name, len(rows))
            left -= len(rows)
            if left == 0:
                break
        return batch_size - left

    def _finish_rotation(self, tenant_id: str) -> None:
        self._authorise(tenant_id, "keys:rotate")
        tk = t.tenant_key
        self.conn.execute(
            update(tk).where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data", tk.c.state == "retiring").values(state="retired")
        )
        self._record(tenant_id, "keys:rotate:done", "key", 1)
