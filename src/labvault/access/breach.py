"""The gateway's part for breach response: a leaked file's rows matched through every lab's blind
indexes, the result stored per lab (``leak_analysis``, ``leak_match``), the affected list opened for
the lab's DPO only.

Nothing stored is decrypted to match: the rows' keys (a NIR; a family or birth name with the first
given name and the birth date; the strict traits when the sex is known), normalised by
``labvault.breach.analyze``, are hashed once per lab with the lab's blind-index keys (one C call per
distinct key, ``BlindIndex.many``) and looked up in batches. An identity merged into another counts
as its survivor; a row that finds several patients of one lab is ``ambiguous`` (never guessed), a row
that finds none in any lab is ``unmatched``. A lab's canaries found among the rows are counted apart
(they are nobody) and name their package.

The probable source of a lab's part: (1) export ids: each of the lab's packages (``migration_job``
with a fingerprint key) derives the ids it gave the matched patients (``fingerprint.id_map``:
``("patient", pseudonym)``) and the leak's ids and links are counted against them; (2) a package's
own canary; (3) else the package whose selection (period, fields) best covers the matched rows,
"probable", with its score.

Who (the policy table): ``breach:analyze``: the vendor's security officer against every lab (stored
on the platform), a lab's DPO against its own lab only (stored on the lab). Every lab searched gets a
``breach:analyze`` event in its own trail with the counts (a lab learns that its patients were
probed: nobody uses the analysis as a silent membership oracle). ``leak_match`` is ``incident:read``
(counts, categories, fields, source); ``affected_patients`` opens the sealed list (``incident:letters``:
the lab's DPO) and is audited with the count.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, select

from labvault.access.state import UnitState
from labvault.crypto.blind import name_text, traits_text
from labvault.crypto.keys import PLATFORM
from labvault.crypto.packages import PackageKeys, SealedKeys
from labvault.errors import InvalidInput, LabvaultError, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

LOOKUP_CHUNK = 5000  # blind values per IN list
WHOLE_COLUMN = 4  # a lab read whole when the leak's keys exceed a quarter of its patients

# Package fields each kind of leaked column may come from (the selection overlap's field part).
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "nir": ("identity.nir",),
    "family_name": ("identity.family_name",),
    "birth_name": ("identity.birth_name",),
    "given_names": ("identity.given_names",),
    "full_name": ("identity.family_name", "identity.given_names"),
    "birth_date": ("identity.birth_date",),
    "sex": ("identity.sex",),
    "code": ("result.code",),
    "label": ("result.code", "result.label"),
    "value": ("result.value_num", "result.value_text"),
    "unit": ("result.unit",),
    "text": ("result.comment",),
    "date": ("specimen.collected_at", "request.requested_at", "result.observed_at"),
}


@dataclass(slots=True)
class LeakDigest:
    """What matching needs of leaked files, normalised (``labvault.breach.analyze`` builds it; it is
    never stored): the distinct keys and, per row, indexes into them (-1: none)."""

    nirs: list[str] = field(default_factory=list)  # normalised, 13 digits
    names: list[tuple[str, str, date]] = field(default_factory=list)  # (family or birth name, first given, born)
    traits: list[tuple[str, str, date, str]] = field(default_factory=list)  # (birth name, first given, born, sex)
    row_nir: list[int] = field(default_factory=list)
    row_name: list[int] = field(default_factory=list)  # the family name's key
    row_bname: list[int] = field(default_factory=list)  # the birth name's key (when written apart)
    row_traits: list[int] = field(default_factory=list)
    row_cats: list[int] = field(default_factory=list)  # bit k: ``categories[k]`` named on the row
    row_date: list[date | None] = field(default_factory=list)  # the row's first other date (exam, collection)
    row_refs: dict[int, tuple[str, ...]] = field(default_factory=dict)  # row -> its export ids and links
    row_aux: set[int] = field(default_factory=set)  # rows that are no result (a package's identity, request...)
    categories: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # the kinds of data exposed (column kinds), sorted
    files: list[dict[str, Any]] = field(default_factory=list)  # per file: sha256, size, format, ... (no value)
    # optional, from ``breach.analyze``: each row's group of rows with the same keys, and each group's
    # (NIR, name, birth name, traits) key indexes; derived from the four row lists when left empty
    row_group: list[int] = field(default_factory=list)
    groups: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.row_nir)


@dataclass(frozen=True, slots=True)
class Source:
    """Where a lab's part probably comes from: a package (a migration or export job) and how it was
    found (``fingerprint``: its export ids, ``canary``: its own canary, ``selection``: the best
    overlap of its selection, probable), with a score in 0..1 and the hits behind it."""

    package_id: str
    method: str
    score: float
    hits: int

    def to_json(self) -> dict[str, Any]:
        return {"package_id": self.package_id, "method": self.method, "score": round(self.score, 4), "hits": self.hits}


@dataclass(frozen=True, slots=True)
class LabMatch:
    """One lab's part of an analysis: references and counts only."""

    tenant_id: str
    analysis_id: str
    patients: int  # affected patients, exact (survivors of merges, canaries left out)
    records: int  # leaked rows of those patients
    ambiguous: int  # rows matching several patients of the lab
    categories: dict[str, int]  # category -> rows
    fields: tuple[str, ...]
    source: Source | None
    canaries: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "analysis_id": self.analysis_id,
            "patients": self.patients,
            "records": self.records,
            "ambiguous": self.ambiguous,
            "categories": dict(self.categories),
            "fields": list(self.fields),
            "source": self.source.to_json() if self.source else None,
            "canaries": self.canaries,
        }


