"""Orders as they live: the same order received again updates its request, results keep every
version.

``store_messages`` is what ingest calls once patients are matched: each incoming request either is
new or is found again by its order keys (``records.order_keys``: the patient and the filler number,
or the patient, the sender and the placer number) or by its own id (a CSV or HPRIM file sent again
derives the same ids), among the lab's stored requests and the messages stored before it in the same
call. The lookups are blind-index and id ``IN`` lists, one batch for every message of the call;
nothing is decrypted unless a request is found again, and then only that request, its specimens,
results and their versions.

Within a request found again, an incoming result of the same observation (``Result.observation_key``
when both sides have one, else code system and code) is one more version of it; a new observation
is added. Versions are ordered by the time of the message that said them (``Result.message_at``,
else the request's ``message_at``, else the time it was stored) and then by a digest of what they
say, never by arrival: the result row holds the latest, ``result_version`` every earlier one (sealed
as the result is, with the key of its message), so any order of arrival of the same messages leaves
the same current values and the same history. The same value said again at the same time (a resend
under a new control id) is one version. A cancellation is a version like any other.

Each request touched gets its status again from its results' histories (``request_status``), and
its request-level fields (times, accession, prescriber) from its latest message.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, select, update

from labvault.access import codec
from labvault.access.records import order_keys, seal_clinical
from labvault.crypto.digest import sha256_hex
from labvault.domain.models import Request, RequestStatus, Result, ResultStatus, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.errors import InvalidInput
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.access.tenants import TenantCrypto
    from labvault.access.work import Judge

_CHUNK = 500
_GONE = frozenset({ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR})
_DONE = frozenset({ResultStatus.FINAL, ResultStatus.CORRECTED})
_OPEN = frozenset({ResultStatus.PENDING, ResultStatus.PRELIMINARY})
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Incoming:
    """One message's records to store: its idempotency key and what it maps to."""

    key: str | None
    requests: Sequence[Request]
    specimens: Sequence[Specimen] = ()
    results: Sequence[Result] = ()


def store(
    u: Unit,
    tenant_id: str,
    requests: Sequence[Request],
    specimens: Sequence[Specimen],
    results: Sequence[Result],
    *,
    message_key: str | None = None,
) -> None:
    """Store one message's requests, specimens and results (patients already matched)."""
    store_messages(u, tenant_id, [Incoming(message_key, requests, specimens, results)])


# -- the request's status ---------------------------------------------------------------------------


def _value(r: Result) -> tuple[object, ...]:
    """What a correction changes."""
    return (r.value_num, r.value_text, r.value_repr, r.comparator, r.unit)


def request_status(histories: Sequence[Sequence[Result]]) -> RequestStatus:
    """A request's status from its results' histories (each oldest first, the last the current, each
    version at its ``message_at``).

    registered: no value yet; partial: some pending or preliminary; cancelled: every result
    cancelled or entered in error; final; corrected: a value changed (or a result said corrected)
    once the request was final; amended: a result added or cancelled once the request was final.
    Only the histories count, never the order they arrived in."""
    return _status([[(_at(r.message_at), r) for r in h] for h in histories])


def _status(histories: Sequence[Sequence[tuple[datetime, Result]]]) -> RequestStatus:
    """``request_status`` of histories of (time, version)."""
    if not histories:
        return RequestStatus.REGISTERED
    current = [h[-1][1].status for h in histories]
    if all(s in _GONE for s in current):
        return RequestStatus.CANCELLED
    live = [s for s in current if s not in _GONE]
    if all(s is ResultStatus.PENDING for s in live):
        return RequestStatus.REGISTERED
    if any(s in _OPEN for s in live):
        return RequestStatus.PARTIAL
    first = histories[0][0][0]
    if all(len(h) == 1 and h[0][0] == first for h in histories):  # one message said everything
        return RequestStatus.CORRECTED if ResultStatus.CORRECTED in live else RequestStatus.FINAL
    events = sorted(
        ((at, i, k) for i, h in enumerate(histories) for k, (at, _) in enumerate(h)),
        key=lambda e: e[0],
    )
    state: dict[int, Result] = {}
    final = corrected = amended = False
    for _, group in itertools.groupby(events, key=lambda e: e[0]):
        for _, i, k in group:
            r = histories[i][k][1]
            prev = state.get(i)
            if final:
                if prev is None or (r.status in _GONE and prev.status not in _GONE):
                    amended = True
                elif r.status not in _GONE and (r.status is ResultStatus.CORRECTED or _value(r) != _value(prev)):
                    corrected = True
            state[i] = r
        if not final:
            now = [r.status for r in state.values()]
            final = all(s in _DONE or s in _GONE for s in now) and any(s in _DONE for s in now)
    if amended:
        return RequestStatus.AMENDED
    if corrected or ResultStatus.CORRECTED in live:
        return RequestStatus.CORRECTED
    return RequestStatus.FINAL


