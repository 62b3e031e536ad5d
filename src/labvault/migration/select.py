"""An instruction compiled to a read plan, and the plan run through the gateway.

``compile_plan`` turns a lab's instruction into the exact output of an export: which record
types, and in each which fields (the instruction's allow-list; free text only if listed), and the
selection (collection period, patients, codes, sensitive categories). The gateway applies it
(``labvault.access.scan.export``): it streams the lab's requests, specimens and results in request
order, merged (memory stays flat in the size of the lab), keeps only what the selection names,
and yields flat records holding the plan's fields and the links between records, nothing else;
identities and prescribers follow, only those the selected records refer to. ``run`` consumes
that stream.

A record type is written only when the instruction names some of its fields, and a link (a
request's patient or prescriber, a specimen's request, a result's request, specimen or patient)
only when the record type it points to is written too: the output schema is the allow-list
(requirement A2). A request's prescriber is not in a package whose instruction names no
prescriber field, nor a result's patient in one that names no identity field.

Every id in a record is derived with the export's fingerprint key
(``labvault.crypto.fingerprint``), so the output never carries an internal id and a leaked
copy can be traced to its export. Records are plain dicts; ``run`` with ``count_only`` builds no
record at all and only counts (the plan's dry run).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import is_not
from typing import TYPE_CHECKING, Any

from labvault.access import scan
from labvault.access.scan import LINKS, TARGET, TYPES
from labvault.counts import Counts as Tally
from labvault.instructions import document

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = ["LINKS", "TARGET", "TYPES", "Counts", "Plan", "Tally", "compile_plan", "count", "run"]

COMMENT = "result.comment"


@dataclass(frozen=True)
class Plan:
    """What an instruction lets out: fields per record type, and the selection (``read``: the
    plan the gateway applies)."""

    instruction: document.Instruction
    read: scan.ExportPlan

    @property
    def fields(self) -> dict[str, tuple[str, ...]]:
        """Record type -> fields, in FIELDS order ("comment" for free text)."""
        return dict(self.read.fields)

    @property
    def types(self) -> tuple[str, ...]:
        """Record types written: those the instruction names some fields of (A2), no other."""
        return self.read.types

    @property
    def links(self) -> dict[str, tuple[str, ...]]:
        """Record type written -> the links it holds: those to a record type written too."""
        return self.read.links

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
    read = scan.ExportPlan(
        tenant=instruction.tenant,
        collected_from=instruction.collected_from,
        collected_to=instruction.collected_to,
        fields=fields,
        patients=None if instruction.patients is None else frozenset(instruction.patients),
        codes=None if instruction.codes is None else frozenset((s, c) for s, c in instruction.codes),
        sensitive=frozenset(instruction.sensitive),
        ref=instruction.id,
    )
    return Plan(instruction, read)


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
                for k, present in zip(keys, pattern, strict=False):
                    if not present or k in ("record", "id"):
                        continue
                    into = per_link if k in link_names else per
                    into[k] = into.get(k, 0) + n
        return {
            "records": dict(self.records),
            "fields": {t: dict(sorted(f.items())) for t, f in sorted(fields.items())},
            "links": {t: dict(sorted(f.items())) for t, f in sorted(links.items())},
        }


def run(
    u: Unit,
    plan: Plan,
    id_map: Callable[[str, str], str],
    *,
    tally: Tally | None = None,
    count_only: bool = False,
    on_result: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The plan's records, streamed by the gateway (see the module's docstring); with
    ``count_only``, nothing is yielded, only ``tally`` is filled. ``on_result`` is called with the
    number of results selected since its last call (every 10,000, then the rest)."""
    return scan.export(u, plan.read, id_map, tally=tally, count_only=count_only, on_result=on_result)


def count(u: Unit, plan: Plan) -> Tally:
    """What the plan selects, without building any record (the dry run)."""
    tally = Tally()
    for _ in run(u, plan, lambda t, i: i, tally=tally, count_only=True):
        pass
    return tally