@dataclass(frozen=True, slots=True)
class Analysis:
    """An analysis as the platform (or the lab that ran it) sees it: files' layouts, counts, labs."""

    analysis_id: str
    tenant_id: str  # PLATFORM, or the lab whose DPO ran it
    incident_id: str | None
    files: list[dict[str, Any]]
    rows_total: int
    rows_matched: int
    rows_ambiguous: int
    rows_unmatched: int
    labs: tuple[str, ...]
    summary: dict[str, Any]
    seconds: float | None
    created_by: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "tenant_id": self.tenant_id,
            "incident_id": self.incident_id,
            "files": self.files,
            "rows_total": self.rows_total,
            "rows_matched": self.rows_matched,
            "rows_ambiguous": self.rows_ambiguous,
            "rows_unmatched": self.rows_unmatched,
            "labs": list(self.labs),
            "summary": self.summary,
            "seconds": self.seconds,
            "created_at": self.created_at.isoformat(),
        }


_Hit = tuple[str, ...]  # the survivors a key found in one lab (sorted)


@dataclass(slots=True)
class _LabPart:
    tenant_id: str
    patients: set[str]
    rows: dict[str, list[int]]  # patient -> its rows
    records: int  # its rows that are results (not a package's identity or request records)
    ambiguous: int
    categories: dict[str, int]
    source: Source | None
    canaries: int


# Each blind-index column's own index (tenant_id, column), named to SQLite's planner.
_INDEX = {
    str(ix.columns[1].name): str(ix.name)
    for ix in t.patient_identity.indexes
    if len(ix.columns) == 2 and next(iter(ix.columns)).name == "tenant_id"
}
# the same lookup as the ``select`` below, with the index named: only schema names, values all bound
_SQLITE_LOOKUP = {
    column: f"SELECT {column}, patient_id, merged_into FROM patient_identity INDEXED BY {ix}"  # noqa: S608
    f" WHERE tenant_id = ? AND {column} IN "
    for column, ix in _INDEX.items()
}
_SQLITE_WHOLE = {
    column: f"SELECT {column}, patient_id, merged_into FROM patient_identity"  # noqa: S608
    f" WHERE tenant_id = ? AND {column} IS NOT NULL"
    for column in _INDEX
}
_Combo = tuple[int, int, int, int]  # a row's key indexes: NIR, name, birth name, traits


def _groups(d: LeakDigest) -> tuple[list[_Combo], list[int]]:
    """The distinct combinations of keys, and each row's index into them (matched once per lab)."""
    rg = d.row_group
    if rg and len(rg) == d.rows and min(rg) >= 0 and max(rg) < len(d.groups):
        return d.groups, rg
    index: dict[_Combo, int] = {}
    combos: list[_Combo] = []
    row_group: list[int] = []
    for combo in zip(d.row_nir, d.row_name, d.row_bname, d.row_traits, strict=True):
        g = index.get(combo)
        if g is None:
            g = index[combo] = len(combos)
            combos.append(combo)
        row_group.append(g)
    return combos, row_group


