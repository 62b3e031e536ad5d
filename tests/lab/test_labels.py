"""Specimen labels: 50 x 25 mm pages whose barcode decodes back to the specimen id, with the
minimal identity of CSP R6211-22."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pdfplumber
import pypdfium2
import pytest
import zxingcpp

from labvault.lab.labels import BarcodeKind, Label, barcode_svg, labels_pdf

MM = 72 / 25.4
LABELS = [
    Label(
        "S2612070042-1",
        "Lefèvre-Durand",
        "Marie-Hélène",
        date(1961, 3, 9),
        "F",
        datetime(2026, 12, 7, 7, 35, tzinfo=UTC),
        "Tube sec",
        "SER",
    ),
    Label(
        "S2612070042-2",
        "Martin",
        "Jean",
        date(1950, 1, 2),
        "M",
        datetime(2026, 7, 7, 6, 5, tzinfo=UTC),
        "Tube EDTA",
        "BLD",
    ),
]


def _decoded(pdf: bytes) -> list[list[tuple[str, str]]]:
    doc = pypdfium2.PdfDocument(pdf)
    return [
        [(b.text, b.format.name) for b in zxingcpp.read_barcodes(doc[i].render(scale=6).to_pil())]
        for i in range(len(doc))
    ]


@pytest.mark.parametrize(("kind", "fmt"), [(BarcodeKind.CODE128, "Code128"), (BarcodeKind.DATAMATRIX, "DataMatrix")])
def test_each_page_barcode_decodes_to_its_specimen_id(kind, fmt):
    """The barcode in the PDF, rasterised and read by zxing-cpp, gives back each specimen id exactly."""
    pdf = labels_pdf(LABELS, kind=kind)
    assert _decoded(pdf) == [[("S2612070042-1", fmt)], [("S2612070042-2", fmt)]]


def test_page_is_50_by_25_mm_and_holds_the_minimal_identity():
    """M2: the label shows name, given name, birth date, sex and collection date and time (Paris),
    one 50 x 25 mm page per label."""
    pdf = labels_pdf(LABELS)
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        assert len(doc.pages) == 2
        for page in doc.pages:
            assert page.width == pytest.approx(50 * MM, abs=0.01)
            assert page.height == pytest.approx(25 * MM, abs=0.01)
        first, second = (p.extract_text() for p in doc.pages)
    assert "LEFÈVRE-DURAND Marie-Hélène" in first
    assert "Né(e) le 09/03/1961" in first and "Sexe F" in first
    assert "Prélevé le 07/12/2026 08:35" in first  # 07:35 UTC is 08:35 in Paris (winter)
    assert "Prélevé le 07/07/2026 08:05" in second  # 06:05 UTC is 08:05 in Paris (summer)
    assert "Sexe M" in second and "MARTIN Jean" in second


def test_collection_time_in_the_zone_given():
    pdf = labels_pdf(LABELS[:1], zone=ZoneInfo("America/Cayenne"))
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        assert "Prélevé le 07/12/2026 04:35" in doc.pages[0].extract_text()


def test_refused_without_a_zone_or_with_an_id_no_barcode_carries():
    naive = Label("S1", "A", "B", date(2000, 1, 1), "F", datetime(2026, 1, 1, 8, 0))
    with pytest.raises(ValueError, match="aware"):
        labels_pdf([naive])
    with pytest.raises(ValueError, match="no label"):
        labels_pdf([])
    with pytest.raises(ValueError, match="printable ASCII"):
        barcode_svg("S1\n2")
