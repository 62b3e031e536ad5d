"""Known patients and prescribers, found by blind index for the records an ingest is about to
store, as the national identity-vigilance rules (RNIV) want a patient matched.

For each incoming identity, in this order:

a. it carries an INS: the lab's identity with the same INS (``nir_bidx``) is it when the strict
   traits agree; the same INS with other traits is a conflict (``ins-traits``);
b. by the local identifiers its sender gave it (``patient_local_id.id_bidx`` of (system, value)):
   an identity holding one of them is it when the traits agree, a conflict otherwise
   (``local-id-traits``);
c. by exact strict traits (``traits_bidx``): exactly one identity is it; several are a conflict
   (``ambiguous-traits``); an identity holding another INS than the one received is another
   person (homonyms), not a candidate;
d. nothing: the identity is created (with the status it came with).

The strict traits agree when the birth name (or, on either side, the name used), the first given
name, the birth date and the sex are equal once normalised (``crypto.blind.normalise_name``).
Equal ``traits_bidx`` say so without decrypting anything; only a candidate whose blind index
differs is opened, inside the gateway, to compare the names leniently. A merged identity
(``merged_into``) stands for the one it was merged into.

A message with a conflicting identity is neither merged nor created: ``match_messages`` says so,
and ingest keeps the message in the identity-vigilance queue (``labvault.access.identities``).
A local identifier new to a matched identity is attached to it; an INS received for a matched
identity that has none is left unwritten: an INS is recorded when the lab qualifies the identity,
never from a message alone.

Identities of the same group of messages collapse: the first one with an INS, a local identifier
or (without either) exact traits is what the later ones match. Lookups are batched (IN lists of
blind indexes), each authorised as the creation it prepares.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Table, select

from labvault.crypto.blind import normalise_name
from labvault.domain.identifiers import normalise_nir
from labvault.domain.models import Identity, Prescriber
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.access.tenants import TenantCrypto

_CHUNK = 500
_MAX_MERGE_DEPTH = 32

INS_TRAITS = "ins-traits"
LOCAL_ID_TRAITS = "local-id-traits"
AMBIGUOUS_TRAITS = "ambiguous-traits"
REASONS = (INS_TRAITS, LOCAL_ID_TRAITS, AMBIGUOUS_TRAITS)
CREATE = "create"  # ``on_conflict``: a conflicting identity becomes a new one (see ``match_messages``)


@dataclass(frozen=True, slots=True)
class Match:
    """What one incoming identity is stored under: ``patient_id`` (a stored identity, or the one
    ``create`` is to be created with), and the local identifiers to attach to a stored one."""

    patient_id: str
    create: Identity | None = None
    attach: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    """A message whose identity points to a stored one with other traits: ``reason`` (one of
    ``REASONS``) and the stored identity it points to."""

    reason: str
    candidate_id: str


@dataclass(slots=True)
class _Row:
    patient_id: str
    nir_bidx: bytes | None
    traits_bidx: bytes | None
    merged_into: str | None
    enc: dict[str, bytes | None]


_TRAIT_COLUMNS = (
    "family_name_enc",
    "birth_name_enc",
    "given_names_enc",
    "first_given_enc",
    "birth_date_enc",
    "sex_enc",
)


@dataclass(slots=True)
class _Keys:
    ins: bytes | None
    local: list[tuple[bytes, tuple[str, str]]]
    traits: bytes


def match_messages(
    u: Unit, tenant_id: str, messages: Sequence[Sequence[Identity]], *, on_conflict: str | None = None
) -> list[dict[str, Match] | Conflict]:
    """For each message (its identities), {mapped patient id: Match}, or the Conflict that keeps it
    from being stored. ``on_conflict``: None (report the conflict), ``CREATE`` (the conflicting
    identity is created, without the INS or the local identifiers that pointed elsewhere), or a
    stored patient id (the conflicting identity is that patient): the lab's decision on a queued
    message."""
    u._authorise(tenant_id, "patient:identity:create")
    c = u._crypto(tenant_id)
    keys = {id(i): _keys(c, i) for msg in messages for i in msg}
    rows = _Rows(u, tenant_id)
    rows.by_ins(k.ins for k in keys.values() if k.ins is not None)
    owners = rows.local_owners(b for k in keys.values() for b, _ in k.local)
    rows.by_traits(
        k.traits
        for k in keys.values()
        if (k.ins is None or k.ins not in rows.ins) and not any(owners.get(b) for b, _ in k.local)
    )
    rows.resolve_merges()

    # What earlier messages of this group will create: found like stored identities.
    group_ins: dict[bytes, tuple[str, Identity, bytes]] = {}
    group_local: dict[bytes, tuple[str, Identity, bytes]] = {}
    group_traits: dict[bytes, str] = {}
    out: list[dict[str, Match] | Conflict] = []
    for msg in messages:
        decided: dict[str, Match] = {}
        adds: list[tuple[dict[bytes, Any], bytes, Any]] = []
        conflict: Conflict | None = None
        for ident in msg:
            k = keys[id(ident)]
            got = _decide(c, rows, owners, ident, k, group_ins, group_local, group_traits)
            if isinstance(got, Conflict):
                if on_conflict is None:
                    conflict = conflict or got
                    continue
                got = _forced(ident, k, owners, group_local, on_conflict)
            decided[ident.patient_id] = got
            if got.create is not None:
                new = got.create
                if new.nir is not None and k.ins is not None:
                    adds.append((group_ins, k.ins, (new.patient_id, new, k.traits)))
                for b, (system, value) in k.local:
                    if (system, value) in new.local_ids:
                        adds.append((group_local, b, (new.patient_id, new, k.traits)))
                adds.append((group_traits, k.traits, new.patient_id))
        if conflict is not None:
            out.append(conflict)
            continue
        for table, key, value in adds:
            table.setdefault(key, value)
        out.append(decided)
    return out


def _keys(c: TenantCrypto, i: Identity) -> _Keys:
    nir = normalise_nir(i.nir) if i.nir else ""
    return _Keys(
        c.index.nir(nir) if nir else None,
        [(c.index.local_id(system, value), (system, value)) for system, value in i.local_ids if value.strip()],
        c.index.traits(i.strict_birth_name, i.first_given, i.birth_date, i.sex),
    )


def _decide(
    c: TenantCrypto,
    rows: _Rows,
    owners: dict[bytes, list[str]],
    ident: Identity,
    k: _Keys,
    group_ins: dict[bytes, tuple[str, Identity, bytes]],
    group_local: dict[bytes, tuple[str, Identity, bytes]],
    group_traits: dict[bytes, str],
) -> Match | Conflict:
    found: str | None = None
    # a. by INS
    if k.ins is not None:
        stored = rows.ins.get(k.ins, [])
        for row in stored:
            if not rows.agree(c, row, ident, k.traits):
                return Conflict(INS_TRAITS, rows.final(row.patient_id))
        if stored:
            found = rows.final(stored[0].patient_id)
        elif k.ins in group_ins:
            pid, other, traits = group_ins[k.ins]
            if not _agree_identities(other, traits, ident, k.traits):
                return Conflict(INS_TRAITS, pid)
            found = pid
    # b. by the sender's local identifiers (checked even when the INS found the identity)
    for b, _ in k.local:
        for pid in owners.get(b, []):
            row = rows.by_id[pid]
            if not rows.agree(c, row, ident, k.traits):
                return Conflict(LOCAL_ID_TRAITS, rows.final(pid))
            found = found or rows.final(pid)
        if b in group_local and not owners.get(b):
            pid, other, traits = group_local[b]
            if not _agree_identities(other, traits, ident, k.traits):
                return Conflict(LOCAL_ID_TRAITS, pid)
            found = found or pid
    # c. by exact strict traits
    if found is None:
        # An identity holding another INS is another person, whatever its traits (homonyms).
        same = [r for r in rows.traits.get(k.traits, []) if r.nir_bidx is None or k.ins is None or r.nir_bidx == k.ins]
        targets = list(dict.fromkeys(rows.final(r.patient_id) for r in same))
        if len(targets) > 1:
            return Conflict(AMBIGUOUS_TRAITS, targets[0])
        if targets:
            found = targets[0]
        elif k.ins is None and k.traits in group_traits:
            found = group_traits[k.traits]
    if found is not None:
        return Match(found, attach=tuple(v for b, v in k.local if not owners.get(b)))
    # d. new
    return Match(ident.patient_id, create=ident)


def _forced(
    ident: Identity,
    k: _Keys,
    owners: dict[bytes, list[str]],
    group_local: dict[bytes, tuple[str, Identity, bytes]],
    on_conflict: str,
) -> Match:
    """The lab's decision on a conflicting identity."""
    free = tuple(v for b, v in k.local if not owners.get(b) and b not in group_local)
    if on_conflict == CREATE:
        # The INS that pointed to another identity is not copied: it is recorded once the lab
        # qualifies this identity. Nor are local identifiers another identity already holds.
        return Match(ident.patient_id, create=dataclasses.replace(ident, nir=None, local_ids=list(free)))
    return Match(on_conflict, attach=free)