# -- the model of a request found again ---------------------------------------------------------------


def _at(value: datetime | None) -> datetime:
    """A time to order by (a time without a zone is taken as UTC: readers give zones)."""
    if value is None:
        return _EARLIEST
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass(slots=True)
class _Said:
    """One version of an observation: stored (the result row, or a ``result_version`` row) or incoming."""

    result: Result
    key: str | None  # the message that said it
    at: datetime  # its message's time, else when it was received
    digest: str
    version_id: str | None = None  # its result_version row
    stored_version: int | None = None  # its version number as stored
    current: bool = False  # the result row holds it

    @property
    def order(self) -> tuple[datetime, str]:
        return (self.at, self.digest)


@dataclass(slots=True)
class _Obs:
    result_id: str
    request_id: str
    specimen_id: str | None
    stored: bool
    said: list[_Said]

    @property
    def okey(self) -> str | None:
        return self.said[0].result.observation_key

    @property
    def code(self) -> tuple[str, str]:
        r = self.said[0].result
        return (r.code_system, r.code)


@dataclass(slots=True)
class _Order:
    request: Request
    pseudonym: str
    stored: bool
    at: tuple[datetime, str]  # the message its request-level fields come from
    obs: list[_Obs] = field(default_factory=list)
    specimens: dict[str, str] = field(default_factory=dict)  # specimen type -> id
    stored_request: Request | None = None


class _Digests:
    def __init__(self) -> None:
        self._pack = codec.result_packer()

    def result(self, r: Result) -> str:
        return sha256_hex(str(r.status).encode() + b"\x1f" + self._pack(r))

    @staticmethod
    def request(r: Request) -> str:
        return sha256_hex(
            codec.pack(
                (
                    r.prescriber_id,
                    codec.dt(r.requested_at),
                    r.accession,
                    codec.dt(r.reported_at),
                    r.placer_number,
                    r.filler_number,
                    r.sender,
                )
            )
        )


# -- storing ----------------------------------------------------------------------------------------


