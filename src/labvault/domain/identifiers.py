"""The identifiers a French lab's records carry, and their checks: NIR (with its key), FINESS,
the OIDs that name them in HL7 v2 and FHIR, and the short tokens that name rows. Pure: no
database, no keys; an error never repeats the value it refuses."""

from __future__ import annotations

import re

from labvault.errors import InvalidInput

OID_NIR = "1.2.250.1.213.1.4.8"
OID_NIA = "1.2.250.1.213.1.4.9"
OID_INS_TEST = "1.2.250.1.213.1.4.10"
OID_RPPS = "1.2.250.1.71.4.2.1"

OBJECT_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
TENANT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
# A result's code and code system: what every export format can carry (a FHIR code: words
# separated by single spaces; a system: one token). Checked at intake and by the CSV reader.
CODE_RE = re.compile(r"[^\s]+( [^\s]+)*\Z")
CODE_SYSTEM_RE = re.compile(r"\S+\Z")


def normalise_nir(nir: str) -> str:
    """Spaces, dots and dashes dropped, upper case (Corsica: 2A, 2B)."""
    return re.sub(r"[\s.\-]", "", nir).upper()


def _luhn_ok(digits: str) -> bool:
    from stdnum import luhn

    return luhn.is_valid(digits)


def validate_finess(finess: str) -> str:
    """A FINESS number: 9 characters, digits (Corsica: 2A/2B in place of the department)."""
    value = finess.strip().upper()
    if not re.fullmatch(r"(\d{2}|2A|2B)\d{7}", value):
        raise InvalidInput("a FINESS number has 9 characters: 2-digit department (or 2A/2B) and 7 digits")
    return value


def validate_nir(nir: str) -> str:
    """A NIR with its key (15 characters); the error never repeats the value."""
    from stdnum.exceptions import ValidationError
    from stdnum.fr import nir as stdnir

    value = normalise_nir(nir)
    try:
        stdnir.validate(value)
    except ValidationError:
        raise InvalidInput("invalid NIR: expected 13 digits and a valid 2-digit key") from None
    return value


def check_timezone(name: str) -> str:
    """An IANA time zone name (``Europe/Paris``, ``America/Cayenne``), or ``InvalidInput``."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = (name or "").strip()
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise InvalidInput("a time zone is an IANA name such as Europe/Paris")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput("unknown time zone (an IANA name such as Europe/Paris)") from None
    return name