def _agree_identities(a: Identity, a_traits: bytes, b: Identity, b_traits: bytes) -> bool:
    return a_traits == b_traits or _lenient(
        (a.birth_name, a.family_name), a.first_given, a.birth_date.isoformat(), a.sex, b
    )


def _lenient(names: tuple[str | None, str], first_given: str, birth_date: str, sex: str, b: Identity) -> bool:
    """Birth name or name used on either side, first given name, birth date and sex, normalised."""
    mine = {normalise_name(n) for n in names if n} - {""}
    theirs = {normalise_name(n) for n in (b.birth_name, b.family_name) if n} - {""}
    return (
        bool(mine & theirs)
        and normalise_name(first_given) == normalise_name(b.first_given)
        and birth_date == b.birth_date.isoformat()
        and sex.strip().upper() == b.sex.strip().upper()
    )


class _Rows:
    """The stored identities a group of messages may point to, read in batches."""

    def __init__(self, u: Unit, tenant_id: str) -> None:
        self.u, self.tenant_id = u, tenant_id
        self.by_id: dict[str, _Row] = {}
        self.ins: dict[bytes, list[_Row]] = {}
        self.traits: dict[bytes, list[_Row]] = {}

    def _select(self, column: Column[Any], values: Iterable[Any]) -> list[_Row]:
        pi = t.patient_identity
        wanted = list(dict.fromkeys(values))
        out: list[_Row] = []
        cols = [pi.c.patient_id, pi.c.nir_bidx, pi.c.traits_bidx, pi.c.merged_into] + [pi.c[n] for n in _TRAIT_COLUMNS]
        for k in range(0, len(wanted), _CHUNK):
            for r in self.u.conn.execute(
                select(*cols).where(self.u._tf(pi, self.tenant_id), column.in_(wanted[k : k + _CHUNK]))
            ):
                row = self.by_id.get(r.patient_id)
                if row is None:
                    row = self.by_id[r.patient_id] = _Row(
                        r.patient_id,
                        None if r.nir_bidx is None else bytes(r.nir_bidx),
                        None if r.traits_bidx is None else bytes(r.traits_bidx),
                        r.merged_into,
                        {n: getattr(r, n) for n in _TRAIT_COLUMNS},
                    )
                out.append(row)
        return out

    def by_ins(self, bidxs: Iterable[bytes]) -> None:
        for row in self._select(t.patient_identity.c.nir_bidx, bidxs):
            if row.nir_bidx is not None:
                self.ins.setdefault(row.nir_bidx, []).append(row)

    def by_traits(self, bidxs: Iterable[bytes]) -> None:
        for row in self._select(t.patient_identity.c.traits_bidx, bidxs):
            if row.traits_bidx is not None:
                self.traits.setdefault(row.traits_bidx, []).append(row)

    def local_owners(self, bidxs: Iterable[bytes]) -> dict[bytes, list[str]]:
        """{local id blind index: the patient ids holding it}, their identity rows read too."""
        lt = t.patient_local_id
        wanted = list(dict.fromkeys(bidxs))
        owners: dict[bytes, list[str]] = {}
        for k in range(0, len(wanted), _CHUNK):
            for r in self.u.conn.execute(
                select(lt.c.id_bidx, lt.c.patient_id).where(
                    self.u._tf(lt, self.tenant_id), lt.c.id_bidx.in_(wanted[k : k + _CHUNK])
                )
            ):
                owners.setdefault(bytes(r.id_bidx), []).append(r.patient_id)
        missing = {p for ps in owners.values() for p in ps} - self.by_id.keys()
        if missing:
            self._select(t.patient_identity.c.patient_id, sorted(missing))
        return {b: [p for p in ps if p in self.by_id] for b, ps in owners.items()}

    def resolve_merges(self) -> None:
        """Read the identities the found ones were merged into, as far as the chain goes."""
        for _ in range(_MAX_MERGE_DEPTH):
            missing = {r.merged_into for r in self.by_id.values() if r.merged_into} - self.by_id.keys()
            if not missing:
                return
            self._select(t.patient_identity.c.patient_id, sorted(m for m in missing if m))

    def final(self, patient_id: str) -> str:
        """The identity a patient id stands for: itself, or the one it was merged into."""
        seen = 0
        row = self.by_id.get(patient_id)
        while row is not None and row.merged_into and seen < _MAX_MERGE_DEPTH:
            patient_id, seen = row.merged_into, seen + 1
            row = self.by_id.get(patient_id)
        return patient_id

    def agree(self, c: TenantCrypto, row: _Row, ident: Identity, traits: bytes) -> bool:
        if row.traits_bidx is not None and row.traits_bidx == traits:
            return True
        col = c.cipher.column

        def o(name: str) -> str | None:
            blob = row.enc.get(name)
            return None if blob is None else col("patient_identity", name).open(row.patient_id, bytes(blob)).decode()

        given = o("given_names_enc") or ""
        first = o("first_given_enc") or (given.replace(",", " ").split() or [""])[0]
        return _lenient(
            (o("birth_name_enc"), o("family_name_enc") or ""),
            first,
            o("birth_date_enc") or "",
            o("sex_enc") or "",
            ident,
        )