def store_messages(u: Unit, tenant_id: str, messages: Sequence[Incoming], *, judge: Judge | None = None) -> None:
    """Store the records of several messages (patients already matched), in this order.

    An analyser's results naming one of the lab's own specimens (its barcode in SPM-2, or the
    order's filler number OBR-3) go to that specimen's request first (``_to_lab_specimens``); with
    ``judge`` (the lab's catalogue, passed in by ingest), each is judged once its order's values are
    entered (``Work.judge_result``)."""
    u._authorise(tenant_id, "patient:result:create")
    c = u._crypto(tenant_id)
    messages = _to_lab_specimens(u, tenant_id, c, messages, judge)
    now = utcnow()
    # Each request with its keys and its time (its message's, else now: a format without times is
    # ordered by arrival); results without a time of their own are said at their request's.
    prepared: list[tuple[Incoming, list[tuple[Request, bytes | None, bytes | None, datetime]]]] = []
    filler: set[bytes] = set()
    placer: set[bytes] = set()
    ids: set[str] = set()
    owners = _id_owners(u, tenant_id, {r.request_id for m in messages for r in m.requests})
    for m in messages:
        if any(owners.get(r.request_id, p) != p for r in m.requests for p in [c.index.pseudonym(r.patient_id)]):
            # Its derived ids are those of another patient's stored order (a message of another
            # patient with the same sender and control id): the message's records get ids of their
            # own, so that it neither touches that order nor is refused for it.
            m = _with_fresh_ids(m)
        for r in m.requests:
            owners.setdefault(r.request_id, c.index.pseudonym(r.patient_id))
        reqs = []
        for r in m.requests:
            fk, pk = order_keys(c, r)
            reqs.append((r, fk, pk, now if r.message_at is None else _at(r.message_at)))
            if fk is not None:
                filler.add(fk)
            if pk is not None:
                placer.add(pk)
            ids.add(r.request_id)
        prepared.append((m, reqs))
    for m in messages:
        wanted = {r.request_id for r in m.requests}
        if any(x.request_id not in wanted for x in m.results):
            raise InvalidInput("a result names no request of its message")
    found = _lookup(u, tenant_id, filler, placer, ids)

    # Group the incoming requests into orders: a stored request found again, or the first message
    # of this call that has the order.
    group_of: dict[tuple[str, Any], int] = {}  # ("f", key) / ("p", key) / ("i", id) -> group
    stored_group: dict[str, int] = {}
    groups: list[tuple[str | None, list[_Member]]] = []  # (stored id, members)
    for m, reqs in prepared:
        for r, fk, pk, when in reqs:
            names = [n for n in (("f", fk), ("p", pk), ("i", r.request_id)) if n[1] is not None]
            stored = next((found[n] for n in names if n in found), None)
            g = stored_group.get(stored) if stored is not None else None
            if g is None and stored is None:
                g = next((group_of[n] for n in names if n in group_of), None)
            if g is None:
                g = len(groups)
                groups.append((stored, []))
                if stored is not None:
                    stored_group[stored] = g
            groups[g][1].append((m, r, when))
            for n in names:
                group_of.setdefault(n, g)

    plain = [members[0] for stored, members in groups if stored is None and len(members) == 1]
    _store_new(u, tenant_id, c, plain)
    lived = [(stored, members) for stored, members in groups if stored is not None or len(members) > 1]
    if lived:
        _store_lived(u, tenant_id, c, lived, now)


