"""What a leaked file's column holds, from its header's words and from its values; and the values
normalised (a NIR of 13 digits with its key checked, dates as ``date``, sex as ``M``/``F``).

Pure functions over strings. Nothing here keeps or repeats a value: a column is described by its
kind and a score, never by what it holds.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from labvault.interop._common import is_ucum

# --- header words -----------------------------------------------------------------------------

# Normalised header (accents dropped, lower case, words separated by one space) -> kind. Exact
# phrases first, then the words a header starts with or holds.
_EXACT: dict[str, str] = {}
for _kind, _phrases in {
    "nir": (
        "nir",
        "ins",
        "ins nir",
        "matricule ins",
        "n secu",
        "no secu",
        "num secu",
        "numero secu",
        "n securite sociale",
        "no securite sociale",
        "numero de securite sociale",
        "numero securite sociale",
        "secu",
        "securite sociale",
        "nss",
        "insee",
        "ssn",
        "social security number",
        "n ss",
        "patient nir",
    ),
    "birth_name": (
        "nom de naissance",
        "nom naissance",
        "birth name",
        "maiden name",
        "nom de jeune fille",
        "njf",
        "birth family name",
    ),
    "family_name": (
        "nom",
        "nom de famille",
        "nom d usage",
        "nom usage",
        "nom usuel",
        "nom patient",
        "patient nom",
        "nom du patient",
        "family name",
        "family",
        "last name",
        "lastname",
        "surname",
        "name last",
    ),
    "given_names": (
        "prenom",
        "prenoms",
        "prenom patient",
        "prenom du patient",
        "patient prenom",
        "given name",
        "given names",
        "first name",
        "firstname",
        "forename",
        "name first",
    ),
    "full_name": (
        "nom prenom",
        "nom et prenom",
        "nom et prenoms",
        "nom prenoms",
        "identite",
        "nom complet",
        "patient",
        "name",
        "full name",
        "patient name",
    ),
    "birth_date": (
        "ddn",
        "date de naissance",
        "date naissance",
        "naissance",
        "ne le",
        "ne e le",
        "nee le",
        "ne e",
        "birth date",
        "birthdate",
        "date of birth",
        "dob",
        "born",
    ),
    "sex": ("sexe", "sex", "genre", "gender", "s"),
    "code": ("code", "code analyse", "code examen", "loinc", "code loinc", "code test", "test code", "code acte"),
    "label": (
        "analyse",
        "examen",
        "libelle",
        "libelle analyse",
        "libelle examen",
        "test",
        "label",
        "designation",
        "parametre",
        "test name",
        "exam",
    ),
    "value": (
        "resultat",
        "resultats",
        "valeur",
        "result",
        "value",
        "value num",
        "value text",
        "valeur numerique",
        "res",
    ),
    "unit": ("unite", "unites", "unit", "units", "u"),
    "text": (
        "commentaire",
        "commentaires",
        "comment",
        "comments",
        "remarque",
        "remarques",
        "observation",
        "observations",
        "note",
        "notes",
        "conclusion",
        "texte libre",
        "free text",
    ),
    "export_id": ("id", "identifiant", "uuid", "export id"),
    "link": ("patient id", "request", "specimen", "request id", "specimen id", "demande id"),
}.items():
    for _p in _phrases:
        _EXACT[_p] = _kind

# Words a header holds that make a date (any date other than a birth date).
_DATE_WORDS = (
    "date",
    "prelevement",
    "preleve",
    "collected",
    "requested",
    "reported",
    "received",
    "validated at",
    "valide le",
    "jour",
    "heure",
)
_OTHER_WORDS = (
    "prescripteur",
    "prescriber",
    "medecin",
    "docteur",
    "adresse",
    "address",
    "telephone",
    "phone",
    "tel",
    "email",
    "mail",
    "ville",
    "city",
    "rpps",
    "finess",
    "accession",
    "dossier",
    "valide par",
    "validated by",
    "statut",
    "status",
    "flag",
    "ref",
    "norme",
    "system",
    "birthplace",
    "lieu",
    "record",
    "type",
    "ipp",
    "sejour",
)


def norm_header(text: str) -> str:
    """Accents dropped, lower case, every run of non-letters one space: 'N° Sécu' -> 'n secu'."""
    decomposed = unicodedata.normalize("NFKD", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", plain).split())


def header_kind(header: str | None) -> str | None:
    """The kind a header names, or None when its words say nothing known."""
    if not header:
        return None
    h = norm_header(header)
    if not h:
        return None
    if h in _EXACT:
        return _EXACT[h]
    words = h.split()
    if any((o in words) if " " not in o else (o in h) for o in _OTHER_WORDS):
        return "other"
    if "naissance" in words or "birth" in words or h.startswith(("ne le", "nee le")):
        if "nom" in words or "name" in words:
            return "birth_name"
        return "birth_date"
    if any(w in words for w in ("prenom", "prenoms", "firstname", "forename")) or "first name" in h or "given" in words:
        return "full_name" if "nom" in words else "given_names"
    if "nir" in words or "secu" in words or "ins" in words or "securite" in words:
        return "nir"
    if "sexe" in words or "sex" in words or "gender" in words:
        return "sex"
    if any(w in h for w in _DATE_WORDS) or h.endswith(" at"):
        return "date"
    if "commentaire" in words or "comment" in words or "remarque" in words:
        return "text"
    if "loinc" in words or "code" in words:
        return "code"
    if any(w in words for w in ("libelle", "analyse", "examen", "label", "test", "designation")):
        return "label"
    if any(w in words for w in ("resultat", "valeur", "result", "value")):
        return "value"
    if any(w in words for w in ("unite", "unit", "units")):
        return "unit"
    if "nom" in words or "name" in words:
        return "family_name"
    if h.endswith(" id") or h in ("patient", "prescriber"):
        return "link"
    return None


# --- values ------------------------------------------------------------------------------------

_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_NIR_SEP = re.compile(r"[\s.\-]")
_NIR13 = re.compile(r"[1-478][0-9]{2}(?:0[1-9]|1[0-2]|[2-9][0-9])(?:[0-9]{2}|2A|2B)[0-9]{6}\Z")
_NIR_SHAPE = re.compile(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{6}(?:[0-9]{2})?\Z")
_LOINC = re.compile(r"[0-9]{1,6}-[0-9]\Z")
_LOCAL_CODE = re.compile(r"[A-Z0-9][A-Z0-9_.:/+-]{0,14}\Z")
_NUMBER = re.compile(r"[<>]?=?\s*[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_NAME = re.compile(r"[^\W\d_]+(?:[ '\-\u2019.]+[^\W\d_]+)*\.?\Z")
_DR = re.compile(r"(?:dr|pr|docteur|professeur)\b\.?", re.IGNORECASE)

# dd/mm/yyyy, dd-mm-yyyy, dd.mm.yyyy, dd/mm/yy (an optional time after)
_DMY = re.compile(r"([0-9]{1,2})[/.\-]([0-9]{1,2})[/.\-]([0-9]{4}|[0-9]{2})(?:[ T][0-9:.,]+)?\Z")
# yyyy-mm-dd, yyyy/mm/dd, yyyy.mm.dd (an optional time and zone after)
_YMD = re.compile(r"([0-9]{4})[/.\-]([0-9]{1,2})[/.\-]([0-9]{1,2})(?:[ T][0-9:.,]+(?:Z|[+-][0-9:]+)?)?\Z")
_YYYYMMDD = re.compile(r"(1[89][0-9]{2}|20[0-9]{2})(0[1-9]|1[0-2])([0-2][0-9]|3[01])\Z")
_EXCEL_EPOCH = date(1899, 12, 30)


def nir13(raw: str) -> str | None:
    """A NIR of 13 characters (digits; 2A/2B for Corsica) from 13 or 15 written (spaces, dots and
    dashes dropped); with a key written, the key is checked: a wrong key gives None."""
    v = _NIR_SEP.sub("", raw).upper()
    n = len(v)
    if n == 15:
        body, key = v[:13], v[13:]
        if not key.isdigit() or not _NIR13.match(body):
            return None
        num = int(body.replace("2A", "19").replace("2B", "18"))
        return body if 97 - num % 97 == int(key) else None
    if n == 13 and _NIR13.match(v):
        return v
    return None


def with_key(nir: str) -> str:
    """A NIR of 13 characters with its 2-digit key appended (the 15 characters a lab stores, which
    its blind index hashes): 97 - (the 13 as a number, Corsica's 2A/2B read 19/18) mod 97."""
    num = int(nir.upper().replace("2A", "19").replace("2B", "18"))
    return f"{nir.upper()}{97 - num % 97:02d}"


def _century(yy: int, today: date) -> int:
    return 2000 + yy if 2000 + yy <= today.year else 1900 + yy


def parse_date(raw: str, *, serial: bool = False, today: date | None = None) -> date | None:
    """A date as written in a lab's files: dd/mm/yyyy (also with - or .), dd/mm/yy, ISO
    yyyy-mm-dd with or without a time, yyyymmdd; an Excel serial when ``serial``. None otherwise."""
    s = raw.strip()
    if not s or len(s) > 40:
        return None
    try:
        if (m := _YMD.match(s)) is not None:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if (m := _DMY.match(s)) is not None:
            year = m.group(3)
            y = int(year) if len(year) == 4 else _century(int(year), today or date.today())
            return date(y, int(m.group(2)), int(m.group(1)))
        if (m := _YYYYMMDD.match(s)) is not None:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if serial and s.replace(".", "", 1).isdigit():
            n = float(s)
            if 1 <= n < 80000:
                return _EXCEL_EPOCH + timedelta(days=int(n))
    except ValueError:
        return None
    return None


def sex_of(raw: str) -> str | None:
    s = raw.strip().upper()
    if not s:
        return None
    if s in ("M", "H", "1", "MALE", "HOMME", "MASCULIN", "MASC", "MAN"):
        return "M"
    if s in ("F", "2", "FEMALE", "FEMME", "FEMININ", "FÉMININ", "FEM", "WOMAN"):
        return "F"
    return None


def is_number(raw: str) -> bool:
    return _NUMBER.match(raw.strip()) is not None


@cache
def first_names() -> frozenset[str]:
    """First names (French and English), normalised as the blind index does (upper, letters)."""
    from faker.providers.person.en_US import Provider as En
    from faker.providers.person.fr_FR import Provider as Fr

    from labvault.crypto.blind import normalise_name

    names: set[str] = set()
    for provider in (Fr, En):
        for attr in ("first_names", "first_names_male", "first_names_female"):
            names.update(normalise_name(n) for n in getattr(provider, attr, ()))
    names.discard("")
    return frozenset(names)


def _fold(text: str) -> str:
    from labvault.crypto.blind import normalise_name

    return normalise_name(text)


def split_full_name(raw: str) -> tuple[str | None, str | None]:
    """'DUPONT Jean' / 'Dupont, Jean' / 'Jean DUPONT' / 'Jean Dupont' -> (family, given), as written."""
    s = raw.strip()
    if not s:
        return None, None
    if "," in s:
        fam, _, giv = s.partition(",")
        return fam.strip() or None, giv.strip() or None
    words = s.split()
    if len(words) == 1:
        return words[0], None
    caps = [w.isupper() and len(w) > 1 for w in words]
    if any(caps) and not all(caps):
        if caps[0]:  # DUPONT Jean, LE GALL Marie
            k = caps.index(False)
            return " ".join(words[:k]), " ".join(words[k:])
        k = caps.index(True)  # Jean DUPONT
        return " ".join(words[k:]), " ".join(words[:k])
    known = first_names()
    if _fold(words[0]) in known and _fold(words[-1]) not in known:
        return " ".join(words[1:]), words[0]
    return words[0], " ".join(words[1:])


# --- content ----------------------------------------------------------------------------------


def _share(values: Sequence[Any], test: Callable[[Any], object]) -> float:
    return sum(1 for v in values if test(v)) / len(values) if values else 0.0


def _is_name(v: str) -> bool:
    """A person's name: letters, at most four words (a sentence is no name), no title."""
    s = v.strip()
    return len(s) <= 60 and s.count(" ") <= 3 and _NAME.match(s) is not None and not _DR.match(s)


def fits(kind: str, values: Sequence[str], *, serial: bool = False) -> float:
    """How well a column's non-empty sample values fit ``kind`` (0..1), for checking a header."""
    if not values:
        return 1.0
    if kind == "nir":  # the shape: a wrong key is the row's, not the column's
        return _share(values, lambda v: _NIR_SHAPE.match(_NIR_SEP.sub("", v).upper()) is not None)
    if kind in ("birth_date", "date"):
        return _share(values, lambda v: parse_date(v, serial=serial) is not None)
    if kind == "sex":
        return _share(values, lambda v: sex_of(v) is not None)
    if kind in ("export_id", "link"):
        return _share(values, lambda v: _HEX32.match(v.strip().lower()) is not None)
    if kind in ("family_name", "birth_name", "given_names", "full_name"):  # any text but a number or date
        return _share(values, lambda v: not (is_number(v) or parse_date(v, serial=serial) or nir13(v)))
    return 1.0


def content_kind(values: Sequence[str], *, total: int, serial: bool = False) -> tuple[str, float]:
    """The kind a column's values say (non-empty sample values; ``total``: the sample's rows)."""
    if not values:
        return "other", 0.0
    n = len(values)
    stripped = [v.strip() for v in values]
    distinct = len(set(stripped))
    score = _share(stripped, lambda v: nir13(v) is not None)
    if score >= 0.8:
        return "nir", score
    score = _share(stripped, lambda v: _HEX32.match(v.lower()) is not None)
    if score >= 0.8:
        return ("export_id" if distinct == n else "link"), score
    dates = [d for v in stripped if (d := parse_date(v, serial=serial)) is not None]
    if len(dates) >= 0.8 * n and not all(v.isdigit() and len(v) != 8 for v in stripped):
        years = sorted(d.year for d in dates)
        spread = years[int(len(years) * 0.9)] - years[int(len(years) * 0.1)]
        kind = "birth_date" if spread >= 15 or statistics.median(years) < date.today().year - 30 else "date"
        return kind, len(dates) / n
    score = _share(stripped, lambda v: sex_of(v) is not None)
    if score >= 0.9 and distinct <= 6:
        return "sex", score
    score = _share(stripped, lambda v: _LOINC.match(v) is not None)
    if score >= 0.8:
        return "code", score
    numbers = _share(stripped, is_number)
    if numbers >= 0.7:
        lengths = sorted(len(v) for v in stripped)
        if lengths[len(lengths) // 2] <= 9:
            return "value", numbers
        return "other", numbers
    if distinct <= max(60, n // 4):
        units = _share(stripped, lambda v: len(v) <= 12 and not v.isdigit() and _is_unit(v))
        if units >= 0.8 and not all(_is_name(v) and len(v) > 3 for v in stripped):
            return "unit", units
    names = _share(stripped, _is_name)
    if names >= 0.8:
        known = first_names()
        words = [v.split() for v in stripped]
        first = _share([w[0] for w in words if w], lambda w: _fold(w) in known)
        two = _share(stripped, lambda v: len(v.split()) >= 2)
        mixed = _share(
            [v for v in stripped if len(v.split()) >= 2],
            lambda v: any(w.isupper() and len(w) > 1 for w in v.split()) and not v.isupper(),
        )
        either = _share(words, lambda ws: len(ws) >= 2 and (_fold(ws[0]) in known or _fold(ws[-1]) in known))
        if two >= 0.6 and (mixed >= 0.6 or either >= 0.6) and first < 0.9:
            return "full_name", min(two, max(mixed, either))
        if first >= 0.6:
            return "given_names", first
        if distinct < 0.2 * n and n > 20 and _share(stripped, lambda v: len(v.split()) >= 3) > 0.3:
            return "label", names
        return "family_name", names * (1 - first)
    lengths = sorted(len(v) for v in stripped)
    median = lengths[len(lengths) // 2]
    if _share(stripped, lambda v: _DR.match(v) is not None) >= 0.5:
        return "other", 0.5
    if _share(stripped, lambda v: _LOCAL_CODE.match(v) is not None) >= 0.9 and median <= 12:
        return "code", 0.6
    if median >= 20 and distinct >= 0.5 * n and _share(stripped, lambda v: " " in v) >= 0.8:
        return "text", 0.6
    if _share(stripped, lambda v: " " in v) >= 0.5 and distinct <= max(40, n // 3):
        return "label", 0.5
    if median >= 20 and _share(stripped, lambda v: " " in v) >= 0.8:
        return "text", 0.4
    return "other", 0.0


_UNITS = frozenset(
    {"g/l", "mg/l", "mmol/l", "µmol/l", "umol/l", "ui/l", "u/l", "%", "g/dl", "10*9/l", "10*12/l", "fl", "pg"}
    | {"mui/ml", "ng/ml", "pg/ml", "mui/l", "ui/ml", "giga/l", "tera/l", "meq/l", "sec", "s", "mm/h", "ratio"}
)


@cache
def _is_unit(v: str) -> bool:
    if v.lower() in _UNITS:
        return True
    if not any(ch in v for ch in "/%*^.[]{}0123456789"):  # a word alone: not a unit worth asking UCUM
        return False
    try:
        return is_ucum(v)
    except Exception:  # noqa: BLE001 - a grammar's failure on odd text: not a unit
        return False


def median_date(values: Sequence[str], *, serial: bool = False) -> date | None:
    dates = sorted(d for v in values if (d := parse_date(v, serial=serial)) is not None)
    return dates[len(dates) // 2] if dates else None


def to_text(value: object) -> str:
    """A spreadsheet cell as text: dates in ISO form, integral numbers without '.0'."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if not (value.hour or value.minute or value.second) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)