def _aad(tenant_id: str, analysis_id: str) -> bytes:
    return f"leak_match:{tenant_id}:{analysis_id}".encode()


class Breach(UnitState):
    """Mixed into Unit; every method authorises through the policy table and is audited."""

    if TYPE_CHECKING:
        from labvault.access.canaries import _Known

        # canaries.Canaries
        def _canary_markers(self, tenant_id: str) -> _Known: ...

    # -- analysing ---------------------------------------------------------------------------------

    def analyse_leak(
        self,
        digest: LeakDigest,
        *,
        tenant_id: str | None = None,
        incident_id: str | None = None,
        started: float | None = None,
    ) -> tuple[Analysis, list[LabMatch]]:
        """Match ``digest`` against every lab (the security officer, ``tenant_id`` None) or against
        the caller's own lab (a lab's DPO: ``tenant_id`` its lab); store the analysis and each lab's
        part; record ``breach:analyze`` in every lab searched, with counts. ``started``: a
        ``time.perf_counter()`` reading, to store the seconds taken."""
        import time

        p = self.principal
        if tenant_id is None or tenant_id == PLATFORM:
            owner = PLATFORM
            self._authorise(PLATFORM, "breach:analyze")
            if not p.is_platform:
                self._deny(p.tenant_id, "breach:analyze", "a lab's analysis is run against the lab itself: name it")
            self._scope("*")
            labs = [
                str(r) for r in self.conn.execute(select(t.tenant.c.tenant_id).order_by(t.tenant.c.tenant_id)).scalars()
            ]
            labs = [lab for lab in labs if lab != PLATFORM]
            for lab in labs:
                self._authorise(lab, "breach:analyze")
        else:
            # a lab named: any refusal is in that lab's trail (an attempted probe is the lab's to see)
            self._authorise(tenant_id, "breach:analyze")
            owner = PLATFORM if p.is_platform else tenant_id
            if p.is_platform:
                self._authorise(PLATFORM, "breach:analyze")
            labs = [tenant_id]
        if incident_id is not None and len(incident_id) > 64:
            raise InvalidInput("the incident id is too long")
        n = digest.rows
        if not (len(digest.row_name) == len(digest.row_bname) == len(digest.row_traits) == n):
            raise InvalidInput("a leak digest holds one key index of each kind per row")
        analysis_id = new_id()
        now = utcnow()
        matched_rows: set[int] = set()
        ambiguous_rows: set[int] = set()
        parts: list[_LabPart] = []
        groups = _groups(digest) if labs else ([], [])
        for lab in labs:
            part, ambiguous = self._match_lab(lab, digest, groups)
            for rows in part.rows.values():
                matched_rows.update(rows)
            parts.append(part)
            ambiguous_rows.update(ambiguous)
        ambiguous_rows -= matched_rows
        # what each lab holds, stored and audited
        out: list[LabMatch] = []
        for part in parts:
            records = part.records
            if part.patients or part.ambiguous or part.canaries:
                out.append(self._store_part(analysis_id, part, digest, now))
            self._record(
                part.tenant_id,
                "breach:analyze",
                "leak",
                len(part.patients),
                refs=[analysis_id, f"records:{records}", f"ambiguous:{part.ambiguous}", f"rows:{n}"],
            )
        concerned = tuple(m.tenant_id for m in out if m.patients or m.ambiguous)
        summary = {
            "labs": {
                m.tenant_id: {"patients": m.patients, "records": m.records, "ambiguous": m.ambiguous} for m in out
            },
            "patients": sum(m.patients for m in out),
            "records": len(matched_rows),
            "fields": list(digest.fields),
            "canaries": sum(m.canaries for m in out),
            "labs_searched": len(labs),
        }
        seconds = None if started is None else round(time.perf_counter() - started, 3)
        row = {
            "tenant_id": owner,
            "analysis_id": analysis_id,
            "incident_id": incident_id,
            "files": json.dumps(digest.files, sort_keys=True),
            "rows_total": n,
            "rows_matched": len(matched_rows),
            "rows_ambiguous": len(ambiguous_rows),
            "rows_unmatched": n - len(matched_rows) - len(ambiguous_rows),
            "labs": json.dumps(list(concerned)),
            "summary": json.dumps(summary, sort_keys=True),
            "seconds": seconds,
            "created_by": p.account_id,
            "created_at": now,
        }
        self._scope(owner)
        self.conn.execute(t.leak_analysis.insert().values(**row))
        if owner == PLATFORM:
            self._record(PLATFORM, "breach:analyze", "leak", len(matched_rows), refs=[analysis_id, *concerned])
        return self._analysis_of(row), out

    def _match_lab(self, lab: str, d: LeakDigest, groups: tuple[list[_Combo], list[int]]) -> tuple[_LabPart, list[int]]:
        """One lab's hits: each distinct key hashed once, looked up in batches, merges followed."""
        index = self._crypto(lab).index
        size = self._lab_size(lab)
        if size == 0:  # nobody to find: nothing hashed (the lab's trail still records the analysis)
            return _LabPart(lab, set(), {}, 0, 0, {}, None, 0), []
        # the NIR first: a row it finds is settled; names only for the rows left, traits last.
        # Rows are matched by their distinct key combinations (a leak repeats a patient on each result).
        combos, row_group = groups
        nir_hits = self._hits(lab, "nir_bidx", index.many("nir", d.nirs), size)
        # a NIR two patients of the lab share (an entry error, a generator's draw) is narrowed by the
        # row's name or traits when they pick exactly one of them; otherwise the row stays ambiguous
        left = [g for g in combos if g[0] < 0 or len(nir_hits[g[0]] or ()) != 1]
        wanted = sorted(({g[1] for g in left} | {g[2] for g in left}) - {-1})
        names = d.names
        found_names = self._hits(lab, "name_bidx", index.many("name", (name_text(*names[j]) for j in wanted)), size)
        name_hits = dict(zip(wanted, found_names, strict=True))
        left = [g for g in left if not (name_hits.get(g[1]) or name_hits.get(g[2]))]
        wanted = sorted({g[3] for g in left} - {-1})
        traits = d.traits
        found_traits = self._hits(
            lab, "traits_bidx", index.many("traits", (traits_text(*traits[j]) for j in wanted)), size
        )
        traits_hits = dict(zip(wanted, found_traits, strict=True))
        # per combination: the list its rows go to (one per patient), None when it finds nobody
        rows: dict[str, list[int]] = {}
        target: list[list[int] | None] = []
        ambiguous_groups: set[int] = set()
        for g, combo in enumerate(combos):
            j = combo[0]
            hit = nir_hits[j] if j >= 0 else None
            if hit and len(hit) > 1:
                named = {*(name_hits.get(combo[1]) or ()), *(name_hits.get(combo[2]) or ())}
                named.update(traits_hits.get(combo[3]) or ())
                narrowed = named.intersection(hit)
                if len(narrowed) == 1:
                    hit = tuple(narrowed)
            if not hit:
                a, b = name_hits.get(combo[1]), name_hits.get(combo[2])
                hit = a if not b or a == b else b if not a else tuple(sorted({*a, *b}))
                if not hit:
                    hit = traits_hits.get(combo[3])
            if not hit:
                target.append(None)
            elif len(hit) > 1:
                target.append(None)
                ambiguous_groups.add(g)
            else:
                got = rows.get(hit[0])
                if got is None:
                    got = rows[hit[0]] = []
                target.append(got)
        for k, g in enumerate(row_group):  # rows in order: each patient's list stays sorted
            got = target[g]
            if got is not None:
                got.append(k)
        ambiguous = [k for k, g in enumerate(row_group) if g in ambiguous_groups] if ambiguous_groups else []
        # canaries: the lab's planted patients are nobody; a package's own names its package
        canary_source: Source | None = None
        canaries = 0
        check = self._canary_check(lab)
        if check is not None:
            for pid in list(rows):
                marker = check(index.pseudonym(pid))
                if marker is None:
                    continue
                canaries += 1
                package = self._canary_markers(lab).package.get(marker)
                planted_rows = len(rows.pop(pid))
                if package is not None and canary_source is None:
                    canary_source = Source(package, "canary", 1.0, planted_rows)
        source, linked = self._source(lab, d, rows, canary_source)
        for pid, extra in linked.items():  # rows carrying only a package's export id of a matched patient
            rows[pid] = sorted(set(rows[pid]) | set(extra))
        categories: dict[str, int] = {}
        row_cats = d.row_cats
        if d.categories:
            per_bits = Counter(row_cats[k] for krows in rows.values() for k in krows)
            for bits, count in per_bits.items():
                bit = 0
                while bits:
                    if bits & 1:
                        cat = d.categories[bit]
                        categories[cat] = categories.get(cat, 0) + count
                    bits >>= 1
                    bit += 1
        aux = d.row_aux
        records = sum(len(krows) for krows in rows.values())
        if aux:
            records -= sum(1 for krows in rows.values() for k in krows if k in aux)
        return _LabPart(lab, set(rows), rows, records, len(ambiguous), categories, source, canaries), ambiguous

    def _lab_size(self, lab: str) -> int:
        self._scope(lab)
        pi = t.patient_identity
        return int(self.conn.execute(select(func.count()).select_from(pi).where(self._tf(pi, lab))).scalar_one())

    def _hits(self, lab: str, column: str, keys: list[bytes], size: int) -> list[_Hit | None]:
        """Per key (in order), the survivors of the patients whose ``column`` equals it."""
        if not keys:
            return []
        pi = t.patient_identity
        col = pi.c[column]
        found: dict[bytes, list[tuple[str, str | None]]] = {}
        self._scope(lab)

        def take(batch: Sequence[Any], only: set[bytes] | None) -> None:
            for key, pid, merged in batch:
                key = key if type(key) is bytes else bytes(key)
                if only is not None and key not in only:
                    continue
                got = found.get(key)
                if got is None:
                    found[key] = [(pid, merged)]
                else:
                    got.append((pid, merged))

        sqlite = self.conn.dialect.name == "sqlite"
        if len(keys) * WHOLE_COLUMN > size and sqlite:
            # the column read whole on the transaction's own connection, as plain tuples
            wanted = set(keys)
            cur = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(_SQLITE_WHOLE[column], (lab,))
                while batch := cur.fetchmany(50_000):
                    take(batch, wanted)
            finally:
                cur.close()
        elif len(keys) * WHOLE_COLUMN > size:
            wanted = set(keys)
            q = select(col, pi.c.patient_id, pi.c.merged_into).where(self._tf(pi, lab), col.is_not(None))
            with self.conn.execute(q.execution_options(yield_per=50_000)) as result:
                for batch in result.partitions():
                    take(batch, wanted)
        else:
            distinct = sorted(set(keys))
            for part in range(0, len(distinct), LOOKUP_CHUNK):
                chunk = distinct[part : part + LOOKUP_CHUNK]
                if sqlite:
                    # SQLite's planner, without statistics, scans the lab's whole primary key for a
                    # long IN list: the column's own index is named (a seek per key)
                    marks = "(" + ",".join("?" * len(chunk)) + ")"
                    take(self.conn.exec_driver_sql(_SQLITE_LOOKUP[column] + marks, (lab, *chunk)).all(), None)
                    continue
                q = select(col, pi.c.patient_id, pi.c.merged_into).where(self._tf(pi, lab), col.in_(chunk))
                take(self.conn.execute(q).all(), None)
        survivor = self._survivors(lab, {m for v in found.values() for _, m in v if m})
        out: list[_Hit | None] = []
        for key in keys:
            v = found.get(key)
            if v is None:
                out.append(None)
            elif len(v) == 1 and not v[0][1]:
                out.append((v[0][0],))
            else:
                out.append(tuple(sorted({survivor.get(m, m) if m else p for p, m in v})))
        return out

    def _survivors(self, lab: str, merged: set[str]) -> dict[str, str]:
        """Each identity merged into: the one it finally counts as (merges followed to the end)."""
        pi = t.patient_identity
        parent: dict[str, str | None] = {}
        todo = set(merged)
        for _ in range(16):  # merge chains are short; a cycle is cut here
            todo -= set(parent)
            if not todo:
                break
            ids = sorted(todo)
            for part in range(0, len(ids), LOOKUP_CHUNK):
                chunk = ids[part : part + LOOKUP_CHUNK]
                for pid, into in self.conn.execute(
                    select(pi.c.patient_id, pi.c.merged_into).where(self._tf(pi, lab), pi.c.patient_id.in_(chunk))
                ):
                    parent[pid] = into
            for pid in ids:
                parent.setdefault(pid, None)
            todo = {p for p in parent.values() if p}
        out: dict[str, str] = {}
        for start in merged:
            cur, seen = start, {start}
            while parent.get(cur):
                nxt = parent[cur] or cur
                if nxt in seen:
                    break
                seen.add(nxt)
                cur = nxt
            out[start] = cur
        return out

    # -- the source ------------------------------------------------------------------------------

    def _packages(self, lab: str) -> list[Any]:
        self._scope(lab)
        j = t.migration_job
        return list(self.conn.execute(select(j).where(self._tf(j, lab)).order_by(j.c.planned_at, j.c.migration_id)))

    def _source(
        self, lab: str, d: LeakDigest, rows: dict[str, list[int]], canary: Source | None
    ) -> tuple[Source | None, dict[str, list[int]]]:
        """The probable source of a lab's part, and rows linked to matched patients by a package's
        export ids only (the package's result records, which carry no name)."""
        jobs = self._packages(lab)
        if not jobs or not rows:
            return canary, {}
        index = self._crypto(lab).index
        refs: dict[str, list[int]] = {}
        for k, ids in d.row_refs.items():
            for rid in ids:
                refs.setdefault(rid, []).append(k)
        best: Source | None = None
        linked: dict[str, list[int]] = {}
        if refs:
            keys = PackageKeys(self._gw.keys, lab)
            pseudonyms = {pid: index.pseudonym(pid) for pid in rows}
            for job in jobs:
                if job.fingerprint_key_wrapped is None:
                    continue
                sealed = SealedKeys(
                    job.package_scope or "",
                    b"",
                    b"",
                    bytes(job.fingerprint_key_wrapped),
                    job.fingerprint_key_id or "",
                )
                try:
                    derive = keys.ids(job.migration_id, sealed)
                except LabvaultError:
                    continue
                hits = 0
                mine: dict[str, list[int]] = {}
                for pid, pseudo in pseudonyms.items():
                    got = refs.get(derive("patient", pseudo))
                    if got:
                        hits += 1
                        mine[pid] = got
                if hits and (best is None or hits > best.hits):
                    best = Source(job.migration_id, "fingerprint", hits / len(rows), hits)
                    linked = mine
        if best is not None:
            return best, linked
        if canary is not None:
            return canary, {}
        return self._by_selection(jobs, d, rows), {}

    def _by_selection(self, jobs: Sequence[Any], d: LeakDigest, rows: dict[str, list[int]]) -> Source | None:
        """The package whose selection (period, fields) best covers the matched rows: probable."""
        dated = [d.row_date[k] for krows in rows.values() for k in krows if d.row_date[k] is not None]
        exposed = [k for k in d.fields if k in KIND_FIELDS]
        best: Source | None = None
        for job in jobs:
            try:
                plan = json.loads(job.plan or "{}")
                lo, hi = (date.fromisoformat(x) for x in plan.get("period") or ("0001-01-01", "9999-12-31"))
                given = {f"{rtype}.{f}" for rtype, fs in (plan.get("fields") or {}).items() for f in fs}
            except (TypeError, ValueError):
                continue
            inside = sum(1 for x in dated if x is not None and lo <= x <= hi)
            period = inside / len(dated) if dated else 1.0
            fields = (
                sum(1 for k in exposed if any(f in given for f in KIND_FIELDS[k])) / len(exposed) if exposed else 1.0
            )
            score = period * fields
            if score > 0 and (best is None or score > best.score):
                best = Source(job.migration_id, "selection", score, inside)
        return best

    # -- storing -----------------------------------------------------------------------------------

    def _store_part(self, analysis_id: str, part: _LabPart, d: LeakDigest, now: datetime) -> LabMatch:
        lab = part.tenant_id
        c = self._crypto(lab)
        listed = {pid: part.rows[pid] for pid in sorted(part.patients)}
        sealed = self._gw.keys.wrap(lab, orjson.dumps(listed), _aad(lab, analysis_id))
        records = part.records
        self._scope(lab)
        self.conn.execute(
            t.leak_match.insert().values(
                tenant_id=lab,
                analysis_id=analysis_id,
                patients=len(listed),
                records=records,
                ambiguous=part.ambiguous,
                categories=json.dumps(part.categories, sort_keys=True),
                fields=json.dumps(list(d.fields)),
                source=json.dumps(
                    {**(part.source.to_json() if part.source else {}), "canaries": part.canaries}, sort_keys=True
                ),
                key_version=c.cipher.current_version,
                patients_enc=sealed,
                created_at=now,
            )
        )
        return LabMatch(
            lab,
            analysis_id,
            len(listed),
            records,
            part.ambiguous,
            dict(part.categories),
            d.fields,
            part.source,
            part.canaries,
            now,
        )

    # -- reading -----------------------------------------------------------------------------------

    def _analysis_of(self, row: Any) -> Analysis:
        get = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
        return Analysis(
            analysis_id=str(get("analysis_id")),
            tenant_id=str(get("tenant_id")),
            incident_id=get("incident_id"),
            files=json.loads(get("files")),
            rows_total=int(get("rows_total")),
            rows_matched=int(get("rows_matched")),
            rows_ambiguous=int(get("rows_ambiguous")),
            rows_unmatched=int(get("rows_unmatched")),
            labs=tuple(json.loads(get("labs"))),
            summary=json.loads(get("summary")),
            seconds=get("seconds"),
            created_by=str(get("created_by")),
            created_at=stored_utc(get("created_at")),
        )

    def leak_analysis(self, analysis_id: str) -> Analysis:
        """An analysis (``incident:read``): the platform's for the vendor's security team and
        platform admin, a lab's own for its lab_admin and DPO. Counts, labs, layouts: no value."""
        la = t.leak_analysis
        p = self.principal
        owner = PLATFORM if p.is_platform else p.tenant_id
        self._authorise(owner, "incident:read")
        self._scope(owner)
        row = self.conn.execute(
            select(la).where(self._tf(la, owner), la.c.tenant_id == owner, la.c.analysis_id == analysis_id)
        ).first()
        if row is None:
            raise NotFound("no such leak analysis")
        self._record(owner, "incident:read", "leak", 1, refs=[analysis_id])
        return self._analysis_of(row)

    def leak_match(self, tenant_id: str, analysis_id: str) -> LabMatch:
        """One lab's part of an analysis (``incident:read`` on that lab): counts, categories, fields,
        source. NotFound when the analysis found nothing of the lab."""
        self._authorise(tenant_id, "incident:read")
        row = self._match_row(tenant_id, analysis_id)
        self._record(tenant_id, "incident:read", "leak", row.patients, refs=[analysis_id])
        src = json.loads(row.source or "{}")
        source = (
            Source(src["package_id"], src["method"], float(src["score"]), int(src["hits"]))
            if src.get("package_id")
            else None
        )
        return LabMatch(
            tenant_id,
            analysis_id,
            row.patients,
            row.records,
            row.ambiguous,
            json.loads(row.categories),
            tuple(json.loads(row.fields)),
            source,
            int(src.get("canaries", 0)),
            stored_utc(row.created_at),
        )

    def affected_patients(self, tenant_id: str, analysis_id: str) -> list[str]:
        """The lab's affected patients' ids (``incident:letters``: the lab's DPO), sorted; audited
        as ``incident:letters`` with their count."""
        self._authorise(tenant_id, "incident:letters")
        if self.principal.is_platform:  # no vendor role holds it; kept here should the table change
            self._deny(tenant_id, "incident:letters", "only the lab's DPO opens its affected list")
        row = self._match_row(tenant_id, analysis_id)
        listed = orjson.loads(self._gw.keys.unwrap(tenant_id, bytes(row.patients_enc), _aad(tenant_id, analysis_id)))
        self._record(tenant_id, "incident:letters", "patient", len(listed), refs=[analysis_id])
        return sorted(listed)

    def _match_row(self, tenant_id: str, analysis_id: str) -> Any:
        lm = t.leak_match
        self._scope(tenant_id)
        row = self.conn.execute(
            select(lm).where(self._tf(lm, tenant_id), lm.c.tenant_id == tenant_id, lm.c.analysis_id == analysis_id)
        ).first()
        if row is None:
            raise NotFound("no such leak analysis for this lab")
        return row

    def leak_analyses(self, *, limit: int = 50) -> list[Analysis]:
        """The latest analyses the caller may read (``incident:read``), newest first."""
        p = self.principal
        owner = PLATFORM if p.is_platform else p.tenant_id
        self._authorise(owner, "incident:read")
        la = t.leak_analysis
        rows = self.conn.execute(
            select(la)
            .where(self._tf(la, owner), la.c.tenant_id == owner)
            .order_by(la.c.created_at.desc())
            .limit(max(1, min(limit, 500)))
        ).all()
        return [self._analysis_of(r) for r in rows]
