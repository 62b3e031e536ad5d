"""Whole-lab reads, streamed in batches, for exports: every identity, prescriber, request,
specimen and result of one lab, decrypted through the gateway.

Patients are named by their per-lab pseudonym in everything these iterators yield (an
``Identity``'s ``patient_id`` and a ``Request``'s ``patient_id`` are the pseudonym), so that an
export links a patient's rows without ever carrying the internal patient id. Results come with
the pseudonym of their patient, read from the result row itself (no join).

A support grant never covers a whole-lab scan. Each scan writes one audit event with its count
when it has been read to the end.

``export`` reads a lab under a compiled plan (``ExportPlan``: the collection period, patients,
codes and sensitive categories selected, and the fields and links written per record type) and
yields only what the plan lets out, as flat records; the plan's dry run (``count_only``) yields
nothing and only counts. A complete export is audited (``export:records``) with the number of
records it yielded, besides the events of the scans it reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labvault.access import codec
from labvault.counts import Counts as Tally  # what an export selected, known once its stream is read
from labvault.domain.models import Identity, Prescriber, Request, Result, ResultStatus, Sensitivity, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import AccessDenied, InvalidInput
from labvault.store import schema as t
from labvault.store.engine import iter_tenant_rows

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, CursorResult, Table

    from labvault.access.gateway import Unit
    from labvault.access.tenants import TenantCrypto

BATCH = 5000


def _start(u: Unit, tenant_id: str, action: str) -> TenantCrypto:
    u._authorise(tenant_id, action)
    if u._grant is not None:
        raise AccessDenied("a support grant does not cover whole-lab scans")
    return u._crypto(tenant_id)


def _bytewise(u: Unit, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` ordered by code point, the order Python compares strings in (PostgreSQL's
    default collation would not be), so two streams sorted on it can be merged in Python."""
    return column.collate("C") if u.conn.dialect.name == "postgresql" else column


def _rows(
    u: Unit, table: Table, tenant_id: str, order: tuple[ColumnElement[Any], ...] | None = None
) -> CursorResult[Any]:
    stmt = select(table).where(u._tf(table, tenant_id))
    if order is not None:
        stmt = stmt.order_by(*order)
    return u.conn.execute(stmt.execution_options(yield_per=BATCH))


def patients(u: Unit, tenant_id: str) -> Iterator[Identity]:
    c = _start(u, tenant_id, "patient:identity:read")
    n = 0
    with _rows(u, t.patient_identity, tenant_id) as stream:  # closed with the generator, even left early
        for rows in stream.partitions(BATCH):
            for ident in u._identities(c, tenant_id, rows):  # with their local identifiers
                ident.patient_id = c.index.pseudonym(ident.patient_id)
                n += 1
                yield ident
    u._record(tenant_id, "patient:identity:read", "patient", n)


def prescribers(u: Unit, tenant_id: str) -> Iterator[Prescriber]:
    c = _start(u, tenant_id, "patient:request:read")
    rpps, name = (c.cipher.column("prescriber", col) for col in ("rpps_enc", "name_enc"))
    n = 0
    with _rows(u, t.prescriber, tenant_id) as stream:  # closed with the generator, even left early
        for row in stream:
            i = row.prescriber_id
            family, given = codec.unpack(name.open(i, row.name_enc))
            n += 1
            yield Prescriber(i, rpps.open(i, row.rpps_enc).decode(), family, given)
    u._record(tenant_id, "patient:request:read", "prescriber", n)


def requests(u: Unit, tenant_id: str, *, by_id: bool = False) -> Iterator[Request]:
    """Every request; ``by_id``: in request id order (the order of ``results(by_request=True)``)."""
    c = _start(u, tenant_id, "patient:request:read")
    n = 0
    order = (_bytewise(u, t.request.c.request_id),) if by_id else None
    with _rows(u, t.request, tenant_id, order) as stream:  # closed with the generator, even left early
        for row in stream:
            n += 1
            yield u._request(c, row, row.pseudonym)
    u._record(tenant_id, "patient:request:read", "request", n)


