"""Personal records: patients, prescribers, requests, specimens and results, sealed on the way in
and opened on the way out, each operation authorised and audited."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import and_, delete, select
from sqlalchemy.exc import IntegrityError

from labvault.access import codec
from labvault.access.principal import Purpose
from labvault.access.state import UnitState
from labvault.crypto.blind import first_given_name, normalise_name
from labvault.domain.identifiers import OBJECT_ID_RE, OID_NIR, normalise_nir, validate_nir
from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Sensitivity,
    Specimen,
    Urgency,
    Workflow,
)
from labvault.domain.retention import RESULTS, SENSITIVE
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import AccessDenied, DecryptionError, InvalidInput, NotFound
from labvault.ids import new_id
from labvault.store import schema as t
from labvault.store.engine import bulk_insert, iter_tenant_rows

if TYPE_CHECKING:
    from sqlalchemy import Table

    from labvault.access.tenants import TenantCrypto


_STATUSES = {s.value for s in ResultStatus}
_PART = 1000  # rows per pipelined insert


# The encrypted columns of each personal table, with the column naming the row id.
ENCRYPTED: dict[str, tuple[str, tuple[str, ...]]] = {
    tbl.name: (
        next(c.name for c in tbl.primary_key.columns if c.name != "tenant_id"),
        tuple(c.name for c in tbl.columns if c.name.endswith("_enc")),
    )
    for tbl in (
        t.patient_identity,
        t.patient_local_id,
        t.identity_queue,
        t.prescriber,
        t.request,
        t.specimen,
        t.result,
        t.result_version,
        t.callback_task,
        t.quarantine,
        t.instruction,
    )
}


# A result's columns of the lab's workflow (revision 0017), in the order ``_add_results`` writes them.
WORKFLOW_COLUMNS = ("workflow", "entered_by", "technical_by", "biological_by", "catalogue_version", "released_by_rule")

# Personal tables emptied at the end of a contract, children first; tenant_key goes by shredding.
END_TABLES = (
    "callback_task",
    "result_version",
    "result",
    "specimen",
    "request",
    "prescriber",
    "identity_merge",
    "identity_queue",
    "patient_local_id",
    "patient_identity",
    "quarantine",
    "canary",
    "leak_match",
)
PREFIX_LETTERS = 2  # a name search by prefix needs this many letters of the family name
PREFIX_CANDIDATES = 500  # at most this many patients born the same day are decrypted by one search
_PURGE_BATCH = 500  # requests per purge batch (ids per IN list stay well under SQLite's limit)
_CHUNK = 500


def _utc(value: datetime) -> datetime:
    """Times without a zone were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for k in range(0, len(ids), _CHUNK):
        yield ids[k : k + _CHUNK]


def _valid_id(value: str) -> bool:
    """Ids are short tokens; anything else (NUL bytes, 10 kB strings) cannot name a row."""
    return isinstance(value, str) and OBJECT_ID_RE.match(value) is not None


def _ins_of(p: Identity) -> str | None:
    """The identity's INS, checked (an INS-NIR's key), or None when it has none."""
    if p.nir is None or not p.nir.strip():
        return None
    return validate_nir(p.nir) if p.ins_oid.endswith(".8") else normalise_nir(p.nir)


def _order_fields(c: TenantCrypto, r: Any) -> dict[str, Any]:
    """The order's numbers, sender, message time and status of a stored request row."""
    out: dict[str, Any] = {"status": None if r.status is None else RequestStatus(r.status)}
    if r.order_enc is not None:
        placer, filler, sender, at = codec.unpack(
            c.cipher.column("request", "order_enc").open(r.request_id, r.order_enc)
        )
        out.update(placer_number=placer, filler_number=filler, sender=sender, message_at=codec.to_dt(at))
    return out


def _clinical_fields(c: TenantCrypto, r: Any) -> dict[str, Any]:
    """A request entered by hand: its urgency, who entered it, its clinical information (sealed)."""
    urgency = getattr(r, "urgency", None)
    out: dict[str, Any] = {"urgency": None if urgency is None else Urgency(urgency), "entered_by": r.entered_by}
    if r.clinical_enc is not None:
        clinical, pregnant, collector = codec.unpack(
            c.cipher.column("request", "clinical_enc").open(r.request_id, bytes(r.clinical_enc))
        )
        out.update(clinical=clinical, pregnant=pregnant, collector=collector)
    return out


def seal_clinical(c: TenantCrypto, request_id: str, r: Request) -> bytes | None:
    """The sealed clinical information, pregnancy and collector of a request (None: none given)."""
    items = (r.clinical, r.pregnant, r.collector)
    if all(x is None for x in items):
        return None
    return c.cipher.column("request", "clinical_enc").seal(request_id, codec.pack(items))


def order_keys(c: TenantCrypto, r: Request) -> tuple[bytes | None, bytes | None]:
    """A request's order keys: (patient, filler number) — the lab's own number, the same in every
    format — and (patient, sender, placer number). None where the number is missing."""
    filler = r.filler_number.strip() if r.filler_number else ""
    placer = r.placer_number.strip() if r.placer_number else ""
    return (
        c.index.order(r.patient_id, "", "filler", filler) if filler else None,
        c.index.order(r.patient_id, r.sender or "", "placer", placer) if placer else None,
    )