def _to_lab_specimens(
    u: Unit, tenant_id: str, c: TenantCrypto, messages: Sequence[Incoming], judge: Judge | None = None
) -> list[Incoming]:
    """Orders whose specimen is one of the lab's own (entered by hand, ``access.work``), named by
    its barcode (SPM-2, or OBR-3): each result updates the ordered result of the same code on that
    specimen's request (workflow ``entered``, entered by the feed's account, the earlier version
    kept) instead of creating a request. A result that cannot be placed on the specimen (another
    patient's, a code not ordered on it, a result validated already or cancelled with its rejected
    specimen) is not stored at all: an error event names the specimen and the message. It never
    becomes a new order's final result, and never fails the other messages of the batch."""
    named: dict[str, list[tuple[int, Request]]] = {}
    for k, m in enumerate(messages):
        for r in m.requests:
            labels = [s.label for s in m.specimens if s.request_id == r.request_id and s.label]
            for label in [*labels, r.filler_number or ""]:
                if label and len(label) <= 64:
                    named.setdefault(label, []).append((k, r))
    if not named:
        return list(messages)
    s, res = t.specimen, t.result
    found: dict[str, Any] = {}
    values = sorted(named)
    for k in range(0, len(values), _CHUNK):
        for row in u.conn.execute(
            select(s.c.specimen_id, s.c.request_id, s.c.status).where(
                u._tf(s, tenant_id), s.c.specimen_id.in_(values[k : k + _CHUNK]), s.c.status.is_not(None)
            )
        ):
            found[row.specimen_id] = row
    if not found:
        return list(messages)
    taken: dict[int, set[str]] = {}
    for label, users in named.items():
        spec = found.get(label)
        if spec is None:
            continue
        owner = u.conn.execute(
            select(t.request.c.pseudonym).where(u._tf(t.request, tenant_id), t.request.c.request_id == spec.request_id)
        ).scalar_one()
        ordered = {
            row.result_id: row
            for row in u.conn.execute(
                select(res).where(
                    u._tf(res, tenant_id),
                    res.c.specimen_id == spec.specimen_id,
                    res.c.workflow.in_(("ordered", "entered")),
                )
            )
        }
        by_code = {(x.code_system, x.code): x for x in (u._result(c, row) for row in ordered.values())}
        for k, r in users:
            if r.request_id in taken.get(k, set()):
                continue
            mine = [x for x in messages[k].results if x.request_id == r.request_id]
            entered: list[str] = []
            refused = 0
            if c.index.pseudonym(r.patient_id) != owner:
                refused, mine = len(mine), []  # another patient's results on this specimen: none placed
            for x in mine:
                target = by_code.get((x.code_system, x.code))
                if target is None or str(target.status) == "cancelled":
                    refused += 1  # not ordered on it, validated already, or its specimen rejected
                    continue
                value: str | float = x.value_repr or x.value_text or ("" if x.value_num is None else repr(x.value_num))
                if x.comparator and x.value_repr:
                    value = f"{x.comparator}{x.value_repr}"
                if value == "":
                    continue
                u._enter_value(
                    tenant_id,
                    target.result_id,
                    value,
                    x.unit or target.unit,
                    comment=x.comment,
                    action="result:enter:analyser",
                    ref_text=x.ref_text,
                    flag=x.flag,
                    message_key=messages[k].key,
                )
                entered.append(target.result_id)
            if refused:
                # Never stored as a new order's final results (they would skip the lab's validation),
                # never a failure of the whole batch: an error event naming the specimen and the
                # message, for the lab to see.
                u._record(
                    tenant_id,
                    "result:enter:analyser",
                    "result",
                    refused,
                    outcome="error",
                    refs=[str(x) for x in (spec.specimen_id, messages[k].key) if x],
                )
            if judge is not None:  # once every value of the order is in: calculations see them all
                for result_id in entered:
                    u._judge(tenant_id, result_id, judge)
            taken.setdefault(k, set()).add(r.request_id)
    if not taken:
        return list(messages)
    out: list[Incoming] = []
    for k, m in enumerate(messages):
        gone = taken.get(k, set())
        if not gone:
            out.append(m)
            continue
        out.append(
            Incoming(
                m.key,
                [r for r in m.requests if r.request_id not in gone],
                [sp for sp in m.specimens if sp.request_id not in gone],
                [x for x in m.results if x.request_id not in gone],
            )
        )
    return out


_Member = tuple[Incoming, Request, datetime]  # a message, one of its requests, the time it says it


def _id_owners(u: Unit, tenant_id: str, ids: set[str]) -> dict[str, str]:
    """Stored requests among ``ids``: {request id: its patient's pseudonym}."""
    q = t.request
    values = sorted(ids)
    out: dict[str, str] = {}
    for k in range(0, len(values), _CHUNK):
        out.update(
            u.conn.execute(
                select(q.c.request_id, q.c.pseudonym).where(
                    u._tf(q, tenant_id), q.c.request_id.in_(values[k : k + _CHUNK])
                )
            ).all()
        )
    return out


def _with_fresh_ids(m: Incoming) -> Incoming:
    """The same message with new ids for its requests, specimens and results (links kept)."""
    req = {r.request_id: new_id() for r in m.requests}
    spec = {s.specimen_id: new_id() for s in m.specimens}
    return Incoming(
        m.key,
        [dataclasses.replace(r, request_id=req[r.request_id]) for r in m.requests],
        [
            dataclasses.replace(s, specimen_id=spec[s.specimen_id], request_id=req.get(s.request_id, s.request_id))
            for s in m.specimens
        ],
        [
            dataclasses.replace(
                x,
                result_id=new_id(),
                request_id=req.get(x.request_id, x.request_id),
                specimen_id=None if x.specimen_id is None else spec.get(x.specimen_id, x.specimen_id),
            )
            for x in m.results
        ],
    )


