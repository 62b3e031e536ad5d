"""HTML to PDF for the lab's documents (labels, reports): Jinja2 templates, French formatting,
WeasyPrint with no network and a logger that never carries the document's text.

WeasyPrint fetches only ``data:`` URLs here (the barcodes); anything else is refused. Its log
records (warnings about CSS, fonts, images) are reduced to their message template, with the
arguments left out: an argument could quote a piece of the document, a patient's name.
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

LAB_ZONE = ZoneInfo("Europe/Paris")

_WEASYPRINT_LOGGERS = ("weasyprint", "weasyprint.progress", "fontTools", "fontTools.subset", "fontTools.ttLib")


class _NoArguments(logging.Filter):
    """Keeps a record's message template and drops its arguments (which may quote the document)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_FILTER = _NoArguments()


@cache
def _quiet_loggers() -> None:
    for name in _WEASYPRINT_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fr_number=fr_number, fr_float=fr_float, fr_date=fr_date, fr_moment=fr_moment)
    return env


def render_html(template: str, **context: object) -> str:
    return environment().get_template(template).render(**context)


@cache
def url_fetcher() -> Any:
    from weasyprint import URLFetcher  # type: ignore[import-untyped]

    return URLFetcher(allowed_protocols={"data"}, allow_redirects=False)


def html_to_pdf(html: str) -> bytes:
    """The PDF of an HTML document (no base URL: only ``data:`` resources are fetched)."""
    from weasyprint import HTML

    _quiet_loggers()
    pdf = HTML(string=html, url_fetcher=url_fetcher()).write_pdf()
    if not isinstance(pdf, bytes):  # pragma: no cover - write_pdf without a target returns bytes
        raise TypeError("WeasyPrint gave no PDF bytes")
    return pdf


def html_to_pdfs(html: str, anchor: str) -> list[bytes]:
    """One PDF per part of an HTML document whose parts start with an element whose id begins with
    ``anchor`` (laid out once: a letter per patient costs a page's layout, not a document's)."""
    from weasyprint import HTML

    _quiet_loggers()
    doc = HTML(string=html, url_fetcher=url_fetcher()).render()
    starts = [k for k, page in enumerate(doc.pages) if any(a.startswith(anchor) for a in page.anchors)]
    out: list[bytes] = []
    for n, first in enumerate(starts):
        last = starts[n + 1] if n + 1 < len(starts) else len(doc.pages)
        pdf = doc.copy(doc.pages[first:last]).write_pdf()
        if not isinstance(pdf, bytes):  # pragma: no cover - write_pdf without a target returns bytes
            raise TypeError("WeasyPrint gave no PDF bytes")
        out.append(pdf)
    return out


# ------------------------------------------------------------------------------ French formatting


def fr_number(text: str | None) -> str:
    """A number as written (``12.50``) the French way (``12,50``); digits kept."""
    return text.replace(".", ",") if text else ""


def fr_float(value: float | None) -> str:
    """A stored number the French way: ``3.5`` -> ``3,5``, ``150.0`` -> ``150``."""
    if value is None or not math.isfinite(value):
        return ""
    text = repr(float(value))
    if "e" in text:
        text = format(value, "f").rstrip("0").rstrip(".")
    if text.endswith(".0"):
        text = text[:-2]
    return text.replace(".", ",")


def fr_date(value: date | datetime | None, zone: tzinfo | None = LAB_ZONE) -> str:
    """``dd/mm/yyyy`` (an aware datetime's day in the lab's zone)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        if value.tzinfo is not None and zone is not None:
            value = value.astimezone(zone)
        value = value.date()
    return f"{value.day:02d}/{value.month:02d}/{value.year:04d}"


def fr_moment(value: datetime | None, zone: tzinfo | None = LAB_ZONE) -> str:
    """``dd/mm/yyyy HH:MM`` in the lab's zone (a naive datetime is already lab time)."""
    if value is None:
        return ""
    if value.tzinfo is not None and zone is not None:
        value = value.astimezone(zone)
    return f"{value.day:02d}/{value.month:02d}/{value.year:04d} {value.hour:02d}:{value.minute:02d}"


SEX_LABEL = {"M": "Masculin", "F": "Féminin"}
SPECIMEN_LABEL = {
    "BLD": "Sang total",
    "SER": "Sérum",
    "PLAS": "Plasma",
    "UR": "Urine",
    "SAL": "Salive",
    "CSF": "Liquide cérébrospinal",
    "STL": "Selles",
    "SPT": "Crachat",
}
