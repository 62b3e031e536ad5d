"""The gateway's part for monitoring: canaries: each lab's planted synthetic patients, and what touching one does.

A canary is a generated patient (made by ``labvault.synth`` through ``labvault.monitoring.canaries``:
an identity with realistic traits, one request, its specimen and a few results) that the lab
plants among its own and that no legitimate work reads: patient searches, the whole-lab result
scan behind the worklists and exports leave it out, unless an export's instruction names it.
Reading one anyway (its identity, its requests or results, by anybody) writes a ``canary:touch``
event in the same unit as the read, which the monitoring rules raise at once as a critical alert
(H1).

The ``canary`` table holds a *marker* per canary, not its id: a keyed hash (the lab's blind-index
key, use ``canary``) of the patient's pseudonym, itself a keyed hash of the patient id. Someone
with a copy of the database and without the lab's keys cannot tell which patients, requests or
results are canaries; the gateway tells with one HMAC per pseudonym, against the lab's markers read
once per unit.

Each export or migration package of a lab that has seeded canaries carries one more, its own: a
canary planted when the package is planned (``plant_package_canary``), shaped to the package's
selection (collected in its period, of its codes, a qualified identity), recorded with the
package's id (``package_id``) and written into that package only. A leaked file's rows lead back to
it through the blind indexes (``canaries_among``; ``labvault.monitoring.canaries.find_in_leak``):
the leaked-sample matcher of H3.

Policy actions (``policy.LAB_MONITORING``, a lab's ``lab_admin`` and ``lab_dpo`` only: the vendor
plants nothing in a lab without the lab): ``canary:seed`` plants, ``canary:list`` lists the lab's
canaries and traces a leaked file's rows to them. A package's canary is planted under the
package's own authorisation (``migration:plan``, a lab's signed instruction), and only in a lab that
has seeded canaries itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from labvault.access.orders import request_status
from labvault.access.state import UnitState
from labvault.domain.identifiers import validate_nir
from labvault.domain.models import Urgency, Workflow
from labvault.errors import InvalidInput
from labvault.ids import utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.scan import ExportPlan
    from labvault.access.tenants import TenantCrypto
    from labvault.domain.models import Identity, Request, Result, Specimen

# A generated patient to plant: its identity, requests, specimens and results.
Planted = tuple["Identity", Sequence["Request"], Sequence["Specimen"], Sequence["Result"]]
# What makes canaries (``labvault.monitoring.canaries.maker``, from ``labvault.synth``): ``count``
# patients collected between two days, of results of the codes given (None: any).
Maker = Callable[[int, date, date, frozenset[tuple[str, str]] | None], Sequence[Planted]]

MAX_SEED = 50  # canaries planted by one seed
_RECENT_DAYS = 90  # a seeded canary's request: within this many days before its planting
_CHUNK = 500


@dataclass(frozen=True)
class Canary:
    """One of the lab's canaries, as ``canaries`` lists it (references only)."""

    marker: str  # hex: what ``canary:touch`` events name
    patient_id: str | None  # None: its identity is no longer stored (purged, end of contract)
    package_id: str | None  # the package it was planted in (None: seeded by the lab)
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class Trace:
    """A leaked row that is a canary: the row's position, the canary's marker and package."""

    row: int
    marker: str
    package_id: str | None


@dataclass
class _Known:
    """A lab's markers (read once per unit) and the pseudonyms checked so far."""

    package: dict[bytes, str | None]  # marker -> package id
    seen: dict[str, bytes | None]  # pseudonym -> its marker (None: not a canary)
    touched: set[bytes] = dataclasses.field(default_factory=set)  # recorded in this unit already


def _index_version(c: TenantCrypto) -> int:
    return max((v for purpose, v, _ in c.versions if purpose == "index"), default=1)