def _same_said(a: Result, b: Result) -> bool:
    """Two versions of a result that say the same (only their message's time and number differ)."""
    return replace(a, message_at=None, version=0) == replace(b, message_at=None, version=0)


def _opened(column: Any, row_id: str, blob: bytes | None) -> str | None:
    return None if blob is None else str(column.open(row_id, bytes(blob)).decode())


def _check_id(value: str, kind: str) -> None:
    if not _valid_id(value):
        raise NotFound(f"no such {kind} in this lab")


class Records(UnitState):
    """Typed reads and writes of personal records: mixed into ``Unit``."""

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
                (
                    tenant_id,
                    i,
                    v,
                    c.index.rpps(p.rpps),
                    rpps.seal(i, p.rpps.encode()),
                    name.seal(i, codec.pack((p.family_name, p.given_name))),
                )
            )
        self._insert(
            t.prescriber, ("tenant_id", "prescriber_id", "key_version", "rpps_bidx", "rpps_enc", "name_enc"), rows
        )
        self._record(tenant_id, "prescriber:create", "prescriber", len(rows))
        return len(rows)

    def add_patients(self, tenant_id: str, identities: Sequence[Identity]) -> int:
        """Store identities (with their local identifiers); an identity without an INS is stored
        on its traits alone."""
        self._authorise(tenant_id, "patient:identity:create")
        return self._add_patients(tenant_id, identities)

    def _add_patients(self, tenant_id: str, identities: Sequence[Identity], *, audit: bool = True) -> int:
        """``add_patients`` once authorised (``access.canaries`` plants its patients through it)."""
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        col = {n: c.cipher.column("patient_identity", n) for n in ENCRYPTED["patient_identity"][1]}

        def opt(name: str, pid: str, value: str | None) -> bytes | None:
            return None if value is None else col[name].seal(pid, value.encode())

        rows = []
        for p in identities:
            i = p.patient_id
            nir = _ins_of(p)
            rows.append(
                (
                    tenant_id,
                    i,
                    str(IdentityStatus(p.identity_status)),
                    None if nir is None else p.ins_oid,
                    v,
                    None if nir is None else c.index.nir(nir),
                    c.index.name(p.family_name, p.given_names, p.birth_date),
                    c.index.traits(p.strict_birth_name, p.first_given, p.birth_date, p.sex),
                    c.index.born(p.birth_date),
                    None if nir is None else col["nir_enc"].seal(i, nir.encode()),
                    col["family_name_enc"].seal(i, p.family_name.encode()),
                    opt("birth_name_enc", i, p.birth_name),
                    col["given_names_enc"].seal(i, p.given_names.encode()),
                    opt("first_given_enc", i, p.first_given_name),
                    opt("used_given_enc", i, p.used_given_name),
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
            (
                "tenant_id",
                "patient_id",
                "identity_status",
                "ins_oid",
                "key_version",
                "nir_bidx",
                "name_bidx",
                "traits_bidx",
                "born_bidx",
                "nir_enc",
                "family_name_enc",
                "birth_name_enc",
                "given_names_enc",
                "first_given_enc",
                "used_given_enc",
                "birth_date_enc",
                "sex_enc",
                "birthplace_enc",
                "address_enc",
                "phone_enc",
                "email_enc",
            ),
            rows,
        )
        if audit:
            self._record(tenant_id, "patient:identity:create", "patient", len(rows))
        local = [(p.patient_id, system, value) for p in identities for system, value in p.local_ids]
        if local:
            self.add_local_ids(tenant_id, local)
        return len(rows)

    def add_local_ids(self, tenant_id: str, ids: Sequence[tuple[str, str, str]]) -> int:
        """Attach (patient id, system, value) local identifiers (IPPs) to stored identities; one
        already attached to the same identity is not stored twice."""
        self._authorise(tenant_id, "patient:identity:create")
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        sealer = c.cipher.column("patient_local_id", "ident_enc")
        lt = t.patient_local_id
        wanted = {(pid, c.index.local_id(system, value)): (system, value) for pid, system, value in ids}
        have: set[tuple[str, bytes]] = set()
        bidxs = sorted({b for _, b in wanted})
        for part in range(0, len(bidxs), _CHUNK):
            have.update(
                (r.patient_id, bytes(r.id_bidx))
                for r in self.conn.execute(
                    select(lt.c.patient_id, lt.c.id_bidx).where(
                        self._tf(lt, tenant_id), lt.c.id_bidx.in_(bidxs[part : part + _CHUNK])
                    )
                )
            )
        rows = []
        for (pid, bidx), ident in wanted.items():
            if (pid, bidx) in have:
                continue
            lid = new_id()
            rows.append((tenant_id, lid, pid, v, bidx, sealer.seal(lid, codec.pack(ident))))
        if rows:
            self._insert(lt, ("tenant_id", "local_id", "patient_id", "key_version", "id_bidx", "ident_enc"), rows)
        return len(rows)

    def stored_patient_ids(self, tenant_id: str, patient_ids: Sequence[str]) -> set[str]:
        """Which of these identity ids are stored already (an ingest about to create them: a file sent
        again derives the same ids). Nothing is decrypted."""
        self._authorise(tenant_id, "patient:identity:create")
        return self._stored_ids(tenant_id, t.patient_identity, "patient_id", patient_ids)

    def stored_prescriber_ids(self, tenant_id: str, prescriber_ids: Sequence[str]) -> set[str]:
        """The same for prescribers."""
        self._authorise(tenant_id, "prescriber:create")
        return self._stored_ids(tenant_id, t.prescriber, "prescriber_id", prescriber_ids)

    def _stored_ids(self, tenant_id: str, table: Table, column: str, ids: Sequence[str]) -> set[str]:
        out: set[str] = set()
        for part in _chunks(sorted(set(ids))):
            out.update(
                self.conn.execute(
                    select(table.c[column]).where(self._tf(table, tenant_id), table.c[column].in_(part))
                ).scalars()
            )
        return out

    def _local_ids_of(
        self, c: TenantCrypto, tenant_id: str, patient_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, str]]]:
        lt = t.patient_local_id
        col = c.cipher.column("patient_local_id", "ident_enc")
        out: dict[str, list[tuple[str, str]]] = {}
        ids = list(patient_ids)
        for part in _chunks(ids):
            for r in self.conn.execute(
                select(lt.c.local_id, lt.c.patient_id, lt.c.ident_enc)
                .where(self._tf(lt, tenant_id), lt.c.patient_id.in_(part))
                .order_by(lt.c.local_id)
            ):
                system, value = codec.unpack(col.open(r.local_id, bytes(r.ident_enc)))
                out.setdefault(r.patient_id, []).append((system, value))
        return out

    def add_requests(self, tenant_id: str, requests: Sequence[Request]) -> int:
        """Store requests with their order keys (``order_keys``: the same order received again
        finds its request through them)."""
        self._authorise(tenant_id, "patient:request:create")
        return self._add_requests(tenant_id, requests)

    def _add_requests(self, tenant_id: str, requests: Sequence[Request], *, audit: bool = True) -> int:
        """``add_requests`` once authorised (``access.work`` authorises its own action)."""
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        acc, req_at, rep_at, order, pid_col = (
            c.cipher.column("request", n)
            for n in ("accession_enc", "requested_at_enc", "reported_at_enc", "order_enc", "patient_enc")
        )
        rows = []
        for r in requests:
            i = r.request_id
            filler_key, placer_key = order_keys(c, r)
            numbers = (r.placer_number, r.filler_number, r.sender, codec.dt(r.message_at))
            rows.append(
                (
                    tenant_id,
                    i,
                    c.index.pseudonym(r.patient_id),
                    r.prescriber_id,
                    v,
                    None if r.accession is None else acc.seal(i, r.accession.encode()),
                    req_at.seal(i, r.requested_at.isoformat().encode()),
                    None if r.reported_at is None else rep_at.seal(i, r.reported_at.isoformat().encode()),
                    filler_key,
                    placer_key,
                    None if r.status is None else str(r.status),
                    None if not any(numbers) else order.seal(i, codec.pack(numbers)),
                    None if r.urgency is None else str(r.urgency),
                    r.entered_by,
                    seal_clinical(c, i, r),
                    pid_col.seal(i, r.patient_id.encode()),
                )
            )
        self._insert(
            t.request,
            (
                "tenant_id",
                "request_id",
                "pseudonym",
                "prescriber_id",
                "key_version",
                "accession_enc",
                "requested_at_enc",
                "reported_at_enc",
                "order_bidx",
                "placer_bidx",
                "status",
                "order_enc",
                "urgency",
                "entered_by",
                "clinical_enc",
                "patient_enc",
            ),
            rows,
        )
        if audit:
            self._record(tenant_id, "patient:request:create", "request", len(rows))
        return len(rows)

    def add_specimens(self, tenant_id: str, specimens: Sequence[Specimen]) -> int:
        self._authorise(tenant_id, "patient:specimen:create")
        return self._add_specimens(tenant_id, specimens)

    def _add_specimens(self, tenant_id: str, specimens: Sequence[Specimen], *, audit: bool = True) -> int:
        c = self._crypto(tenant_id)
        v = c.cipher.current_version
        typ, col_at, rec_at, box = (
            c.cipher.column("specimen", n) for n in ("type_enc", "collected_at_enc", "received_at_enc", "container_enc")
        )
        rows = [
            (
                tenant_id,
                s.specimen_id,
                s.request_id,
                v,
                typ.seal(s.specimen_id, s.type.encode()),
                col_at.seal(s.specimen_id, s.collected_at.isoformat().encode()),
                None if s.received_at is None else rec_at.seal(s.specimen_id, s.received_at.isoformat().encode()),
                s.status,
                s.status_at,
                s.nonconformity,
                None if s.container is None else box.seal(s.specimen_id, s.container.encode()),
            )
            for s in specimens
        ]
        self._insert(
            t.specimen,
            (
                "tenant_id",
                "specimen_id",
                "request_id",
                "key_version",
                "type_enc",
                "collected_at_enc",
                "received_at_enc",
                "status",
                "status_at",
                "nonconformity",
                "container_enc",
            ),
            rows,
        )
        if audit:
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

    def add_results(
        self,
        tenant_id: str,
        results: Sequence[Result],
        *,
        pseudonyms: dict[str, str] | None = None,
        said: Mapping[str, tuple[str | None, datetime]] | None = None,
    ) -> int:
        """Store results; each names a request already stored (or in ``pseudonyms``).
        ``said``: result id -> the key of the message that said it and the time its versions are
        ordered by (sealed with the value: see ``access.orders``)."""
        self._authorise(tenant_id, "patient:result:create")
        return self._add_results(tenant_id, results, pseudonyms=pseudonyms, said=said)

    def _add_results(
        self,
        tenant_id: str,
        results: Sequence[Result],
        *,
        pseudonyms: dict[str, str] | None = None,
        said: Mapping[str, tuple[str | None, datetime]] | None = None,
        audit: bool = True,
    ) -> int:
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
            raise InvalidInput(f"a result status must be one of {', '.join(sorted(_STATUSES))}")
        pack_result = codec.result_packer()
        # Results of the lab's workflow (``access.work``) carry its columns; ingest's do not.
        lived = any(r.workflow is not None for r in results)

        def sealed(part: Sequence[Result]) -> list[tuple[Any, ...]]:
            packed = (
                [pack_result(r) for r in part]
                if said is None
                else [pack_result(r, *said.get(r.result_id, (None, None))) for r in part]
            )
            blobs = observation.seal_many([r.result_id for r in part], packed)
            return [
                (
                    tenant_id,
                    r.result_id,
                    r.request_id,
                    r.specimen_id,
                    known[r.request_id],
                    str(r.status),
                    v,
                    blob,
                    r.version,
                )
                + (
                    (
                        None if r.workflow is None else str(r.workflow),
                        r.entered_by,
                        r.technical_by,
                        r.biological_by,
                        r.catalogue_version,
                        r.released_by_rule,
                    )
                    if lived
                    else ()
                )
                for r, blob in zip(part, blobs, strict=True)
            ]

        columns = (
            "tenant_id",
            "result_id",
            "request_id",
            "specimen_id",
            "pseudonym",
            "status",
            "key_version",
            "observation_enc",
            "version",
        ) + (WORKFLOW_COLUMNS if lived else ())
        self._insert_pipelined(
            t.result, columns, (sealed(results[k : k + _PART]) for k in range(0, len(results), _PART))
        )
        if audit:
            self._record(tenant_id, "patient:result:create", "result", len(results))
        return len(results)

    def _insert_pipelined(
        self, table: Table, columns: Sequence[str], parts: Iterator[Sequence[tuple[Any, ...]]]
    ) -> None:
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

    def _insert(self, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        try:
            bulk_insert(self.conn, table, columns, rows)
        except IntegrityError:
            raise InvalidInput(f"a {table.name} with the same id is already stored") from None
        except Exception as exc:  # sqlite3 / psycopg integrity errors raised below SQLAlchemy
            if type(exc).__name__ in ("IntegrityError", "UniqueViolation"):
                raise InvalidInput(f"a {table.name} with the same id is already stored") from None
            raise

    # -- reads ----------------------------------------------------------------------------------

    def _identity(self, c: TenantCrypto, row: Any, local_ids: list[tuple[str, str]] | None = None) -> Identity:
        col = c.cipher.column
        i = row.patient_id

        def o(name: str) -> str | None:
            blob = getattr(row, name)
            return None if blob is None else col("patient_identity", name).open(i, blob).decode()

        return Identity(
            patient_id=i,
            nir=o("nir_enc"),
            identity_status=IdentityStatus(row.identity_status),
            family_name=cast(str, o("family_name_enc")),  # NOT NULL columns: never None
            given_names=cast(str, o("given_names_enc")),
            birth_date=date.fromisoformat(cast(str, o("birth_date_enc"))),
            sex=cast(str, o("sex_enc")),
            birth_name=o("birth_name_enc"),
            birthplace_code=o("birthplace_enc"),
            address=o("address_enc"),
            phone=o("phone_enc"),
            email=o("email_enc"),
            ins_oid=row.ins_oid or OID_NIR,
            first_given_name=o("first_given_enc"),
            used_given_name=o("used_given_enc"),
            local_ids=list(local_ids or []),
            merged_into=row.merged_into,
        )

    def _identities(self, c: TenantCrypto, tenant_id: str, rows: Sequence[Any]) -> list[Identity]:
        """Identities of stored rows, with their local identifiers."""
        local = self._local_ids_of(c, tenant_id, [r.patient_id for r in rows]) if rows else {}
        return [self._identity(c, r, local.get(r.patient_id)) for r in rows]

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
        rows = [r for r in rows if not self._is_canary(tenant_id, r.patient_id)]  # no search finds a canary
        found = self._identities(c, tenant_id, [r for r in rows if self._in_grant_scope(r.patient_id, tenant_id)])
        self._record(tenant_id, "patient:identity:search", "patient", len(found), refs=[p.patient_id for p in found])
        return found

    def find_patients_by_name(
        self, tenant_id: str, family_name: str, given_name: str, birth_date: date
    ) -> list[Identity]:
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
        rows = [r for r in rows if not self._is_canary(tenant_id, r.patient_id)]  # no search finds a canary
        found = self._identities(c, tenant_id, [r for r in rows if self._in_grant_scope(r.patient_id, tenant_id)])
        self._record(tenant_id, "patient:identity:search", "patient", len(found), refs=[p.patient_id for p in found])
        return found

    def find_patients_by_prefix(
        self, tenant_id: str, family_prefix: str, given_prefix: str | None, birth_date: date
    ) -> list[Identity]:
        """Patients born on ``birth_date`` whose birth name or used name starts with
        ``family_prefix``, and, when ``given_prefix`` is given, whose first given name (or used
        given name, or given names in order) starts with it; accents, case, spaces and punctuation ignored
        (``normalise_name``). A full name is a prefix too.

        The birth date's blind index (``born_bidx``) selects the candidates; only they are
        decrypted, within the grant's scope for a support account, and at most
        ``PREFIX_CANDIDATES`` of them (more: refused, give more of the name). Audited as
        ``find_patients_by_name``: only the patients returned are named.

        Rows stored before revision 0015 have no ``born_bidx``: they are found when the name
        given is the exact family name and first given name (``name_bidx``, as
        ``find_patients_by_name``), not by a shorter prefix.
        """
        family = normalise_name(family_prefix or "")
        given = normalise_name(given_prefix or "")
        if len(family) < PREFIX_LETTERS:  # bad input first: it says nothing about the lab
            raise InvalidInput(f"a name search needs at least {PREFIX_LETTERS} letters of the family name")
        self._authorise(tenant_id, "patient:identity:search")
        c = self._crypto(tenant_id)
        pi = t.patient_identity
        wanted = pi.c.born_bidx == c.index.born(birth_date)
        if given:  # rows stored before the birth date index, by their exact name
            wanted = wanted | (pi.c.name_bidx == c.index.name(family_prefix, given_prefix or "", birth_date))
        ids = [
            pid
            for pid in self.conn.execute(
                select(pi.c.patient_id).where(self._tf(pi, tenant_id), wanted).order_by(pi.c.patient_id)
            ).scalars()
            if self._in_grant_scope(pid, tenant_id) and not self._is_canary(tenant_id, pid)  # nor a canary
        ]
        if len(ids) > PREFIX_CANDIDATES:
            self._record(tenant_id, "patient:identity:search", "patient", 0, outcome="error")
            raise InvalidInput("too many patients share this birth date: give more of the name")
        names = ("family_name_enc", "birth_name_enc", "given_names_enc", "first_given_enc", "used_given_enc")
        cols = {n: c.cipher.column("patient_identity", n) for n in names}
        rows = []
        for part in _chunks(ids):
            for r in self.conn.execute(
                select(pi).where(self._tf(pi, tenant_id), pi.c.patient_id.in_(part)).order_by(pi.c.patient_id)
            ):
                said = {n: _opened(cols[n], r.patient_id, getattr(r, n)) for n in names}
                surnames = (said["birth_name_enc"], said["family_name_enc"])
                if not any(normalise_name(s).startswith(family) for s in surnames if s):
                    continue
                firsts = (
                    said["first_given_enc"],
                    first_given_name(said["given_names_enc"] or ""),
                    said["given_names_enc"],  # "Jean Paul" typed: the given names in order
                    said["used_given_enc"],
                )
                if given and not any(normalise_name(f).startswith(given) for f in firsts if f):
                    continue
                rows.append(r)
        found = self._identities(c, tenant_id, rows)
        found.sort(key=lambda p: (normalise_name(p.family_name), normalise_name(p.given_names), p.patient_id))
        self._record(tenant_id, "patient:identity:search", "patient", len(found), refs=[p.patient_id for p in found])
        return found

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
        if row is None or self._is_canary(tenant_id, row.patient_id):  # a canary is nobody's
            return None
        return row.patient_id if self._in_grant_scope(row.patient_id, tenant_id) else None

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
        self._canary_touched(tenant_id, [patient_id])
        return self._identities(c, tenant_id, [row])[0]

    def requests_of(self, tenant_id: str, patient_id: str) -> list[Request]:
        self._authorise(tenant_id, "patient:request:read")
        if not _valid_id(patient_id):
            return []
        if not self._in_grant_scope(patient_id, tenant_id):
            self._deny(tenant_id, "patient:request:read", "this patient is outside the grant's scope")
        c = self._crypto(tenant_id)
        rows = self.conn.execute(
            select(t.request).where(
                self._tf(t.request, tenant_id), t.request.c.pseudonym == c.index.pseudonym(patient_id)
            )
        ).all()
        out = [self._request(c, r, patient_id) for r in rows]
        if self._grant is not None and self._grant.has_period:
            out = [q for q in out if self._grant.in_period(q.requested_at.date())]
        # oldest first; a stored time without a zone is UTC (never compared naive with aware), ties by id
        out.sort(key=lambda q: (_utc(q.requested_at), q.request_id))
        self._record(tenant_id, "patient:request:read", "request", len(out), refs=[patient_id])
        self._canary_touched(tenant_id, [patient_id])
        return out

    def _request(self, c: TenantCrypto, r: Any, patient_id: str) -> Request:
        col = c.cipher.column
        i = r.request_id
        return Request(
            request_id=i,
            patient_id=patient_id,
            prescriber_id=r.prescriber_id,
            requested_at=codec.to_dt(col("request", "requested_at_enc").open(i, r.requested_at_enc).decode()),
            accession=None
            if r.accession_enc is None
            else col("request", "accession_enc").open(i, r.accession_enc).decode(),
            reported_at=None
            if r.reported_at_enc is None
            else codec.to_dt(col("request", "reported_at_enc").open(i, r.reported_at_enc).decode()),
            **_order_fields(c, r),
            **_clinical_fields(c, r),
        )

    def results_of(
        self,
        tenant_id: str,
        patient_id: str,
        *,
        code: str | None = None,
        collected_from: date | None = None,
        collected_to: date | None = None,
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
            request_ids = self._requests_collected_between(
                c, tenant_id, request_ids, self._grant.period_from, self._grant.period_to
            )
        out = self._results_of_requests(c, tenant_id, request_ids, code)
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=[patient_id])
        self._canary_touched(tenant_id, [patient_id])
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
        if (
            self._grant is not None
            and self._grant.patients is not None
            and row.pseudonym not in {c.index.pseudonym(pid) for pid in self._grant.patients}
        ):
            self._deny(tenant_id, "patient:result:read", "this request is outside the grant's scope")
        if (
            self._grant is not None
            and self._grant.has_period
            and not self._requests_collected_between(
                c, tenant_id, [request_id], self._grant.period_from, self._grant.period_to
            )
        ):
            self._deny(tenant_id, "patient:result:read", "this request is outside the grant's period")
        out = self._results_of_requests(c, tenant_id, [request_id], None)
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=[request_id])
        self._canary_touched(tenant_id, pseudonyms=[row.pseudonym])
        return out

    def result_history(self, tenant_id: str, result_id: str) -> list[Result]:
        """Every version of one result, oldest first, the current one last: each with its status,
        ``version`` and ``message_at`` (when its message said it; for a format without times, when
        it was received). Authorised and scoped as
        ``results_of_request``: a support grant reaches only its patients and period, and a
        sensitive category the principal may not read is refused."""
        self._authorise(tenant_id, "patient:result:read")
        _check_id(result_id, "result")
        c = self._crypto(tenant_id)
        r, rv = t.result, t.result_version
        row = self.conn.execute(select(r).where(self._tf(r, tenant_id), r.c.result_id == result_id)).first()
        if row is None:
            self._record(tenant_id, "patient:result:read", "result", 0, outcome="error")
            raise NotFound("no such result in this lab")
        if (
            self._grant is not None
            and self._grant.patients is not None
            and row.pseudonym not in {c.index.pseudonym(pid) for pid in self._grant.patients}
        ):
            self._deny(tenant_id, "patient:result:read", "this result is outside the grant's scope")
        if (
            self._grant is not None
            and self._grant.has_period
            and not self._requests_collected_between(
                c, tenant_id, [row.request_id], self._grant.period_from, self._grant.period_to
            )
        ):
            self._deny(tenant_id, "patient:result:read", "this result is outside the grant's period")
        current = self._result(c, row)
        readable = self._readable_categories(tenant_id)
        if (
            readable is not None
            and current.sensitivity is not Sensitivity.OTHER
            and current.sensitivity not in readable
        ):
            self._deny(tenant_id, "patient:result:read", "this result is of a category this account may not read")
        col = c.cipher.column("result_version", "observation_enc")
        out = []
        for v in self.conn.execute(
            select(rv)
            .where(self._tf(rv, tenant_id), rv.c.result_id == result_id)
            .order_by(rv.c.version, rv.c.version_id)
        ):
            fields, _, said_at = codec.unpack_observation(col.open(v.version_id, bytes(v.observation_enc)))
            fields["message_at"] = fields["message_at"] or said_at
            out.append(
                Result(
                    result_id=result_id,
                    request_id=row.request_id,
                    specimen_id=row.specimen_id,
                    status=ResultStatus(v.status),
                    sensitivity=current.sensitivity,
                    version=v.version,
                    **fields,
                )
            )
        if current.message_at is None:  # a format without times: when it was received
            current.message_at = codec.unpack_observation(
                c.cipher.column("result", "observation_enc").open(result_id, bytes(row.observation_enc))
            )[2]
        out.append(current)
        # The same result said again unchanged (a resend under a new control id and a later time)
        # is stored, so that any order of arrival gives the same history; it is read once, under its
        # latest version.
        out = [r for r, nxt in zip(out, [*out[1:], None], strict=True) if nxt is None or not _same_said(r, nxt)]
        self._record(tenant_id, "patient:result:read", "result", len(out), refs=[result_id])
        self._canary_touched(tenant_id, pseudonyms=[row.pseudonym])
        return out

    def patient_of_result(self, tenant_id: str, result_id: str) -> str:
        """The patient id a result belongs to (its rows carry a pseudonym only: the lab's identity key
        finds the identity behind it). Authorised as a result read; nothing is decrypted."""
        self._authorise(tenant_id, "patient:result:read")
        _check_id(result_id, "result")
        c = self._crypto(tenant_id)
        r, q = t.result, t.request
        row = self.conn.execute(
            select(r.c.pseudonym, q.c.request_id, q.c.patient_enc)
            .join(q, and_(q.c.tenant_id == r.c.tenant_id, q.c.request_id == r.c.request_id))
            .where(self._tf(r, tenant_id), r.c.result_id == result_id)
        ).first()
        if row is not None:
            pseudonym = c.index.pseudonym
            found = self._patient_of_request(c, row.request_id, row.pseudonym, row.patient_enc)
            if found is not None:
                if self._grant is not None and self._grant.patients is not None and found not in self._grant.patients:
                    found = None
            elif self._grant is not None and self._grant.patients is not None:
                found = next((pid for pid in sorted(self._grant.patients) if pseudonym(pid) == row.pseudonym), None)
            else:
                # A streamed read (a server-side cursor on PostgreSQL): closed when the patient is found.
                with closing(iter_tenant_rows(self.conn, "patient_identity", ("patient_id",), tenant_id)) as rows:
                    found = next((pid for (pid,) in rows if pseudonym(pid) == row.pseudonym), None)
            if found is not None:
                self._canary_touched(tenant_id, pseudonyms=[row.pseudonym])
                return str(found)
        raise NotFound("no such result in this lab")

    @staticmethod
    def _patient_of_request(c: TenantCrypto, request_id: str, pseudonym: str, sealed: bytes | None) -> str | None:
        """The patient id sealed in a request row (revision 0019), when it is there and agrees with
        the row's pseudonym; None for a request written before (the caller then tries the lab's
        identities one by one, as before)."""
        if sealed is None:
            return None
        try:
            patient_id = c.cipher.column("request", "patient_enc").open(request_id, bytes(sealed)).decode()
        except DecryptionError:
            return None  # moved from another row, or tampered: the pseudonym still decides
        return patient_id if c.index.pseudonym(patient_id) == pseudonym else None

    def _requests_collected_between(
        self, c: TenantCrypto, tenant_id: str, request_ids: list[str], start: date | None, end: date | None
    ) -> list[str]:
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

    def _results_of_requests(
        self, c: TenantCrypto, tenant_id: str, request_ids: list[str], code: str | None
    ) -> list[Result]:
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

    def _result(self, c: TenantCrypto, r: Any) -> Result:
        fields = codec.unpack_result(c.cipher.column("result", "observation_enc").open(r.result_id, r.observation_enc))
        return Result(
            result_id=r.result_id,
            request_id=r.request_id,
            specimen_id=r.specimen_id,
            status=ResultStatus(r.status),
            sensitivity=sensitivity_of(fields["code_system"], fields["code"]),
            version=r.version,
            workflow=None if r.workflow is None else Workflow(r.workflow),
            entered_by=r.entered_by,
            technical_by=r.technical_by,
            biological_by=r.biological_by,
            catalogue_version=r.catalogue_version,
            released_by_rule=r.released_by_rule,
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
        canary = self._canary_check(tenant_id)  # the worklists and every whole-lab read leave canaries out
        # The streamed result (a server-side cursor on PostgreSQL) is closed with the generator,
        # even when its caller stops early or fails half-way.
        with self.conn.execute(
            select(t.result).where(self._tf(t.result, tenant_id)).execution_options(yield_per=batch)
        ) as rows:
            for r in rows:
                if canary is not None and canary(r.pseudonym) is not None:
                    continue
                res = self._result(c, r)
                if (
                    readable is not None
                    and res.sensitivity is not Sensitivity.OTHER
                    and res.sensitivity not in readable
                ):
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

    # -- deletions retention decides (labvault.retention: what is due, holds, reports) -------------
    def purge_results(
        self,
        tenant_id: str,
        cutoffs: Mapping[str, datetime],
        *,
        request_cutoff: datetime | None,
        batch: int = _PURGE_BATCH,
    ) -> dict[str, int]:
        """Delete the results collected before their category's cutoff (a category absent from
        ``cutoffs`` is kept), then the requests left without a result (with their specimens), then the
        identities left without a request by this run.

        A result's time is its specimen's collection; without a specimen, the earliest collection of
        its request, else the request's own time. A request that never had a result goes when its time
        is before ``request_cutoff`` (None: kept). Streams the lab by batches of ``batch`` requests
        (keyset order); returns counts per category and for ``request``, ``specimen``, ``patient``.
        """
        self._authorise(tenant_id, "retention:run")
        c = self._crypto(tenant_id)
        collected_col = c.cipher.column("specimen", "collected_at_enc")
        requested_col = c.cipher.column("request", "requested_at_enc")
        observation = c.cipher.column("result", "observation_enc")
        cut = {k: _utc(v) for k, v in cutoffs.items()}
        request_cut = None if request_cutoff is None else _utc(request_cutoff)
        counts = dict.fromkeys((RESULTS, *SENSITIVE, "request", "specimen", "patient"), 0)
        q, s, r = t.request, t.specimen, t.result
        orphans: set[str] = set()
        last: str | None = None
        while True:
            stmt = select(q.c.request_id, q.c.pseudonym, q.c.requested_at_enc).where(self._tf(q, tenant_id))
            if last is not None:
                stmt = stmt.where(q.c.request_id > last)
            reqs = self.conn.execute(stmt.order_by(q.c.request_id).limit(batch)).all()
            if not reqs:
                break
            last = reqs[-1].request_id
            ids = [x.request_id for x in reqs]
            collected: dict[str, datetime] = {}
            first: dict[str, datetime] = {}
            for sp in self.conn.execute(
                select(s.c.specimen_id, s.c.request_id, s.c.collected_at_enc).where(
                    self._tf(s, tenant_id), s.c.request_id.in_(ids)
                )
            ).all():
                at = _utc(codec.to_dt(collected_col.open(sp.specimen_id, sp.collected_at_enc).decode()))
                collected[sp.specimen_id] = at
                if sp.request_id not in first or at < first[sp.request_id]:
                    first[sp.request_id] = at
            for x in reqs:
                if x.request_id not in first:
                    first[x.request_id] = _utc(
                        codec.to_dt(requested_col.open(x.request_id, x.requested_at_enc).decode())
                    )
            expired: list[str] = []
            had: set[str] = set()
            kept: set[str] = set()
            for res in self.conn.execute(
                select(r.c.result_id, r.c.request_id, r.c.specimen_id, r.c.observation_enc).where(
                    self._tf(r, tenant_id), r.c.request_id.in_(ids)
                )
            ).all():
                had.add(res.request_id)
                system, code = codec.unpack(observation.open(res.result_id, bytes(res.observation_enc)))[:2]
                sensitivity = sensitivity_of(system, code)
                category = RESULTS if sensitivity is Sensitivity.OTHER else sensitivity.value
                res_at = collected.get(res.specimen_id) if res.specimen_id else None
                cutoff = cut.get(category)
                if cutoff is not None and (res_at or first[res.request_id]) < cutoff:
                    expired.append(res.result_id)
                    counts[category] += 1
                else:
                    kept.add(res.request_id)
            rv, cb = t.result_version, t.callback_task
            for part in _chunks(expired):
                self.conn.execute(delete(cb).where(self._tf(cb, tenant_id), cb.c.result_id.in_(part)))
                self.conn.execute(delete(rv).where(self._tf(rv, tenant_id), rv.c.result_id.in_(part)))
                self.conn.execute(delete(r).where(self._tf(r, tenant_id), r.c.result_id.in_(part)))
            gone = [
                x
                for x in reqs
                if x.request_id not in kept
                and (x.request_id in had or (request_cut is not None and first[x.request_id] < request_cut))
            ]
            if not gone:
                continue
            gone_ids = [x.request_id for x in gone]
            counts["specimen"] += self.conn.execute(
                delete(s).where(self._tf(s, tenant_id), s.c.request_id.in_(gone_ids))
            ).rowcount
            counts["request"] += self.conn.execute(
                delete(q).where(self._tf(q, tenant_id), q.c.request_id.in_(gone_ids))
            ).rowcount
            candidates = {x.pseudonym for x in gone}
            left = set(
                self.conn.execute(
                    select(q.c.pseudonym)
                    .distinct()
                    .where(self._tf(q, tenant_id), q.c.pseudonym.in_(sorted(candidates)))
                ).scalars()
            )
            orphans |= candidates - left
        if orphans:
            # Identities carry no pseudonym (re-linking needs the lab's key): compute it for each.
            pseudonym = c.index.pseudonym
            doomed = [
                pid
                for (pid,) in iter_tenant_rows(self.conn, "patient_identity", ("patient_id",), tenant_id)
                if pseudonym(pid) in orphans
            ]
            pi = t.patient_identity
            for part in _chunks(doomed):
                counts["patient"] += self.conn.execute(
                    delete(pi).where(self._tf(pi, tenant_id), pi.c.patient_id.in_(part))
                ).rowcount
        return counts

    def purge_quarantine(self, tenant_id: str, cutoff: datetime) -> int:
        """Delete the refused messages received before ``cutoff``, whatever became of them."""
        self._authorise(tenant_id, "retention:run")
        qt = t.quarantine
        return self.conn.execute(delete(qt).where(self._tf(qt, tenant_id), qt.c.received_at < _utc(cutoff))).rowcount

    def delete_lab_rows(self, tenant_id: str) -> dict[str, int]:
        """Delete every row of the lab in every personal table but its keys; counts per table."""
        self._authorise(tenant_id, "tenant:end")
        self.tenant(tenant_id)
        missing = t.PERSONAL_TABLES - {*END_TABLES, "tenant_key"}
        if missing:  # a personal table added later must be listed above, not silently left behind
            raise RuntimeError(f"tenant end does not know the personal tables {sorted(missing)}")
        out = {}
        for name in END_TABLES:
            tbl = t.metadata.tables[name]
            out[name] = self.conn.execute(delete(tbl).where(self._tf(tbl, tenant_id))).rowcount
        return out
