"""An instruction compiled to a read plan, and the plan run over a lab's store.

``compile_plan`` turns a lab's instruction into the exact output of an export: which record
types, and in each which fields (the instruction's allow-list; free text only if listed). ``run``
streams the lab's requests, specimens and results in request order, merged (memory stays flat
in the size of the lab), keeps only what the selection names (collection period, patients,
codes, sensitive categories), and yields flat records holding the plan's fields and the links
between records, nothing else. Identities and prescribers follow, only those the selected
records refer to.

A record type is written only when the instruction names some of its fields, and a link (a
request's patient or prescriber, a specimen's request, a result's request, specimen or patient)
only when the record type it points to is written too: the output schema is the allow-list
(requirement A2). A request's prescriber is not in a package whose instruction names no
prescriber field, nor a result's patient in one that names no identity field.

Every id in a record is derived with the export's fingerprint key
(``labvault.instructions.fingerprint``), so the output never carries an internal id and a leaked
copy can be traced to its export. Records are plain dicts; ``run`` with ``count_only`` builds no
record at all and only counts (the plan's dry run).
"""

from __future__ import annotations

from collections import Counter
from itertools import repeat
from operator import is_not, itemgetter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from labvault.access import scan
from labvault.access.codec import RESULT_ITEMS
from labvault.counts import Counts as Tally  # what a run selected, known once its stream is read
from labvault.domain.models import Sensitivity
from labvault.instructions import document

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

# Record types of a package, in the order they come, and the instruction category of each.
TYPES = ("request", "specimen", "result", "identity", "prescriber")
# Every link a record may hold (a derived id of another record), in the order written.
LINKS = {"identity": (), "prescriber": (), "request": ("patient", "prescriber"),
         "specimen": ("request",), "result": ("request", "specimen", "patient")}
# The record type each link points to: a link is written only when that type is written.
TARGET = {"patient": "identity", "prescriber": "prescriber", "request": "request", "specimen": "specimen"}
COMMENT = "result.comment"


@dataclass(frozen=True)
class Plan:
    """What an instruction lets out: fields per record type, and the selection."""

    instruction: document.Instruction
    fields: dict[str, tuple[str, ...]]  # record type -> fields, in FIELDS order ("comment" for free text)

    @property
    def types(self) -> tuple[str, ...]:
        """Record types written: those the instruction names some fields of (A2), no other."""
        return tuple(t for t in TYPES if self.fields[t])

    @property
    def links(self) -> dict[str, tuple[str, ...]]:
        """Record type written -> the links it holds: those to a record type written too."""
        types = self.types
        return {t: tuple(k for k in LINKS[t] if TARGET[k] in types) for t in types}

    def describe(self) -> dict[str, list[str]]:
        return {t: list(self.fields[t]) for t in self.types}

    def describe_links(self) -> dict[str, list[str]]:
        return {t: list(ks) for t, ks in self.links.items()}


def compile_plan(instruction: document.Instruction) -> Plan:
    if instruction.kind not in document.OUTBOUND:
        raise document.InstructionInvalid(f"instruction: kind {instruction.kind} does not send data out")
    fields = {t: tuple(f for f in document.FIELDS[t] if instruction.allows(t, f)) for t in TYPES}
    if instruction.allows(document.FREE_TEXT, COMMENT):
        fields["result"] = (*fields["result"], "comment")
    return Plan(instruction, fields)