def _lookup(
    u: Unit, tenant_id: str, filler: set[bytes], placer: set[bytes], ids: set[str]
) -> dict[tuple[str, Any], str]:
    """Stored requests by filler key, placer key and id: {("f"|"p"|"i", value): request id}."""
    q = t.request
    out: dict[tuple[str, Any], str] = {}
    for kind, col, values in (
        ("f", q.c.order_bidx, sorted(filler)),
        ("p", q.c.placer_bidx, sorted(placer)),
        ("i", q.c.request_id, sorted(ids)),
    ):
        for k in range(0, len(values), _CHUNK):
            for value, rid in u.conn.execute(
                select(col, q.c.request_id)
                .where(u._tf(q, tenant_id), col.in_(values[k : k + _CHUNK]))
                .order_by(q.c.request_id)
            ):
                out.setdefault((kind, bytes(value) if kind != "i" else value), rid)
    return out


def _results_of(m: Incoming, request_id: str) -> list[Result]:
    return [r for r in m.results if r.request_id == request_id]


def _store_new(u: Unit, tenant_id: str, c: TenantCrypto, plain: list[_Member]) -> None:
    """Orders seen for the first time, once: stored as they are, with their status."""
    if not plain:
        return
    requests: list[Request] = []
    specimens: list[Specimen] = []
    results: list[Result] = []
    said: dict[str, tuple[str | None, datetime]] = {}
    by_request: dict[int, dict[str, list[Result]]] = {}
    for m, r, when in plain:
        per = by_request.get(id(m))
        if per is None:
            per = by_request[id(m)] = {}
            for x in m.results:
                per.setdefault(x.request_id, []).append(x)
        own = per.get(r.request_id, [])
        times = [when if x.message_at is None else _at(x.message_at) for x in own]
        statuses = {x.status for x in own}
        if not statuses or statuses & _OPEN or statuses <= _GONE or len(set(times)) > 1:
            status = _status([[(at, x)] for at, x in zip(times, own, strict=True)])
        else:  # one message said everything, and said it final
            status = RequestStatus.CORRECTED if ResultStatus.CORRECTED in statuses else RequestStatus.FINAL
        requests.append(dataclasses.replace(r, status=status))
        specimens.extend(s for s in m.specimens if s.request_id == r.request_id)
        results.extend(own)
        said.update((x.result_id, (m.key, at)) for at, x in zip(times, own, strict=True))
    u.add_requests(tenant_id, requests)
    if specimens:
        u.add_specimens(tenant_id, specimens)
    if results:
        u.add_results(tenant_id, results, said=said)


