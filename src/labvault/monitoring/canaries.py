"""H3, the canary part of the leaked-sample matcher: rows read from a leaked file (a package's
identity records, a spreadsheet, lines pasted in a report) traced to the lab's canaries, and
through a package's own canary to the package it leaked from.

Matching goes through the lab's blind indexes only (``Unit.canaries_among``): a row's NIR, or its
family name, first given name and birth date, are hashed with the lab's keys and compared with the
stored indexes; nothing stored is decrypted, and no canary is touched. A row names its values
under a package's field names (``nir``, ``family_name``, ``given_names``, ``birth_date``) or the
usual French column names (``NIR``/``INS``, ``nom``, ``prenom``, ``date_naissance``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from labvault.access.canaries import Canary, Maker, Planted, Trace
from labvault.domain.models import IdentityStatus, Sensitivity
from labvault.synth.generator import INS_NIR_OID, LabGenerator, PatientRecord

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.access.scan import ExportPlan

__all__ = ["Trace", "find_in_leak", "leak_row", "maker", "plant_for_package", "seed"]

_RANDOM = random.SystemRandom()  # the canaries' seed and days: not to be guessed
_TRIES = 400  # generated patients tried for one canary that fits a package's selection


def seed(u: Unit, tenant_id: str, count: int) -> list[Canary]:
    """``labvault canary seed``: plant ``count`` generated canaries in the lab (its lab_admin or
    lab_dpo: ``canary:seed``)."""
    return u.seed_canaries(tenant_id, count, maker(tenant_id))


def plant_for_package(u: Unit, tenant_id: str, package_id: str, plan: ExportPlan) -> bool:
    """A package's own canary, planted when the package is planned (only in a lab that has seeded
    canaries); see ``Unit.plant_package_canary``."""
    return u.plant_package_canary(tenant_id, package_id, plan, maker(tenant_id))


def maker(tenant_id: str) -> Maker:
    """What the gateway calls to make canaries (``generate``, under an unpredictable seed)."""

    def make(count: int, first: date, last: date, codes: frozenset[tuple[str, str]] | None) -> Sequence[Planted]:
        return [
            (r.identity, r.requests, r.specimens, r.results)
            for r in generate(tenant_id, count, first=first, last=last, codes=codes)
        ]

    return make


_NAMES = {
    "nir": ("nir", "ins", "nir_ins", "numero_secu"),
    "family": ("family_name", "nom", "nom_usage", "nom_naissance", "birth_name", "last_name"),
    "given": ("given_names", "prenom", "prenoms", "first_given_name", "first_name"),
    "born": ("birth_date", "date_naissance", "ddn", "born"),
}


def _pick(row: Mapping[str, Any], what: str) -> Any:
    lowered = {str(k).strip().lower(): v for k, v in row.items()}
    return next((lowered[k] for k in _NAMES[what] if lowered.get(k) not in (None, "")), None)


def _date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()[:10]
    for parse in (date.fromisoformat, lambda s: datetime.strptime(s, "%d/%m/%Y").date()):
        try:
            return parse(text)
        except ValueError:
            continue
    return None


def leak_row(row: Mapping[str, Any]) -> tuple[str | None, str | None, str | None, date | None]:
    """(NIR, family name, given names, birth date) of a leaked row (None where absent or unreadable)."""
    nir, family, given = (_pick(row, k) for k in ("nir", "family", "given"))
    return (
        None if nir is None else str(nir),
        None if family is None else str(family),
        None if given is None else str(given),
        _date(_pick(row, "born")),
    )


def _shifted(record: PatientRecord, request_id: str, day: date) -> PatientRecord:
    """One request of ``record`` (its specimens and results), every time moved so that its
    collection falls on ``day`` (same hour)."""
    (req,) = [q for q in record.requests if q.request_id == request_id]
    specs = [s for s in record.specimens if s.request_id == request_id]
    collected = min((s.collected_at for s in specs), default=req.requested_at)
    delta = timedelta(days=day.toordinal() - collected.date().toordinal())

    def move(v: datetime | None) -> datetime | None:
        return None if v is None else v + delta

    return dataclasses.replace(
        record,
        requests=[dataclasses.replace(req, requested_at=req.requested_at + delta, reported_at=move(req.reported_at))],
        specimens=[
            dataclasses.replace(s, collected_at=s.collected_at + delta, received_at=move(s.received_at)) for s in specs
        ],
        results=[
            dataclasses.replace(r, validated_at=move(r.validated_at))
            for r in record.results
            if r.request_id == request_id
        ],
    )


def generate(
    tenant_id: str,
    count: int,
    *,
    first: date,
    last: date,
    codes: frozenset[tuple[str, str]] | None = None,
) -> list[PatientRecord]:
    """``count`` generated patients (an unpredictable seed) with one request each, collected between
    ``first`` and ``last``, of results of ``codes`` only (None: any) and of no sensitive category, with
    a qualified INS-NIR identity (a package lets an INS out only with a qualified identity). Fewer
    when the selection is too narrow for the generator's panels."""
    gen = LabGenerator(tenant_id, _RANDOM.getrandbits(64), prescribers=0)
    rng = _RANDOM
    out: list[PatientRecord] = []
    for index in range(_TRIES * count):
        if len(out) == count:
            break
        rec = gen.patient(index)
        ident = rec.identity
        if ident.identity_status is not IdentityStatus.QUALIFIED or ident.ins_oid != INS_NIR_OID:
            continue
        lo = max(first, ident.birth_date + timedelta(days=1))
        if lo > last:
            continue
        kept = [
            r
            for r in rec.results
            if r.sensitivity is Sensitivity.OTHER and (codes is None or (r.code_system, r.code) in codes)
        ]
        if not kept:
            continue
        rec = dataclasses.replace(rec, results=kept)
        day = date.fromordinal(rng.randint(lo.toordinal(), last.toordinal()))
        out.append(_shifted(rec, kept[0].request_id, day))
    return out


def find_in_leak(u: Unit, tenant_id: str, rows: Iterable[Mapping[str, Any]]) -> list[Trace]:
    """The canaries among ``rows`` (their position in ``rows``, marker and package id: None for a
    canary the lab seeded, a package's id for the canary planted into that package only).
    Authorised as ``canary:list`` (the lab's lab_admin and lab_dpo); audited as ``canary:trace``."""
    return u.canaries_among(tenant_id, [leak_row(r) for r in rows])