def specimens(u: Unit, tenant_id: str, *, by_request: bool = False) -> Iterator[Specimen]:
    """Every specimen; ``by_request``: in (request id, specimen id) order, to merge with requests."""
    c = _start(u, tenant_id, "patient:request:read")
    typ, col_at, rec_at = (c.cipher.column("specimen", n) for n in ("type_enc", "collected_at_enc", "received_at_enc"))
    to_dt = codec.to_dt
    order = ("request_id", "specimen_id") if by_request else ()
    rows = iter_tenant_rows(
        u.conn,
        "specimen",
        ("specimen_id", "request_id", "type_enc", "collected_at_enc", "received_at_enc"),
        tenant_id,
        order=order,
    )
    n = 0
    for i, req, type_enc, col_enc, rec_enc in rows:
        n += 1
        yield Specimen(
            specimen_id=i,
            request_id=req,
            type=typ.open(i, bytes(type_enc)).decode(),
            collected_at=to_dt(col_at.open(i, bytes(col_enc)).decode()),
            received_at=None if rec_enc is None else to_dt(rec_at.open(i, bytes(rec_enc)).decode()),
        )
    u._record(tenant_id, "patient:request:read", "specimen", n)


def result_rows(
    u: Unit, tenant_id: str, *, by_request: bool = False
) -> Iterator[tuple[str, str, str, str | None, str, list[Any], Sensitivity]]:
    """Every result the principal may read, unsealed but not built: (patient pseudonym, result
    id, request id, specimen id, status, items in ``codec.RESULT_ITEMS`` order (dates as ISO text),
    sensitivity). The hot loop of every export: rows come as plain tuples from the driver."""
    c = _start(u, tenant_id, "patient:result:read")
    readable = u._readable_categories(tenant_id)
    observation = c.cipher.column("result", "observation_enc")
    unpack, other = codec.unpack, Sensitivity.OTHER
    width = len(codec.RESULT_ITEMS)
    order = ("request_id", "result_id") if by_request else ()
    rows = iter_tenant_rows(
        u.conn,
        "result",
        ("result_id", "request_id", "specimen_id", "pseudonym", "status", "observation_enc"),
        tenant_id,
        order=order,
    )
    n = 0
    for rid, req, spec, pseudonym, status, blob in rows:
        items = unpack(observation.open(rid, bytes(blob)))
        if len(items) < width:  # sealed before revision 0014
            items += [None] * (width - len(items))
        sensitivity = sensitivity_of(items[0], items[1])
        if readable is not None and sensitivity is not other and sensitivity not in readable:
            continue
        n += 1
        yield pseudonym, rid, req, spec, status, items, sensitivity
    u._record(tenant_id, "patient:result:read", "result", n)


def results(u: Unit, tenant_id: str, *, by_request: bool = False) -> Iterator[tuple[str, Result]]:
    """(patient pseudonym, result) for every result the principal may read; ``by_request``: in
    request order, so that a consumer can group a request's results without holding them all."""
    to_dt = codec.to_dt
    for pseudonym, rid, req, spec, status, items, sensitivity in result_rows(u, tenant_id, by_request=by_request):
        (system, code, label, vnum, vtext, unit, low, high, rtext, flag, v_by, v_at, comment, *more) = items
        value_repr, comparator, unit_system, observation_key, message_at = more[:5]  # then the message key
        yield (
            pseudonym,
            Result(
                rid,
                req,
                code,
                label,
                system,
                spec,
                vnum,
                vtext,
                unit,
                low,
                high,
                rtext,
                flag,
                ResultStatus(status),
                v_by,
                to_dt(v_at),
                comment,
                sensitivity,
                value_repr,
                comparator,
                unit_system,
                observation_key,
                message_at=to_dt(message_at),
            ),
        )