def _store_lived(
    u: Unit,
    tenant_id: str,
    c: TenantCrypto,
    groups: list[tuple[str | None, list[_Member]]],
    now: datetime,
) -> None:
    """Orders found again (stored, or more than once in this call): merged version by version."""
    digests = _Digests()
    stored_ids = [s for s, _ in groups if s is not None]
    orders = _load(u, tenant_id, c, stored_ids, {s: members[0][1].patient_id for s, members in groups if s}, digests)
    known_results = {o.result_id for order in orders.values() for o in order.obs}
    known_specimens = {sid for order in orders.values() for sid in order.specimens.values()}
    new_specimens: list[Specimen] = []
    touched: list[_Order] = []
    for stored, members in groups:
        order: _Order | None = orders.get(stored) if stored is not None else None
        for m, r, when in members:
            pseudonym = c.index.pseudonym(r.patient_id)
            at = (when, digests.request(r))
            if order is None:
                order = _Order(request=r, pseudonym=pseudonym, stored=False, at=at)
            elif order.pseudonym != pseudonym:
                raise InvalidInput("a message names a stored order of another patient (same order ids)")
            else:
                _merge_request(order, r, at)
            # Specimens: one of the same type is the same specimen.
            spec_map: dict[str, str] = {}
            for sp in m.specimens:
                if sp.request_id != r.request_id:
                    continue
                sid = order.specimens.get(sp.type)
                if sid is None:
                    sid = new_id() if sp.specimen_id in known_specimens else sp.specimen_id
                    order.specimens[sp.type] = sid
                    known_specimens.add(sid)
                    new_specimens.append(dataclasses.replace(sp, specimen_id=sid, request_id=order.request.request_id))
                spec_map[sp.specimen_id] = sid
            # Results: the same observation is one more version; a new one is added.
            taken: set[int] = set()
            for x in _results_of(m, r.request_id):
                x = dataclasses.replace(
                    x,
                    request_id=order.request.request_id,
                    specimen_id=spec_map.get(x.specimen_id, x.specimen_id) if x.specimen_id else None,
                )
                said = _Said(x, m.key, when if x.message_at is None else _at(x.message_at), digests.result(x))
                obs = _find(order, x, taken)
                if obs is None:
                    rid = x.result_id
                    if rid in known_results:
                        rid = new_id()
                        x = dataclasses.replace(x, result_id=rid)
                        said.result = x
                    known_results.add(rid)
                    obs = _Obs(rid, order.request.request_id, x.specimen_id, stored=False, said=[said])
                    order.obs.append(obs)
                else:
                    obs.said.append(said)
                taken.add(id(obs))
        if order is not None:
            touched.append(order)
    _write(u, tenant_id, c, touched, new_specimens, now)


def _merge_request(order: _Order, r: Request, at: tuple[datetime, str]) -> None:
    """Request-level fields follow the latest message; order numbers and keys accumulate."""
    mine = order.request
    if at > order.at:
        order.at = at
        mine = dataclasses.replace(
            mine,
            prescriber_id=r.prescriber_id,
            requested_at=r.requested_at,
            accession=r.accession,
            reported_at=r.reported_at,
            message_at=r.message_at,
            placer_number=r.placer_number or mine.placer_number,
            filler_number=r.filler_number or mine.filler_number,
            sender=r.sender or mine.sender,
        )
    else:
        mine = dataclasses.replace(
            mine,
            placer_number=mine.placer_number or r.placer_number,
            filler_number=mine.filler_number or r.filler_number,
            sender=mine.sender or r.sender,
        )
    order.request = mine


def _find(order: _Order, x: Result, taken: set[int]) -> _Obs | None:
    """The stored observation an incoming result is a version of, if any."""
    for o in order.obs:
        if id(o) in taken:
            continue
        if x.observation_key and o.okey:
            if x.observation_key == o.okey:
                return o
        elif (x.code_system, x.code) == o.code:
            return o
    return None