class Counts:
    """Records, non-empty fields and links per record type: the plan's figures and the manifest's
    (requirement B4: a link, e.g. request->patient or result->request, is counted like a field).

    A record is counted by its type and the pattern of its empty fields (a tuple of booleans made
    in C); the patterns are few, and turn into per-field counts only when asked. A million
    records cost a million dictionary increments, not fifteen million. ``links``: the links the
    plan declares per record type, counted (zero included) even when no record holds one."""

    def __init__(self, links: dict[str, Any] | None = None) -> None:
        self.records: dict[str, int] = dict.fromkeys(TYPES, 0)
        self._links = {t: tuple(ks) for t, ks in (links or {}).items()}
        # (type, number of keys) -> the keys, and the count of each pattern of empty fields
        self._patterns: dict[tuple[str, int], tuple[tuple[str, ...], Counter[tuple[bool, ...]]]] = {}

    def add(self, rtype: str, record: dict[str, Any], *, built: bool = False) -> None:
        """Count a record. ``built``: made by ``run``, whose records of one type all have the same
        keys in the same order (so they are compared once, not for every record)."""
        self.records[rtype] += 1
        shape = self._patterns.get((rtype, len(record)))
        if shape is None or (not built and shape[0] != tuple(record)):
            shape = self._shape(rtype, record)
        shape[1][tuple(map(is_not, record.values(), repeat(None)))] += 1

    def _shape(self, rtype: str, record: dict[str, Any]) -> tuple[tuple[str, ...], Counter[tuple[bool, ...]]]:
        key = (rtype, len(record))
        if key in self._patterns:
            raise ValueError(f"{rtype} records differ in their fields")
        self._patterns[key] = (tuple(record), Counter())
        return self._patterns[key]

    def as_dict(self) -> dict[str, Any]:
        fields: dict[str, dict[str, int]] = {}
        links: dict[str, dict[str, int]] = {t: dict.fromkeys(ks, 0) for t, ks in self._links.items()}
        for (rtype, _), (keys, patterns) in self._patterns.items():
            per = fields.setdefault(rtype, {})
            per_link = links.setdefault(rtype, {})
            link_names = LINKS.get(rtype, ())
            for pattern, n in patterns.items():
                for k, present in zip(keys, pattern):
                    if not present or k in ("record", "id"):
                        continue
                    into = per_link if k in link_names else per
                    into[k] = into.get(k, 0) + n
        return {"records": dict(self.records),
                "fields": {t: dict(sorted(f.items())) for t, f in sorted(fields.items())},
                "links": {t: dict(sorted(f.items())) for t, f in sorted(links.items())}}


def _value(obj: Any, name: str) -> Any:
    """A field as JSON: dates in ISO 8601, enumerations by their value."""
    v = getattr(obj, name)
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return v.value if isinstance(v, Enum) else v


