"""Languages of the pages: French by default, English on choice; numbers and dates the local way.

The pages' strings are written in French; ``locale/en/LC_MESSAGES/messages.po`` gives them in
English. Catalogues are read with Babel when the app starts (no compiled file to keep in step).
"""

from __future__ import annotations

import functools
import io
from datetime import date, datetime, tzinfo
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = ("fr", "en")
DEFAULT = "fr"
_LOCALES = {"fr": Locale.parse("fr_FR"), "en": Locale.parse("en_GB")}
_DIR = Path(__file__).parent / "locale"


def language(asked: str | None) -> str:
    return asked if asked in LANGUAGES else DEFAULT


@functools.cache
def translations(lang: str) -> NullTranslations:
    """The catalogue of ``lang``: every ``.po`` file of its folder (one per part of the interface);
    French is the source language."""
    folder = _DIR / lang / "LC_MESSAGES"
    files = sorted(folder.glob("*.po")) if lang != DEFAULT and folder.is_dir() else []
    if not files:
        return NullTranslations()
    merged: Translations | None = None
    for po in files:
        with po.open("rb") as f:
            catalog = read_po(f, locale=lang)
        buf = io.BytesIO()
        write_mo(buf, catalog)
        buf.seek(0)
        part = Translations(buf)
        merged = part if merged is None else merged.merge(part)
    return merged or NullTranslations()


# Statuses and other codes shown on pages, in French (the English catalogue translates them).
LABELS = {
    "final": "validé",
    "preliminary": "préliminaire",
    "pending": "en attente",
    "corrected": "corrigé",
    "cancelled": "annulé",
    "entered-in-error": "erroné",
    "registered": "enregistrée",
    "partial": "partielle",
    "amended": "complétée",
    "provisional": "provisoire",
    "recovered": "récupérée",
    "validated": "validée",
    "qualified": "qualifiée",
}


def label(code: object, lang: str) -> str:
    """A status or code as people read it, in ``lang``; an unknown code as it is."""
    text = LABELS.get(str(code))
    return translations(lang).gettext(text) if text else str(code)


def number(text: str | None, lang: str) -> str:
    """A number as written (``12.50``) in the language's way (``12,50`` in French); digits kept."""
    if not text:
        return ""
    return text.replace(".", ",") if lang == "fr" else text.replace(",", ".")


def day(value: date | datetime | None, lang: str, zone: tzinfo | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = (value.astimezone(zone) if zone is not None and value.tzinfo else value).date()
    return _day(value, lang)


@functools.lru_cache(maxsize=8192)
def _day(value: date, lang: str) -> str:
    """A day as written in ``lang`` (Babel's formatting costs tens of microseconds: a page shows
    the same few days many times)."""
    return format_date(value, "short" if lang == "fr" else "medium", locale=_LOCALES[lang])


def moment(value: datetime | None, lang: str, zone: tzinfo | None = None) -> str:
    if value is None:
        return ""
    if zone is not None and value.tzinfo is not None:
        value = value.astimezone(zone)
    return format_datetime(value, "dd/MM/yyyy HH:mm" if lang == "fr" else "d MMM yyyy HH:mm", locale=_LOCALES[lang])