class Canaries(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""

    if TYPE_CHECKING:
        # records.Records
        def _add_patients(self, tenant_id: str, identities: Sequence[Identity], *, audit: bool = True) -> int: ...

    _canary_known: dict[str, _Known] | None = None  # per lab, loaded at the unit's first check
    _canary_package: dict[str, str] | None = None  # per lab, the package this unit writes

    # -- the lab's own commands ------------------------------------------------------------------

    def seed_canaries(self, tenant_id: str, count: int, make: Maker) -> list[Canary]:
        """Plant ``count`` canaries made by ``make`` in the lab (``canary:seed``), their requests
        within the last days; audited with their markers only."""
        self._authorise(tenant_id, "canary:seed")
        if not 1 <= count <= MAX_SEED:
            raise InvalidInput(f"a seed plants 1 to {MAX_SEED} canaries")
        today = utcnow().date()
        records = make(count, today - timedelta(days=_RECENT_DAYS), today, None)
        planted = self._plant(tenant_id, records, None)
        self._record(tenant_id, "canary:seed", "canary", len(planted), refs=[c.marker for c in planted])
        return planted

    def canaries(self, tenant_id: str) -> list[Canary]:
        """The lab's canaries (``canary:list``), oldest first. Their patient ids are found by
        hashing the lab's identity ids (nothing decrypted, no canary touched)."""
        self._authorise(tenant_id, "canary:list")
        ct = t.canary
        rows = self.conn.execute(select(ct).where(self._tf(ct, tenant_id)).order_by(ct.c.created_at, ct.c.marker)).all()
        by_marker: dict[bytes, str] = {}
        if rows:
            wanted = {bytes(r.marker) for r in rows}
            index = self._crypto(tenant_id).index
            pi = t.patient_identity
            for pid in self.conn.execute(select(pi.c.patient_id).where(self._tf(pi, tenant_id))).scalars():
                marker = index.canary(index.pseudonym(pid))
                if marker in wanted:
                    by_marker[marker] = pid
        out = [
            Canary(
                bytes(r.marker).hex(),
                by_marker.get(bytes(r.marker)),
                r.package_id,
                r.created_at if r.created_at.tzinfo else r.created_at.replace(tzinfo=UTC),
                r.created_by,
            )
            for r in rows
        ]
        self._record(tenant_id, "canary:list", "canary", len(out))
        return out

    def canaries_among(
        self, tenant_id: str, rows: Sequence[tuple[str | None, str | None, str | None, date | None]]
    ) -> list[Trace]:
        """H3: which of these (NIR, family name, given names, birth date) rows, read from a leaked
        file, are the lab's canaries, through the lab's blind indexes (``canary:list``). Audited as
        ``canary:trace`` with the markers found; nothing is decrypted and no canary is touched."""
        self._authorise(tenant_id, "canary:list")
        c = self._crypto(tenant_id)
        by_key: dict[bytes, list[int]] = {}
        for k, (nir, family, given, born) in enumerate(rows):
            if nir:
                try:
                    by_key.setdefault(c.index.nir(validate_nir(nir)), []).append(k)
                except (InvalidInput, ValueError):
                    pass
            if family and given and born is not None:
                by_key.setdefault(c.index.name(family, given, born), []).append(k)
        pi = t.patient_identity
        hits: dict[int, str] = {}
        keys = sorted(by_key)
        for part in range(0, len(keys), _CHUNK):
            chunk = keys[part : part + _CHUNK]
            for r in self.conn.execute(
                select(pi.c.patient_id, pi.c.nir_bidx, pi.c.name_bidx).where(
                    self._tf(pi, tenant_id), pi.c.nir_bidx.in_(chunk) | pi.c.name_bidx.in_(chunk)
                )
            ):
                for key in (r.nir_bidx, r.name_bidx):
                    for k in by_key.get(bytes(key), []) if key is not None else []:
                        hits.setdefault(k, r.patient_id)
        known = self._canary_markers(tenant_id)
        out = []
        for k in sorted(hits):
            marker = c.index.canary(c.index.pseudonym(hits[k]))
            if marker in known.package:
                out.append(Trace(k, marker.hex(), known.package[marker]))
        self._record(tenant_id, "canary:trace", "canary", len(out), refs=sorted({x.marker for x in out}))
        return out

    # -- a package's own canary -----------------------------------------------------------------------

    def plant_package_canary(self, tenant_id: str, package_id: str, plan: ExportPlan, make: Maker) -> bool:
        """Plant the canary of package ``package_id`` (its plan being made under ``migration:plan``),
        shaped to ``plan``'s selection, and let this unit's export write it. Only in a lab that has
        seeded canaries; False when none is planted (none seeded, or none fits the selection)."""
        self._authorise(tenant_id, "migration:plan")
        known = self._canary_markers(tenant_id)
        if package_id in known.package.values():
            return self.use_package_canary(tenant_id, package_id)
        if not any(p is None for p in known.package.values()):
            return False
        last = min(plan.collected_to, utcnow().date())
        records = make(1, plan.collected_from, last, plan.codes) if plan.collected_from <= last else ()
        if not records:
            return False
        planted = self._plant(tenant_id, records, package_id)
        self._record(tenant_id, "canary:plant", "canary", len(planted), refs=[package_id])
        return self.use_package_canary(tenant_id, package_id)

    def use_package_canary(self, tenant_id: str, package_id: str) -> bool:
        """This unit writes package ``package_id``: its own canary goes into it (``export``)."""
        if package_id not in self._canary_markers(tenant_id).package.values():
            return False
        if self._canary_package is None:
            self._canary_package = {}
        self._canary_package[tenant_id] = package_id
        return True

    # -- what the read paths call (one line each) ------------------------------------------------

    def _canary_check(self, tenant_id: str) -> Callable[[str], bytes | None] | None:
        """None when the lab has no canary (the common case: nothing to hash); else a function of a
        pseudonym giving its marker, or None for an ordinary patient (memoised for the unit)."""
        known = self._canary_markers(tenant_id)
        if not known.package:
            return None
        index = self._crypto(tenant_id).index
        seen, package = known.seen, known.package

        def check(pseudonym: str) -> bytes | None:
            try:
                return seen[pseudonym]
            except KeyError:
                marker = index.canary(pseudonym)
                found = seen[pseudonym] = marker if marker in package else None
                return found

        return check

    def _is_canary(self, tenant_id: str, patient_id: str) -> bool:
        check = self._canary_check(tenant_id)
        return check is not None and check(self._crypto(tenant_id).index.pseudonym(patient_id)) is not None

    def _canary_own_package(self, tenant_id: str, marker: bytes) -> bool:
        """Whether ``marker`` is the canary of the package this unit writes."""
        package = (self._canary_package or {}).get(tenant_id)
        return package is not None and self._canary_markers(tenant_id).package.get(marker) == package

    def _canary_touched(
        self, tenant_id: str, patient_ids: Iterable[str] = (), *, pseudonyms: Iterable[str] = ()
    ) -> None:
        """Record ``canary:touch`` (in this unit, with the markers only) if any of these patients
        (by id or by pseudonym) is a canary."""
        check = self._canary_check(tenant_id)
        if check is None:
            return
        index = self._crypto(tenant_id).index
        every = [*(index.pseudonym(p) for p in patient_ids), *pseudonyms]
        known = self._canary_markers(tenant_id)
        fresh = {m for m in map(check, every) if m is not None} - known.touched
        known.touched |= fresh
        markers = sorted(m.hex() for m in fresh)
        if markers:  # one touch per canary per unit, however many of its rows the unit opened
            self._record(tenant_id, "canary:touch", "canary", len(markers), refs=markers)

    # -- the gateway's own ----------------------------------------------------------------------

    def _canary_markers(self, tenant_id: str) -> _Known:
        if self._canary_known is None:
            self._canary_known = {}
        known = self._canary_known.get(tenant_id)
        if known is None:
            self._scope(tenant_id)
            ct = t.canary
            rows = self.conn.execute(select(ct.c.marker, ct.c.package_id).where(self._tf(ct, tenant_id))).all()
            known = self._canary_known[tenant_id] = _Known({bytes(r.marker): r.package_id for r in rows}, {})
        return known

    def _like_the_labs_own(self, tenant_id: str, records: Sequence[Planted]) -> list[Planted]:
        """The canaries' rows written as the lab's own latest requests are: a status computed from
        their results always; and, when most of the lab's latest requests were entered in the
        platform (``entered_by`` set), entered (by the account planting them, routine) with their
        results validated, so that the plain columns of a database copy do not single them out."""
        q = t.request
        latest = self.conn.execute(
            select(q.c.entered_by).where(self._tf(q, tenant_id)).order_by(q.c.request_id.desc()).limit(200)
        ).all()
        entered = sum(1 for r in latest if r.entered_by is not None) * 2 > len(latest) > 0
        who = self.principal.account_id
        out: list[Planted] = []
        for patient, requests, specimens, results in records:
            mine: list[Result] = list(results)
            if entered:
                mine = [
                    dataclasses.replace(
                        x,
                        workflow=Workflow.BIOLOGICAL,
                        entered_by=who,
                        technical_by=who,
                        biological_by=who,
                        catalogue_version=0,
                    )
                    for x in mine
                ]
            by_request: dict[str, list[Result]] = {}
            for x in mine:
                by_request.setdefault(x.request_id, []).append(x)
            shaped = [
                dataclasses.replace(
                    r,
                    status=request_status([[x] for x in by_request.get(r.request_id, [])]),
                    entered_by=who if entered else r.entered_by,
                    urgency=Urgency.ROUTINE if entered else r.urgency,
                )
                for r in requests
            ]
            out.append((patient, shaped, specimens, mine))
        return out

    def _plant(self, tenant_id: str, records: Sequence[Planted], package_id: str | None) -> list[Canary]:
        """Store generated patients (unaudited parts: the caller records one canary event) and their markers."""
        c = self._crypto(tenant_id)
        index = c.index
        records = self._like_the_labs_own(tenant_id, records)
        self._add_patients(tenant_id, [r[0] for r in records], audit=False)
        requests = [q for r in records for q in r[1]]
        self._add_requests(tenant_id, requests, audit=False)
        self._add_specimens(tenant_id, [s for r in records for s in r[2]], audit=False)
        pseudonyms = {q.request_id: index.pseudonym(q.patient_id) for q in requests}
        self._add_results(tenant_id, [x for r in records for x in r[3]], pseudonyms=pseudonyms, audit=False)
        now, who, version = utcnow(), self.principal.account_id, _index_version(c)
        planted = [
            Canary(index.canary(index.pseudonym(r[0].patient_id)).hex(), r[0].patient_id, package_id, now, who)
            for r in records
        ]
        rows: list[tuple[Any, ...]] = [
            (tenant_id, bytes.fromhex(x.marker), version, package_id, now, who) for x in planted
        ]
        self._insert(t.canary, ("tenant_id", "marker", "key_version", "package_id", "created_at", "created_by"), rows)
        if self._canary_known is not None:
            self._canary_known.pop(tenant_id, None)
        return planted
