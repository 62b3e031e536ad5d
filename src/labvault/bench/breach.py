"""Leak analysis benchmark: a leaked file of N rows matched against a lab of M patients through the
lab's blind indexes, per identifier column (the NIR alone, name + birth date alone, both), against a
clear-text baseline (a Python set of the same values, looked up row by row) in the same run.

The lab's identities are generated from their index (French names, birth dates, NIRs with their
key: deterministic, no generator state) and stored through the gateway's bulk path
(``Unit.add_patients``: sealed, blind-indexed), in batches, one transaction each. The leaked rows
are drawn from them (90%) and from people the lab does not hold (10%), read as the leak reader gives
them (``LeakRow``); the analysis is the one ``labvault breach analyze`` runs (``breach.analyze``:
digest, then ``Unit.analyse_leak``), stored and audited. Building the lab is not counted.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from labvault.access import Gateway, Principal, Purpose
from labvault.bench.scratch import scratch
from labvault.breach.analyze import analyze, nir_of
from labvault.breach.reader import Column, Layout, LeakRow
from labvault.crypto.blind import first_given_name, normalise_name
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Identity, IdentityStatus

_BATCH = 20_000
_EPOCH = date(1930, 1, 1)
_DAYS = 32_000  # birth dates over ~88 years


def _names() -> tuple[list[str], list[str], list[str]]:
    from faker.providers.person.fr_FR import Provider as Fr

    fam = sorted({str(n) for n in Fr.last_names})
    male = sorted({str(n) for n in Fr.first_names_male})
    female = sorted({str(n) for n in Fr.first_names_female})
    return fam, male, female


@dataclass(frozen=True, slots=True)
class _Person:
    family: str
    given: str
    born: date
    sex: str
    nir: str  # 15 characters


class _People:
    """Person ``i``, from ``i`` alone (a stranger: ``i`` beyond the lab's patients)."""

    def __init__(self) -> None:
        self.fam, self.male, self.female = _names()

    def __call__(self, i: int) -> _Person:
        sex = "M" if i % 2 else "F"
        given = self.male if sex == "M" else self.female
        family = self.fam[(i * 7919 + i // 977) % len(self.fam)]
        first = given[(i * 104_729 + i // 131) % len(given)]
        born = _EPOCH + timedelta(days=(i * 2_654_435_761) % _DAYS)
        dept, rest = 10 + i // 1_000_000, i % 1_000_000
        body = f"{1 if sex == 'M' else 2}{born.year % 100:02d}{born.month:02d}{dept:02d}{rest:06d}"
        return _Person(family, first, born, sex, nir_of(body) or body)


def _identities(people: _People, lo: int, hi: int) -> list[Identity]:
    out = []
    for i in range(lo, hi):
        p = people(i)
        out.append(Identity(f"bp{i:08d}", p.nir, IdentityStatus.QUALIFIED, p.family, p.given, p.born, p.sex))
    return out


class _Leak:
    """The leaked rows, as the reader gives them, with the columns of ``kinds``."""

    def __init__(self, rows: list[LeakRow], kinds: tuple[str, ...]) -> None:
        cols = tuple(Column(k, None, kind, 1.0) for k, kind in enumerate(kinds))
        self.layout = Layout("0" * 64, 0, "csv", "utf-8", ";", True, len(rows), 0, cols)
        self._rows = rows

    def rows(self) -> Iterator[LeakRow]:
        return iter(self._rows)


def _leaked(people: _People, n: int, patients: int, seed: int) -> list[_Person]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i = rng.randrange(patients) if rng.random() < 0.9 else patients + rng.randrange(max(patients, 1))
        out.append(people(i))
    return out


def _rows(leaked: list[_Person], column: str) -> list[LeakRow]:
    exam, code = (date(2021, 1, 4),), ("718-7",)
    if column == "nir":
        return [LeakRow(1, k + 2, p.nir[:13], None, None, None, None, None, exam, code) for k, p in enumerate(leaked)]
    if column == "name":
        return [
            LeakRow(1, k + 2, None, p.family.upper(), None, p.given, p.born, None, exam, code)
            for k, p in enumerate(leaked)
        ]
    return [
        LeakRow(1, k + 2, p.nir[:13], p.family.upper(), None, p.given, p.born, p.sex, exam, code)
        for k, p in enumerate(leaked)
    ]


_KINDS = {
    "nir": ("nir", "date", "code"),
    "name": ("family_name", "given_names", "birth_date", "date", "code"),
    "both": ("nir", "family_name", "given_names", "birth_date", "sex", "date", "code"),
}


def _baseline(people: _People, patients: int, leaked: list[_Person], column: str) -> float:
    """The same lookups in clear: a set of the lab's values (built beforehand, not counted), each
    leaked row's value normalised as the analysis does and looked up."""
    if column == "nir":
        known: set[Any] = {people(i).nir for i in range(patients)}
        t0 = time.perf_counter()
        hits = sum(1 for p in leaked if nir_of(p.nir[:13]) in known)
    else:
        known = set()
        for i in range(patients):
            p = people(i)
            known.add((normalise_name(p.family), normalise_name(p.given), p.born))
        t0 = time.perf_counter()
        hits = sum(
            1
            for p in leaked
            if (normalise_name(p.family.upper()), normalise_name(first_given_name(p.given)), p.born) in known
        )
    del hits
    return time.perf_counter() - t0


_CHILD: dict[str, Any] = {}


def _store(lo: int) -> int:
    """Store patients ``lo`` .. ``lo + _BATCH`` (in a forked worker: the parent's gateway, a fresh pool)."""
    gw, user, lab, patients = _CHILD["gw"], _CHILD["user"], _CHILD["lab"], _CHILD["patients"]
    if _CHILD.get("pid") != os.getpid():
        gw.engine.dispose(close=False)  # connections are the parent's: never shared across a fork
        _CHILD["pid"] = os.getpid()
        _CHILD["people"] = _People()
    hi = min(lo + _BATCH, patients)
    with gw.unit(user, Purpose.BENCHMARK) as u:
        u.add_patients(lab, _identities(_CHILD["people"], lo, hi))
    return hi - lo


def _build(
    gw: Gateway,
    user: Principal,
    lab: str,
    patients: int,
    workers: int,
    on_progress: Callable[[str, int], None] | None,
) -> None:
    """The lab's identities through ``Unit.add_patients``, in batches of one transaction each; with
    ``workers`` > 1, sealed and hashed in forked processes (SQLite still writes one at a time)."""
    _CHILD.update(gw=gw, user=user, lab=lab, patients=patients, pid=os.getpid(), people=_People())
    starts = range(0, patients, _BATCH)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        gw.engine.dispose()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for n in pool.imap_unordered(_store, starts):
                if on_progress:
                    on_progress("patients", n)
        gw.engine.dispose()
        return
    for lo in starts:
        n = _store(lo)
        if on_progress:
            on_progress("patients", n)


def run_breach(
    leaked: int,
    patients: int,
    *,
    database_url: str | None = None,
    seed: int = 7,
    baseline: bool = True,
    workers: int = 2,
    on_progress: Callable[[str, int], None] | None = None,
) -> dict[str, object]:
    people = _People()
    with scratch("breach", roles=("biologist",), database_url=database_url) as sc:
        gw, lab = sc.gateway, sc.lab
        so = Principal("bench-breach-security", "Benchmark security officer", PLATFORM, frozenset({"security_officer"}))
        with gw.unit(sc.admin, Purpose.BENCHMARK) as u:
            u.ensure_account(
                PLATFORM, so.account_id, so.name, f"{so.account_id}@bench.invalid", so.roles, commitment="benchmark"
            )
        t0 = time.perf_counter()
        _build(gw, sc.user, lab, patients, workers, on_progress)
        build = time.perf_counter() - t0
        sample = _leaked(people, leaked, patients, seed)
        out: dict[str, object] = {
            "bench": "breach",
            "dialect": sc.dialect,
            "patients": patients,
            "leaked": leaked,
            "build_seconds": round(build, 2),
            "build_patients_per_s": round(patients / build) if build else None,
            "build_workers": workers,
        }
        columns: dict[str, dict[str, object]] = {}
        for column in ("nir", "name", "both"):
            rows = _rows(sample, column)
            t1 = time.perf_counter()
            analysis, parts = analyze(gw, so, [_Leak(rows, _KINDS[column])])
            seconds = time.perf_counter() - t1
            part = next((p for p in parts if p.tenant_id == lab), None)
            entry: dict[str, object] = {
                "seconds": round(seconds, 3),
                "rows_per_s": round(leaked / seconds) if seconds else None,
                "matched": analysis.rows_matched,
                "ambiguous": analysis.rows_ambiguous,
                "unmatched": analysis.rows_unmatched,
                "patients": part.patients if part else 0,
            }
            if baseline and column != "both":
                entry["clear_seconds"] = round(_baseline(people, patients, sample, column), 3)
            columns[column] = entry
            if on_progress:
                on_progress("analyses", 1)
        out["columns"] = columns
        both = columns["both"]
        out["seconds"] = both["seconds"]
        out["rows_per_s"] = both["rows_per_s"]
        return out
