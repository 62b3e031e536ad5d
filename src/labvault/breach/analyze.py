"""A leaked file's rows matched through every lab's blind indexes: who is in it, what of them, from where.

``digest`` reads the rows of one or more opened files (``labvault.breach.reader``) into a
``LeakDigest``: each distinct key normalised once (a NIR; a family or birth name with the first
given name and the birth date; the strict traits when the sex is known), each row's indexes into
them, the sensitive categories each row names (by its codes, through the code sets of
``labvault.domain.sensitivity``, and by French and English words in its labels and free text), its
first other date and its export ids. ``analyze`` hands the digest to the gateway
(``Unit.analyse_leak``), which hashes the keys with each lab's blind-index keys and stores the
result: nothing stored is decrypted, nothing leaked is stored.

What is kept of a file: its sha256, size, format, encoding, delimiter, rows, junk lines and the
kinds of its columns (never a header as written: a file without one may have a data row taken for
it, and never a cell).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from stdnum.fr import nir as stdnir

from labvault.access import Purpose
from labvault.access.breach import Analysis, LabMatch, LeakDigest
from labvault.breach.reader import Layout, Leak, LeakRow, open_leak
from labvault.crypto.blind import first_given_name, normalise_name
from labvault.crypto.keys import PLATFORM
from labvault.domain.identifiers import normalise_nir
from labvault.domain.models import LOINC, Sensitivity
from labvault.domain.sensitivity import sensitivity_of

if TYPE_CHECKING:
    from labvault.access import Gateway, Principal

# Record types (a package's ndjson "record") that describe a patient or a request, not a result:
# their rows are matched (an identity record names the patient) but not counted as records.
AUX_RECORDS = frozenset({"identity", "request", "specimen", "prescriber", "header"})
CATEGORIES = tuple(s.value for s in Sensitivity if s is not Sensitivity.OTHER)

# Words that name a sensitive category in a label or a comment (accents dropped, upper case).
_WORDS: dict[str, tuple[str, ...]] = {
    "hiv": ("VIH", "HIV", "SIDA", "AIDS", "SEROPOSITI\\w*", "ANTIRETROVIR\\w*"),
    "viral_hepatitis": ("HEPATITE\\w*", "HEPATITIS", "VHB", "VHC", "HBV", "HCV", "AG ?HBS", "HBS ?AG"),
    "genetics": ("GENETIQU\\w*", "GENETIC\\w*", "BRCA\\d?", "CARYOTYPE", "KARYOTYPE", "CFTR", "MUTATION\\w*", "ADN"),
    "pregnancy": ("GROSSESSE\\w*", "PREGNAN\\w*", "B?HCG", "BETA ?HCG", "ENCEINTE", "PRENATA\\w*", "TRISOMIE"),
    "oncology": (
        "CANCER\\w*",
        "ONCOLOG\\w*",
        "PSA",
        "TUMEUR\\w*",
        "TUMOR\\w*",
        "TUMOUR\\w*",
        "METASTA\\w*",
        "CA ?125",
        "CA ?15[ -.]?3",
        "CA ?19[ -.]?9",
        "LEUCEMIE\\w*",
        "LEUKEMIA",
        "LYMPHOME\\w*",
        "LYMPHOMA",
        "CHIMIOTHERAPIE\\w*",
        "CHEMOTHERAPY",
    ),
}
_PATTERNS = {cat: re.compile(r"\b(?:" + "|".join(words) + r")\b") for cat, words in _WORDS.items()}
_BIT = {cat: 1 << k for k, cat in enumerate(CATEGORIES)}
_CODE_BIT = {cat.value: _BIT[cat.value] for cat in Sensitivity if cat is not Sensitivity.OTHER}
_NOT_WORD = re.compile(r"[^A-Z0-9]+")

# Column kinds that say what data is exposed (full names count as family and given names).
_EXPOSED = {
    "nir": ("nir",),
    "family_name": ("family_name",),
    "birth_name": ("birth_name",),
    "given_names": ("given_names",),
    "full_name": ("family_name", "given_names"),
    "birth_date": ("birth_date",),
    "date": ("date",),
    "sex": ("sex",),
    "code": ("code",),
    "label": ("label",),
    "value": ("value",),
    "unit": ("unit",),
    "text": ("text",),
}


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub(" ", stripped.upper()).strip()


def categories_of_text(text: str) -> int:
    """The categories a label or a free text names (bits of ``CATEGORIES``)."""
    plain = _plain(text)
    bits = 0
    for cat, pattern in _PATTERNS.items():
        if pattern.search(plain):
            bits |= _BIT[cat]
    return bits


def categories_of_code(code: str) -> int:
    sens = sensitivity_of(LOINC, code.strip())
    return 0 if sens is Sensitivity.OTHER else _CODE_BIT[sens.value]


def category_names(bits: int) -> list[str]:
    return [cat for cat in CATEGORIES if bits & _BIT[cat]]


class Opened(Protocol):
    """An opened leaked file (``labvault.breach.reader.Leak``): its layout, its rows."""

    layout: Layout

    def rows(self) -> Iterator[LeakRow]: ...


@dataclass(slots=True)
class _Keys:
    """Distinct keys and the memo of raw values already normalised."""

    digest: LeakDigest
    nir: dict[str, int]
    name: dict[tuple[str, str, Any], int]
    traits: dict[tuple[str, str, Any, str], int]
    norm: dict[str, str]
    given: dict[str, str]
    code_cats: dict[str, int]
    text_cats: dict[str, int]
    idents: dict[tuple[Any, ...], int]  # identity as written -> its group (``LeakDigest.groups``)
    cats: dict[tuple[tuple[str, ...], ...], int]  # (codes, labels, texts) as written -> category bits


def _key(table: dict[Any, int], out: list[Any], key: Any) -> int:
    k = table.get(key)
    if k is None:
        k = table[key] = len(out)
        out.append(key)
    return k


def _layout_json(leak: Opened) -> dict[str, Any]:
    lay = leak.layout
    return {
        "sha256": lay.sha256,
        "size": lay.size,
        "format": lay.format,
        "encoding": lay.encoding,
        "delimiter": lay.delimiter,
        "header": lay.header,
        "rows": lay.rows,
        "junk": lay.junk,
        "columns": [{"index": c.index, "kind": c.kind, "score": round(c.score, 3)} for c in lay.columns],
    }


def digest(leaks: Iterable[Opened]) -> LeakDigest:
    """Read every row of the opened files into the keys the gateway matches (see the module doc)."""
    d = LeakDigest(categories=CATEGORIES)
    keys = _Keys(d, {}, {}, {}, {}, {}, {}, {}, {}, {})
    exposed: set[str] = set()
    for leak in leaks:
        seen = _rows(keys, leak.rows())
        exposed |= seen
        d.files.append(_layout_json(leak))
        for col in leak.layout.columns:
            exposed.update(_EXPOSED.get(col.kind, ()))
    d.fields = tuple(sorted(exposed))
    groups, row_group = d.groups, d.row_group
    d.row_nir = [groups[g][0] for g in row_group]
    d.row_name = [groups[g][1] for g in row_group]
    d.row_bname = [groups[g][2] for g in row_group]
    d.row_traits = [groups[g][3] for g in row_group]
    return d


_IDENTITY = attrgetter("nir", "family", "birth_name", "given", "birth_date", "sex")
_CELLS = attrgetter("codes", "labels", "texts")


def _rows(keys: _Keys, rows: Iterable[LeakRow]) -> set[str]:
    d = keys.digest
    norm, given_memo, code_cats, text_cats = keys.norm, keys.given, keys.code_cats, keys.text_cats
    idents, cats_memo = keys.idents, keys.cats
    nir_t, name_t, traits_t = keys.nir, keys.name, keys.traits
    row_group, groups = d.row_group, d.groups
    row_cats, row_date, refs, aux = d.row_cats, d.row_date, d.row_refs, d.row_aux
    exposed: set[str] = set()
    identity, cells_of = _IDENTITY, _CELLS

    def name_of(raw: str | None) -> str:
        if not raw:
            return ""
        v = norm.get(raw)
        if v is None:
            v = norm[raw] = normalise_name(raw)
        return v

    def ident_of(ident: tuple[Any, ...]) -> int:
        """The key indexes of one identity as written (a leak repeats it on each of its results)."""
        raw_nir, raw_family, raw_birth, raw_given, born, raw_sex = ident
        nir = -1
        if raw_nir:
            full = nir_of(raw_nir)
            nir = -1 if full is None else _key(nir_t, d.nirs, full)
            exposed.add("nir")
        family, birth = name_of(raw_family), name_of(raw_birth)
        first = ""
        if raw_given:
            memo = given_memo.get(raw_given)
            if memo is None:
                memo = given_memo[raw_given] = normalise_name(first_given_name(raw_given))
            first = memo
        name = bname = traits = -1
        if first and born is not None:
            if family:
                name = _key(name_t, d.names, (family, first, born))
            if birth and birth != family:
                bname = _key(name_t, d.names, (birth, first, born))
            strict = birth or family
            sex = (raw_sex or "").strip().upper()
            if strict and sex in ("M", "F"):
                traits = _key(traits_t, d.traits, (strict, first, born, sex))
        g = idents[ident] = len(groups)
        groups.append((nir, name, bname, traits))
        return g

    def cats_of(cells: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]) -> int:
        codes, labels, texts = cells
        bits = 0
        for code in codes:
            c = code_cats.get(code)
            if c is None:
                c = code_cats[code] = categories_of_code(code)
            bits |= c
        for text in (*labels, *texts):
            c = text_cats.get(text)
            if c is None:
                c = text_cats[text] = categories_of_text(text)
            bits |= c
        cats_memo[cells] = bits
        return bits

    k = len(row_group)
    for row in rows:
        ident = identity(row)
        g = idents.get(ident)
        row_group.append(ident_of(ident) if g is None else g)
        cells = cells_of(row)
        bits = cats_memo.get(cells)
        row_cats.append(cats_of(cells) if bits is None else bits)
        dates = row.dates
        row_date.append((dates[0] if len(dates) == 1 else min(dates)) if dates else None)
        if row.ids or row.links:
            refs[k] = (*row.ids, *row.links)
        if row.record in AUX_RECORDS:
            aux.add(k)
        k += 1
    return exposed


def nir_of(raw: str) -> str | None:
    """A NIR as identities store it: 15 characters, the key computed when 13 are given."""
    value = raw if raw.isdigit() else normalise_nir(raw)
    if len(value) == 13 and value.isdigit():
        return f"{value}{97 - int(value) % 97:02d}"
    if len(value) == 13:
        try:
            return value + stdnir.calc_check_digits(value)
        except ValueError:
            return None
    return value if len(value) == 15 else None


def open_files(paths: Sequence[Path]) -> list[Leak]:
    return [open_leak(Path(p), index=k) for k, p in enumerate(paths, start=1)]


def analyze(
    gateway: Gateway,
    principal: Principal,
    leaks: Sequence[Opened],
    *,
    tenant_id: str | None = None,
    incident_id: str | None = None,
) -> tuple[Analysis, list[LabMatch]]:
    """Analyse opened leaked files against every lab (the vendor's security officer) or against the
    caller's own lab (``tenant_id``: a lab's DPO); stored, and audited in every lab searched."""
    started = time.perf_counter()
    with gateway.unit(principal, Purpose.BREACH) as u:  # refused before a row is read
        u.authorise(tenant_id or PLATFORM, "breach:analyze")
    d = digest(leaks)
    with gateway.unit(principal, Purpose.BREACH) as u:
        return u.analyse_leak(d, tenant_id=tenant_id, incident_id=incident_id, started=started)