def find_patient(u: Unit, tenant_id: str, ins: str | None, local_ids: Sequence[tuple[str, str]]) -> str | None:
    """The stored identity an INS or one of the local identifiers names (merges followed), or None;
    for messages that name a patient without traits (an HL7 merge)."""
    u._authorise(tenant_id, "patient:identity:create")
    c = u._crypto(tenant_id)
    rows = _Rows(u, tenant_id)
    nir = normalise_nir(ins) if ins else ""
    if nir:
        rows.by_ins([c.index.nir(nir)])
    owners = rows.local_owners(c.index.local_id(s, v) for s, v in local_ids if v.strip())
    rows.resolve_merges()
    if nir and rows.ins.get(c.index.nir(nir)):
        return rows.final(rows.ins[c.index.nir(nir)][0].patient_id)
    for s, v in local_ids:
        found = owners.get(c.index.local_id(s, v)) if v.strip() else None
        if found:
            return rows.final(found[0])
    return None


def match_prescribers(u: Unit, tenant_id: str, prescribers: Sequence[Prescriber]) -> dict[str, str]:
    """Prescribers by RPPS: the stored one with the same RPPS, or the first of ``prescribers``."""
    u._authorise(tenant_id, "prescriber:create")
    c = u._crypto(tenant_id)
    pr = t.prescriber
    return _match(
        u,
        tenant_id,
        pr,
        pr.c.rpps_bidx,
        pr.c.prescriber_id,
        [(c.index.rpps(p.rpps), p.prescriber_id) for p in prescribers],
    )


def _match(
    u: Unit, tenant_id: str, table: Table, bidx_col: Column[Any], id_col: Column[Any], pairs: list[tuple[bytes, str]]
) -> dict[str, str]:
    """(blind index, mapped id) pairs -> {mapped id: stored id}: the stored row with the same blind
    index if there is one, else the first mapped id with it."""
    by_bidx: dict[bytes, list[str]] = {}
    for bidx, i in pairs:
        by_bidx.setdefault(bidx, []).append(i)
    existing: dict[bytes, str] = {}
    bidxs = list(by_bidx)
    for k in range(0, len(bidxs), _CHUNK):
        for bidx, stored in u.conn.execute(
            select(bidx_col, id_col).where(u._tf(table, tenant_id), bidx_col.in_(bidxs[k : k + _CHUNK]))
        ):
            existing.setdefault(bytes(bidx), stored)
    return {i: existing.get(bidx, ids[0]) for bidx, ids in by_bidx.items() for i in ids}
