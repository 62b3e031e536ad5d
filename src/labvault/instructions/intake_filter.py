"""Data coming in under a lab's ``migration_in`` instruction: only what the instruction names.

Pure: functions over the core model and an ``Instruction``; no database, no files.

``check`` refuses an instruction that cannot govern an import (another lab, another kind, or an
allow-list without the fields the store cannot do without, ``REQUIRED``). ``apply`` takes one
patient's part of a message (anything with ``identity``, ``prescribers``, ``requests``,
``specimens`` and ``results``, such as ``labvault.domain.mapped.Mapped``) and returns a copy
holding only:

- the results inside the selection: collected within ``collected_from``..``collected_to``
  (inclusive; the day of the result's specimen collection, or of its request when it has no
  specimen, as the store's own period reads do), of a listed code when ``codes`` are listed, of
  a listed patient when ``patients`` are listed, and of a sensitive category only when listed;
- the requests and specimens of those results, and the prescribers of those requests;
- in them, only the fields of the allow-list: the others are set to None, free text
  (``result.comment``) included unless ``free_text`` lists it. A specimen or a prescriber is kept
  only whole (``WHOLE``): when one of those fields is not allowed it is left out and the link to it
  cleared, as the store cannot keep one in part.

Patients listed in the instruction are matched on the INS the message carries (INS-NIR or
INS-NIA, spaces, dots and dashes ignored): how a legacy system's export names a patient, and what
the store matches patients on. ``apply`` returns None when no result is left. What was left out or
cleared is counted in a ``Tally``: reasons and field names, never a value.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, TypeVar

from labvault.domain.identifiers import normalise_nir
from labvault.domain.models import Identity, Prescriber, Request, Result, Sensitivity, Specimen
from labvault.domain.sensitivity import sensitivity_of
from labvault.instructions.document import FREE_TEXT, Instruction
from labvault.instructions.errors import MissingFields, WrongKind, WrongTenant

KIND = "migration_in"
# What the store cannot do without: an instruction for an import must allow all of these.
REQUIRED: dict[str, tuple[str, ...]] = {
    "identity": ("nir", "family_name", "given_names", "birth_date", "sex"),
    "request": ("requested_at",),
    "result": ("code", "code_system", "label", "status"),
}
# Kept whole or left out (the store needs each of these fields of one).
WHOLE: dict[str, tuple[str, ...]] = {
    "specimen": ("type", "collected_at"),
    "prescriber": ("rpps", "family_name", "given_name"),
}
# Fields set to None when the instruction does not allow them.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "identity": ("birth_name", "birthplace_code", "address", "phone", "email"),
    "request": ("accession", "reported_at"),
    "specimen": ("received_at",),
    "result": (
        "value_num",
        "value_text",
        "unit",
        "ref_low",
        "ref_high",
        "ref_text",
        "flag",
        "validated_by",
        "validated_at",
    ),
}
COMMENT = "result.comment"
# Why a result is left out, in the order they are tried.
REASONS = ("patient", "period", "code", "sensitive")


class Parts(Protocol):
    identity: Identity
    prescribers: list[Prescriber]
    requests: list[Request]
    specimens: list[Specimen]
    results: list[Result]


P = TypeVar("P", bound=Parts)
T = TypeVar("T")


@dataclass(slots=True)
class Tally:
    """What an instruction left out: results by reason, and values cleared by ``category.field``."""

    dropped: Counter[str] = field(default_factory=Counter)
    cleared: Counter[str] = field(default_factory=Counter)

    @property
    def results_dropped(self) -> int:
        return sum(self.dropped.values())


def check(instr: Instruction, tenant_id: str) -> None:
    """Refuse, in one line naming kinds and field names only, an instruction unfit for an import."""
    if instr.tenant != tenant_id:
        raise WrongTenant("instruction: it is for another lab")
    if instr.kind != KIND:
        raise WrongKind(f"instruction '{instr.id}' is of kind {instr.kind}: an import needs kind {KIND}")
    missing = [f"{cat}.{name}" for cat, names in REQUIRED.items() for name in names if not instr.allows(cat, name)]
    if missing:
        raise MissingFields(f"instruction '{instr.id}' does not allow fields the store needs: {', '.join(missing)}")


def listed_patient(instr: Instruction, identity: Identity) -> bool:
    """Whether the patient is covered: no ``patients`` listed, or its INS is one of them."""
    if instr.patients is None:
        return True
    return identity.nir is not None and normalise_nir(identity.nir) in _ins_set(instr.patients)


@functools.lru_cache(maxsize=8)
def _ins_set(patients: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalise_nir(p) for p in patients)


def collected_on(result: Result, requests: dict[str, Request], specimens: dict[str, Specimen]) -> date | None:
    """The collection day of a result: its specimen's, else its request's; None when neither is known."""
    specimen = specimens.get(result.specimen_id) if result.specimen_id else None
    if specimen is not None:
        return specimen.collected_at.date()
    request = requests.get(result.request_id)
    return None if request is None else request.requested_at.date()


def outside(instr: Instruction, result: Result, collected: date | None) -> str | None:
    """Why a result of a listed patient falls outside the selection (a word of ``REASONS``), or None."""
    if collected is None or not instr.collected_from <= collected <= instr.collected_to:
        return "period"
    if instr.codes is not None and (result.code_system, result.code) not in instr.codes:
        return "code"
    category = sensitivity_of(result.code_system, result.code)
    if category is not Sensitivity.OTHER and category.value not in instr.sensitive:
        return "sensitive"
    return None


def _clear(instr: Instruction, category: str, obj: T, tally: Tally, *, extra: dict[str, object] | None = None) -> T:
    """A copy of ``obj`` without the values of ``category`` the instruction does not allow (``extra``: more changes)."""
    gone: dict[str, object] = {
        n: None for n in OPTIONAL.get(category, ()) if not instr.allows(category, n) and getattr(obj, n) is not None
    }
    tally.cleared.update(f"{category}.{n}" for n in gone)
    if category == "result" and not instr.allows(FREE_TEXT, COMMENT) and getattr(obj, "comment", None) is not None:
        gone["comment"] = None
        tally.cleared[COMMENT] += 1
    changes = {**gone, **(extra or {})}
    return dataclasses.replace(obj, **changes) if changes else obj  # type: ignore[type-var]


def _whole(instr: Instruction, category: str) -> bool:
    return all(instr.allows(category, n) for n in WHOLE[category])


def _count_left_out(category: str, obj: object, tally: Tally) -> None:
    names = WHOLE[category] + OPTIONAL.get(category, ())
    tally.cleared.update(f"{category}.{n}" for n in names if getattr(obj, n) not in (None, ""))


def apply(instr: Instruction, part: P, tally: Tally) -> P | None:
    """A copy of ``part`` holding only what ``instr`` names (see the module); None if no result is left."""
    requests = {r.request_id: r for r in part.requests}
    specimens = {s.specimen_id: s for s in part.specimens}
    listed = listed_patient(instr, part.identity)
    kept: list[Result] = []
    for r in part.results:
        why = "patient" if not listed else outside(instr, r, collected_on(r, requests, specimens))
        if why is None:
            kept.append(r)
        else:
            tally.dropped[why] += 1
    if not kept:
        return None
    request_ids = {r.request_id for r in kept}
    specimen_ids = {r.specimen_id for r in kept if r.specimen_id}
    keep_specimens, keep_prescribers = _whole(instr, "specimen"), _whole(instr, "prescriber")
    new_specimens: list[Specimen] = []
    for s in part.specimens:
        if s.specimen_id not in specimen_ids:
            continue
        if keep_specimens:
            new_specimens.append(_clear(instr, "specimen", s, tally))
        else:
            _count_left_out("specimen", s, tally)
    new_requests = [
        _clear(instr, "request", q, tally, extra=None if keep_prescribers else {"prescriber_id": None})
        for q in part.requests
        if q.request_id in request_ids
    ]
    prescriber_ids = {q.prescriber_id for q in part.requests if q.request_id in request_ids and q.prescriber_id}
    new_prescribers: list[Prescriber] = []
    for p in part.prescribers:
        if p.prescriber_id not in prescriber_ids:
            continue
        if keep_prescribers:
            new_prescribers.append(p)
        else:
            _count_left_out("prescriber", p, tally)
    new_results = [
        _clear(instr, "result", r, tally, extra=None if keep_specimens else {"specimen_id": None}) for r in kept
    ]
    identity = _clear(instr, "identity", part.identity, tally)
    return dataclasses.replace(
        part,
        identity=identity,
        prescribers=new_prescribers,  # type: ignore[type-var]
        requests=new_requests,
        specimens=new_specimens,
        results=new_results,
    )