def _load(
    u: Unit,
    tenant_id: str,
    c: TenantCrypto,
    request_ids: list[str],
    patients: Mapping[str, str],
    digests: _Digests,
) -> dict[str, _Order]:
    """The stored requests found again, with their specimens, results and versions, decrypted."""
    out: dict[str, _Order] = {}
    if not request_ids:
        return out
    q, s, r, v = t.request, t.specimen, t.result, t.result_version
    obs_by_result: dict[str, _Obs] = {}
    spec_type = c.cipher.column("specimen", "type_enc")
    version_col = c.cipher.column("result_version", "observation_enc")
    result_col = c.cipher.column("result", "observation_enc")
    for k in range(0, len(request_ids), _CHUNK):
        part = request_ids[k : k + _CHUNK]
        for row in u.conn.execute(select(q).where(u._tf(q, tenant_id), q.c.request_id.in_(part))):
            req = u._request(c, row, patients[row.request_id])
            out[row.request_id] = _Order(
                request=req,
                pseudonym=row.pseudonym,
                stored=True,
                at=(_at(req.message_at), digests.request(req)),  # None: the earliest, any arrival is later
                stored_request=req,
            )
        for row in u.conn.execute(
            select(s.c.specimen_id, s.c.request_id, s.c.type_enc)
            .where(u._tf(s, tenant_id), s.c.request_id.in_(part))
            .order_by(s.c.specimen_id)
        ):
            kind = spec_type.open(row.specimen_id, bytes(row.type_enc)).decode()
            out[row.request_id].specimens.setdefault(kind, row.specimen_id)
        for row in u.conn.execute(
            select(r).where(u._tf(r, tenant_id), r.c.request_id.in_(part)).order_by(r.c.result_id)
        ):
            fields, key, said_at = codec.unpack_observation(result_col.open(row.result_id, bytes(row.observation_enc)))
            res = _result(row.result_id, row.request_id, row.specimen_id, row.status, row.version, fields)
            said = _Said(
                res, key, _said_at(res, said_at), digests.result(res), stored_version=row.version, current=True
            )
            obs = _Obs(row.result_id, row.request_id, row.specimen_id, stored=True, said=[said])
            obs_by_result[row.result_id] = obs
            out[row.request_id].obs.append(obs)
        for row in u.conn.execute(
            select(v).where(u._tf(v, tenant_id), v.c.request_id.in_(part)).order_by(v.c.version_id)
        ):
            owner = obs_by_result.get(row.result_id)
            if owner is None:
                continue
            fields, _, said_at = codec.unpack_observation(version_col.open(row.version_id, bytes(row.observation_enc)))
            res = _result(row.result_id, row.request_id, owner.specimen_id, row.status, row.version, fields)
            owner.said.insert(
                0,
                _Said(
                    res,
                    row.message_key,
                    _said_at(res, said_at),
                    digests.result(res),
                    version_id=row.version_id,
                    stored_version=row.version,
                ),
            )
    return out


def _said_at(r: Result, said_at: datetime | None) -> datetime:
    if r.message_at is not None:
        return _at(r.message_at)
    return _EARLIEST if said_at is None else _at(said_at)


def _result(
    result_id: str, request_id: str, specimen_id: str | None, status: str, version: int, fields: dict[str, Any]
) -> Result:
    return Result(
        result_id=result_id,
        request_id=request_id,
        specimen_id=specimen_id,
        status=ResultStatus(status),
        sensitivity=sensitivity_of(fields["code_system"], fields["code"]),
        version=version,
        **fields,
    )


def _resolve(obs: _Obs) -> list[_Said]:
    """The observation's versions in order, each said once (the same value at the same time, once:
    a stored row kept over an incoming twin)."""
    out: list[_Said] = []
    for s in sorted(obs.said, key=lambda s: (s.order, s.stored_version is None)):
        if out and out[-1].order == s.order:
            continue
        out.append(s)
    return out