def run(u: Unit, plan: Plan, id_map: Callable[[str, str], str], *, tally: Tally | None = None,
        count_only: bool = False, on_result: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """The plan's records, streamed (see the module's docstring); with ``count_only``, nothing is
    yielded, only ``tally`` is filled. ``on_result`` is called with the number of results selected
    since its last call (every 10,000, then the rest)."""
    instr = plan.instruction
    tenant = instr.tenant
    lo, hi = instr.collected_from, instr.collected_to
    codes = None if instr.codes is None else frozenset(instr.codes)
    allowed_sensitive = frozenset(instr.sensitive)
    other = Sensitivity.OTHER
    wanted = None
    if instr.patients is not None:
        index = u._crypto(tenant).index
        wanted = frozenset(index.pseudonym(p) for p in instr.patients)
    f_req, f_spec, f_res = plan.fields["request"], plan.fields["specimen"], plan.fields["result"]
    # A result's fields straight from its unsealed items, in one C call (dates are ISO text there).
    item_fields = tuple(f for f in f_res if f != "status")
    item_values = _picker(tuple(RESULT_ITEMS.index(f) for f in item_fields))
    with_status = "status" in f_res
    patients: set[str] = set()
    prescribers: set[str] = set()
    patient_ids: dict[str, str] = {}  # pseudonym -> this export's id (a few thousand at most)

    def patient_id(pseudonym: str) -> str:
        pid = patient_ids.get(pseudonym)
        if pid is None:
            pid = patient_ids[pseudonym] = id_map("patient", pseudonym)
        return pid

    # What is written: record types named by the instruction, links to those types only (A2).
    links = plan.links
    w_req, w_spec, w_res = "request" in links, "specimen" in links, "result" in links
    req_patient, req_prescriber = w_req and "patient" in links["request"], w_req and "prescriber" in links["request"]
    spec_request = w_spec and "request" in links["specimen"]
    res_request = w_res and "request" in links["result"]
    res_specimen = w_res and "specimen" in links["result"]
    res_patient = w_res and "patient" in links["result"]

    n = n_req = n_spec = 0
    step = 0

    specimens = scan.specimens(u, tenant, by_request=True)
    results = scan.result_rows(u, tenant, by_request=True)  # (pseudonym, id, request, specimen, status, items, sensitivity)
    spec = next(specimens, None)
    res = next(results, None)
    for request in scan.requests(u, tenant, by_id=True):
        rid = request.request_id
        in_period: dict[str, Any] = {}
        while spec is not None and spec.request_id < rid:
            spec = next(specimens, None)
        while spec is not None and spec.request_id == rid:
            if lo <= spec.collected_at.date() <= hi:
                in_period[spec.specimen_id] = spec
            spec = next(specimens, None)
        while res is not None and res[2] < rid:
            res = next(results, None)
        chosen = []
        request_day = request.requested_at.date()
        while res is not None and res[2] == rid:
            row = res
            res = next(results, None)
            if row[3] is not None:
                if row[3] not in in_period:
                    continue
            elif not lo <= request_day <= hi:  # no specimen: the request's date stands for it
                continue
            if wanted is not None and row[0] not in wanted:
                continue
            items = row[5]
            if codes is not None and (items[0], items[1]) not in codes:
                continue
            if row[6] is not other and row[6].value not in allowed_sensitive:
                continue
            chosen.append(row)
        if not chosen:
            continue
        n += len(chosen)
        n_req += 1
        used = {row[3] for row in chosen}
        n_spec += sum(1 for sid in in_period if sid in used)
        if on_result is not None and n - step >= 10_000:
            on_result(n - step)
            step = n
        patients.add(request.patient_id)
        if request.prescriber_id is not None:
            prescribers.add(request.prescriber_id)
        if count_only:
            continue
        req_id = id_map("request", rid) if w_req else None  # linked to only when requests are written
        if w_req:
            rec = {"record": "request", "id": req_id}
            if req_patient:
                rec["patient"] = patient_id(request.patient_id)
            if req_prescriber:
                rec["prescriber"] = None if request.prescriber_id is None \
                    else id_map("prescriber", request.prescriber_id)
            for f in f_req:
                rec[f] = _value(request, f)
            yield rec
        if w_spec:  # likewise for specimens
            spec_ids = {sid: id_map("specimen", sid) for sid in in_period if sid in used}
            for sid, sp_id in spec_ids.items():
                rec = {"record": "specimen", "id": sp_id}
                if spec_request:
                    rec["request"] = req_id
                for f in f_spec:
                    rec[f] = _value(in_period[sid], f)
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
            rec.update(zip(item_fields, item_values(items)))
            if with_status:
                rec["status"] = status
            yield rec
    for _ in results:  # read to the end: each scan is audited with its count when finished
        pass
    for _ in specimens:
        pass
    if on_result is not None and n > step:
        on_result(n - step)
    if tally is not None:
        tally.results, tally.requests, tally.specimens = n, n_req, n_spec
        tally.patients, tally.prescribers = len(patients), len(prescribers)
    if count_only:
        return
    f_id, f_pr = plan.fields["identity"], plan.fields["prescriber"]
    if f_id:
        for ident in scan.patients(u, tenant):
            if ident.patient_id in patients:
                rec = {"record": "identity", "id": patient_id(ident.patient_id)}
                for f in f_id:
                    rec[f] = _value(ident, f)
                yield rec
    if f_pr:
        for p in scan.prescribers(u, tenant):
            if p.prescriber_id in prescribers:
                rec = {"record": "prescriber", "id": id_map("prescriber", p.prescriber_id)}
                for f in f_pr:
                    rec[f] = _value(p, f)
                yield rec


def _picker(positions: tuple[int, ...]) -> Callable[[Any], tuple]:
    """``itemgetter`` that always returns a tuple (even of one position or none)."""
    if len(positions) > 1:
        return itemgetter(*positions)
    if positions:
        one = itemgetter(positions[0])
        return lambda seq: (one(seq),)
    return lambda seq: ()


def count(u: Unit, plan: Plan) -> Tally:
    """What the plan selects, without building any record (the dry run)."""
    tally = Tally()
    for _ in run(u, plan, lambda t, i: i, tally=tally, count_only=True):
        pass
    return tally