# -- exports under a compiled plan ----------------------------------------------------------------
# Record types of an export, in the order they come.
TYPES = ("request", "specimen", "result", "identity", "prescriber")
# Every link a record may hold (a derived id of another record), in the order written.
LINKS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "prescriber": (),
    "request": ("patient", "prescriber"),
    "specimen": ("request",),
    "result": ("request", "specimen", "patient"),
}
# The record type each link points to: a link is written only when that type is written.
TARGET = {"patient": "identity", "prescriber": "prescriber", "request": "request", "specimen": "specimen"}


def _attributes(cls: type, *, without: tuple[str, ...]) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.name not in without)


# What the gateway can write of each record type (ids and links are the plan's links, not fields).
EXPORTABLE: dict[str, frozenset[str]] = {
    "identity": _attributes(Identity, without=("patient_id",)),
    "prescriber": _attributes(Prescriber, without=("prescriber_id",)),
    "request": _attributes(Request, without=("request_id", "patient_id", "prescriber_id")),
    "specimen": _attributes(Specimen, without=("specimen_id", "request_id")),
    "result": frozenset((*codec.RESULT_ITEMS, "status")),
}


@dataclass(frozen=True)
class ExportPlan:
    """What an export lets out of one lab: the selection (results collected in the period, of the
    patients and codes named, of the sensitive categories listed) and, per record type, the
    fields written (a type with none is not written; a link only to a type written)."""

    tenant: str
    collected_from: date
    collected_to: date
    fields: Mapping[str, tuple[str, ...]]
    patients: frozenset[str] | None = None  # Labvault patient ids (None: every patient)
    codes: frozenset[tuple[str, str]] | None = None  # (code system, code) (None: every code)
    sensitive: frozenset[str] = frozenset()  # sensitive categories let out ("other" always is)
    ref: str | None = None  # what the export is done under (an instruction id), named in its audit event

    def __post_init__(self) -> None:
        unknown = set(self.fields) - set(TYPES)
        if unknown:
            raise InvalidInput(f"an export plan names unknown record types: {', '.join(sorted(unknown))}")
        for rtype, names in self.fields.items():
            extra = set(names) - EXPORTABLE[rtype]
            if extra:
                raise InvalidInput(f"an export plan names fields no {rtype} record has: {', '.join(sorted(extra))}")

    @property
    def types(self) -> tuple[str, ...]:
        """Record types written: those the plan names some fields of, no other."""
        return tuple(t for t in TYPES if self.fields.get(t))

    @property
    def links(self) -> dict[str, tuple[str, ...]]:
        """Record type written -> the links it holds: those to a record type written too."""
        types = self.types
        return {t: tuple(k for k in LINKS[t] if TARGET[k] in types) for t in types}


# Identity fields let out only for a qualified identity.
INS_FIELDS = frozenset({"nir", "ins_oid"})


def _value(obj: Any, name: str) -> Any:
    """A field as JSON: dates in ISO 8601, enumerations by their value."""
    v = getattr(obj, name)
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return v.value if isinstance(v, Enum) else v