def _write(
    u: Unit, tenant_id: str, c: TenantCrypto, orders: list[_Order], specimens: list[Specimen], now: datetime
) -> None:
    v = c.cipher.current_version
    pack = codec.result_packer()
    result_col = c.cipher.column("result", "observation_enc")
    version_col = c.cipher.column("result_version", "observation_enc")
    new_requests: list[Request] = []
    changed_requests: list[Request] = []
    new_results: list[Result] = []
    new_said: dict[str, tuple[str | None, datetime]] = {}
    result_updates: list[dict[str, Any]] = []
    version_rows: list[tuple[Any, ...]] = []
    version_moves: list[dict[str, Any]] = []
    version_drops: list[str] = []
    versions_added = 0
    for order in orders:
        histories: list[list[tuple[datetime, Result]]] = []
        for obs in order.obs:
            chain = _resolve(obs)
            n = len(chain)
            for i, s in enumerate(chain, 1):
                s.result = dataclasses.replace(s.result, result_id=obs.result_id, version=i)
            histories.append([(s.at, s.result) for s in chain])
            cur = chain[-1]
            if not obs.stored:
                new_results.append(dataclasses.replace(cur.result, specimen_id=obs.specimen_id))
                new_said[obs.result_id] = (cur.key, cur.at)
            elif not (cur.current and cur.stored_version == n):
                result_updates.append(
                    {
                        "_id": obs.result_id,
                        "observation_enc": result_col.seal(obs.result_id, pack(cur.result, cur.key, cur.at)),
                        "status": str(cur.result.status),
                        "version": n,
                        "key_version": v,
                    }
                )
                if cur.version_id is not None:
                    version_drops.append(cur.version_id)
            for i, s in enumerate(chain[:-1], 1):
                if s.version_id is not None:
                    if s.stored_version != i:
                        version_moves.append({"_id": s.version_id, "version": i})
                    continue
                vid = new_id()
                versions_added += 1
                version_rows.append(
                    (
                        tenant_id,
                        vid,
                        obs.result_id,
                        obs.request_id,
                        i,
                        str(s.result.status),
                        v,
                        version_col.seal(vid, pack(s.result, s.key, s.at)),
                        now,
                        s.key,
                    )
                )
        status = _status(histories)
        req = dataclasses.replace(order.request, status=status)
        if not order.stored:
            new_requests.append(req)
        elif req != order.stored_request:
            changed_requests.append(req)
    if new_requests:
        u.add_requests(tenant_id, new_requests)
    if changed_requests:
        _update_requests(u, tenant_id, c, changed_requests)
    if specimens:
        u.add_specimens(tenant_id, specimens)
    if new_results:
        u.add_results(tenant_id, new_results, said=new_said)
    r, rv = t.result, t.result_version
    if version_drops:
        u.conn.execute(delete(rv).where(u._tf(rv, tenant_id), rv.c.version_id.in_(version_drops)))
    if version_moves:
        u.conn.execute(
            update(rv)
            .where(and_(u._tf(rv, tenant_id), rv.c.version_id == bindparam("_id")))
            .values(version=bindparam("version")),
            version_moves,
        )
    if version_rows:
        u._insert(
            rv,
            (
                "tenant_id",
                "version_id",
                "result_id",
                "request_id",
                "version",
                "status",
                "key_version",
                "observation_enc",
                "recorded_at",
                "message_key",
            ),
            version_rows,
        )
    if result_updates:
        u.conn.execute(
            update(r)
            .where(and_(u._tf(r, tenant_id), r.c.result_id == bindparam("_id")))
            .values(
                observation_enc=bindparam("observation_enc"),
                status=bindparam("status"),
                version=bindparam("version"),
                key_version=bindparam("key_version"),
            ),
            result_updates,
        )
    if result_updates or versions_added:
        u._record(tenant_id, "patient:result:version", "result", len(result_updates) + versions_added)


def _update_requests(u: Unit, tenant_id: str, c: TenantCrypto, requests: list[Request]) -> None:
    """Rewrite requests found again: every sealed column sealed again under the current key."""
    v = c.cipher.current_version
    acc, req_at, rep_at, order = (
        c.cipher.column("request", n) for n in ("accession_enc", "requested_at_enc", "reported_at_enc", "order_enc")
    )
    params = []
    for r in requests:
        i = r.request_id
        filler_key, placer_key = order_keys(c, r)
        numbers = (r.placer_number, r.filler_number, r.sender, codec.dt(r.message_at))
        params.append(
            {
                "_id": i,
                "prescriber_id": r.prescriber_id,
                "key_version": v,
                "accession_enc": None if r.accession is None else acc.seal(i, r.accession.encode()),
                "requested_at_enc": req_at.seal(i, r.requested_at.isoformat().encode()),
                "reported_at_enc": None
                if r.reported_at is None
                else rep_at.seal(i, r.reported_at.isoformat().encode()),
                "order_bidx": filler_key,
                "placer_bidx": placer_key,
                "status": None if r.status is None else str(r.status),
                "order_enc": None if not any(numbers) else order.seal(i, codec.pack(numbers)),
                "clinical_enc": seal_clinical(c, i, r),  # sealed again under the current key
            }
        )
    q = t.request
    u.conn.execute(
        update(q)
        .where(and_(u._tf(q, tenant_id), q.c.request_id == bindparam("_id")))
        .values({k: bindparam(k) for k in params[0] if k != "_id"}),
        params,
    )
    u._record(tenant_id, "patient:request:update", "request", len(params))
