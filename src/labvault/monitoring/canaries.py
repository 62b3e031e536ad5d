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

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from labvault.access.canaries import Trace

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = ["Trace", "find_in_leak", "leak_row"]

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


def find_in_leak(u: Unit, tenant_id: str, rows: Iterable[Mapping[str, Any]]) -> list[Trace]:
    """The canaries among ``rows`` (their position in ``rows``, marker and package id: None for a
    canary the lab seeded, a package's id for the canary planted into that package only).
    Authorised as ``canary:list`` (the lab's lab_admin and lab_dpo); audited as ``canary:trace``."""
    return u.canaries_among(tenant_id, [leak_row(r) for r in rows])
