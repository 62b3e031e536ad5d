"""The patient report in French as PDF, read back with pdfplumber; and the cumulative report."""

from __future__ import annotations

import dataclasses
import io
import logging
import re
import tempfile
from datetime import timedelta

import pdfplumber
import pytest

from labvault.domain.models import IdentityStatus, ResultStatus
from labvault.domain.report import ReportLine, ReportSpecimen, ReportStatus
from labvault.lab.report import cumulative_pdf, display_value, report_from_domain, report_pdf
from tests.lab.fixtures import PATIENT, T0, report


def _text(pdf: bytes) -> str:
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return "\n".join(p.extract_text() for p in doc.pages)


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines()}


def test_values_units_ranges_flags_and_biologist_are_on_paper():
    """Each value (decimal comma, comparator kept), unit, reference interval, flag, previous
    result and comment; the validating biologist and time; lab, prescriber and specimen times."""
    text = _text(report_pdf(report()))
    lines = _lines(text)
    assert "Potassium (corrigé) * 6,8 HH mmol/L 3,5 à 5,1 4,2 (07/11/2026)" in lines
    assert "Créatinine * 105 H umol/L 53 à 97" in lines
    assert "CRP < 0,5 mg/L < 5" in lines
    assert "Hémoglobine 12,50 g/dL 12 à 16" in lines
    assert "Plaquettes * 95 L 10*9/L 150 à 400" in lines
    assert "Antigène HBs Négatif N Négatif" in lines
    assert "Contrôlé sur un second prélèvement | appel au service" in lines
    assert "Validé par Dr Anne Petit, biologiste, le 07/12/2026 13:35." in lines
    assert "FINESS 750012345" in lines
    assert "Prescripteur : Dr Luc BERNARD (RPPS 10001234567)" in text
    assert "Sérum 07/12/2026 08:35 07/12/2026 09:35" in lines
    assert "Compte rendu n° CR-1 · version 2" in text


def test_corrected_report_says_which_it_replaces():
    text = _text(report_pdf(report(ReportStatus.CORRECTED)))
    assert "Compte rendu corrigé" in text
    assert "Ce compte rendu remplace le compte rendu du 07/12/2026 11:35." in _lines(text)
    final = _text(report_pdf(report(ReportStatus.FINAL)))
    assert "remplace" not in final and "corrigé\n" not in final


def test_partial_report_shows_pending_results_without_value():
    lines = (
        *report().lines,
        ReportLine("r9", "Biochimie", "2345-7", "Glucose", "", "mmol/L", 4.1, 5.9, status=ResultStatus.PENDING),
    )
    text = _text(report_pdf(report(ReportStatus.PARTIAL, lines=lines)))
    assert "Compte rendu partiel" in text
    assert "Glucose (en cours) mmol/L 4,1 à 5,9" in _lines(text)


def test_ins_printed_only_for_a_qualified_identity():
    """M2: the INS is printed with the identity only when it is qualified; the traits always."""
    assert "INS (NIR) : 261037511200342" in _text(report_pdf(report()))
    validated = dataclasses.replace(PATIENT, identity_status=IdentityStatus.VALIDATED)
    text = _text(report_pdf(report(patient=validated)))
    assert "261037511200342" not in text
    assert re.search("Nom de naissance : ?LEFÈVRE", text) and "Nom utilisé : DURAND" in text
    assert "Né(e) le : 09/03/1961 · Sexe : Féminin" in text


def test_every_page_names_the_patient():
    many = tuple(
        ReportLine(f"x{i}", "Biochimie", f"{1000 + i}-0", f"Analyse {i}", f"{i}.5", "g/L", 1, 2) for i in range(90)
    )
    with pdfplumber.open(io.BytesIO(report_pdf(report(lines=many)))) as doc:
        pages = [p.extract_text() for p in doc.pages]
    assert len(pages) >= 2
    for k, page in enumerate(pages, start=1):
        assert "LEFÈVRE Marie Claire · né(e) le 09/03/1961 · demande 2612070042" in page
        assert f"Page {k} / {len(pages)}" in page


def test_cumulative_report_puts_dates_in_columns():
    older = report(
        ReportStatus.FINAL,
        report_id="CR-0",
        request_id="req0",
        issued_at=T0 - timedelta(days=29),
        specimens=(ReportSpecimen("s0", "SER", T0 - timedelta(days=30)),),
        lines=(ReportLine("q1", "Biochimie", "2823-3", "Potassium", "4.2", "mmol/L", 3.5, 5.1),),
    )
    text = _text(cumulative_pdf([report(), older]))
    lines = _lines(text)
    assert "Analyse Unité Valeurs de référence 07/11/2026 08:35 07/12/2026 08:35" in lines
    assert "Potassium mmol/L 3,5 à 5,1 4,2 6,8 HH" in lines
    assert "Créatinine umol/L 53 à 97 105 H" in lines
    other = dataclasses.replace(PATIENT, patient_id="p2")
    with pytest.raises(ValueError, match="one patient"):
        cumulative_pdf([report(), report(patient=other)])


def test_display_value_french():
    assert display_value("12.50") == "12,50"
    assert display_value(">=60") == ">= 60"
    assert display_value("Positif") == "Positif"


def test_report_from_domain_rows():
    from labvault.domain.models import Tenant
    from labvault.synth import LabGenerator

    gen = LabGenerator("t-report", 3)
    rec = gen.patient(0)
    req = rec.requests[0]
    results = [r for r in rec.results if r.request_id == req.request_id]
    rep = report_from_domain(
        report_id="CR-9",
        version=1,
        tenant=Tenant(id="t", name="Labo", finess="750000001"),
        lab_address="Paris",
        identity=rec.identity,
        request=req,
        specimens=[s for s in rec.specimens if s.request_id == req.request_id],
        results=results,
        prescriber=None,
        issued_at=T0,
    )
    live = [r for r in results if r.status not in (ResultStatus.CANCELLED, ResultStatus.ENTERED_IN_ERROR)]
    assert [line.result_id for line in rep.lines] == [r.result_id for r in live]
    first = live[0]
    expected = repr(first.value_num) if first.value_num is not None else first.value_text
    assert rep.lines[0].value == (first.comparator or "") + expected
    text = _text(report_pdf(rep))
    assert rec.identity.given_names in text
    assert display_value(rep.lines[0].value) in text


def test_no_personal_value_in_logs_or_temp_files(caplog, tmp_path, monkeypatch):
    """M3: rendering writes no temp file, and WeasyPrint's log records carry no document text
    (their arguments are dropped)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    caplog.set_level(logging.DEBUG)
    report_pdf(report())
    logging.getLogger("weasyprint").warning("Ignored %s in %s", "Lefèvre", "Marie Claire")
    assert "Lefèvre" not in caplog.text and "LEFÈVRE" not in caplog.text
    assert "Marie Claire" not in caplog.text and "261037511200342" not in caplog.text
    assert "Ignored" in caplog.text  # the record itself is kept
    assert list(tmp.iterdir()) == []
