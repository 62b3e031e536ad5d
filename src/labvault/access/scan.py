"""Whole-lab reads, streamed in batches, for exports: every identity, prescriber, request,
specimen and result of one lab, decrypted through the gateway.

Patients are named by their per-lab pseudonym in everything these iterators yield (an
``Identity``'s ``patient_id`` and a ``Request``'s ``patient_id`` are the pseudonym), so that an
export links a patient's rows without ever carrying the internal patient id. Results come with
the pseudonym of their patient, read from the result row itself (no join).

A support grant never covers a whole-lab scan. Each scan writes one audit event with its count
when it has been read to the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import select

from labvault.access import codec
from labvault.domain.models import Prescriber, Result, ResultStatus, Sensitivity, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import AccessDenied
from labvault.store import schema as t
from labvault.store.engine import iter_tenant_rows

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.domain.models import Identity, Request

BATCH = 5000


def _start(u: Unit, tenant_id: str, action: str):
    u._authorise(tenant_id, action)
    if u._grant is not None:
        raise AccessDenied("a support grant does not cover whole-lab scans")
    return u._crypto(tenant_id)


def _bytewise(u: Unit, column):
    """``column`` ordered by code point, the order Python compares strings in (PostgreSQL's
    default collation would not be), so two streams sorted on it can be merged in Python."""
    return column.collate("C") if u.conn.dialect.name == "postgresql" else column


def _rows(u: Unit, table, tenant_id: str, order=None):
    stmt = select(table).where(u._tf(table, tenant_id))
    if order is not None:
        stmt = stmt.order_by(*order)
    return u.conn.execute(stmt.execution_options(yield_per=BATCH))


def patients(u: Unit, tenant_id: str) -> Iterator[Identity]:
    c = _start(u, tenant_id, "patient:identity:read")
    n = 0
    for row in _rows(u, t.patient_identity, tenant_id):
        ident = u._identity(c, row)
        ident.patient_id = c.index.pseudonym(ident.patient_id)
        n += 1
        yield ident
    u._record(tenant_id, "patient:identity:read", "patient", n)


def prescribers(u: Unit, tenant_id: str) -> Iterator[Prescriber]:
    c = _start(u, tenant_id, "patient:request:read")
    rpps, name = (c.cipher.column("prescriber", col) for col in ("rpps_enc", "name_enc"))
    n = 0
    for row in _rows(u, t.prescriber, tenant_id):
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
    for row in _rows(u, t.request, tenant_id, order):
        n += 1
        yield u._request(c, row, row.pseudonym)
    u._record(tenant_id, "patient:request:read", "request", n)


def specimens(u: Unit, tenant_id: str, *, by_request: bool = False) -> Iterator[Specimen]:
    """Every specimen; ``by_request``: in (request id, specimen id) order, to merge with requests."""
    c = _start(u, tenant_id, "patient:request:read")
    typ, col_at, rec_at = (c.cipher.column("specimen", n) for n in ("type_enc", "collected_at_enc", "received_at_enc"))
    to_dt = codec.to_dt
    order = ("request_id", "specimen_id") if by_request else ()
    rows = iter_tenant_rows(u.conn, "specimen", ("specimen_id", "request_id", "type_enc", "collected_at_enc",
                                                 "received_at_enc"), tenant_id, order=order)
    n = 0
    for i, req, type_enc, col_enc, rec_enc in rows:
        n += 1
        yield Specimen(
            specimen_id=i, request_id=req, type=typ.open(i, bytes(type_enc)).decode(),
            collected_at=to_dt(col_at.open(i, bytes(col_enc)).decode()),
            received_at=None if rec_enc is None else to_dt(rec_at.open(i, bytes(rec_enc)).decode()),
        )
    u._record(tenant_id, "patient:request:read", "specimen", n)


def result_rows(u: Unit, tenant_id: str, *, by_request: bool = False
                ) -> Iterator[tuple[str, str, str, str | None, str, list, Sensitivity]]:
    """Every result the principal may read, unsealed but not built: (patient pseudonym, result
    id, request id, specimen id, status, items in ``codec.RESULT_ITEMS`` order (dates as ISO text),
    sensitivity). The hot loop of every export: rows come as plain tuples from the driver."""
    c = _start(u, tenant_id, "patient:result:read")
    readable = u._readable_categories(tenant_id)
    observation = c.cipher.column("result", "observation_enc")
    unpack, other = codec.unpack, Sensitivity.OTHER
    order = ("request_id", "result_id") if by_request else ()
    rows = iter_tenant_rows(u.conn, "result", ("result_id", "request_id", "specimen_id", "pseudonym", "status",
                                               "observation_enc"), tenant_id, order=order)
    n = 0
    for rid, req, spec, pseudonym, status, blob in rows:
        items = unpack(observation.open(rid, bytes(blob)))
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
        (system, code, label, vnum, vtext, unit, low, high, rtext, flag, v_by, v_at, comment) = items
        yield pseudonym, Result(rid, req, code, label, system, spec, vnum, vtext, unit, low, high, rtext, flag,
                                ResultStatus(status), v_by, to_dt(v_at), comment, sensitivity)