def _picker(positions: tuple[int, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple (even of one position or none)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        one = itemgetter(positions[0])
        return lambda seq: (one(seq),)
    return lambda seq: ()


def _within_instruction(u: Unit, plan: ExportPlan) -> None:
    """A vendor account exports only within the lab's instruction it works under: the plan is
    compared with it here, in the gateway, whoever compiled the plan (fields, period, patients,
    codes, sensitive categories); beyond it, an alert and a refusal are recorded and nothing is read."""
    instr = u._instruction
    if instr is None or not u.principal.is_platform:
        return
    from labvault.access.errors import ScopeExceeded
    from labvault.instructions.document import FREE_TEXT, excess

    if instr.tenant != plan.tenant:
        u._deny(plan.tenant, "export:records", "the instruction in force is another lab's")
    asked = dict(plan.fields)
    if "comment" in asked.get("result", ()):  # free text: its own flag in the instruction
        asked["result"] = tuple(f for f in asked["result"] if f != "comment")
        if not instr.allows(FREE_TEXT, "result.comment"):
            asked[FREE_TEXT] = ("result.comment",)
    beyond = excess(
        instr,
        asked,
        plan.collected_from,
        plan.collected_to,
        plan.patients,
        codes=plan.codes,
        sensitive=plan.sensitive,
    )
    if beyond:
        u._record(plan.tenant, "instruction:excess", "instruction", len(beyond), outcome="alert", refs=[instr.id])
        u._record(plan.tenant, "export:records", "instruction", 0, outcome="denied", refs=[instr.id])
        raise ScopeExceeded(f"beyond instruction '{instr.id}': " + "; ".join(beyond))


def export(
    u: Unit,
    plan: ExportPlan,
    id_map: Callable[[str, str], str],
    *,
    tally: Tally | None = None,
    count_only: bool = False,
    on_result: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The plan's records, streamed: each selected request, then its specimens, then its results
    (requests, specimens and results are read in request order and merged, so memory stays flat in
    the size of the lab); identities and prescribers last, only those the selected records refer
    to. Each record holds ``record`` (its type), ``id`` (``id_map(type, internal id)``: never an
    internal id), the plan's links and the plan's fields, nothing else. With ``count_only`` nothing
    is yielded, only ``tally`` is filled. ``on_result`` is called with the number of results
    selected since its last call (every 10,000, then the rest)."""
    tenant = plan.tenant
    _within_instruction(u, plan)
    lo, hi = plan.collected_from, plan.collected_to
    codes = plan.codes
    allowed_sensitive = plan.sensitive
    other = Sensitivity.OTHER
    wanted = None
    if plan.patients is not None:
        u._authorise(tenant, "patient:result:read")
        index = u._crypto(tenant).index
        wanted = frozenset(index.pseudonym(p) for p in plan.patients)
    f_req, f_spec, f_res = (tuple(plan.fields.get(t, ())) for t in ("request", "specimen", "result"))
    # A result's fields straight from its unsealed items, in one C call (dates are ISO text there).
    item_fields = tuple(f for f in f_res if f != "status")
    item_values = _picker(tuple(codec.RESULT_ITEMS.index(f) for f in item_fields))
    with_status = "status" in f_res
    seen_patients: set[str] = set()
    seen_prescribers: set[str] = set()
    patient_ids: dict[str, str] = {}  # pseudonym -> this export's id (a few thousand at most)

    def patient_id(pseudonym: str) -> str:
        pid = patient_ids.get(pseudonym)
        if pid is None:
            pid = patient_ids[pseudonym] = id_map("patient", pseudonym)
        return pid

    # What is written: record types the plan names fields of, links to those types only.
    links = plan.links
    w_req, w_spec, w_res = "request" in links, "specimen" in links, "result" in links
    req_patient, req_prescriber = w_req and "patient" in links["request"], w_req and "prescriber" in links["request"]
    spec_request = w_spec and "request" in links["specimen"]
    res_request = w_res and "request" in links["result"]
    res_specimen = w_res and "specimen" in links["result"]
    res_patient = w_res and "patient" in links["result"]

    n = n_req = n_spec = 0
    written = 0
    step = 0

    # Canaries go out only into their own package, or when the instruction names them (a touch).
    canary = u._canary_check(tenant)
    named: set[str] = set()
    spec_rows = specimens(u, tenant, by_request=True)
    # (pseudonym, id, request, specimen, status, items, sensitivity)
    result_stream = result_rows(u, tenant, by_request=True)
    spec = next(spec_rows, None)
    res = next(result_stream, None)
    for request in requests(u, tenant, by_id=True):
        rid = request.request_id
        marker = None if canary is None else canary(request.patient_id)
        own = marker is not None and u._canary_own_package(tenant, marker)
        if marker is not None and not own and (wanted is None or request.patient_id not in wanted):
            continue
        in_period: dict[str, Any] = {}
        while spec is not None and spec.request_id < rid:
            spec = next(spec_rows, None)
        while spec is not None and spec.request_id == rid:
            if lo <= spec.collected_at.date() <= hi:
                in_period[spec.specimen_id] = spec
            spec = next(spec_rows, None)
        while res is not None and res[2] < rid:
            res = next(result_stream, None)
        chosen = []
        request_day = request.requested_at.date()
        while res is not None and res[2] == rid:
            row = res
            res = next(result_stream, None)
            if row[3] is not None:
                if row[3] not in in_period:
                    continue
            elif not lo <= request_day <= hi:  # no specimen: the request's date stands for it
                continue
            if wanted is not None and row[0] not in wanted and not own:
                continue
            items = row[5]
            if codes is not None and (items[0], items[1]) not in codes:
                continue
            if row[6] is not other and row[6].value not in allowed_sensitive:
                continue
            chosen.append(row)
        if not chosen:
            continue
        if marker is not None and not own:
            named.add(request.patient_id)
        n += len(chosen)
        n_req += 1
        used = {row[3] for row in chosen}
        n_spec += sum(1 for sid in in_period if sid in used)
        if on_result is not None and n - step >= 10_000:
            on_result(n - step)
            step = n
        seen_patients.add(request.patient_id)
        if request.prescriber_id is not None:
            seen_prescribers.add(request.prescriber_id)
        if count_only:
            continue
        req_id = id_map("request", rid) if w_req else None  # linked to only when requests are written
        if w_req:
            rec = {"record": "request", "id": req_id}
            if req_patient:
                rec["patient"] = patient_id(request.patient_id)
            if req_prescriber:
                rec["prescriber"] = (
                    None if request.prescriber_id is None else id_map("prescriber", request.prescriber_id)
                )
            for f in f_req:
                rec[f] = _value(request, f)
            written += 1
            yield rec
        if w_spec:  # likewise for specimens
            spec_ids = {sid: id_map("specimen", sid) for sid in in_period if sid in used}
            for sid, sp_id in spec_ids.items():
                rec = {"record": "specimen", "id": sp_id}
                if spec_request:
                    rec["request"] = req_id
                for f in f_spec:
                    rec[f] = _value(in_period[sid], f)
                written += 1
                yield rec
        if not w_res:
            continue
        for pseudonym, res_id, _, spec_id, status, items, _ in chosen:
            rec = {"record": "result", "id": id_map("result", res_id)}
            if res_request:
                rec["request"] = req_id
            if res_specimen:
                rec["specimen"] = None if spec_id is None else spec_ids[spec_id]
            if res_patient:
                rec["patient"] = patient_id(pseudonym)
            rec.update(zip(item_fields, item_values(items), strict=True))
            if with_status:
                rec["status"] = status
            yield rec
        written += len(chosen)
    for _ in chain(result_stream, spec_rows):  # read to the end: each scan is audited with its count when finished
        pass
    if on_result is not None and n > step:
        on_result(n - step)
    if tally is not None:
        tally.results, tally.requests, tally.specimens = n, n_req, n_spec
        tally.patients, tally.prescribers = len(seen_patients), len(seen_prescribers)
    if count_only:
        return
    u._canary_touched(tenant, pseudonyms=named)
    f_id, f_pr = tuple(plan.fields.get("identity", ())), tuple(plan.fields.get("prescriber", ()))
    if f_id:
        for ident in patients(u, tenant):
            if ident.patient_id in seen_patients:
                rec = {"record": "identity", "id": patient_id(ident.patient_id)}
                qualified = ident.qualified
                for f in f_id:
                    # RNIV: the INS goes out only with a qualified identity; otherwise the local
                    # identifiers and the traits do (the field is written, empty)
                    rec[f] = _value(ident, f) if qualified or f not in INS_FIELDS else None
                written += 1
                yield rec
    if f_pr:
        for p in prescribers(u, tenant):
            if p.prescriber_id in seen_prescribers:
                rec = {"record": "prescriber", "id": id_map("prescriber", p.prescriber_id)}
                for f in f_pr:
                    rec[f] = _value(p, f)
                written += 1
                yield rec
    u._record(tenant, "export:records", "record", written, refs=[plan.ref] if plan.ref else None)
