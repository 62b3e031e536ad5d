"""Specimen labels: one PDF page of 50 x 25 mm per specimen, for a label printer.

Each label carries the specimen id as a barcode (Code 128 by default, DataMatrix on request; drawn
by zxing-cpp as SVG, no network) and the minimal identity of the French public health code
(CSP R6211-22): family name, given name, birth date, sex, and the collection date and time, in the
lab's zone (``dd/mm/yyyy HH:MM``).
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

import zxingcpp

from labvault.lab.render import LAB_ZONE, SPECIMEN_LABEL, fr_date, fr_moment, html_to_pdf, render_html

__all__ = ["BarcodeKind", "Label", "barcode_svg", "labels_html", "labels_pdf"]


class BarcodeKind(enum.StrEnum):
    """DataMatrix by default: a specimen id of 32 characters in Code 128 is too dense for a 50 mm
    label (read back one time in eight too few at 430 dpi), where DataMatrix reads every time."""

    CODE128 = "code128"
    DATAMATRIX = "datamatrix"


_FORMATS = {
    BarcodeKind.CODE128: zxingcpp.BarcodeFormat.Code128,
    BarcodeKind.DATAMATRIX: zxingcpp.BarcodeFormat.DataMatrix,
}
_SVG_HEAD = re.compile(r'<svg width="(\d+)" height="(\d+)"')


@dataclass(frozen=True, slots=True)
class Label:
    specimen_id: str
    family_name: str
    given_name: str
    birth_date: date
    sex: str  # "M", "F" or "U"
    collected_at: datetime  # aware
    container: str = ""  # e.g. "Tube sec", "Tube EDTA"
    specimen_type: str = ""  # HL7 table 0487: SER, BLD, UR...


def barcode_svg(content: str, kind: BarcodeKind = BarcodeKind.DATAMATRIX) -> str:
    """The barcode of ``content`` as an SVG document that scales to the box it is drawn in."""
    if not content or not content.isascii() or not content.isprintable():
        raise ValueError("a specimen id for a barcode is printable ASCII, not empty")
    svg = zxingcpp.create_barcode(content, _FORMATS[kind]).to_svg(add_quiet_zones=True)
    svg = svg[svg.index("<svg") :]
    m = _SVG_HEAD.search(svg)
    if m is None:  # pragma: no cover - only if zxing-cpp changes its SVG
        raise RuntimeError("unexpected SVG from zxing-cpp")
    w, h = m.groups()
    aspect = "none" if kind is BarcodeKind.CODE128 else "xMidYMid meet"
    return _SVG_HEAD.sub(
        f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="{aspect}" shape-rendering="crispEdges"', svg, 1
    )


def _data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def labels_html(labels: Sequence[Label], *, kind: BarcodeKind = BarcodeKind.DATAMATRIX, zone: tzinfo = LAB_ZONE) -> str:
    items = [
        {
            "specimen_id": lab.specimen_id,
            "barcode": _data_uri(barcode_svg(lab.specimen_id, kind)),
            "family_name": lab.family_name.upper(),
            "given_name": lab.given_name,
            "birth_date": fr_date(lab.birth_date),
            "sex": lab.sex if lab.sex in ("M", "F") else "I",
            "collected_at": fr_moment(lab.collected_at, zone),
            "container": lab.container,
            "specimen_type": SPECIMEN_LABEL.get(lab.specimen_type, lab.specimen_type),
        }
        for lab in labels
    ]
    return render_html("labels.html", labels=items, matrix=kind is BarcodeKind.DATAMATRIX)


def labels_pdf(
    labels: Sequence[Label], *, kind: BarcodeKind = BarcodeKind.DATAMATRIX, zone: tzinfo = LAB_ZONE
) -> bytes:
    """One 50 x 25 mm page per label. ``ValueError`` for no label, or a specimen id a barcode cannot
    carry (empty, not printable ASCII)."""
    if not labels:
        raise ValueError("no label to print")
    for lab in labels:
        if lab.collected_at.tzinfo is None:
            raise ValueError("a label's collection time must be aware (its zone known)")
    return html_to_pdf(labels_html(labels, kind=kind, zone=zone))
