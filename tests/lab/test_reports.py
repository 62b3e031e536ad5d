"""Issued reports: a request's report built from the gateway's reads, partial then final, then
corrected naming the report it replaces; never stored in clear (only its digest); vendor accounts
and other labs refused, audited."""

from __future__ import annotations

import hashlib
import io
import json

import pdfplumber
import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.domain.report import ReportStatus
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.lab import reports, work
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.identity.helpers import ingest
from tests.lab.test_workflow import NA, TENANT, K, enter, events, lab  # noqa: F401 (the fixture)
from tests.lab.test_workflow_analyser import oru


def text_of(pdf: bytes) -> str:
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return "\n".join(page.extract_text() or "" for page in doc.pages)


def validated(gw, p):
    """A request of potassium and sodium, values entered by the technician, validated."""
    entered = enter(gw, p["tech"], (K, NA))
    k_id, na_id = (rid for rid, _ in entered.results)
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, entered.specimens[0][0])
        work.enter_result(u, TENANT, k_id, "4,7")
    return entered, k_id, na_id


def rows(raw_engine):
    with raw_engine.connect() as conn:
        return conn.execute(select(t.lab_report).order_by(t.lab_report.c.version)).all()


def test_partial_final_then_corrected(lab, raw_engine):
    """ISO 15189 7.4.1.6 / G1: a partial report while a result is not biologically validated, a
    final one once all are, the same one again when nothing changed, and a corrected one naming
    the report it replaces after a result changed; the PDF is not stored (its SHA-256 is), and the
    audit events name ids only."""
    gw, p = lab
    entered, k_id, na_id = validated(gw, p)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        first = reports.issue_report(u, TENANT, entered.request_id)
    assert first.status is ReportStatus.PARTIAL and first.version == 1 and first.replaces is None
    text = text_of(first.pdf)
    assert "Compte rendu partiel" in text and "ROUX" in text and "4,7" in text
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.enter_result(u, TENANT, na_id, "139")
        work.validate_technical(u, TENANT, [k_id, na_id])
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        work.validate_biological(u, TENANT, [k_id, na_id])
    with gw.unit(p["bio"], Purpose.CARE) as u:
        final = reports.issue_report(u, TENANT, entered.request_id)
        again = reports.issue_report(u, TENANT, entered.request_id)
    assert final.status is ReportStatus.FINAL and final.version == 2 and final.replaces is None
    assert again.report_id == final.report_id and again.pdf == final.pdf
    assert "Compte rendu partiel" not in text_of(final.pdf) and "Second" in text_of(final.pdf)
    stored = rows(raw_engine)
    assert [(r.version, r.status) for r in stored] == [(1, "partial"), (2, "final")]
    assert stored[1].pdf_sha256 == hashlib.sha256(final.pdf).hexdigest()
    assert stored[1].issued_by == p["bio"].account_id

    for action, outcome, refs, _ in events(raw_engine, "report:"):
        assert outcome == "allowed" and set(refs) <= {entered.request_id, first.report_id, final.report_id}, (
            action,
            refs,
        )
    with raw_engine.connect() as conn:
        assert all("ROUX" not in json.dumps([str(x) for x in r]) for r in conn.execute(select(t.lab_report)).all())


def test_a_corrected_result_gives_a_corrected_report(lab, raw_engine):
    """ISO 15189 7.4.1.6: a final report issued, then the result corrected (HL7 OBX-11 C of the
    same order): the new report is corrected, names the one it replaces, and its PDF says so;
    read again by a technician, the same bytes (its digest as stored), as FHIR and HL7 too."""
    gw, p = lab
    summary = ingest(gw, p["tech"], oru("F1", obr3="FIL-1"), tenant=TENANT)
    assert summary.accepted == 1, summary.reasons
    with raw_engine.connect() as conn:
        request_id = conn.execute(select(t.request.c.request_id)).scalar_one()
    with gw.unit(p["bio"], Purpose.CARE) as u:
        final = reports.issue_report(u, TENANT, request_id)
    assert final.status is ReportStatus.FINAL and "6,8" in text_of(final.pdf)
    fixed = oru("F2", obr3="FIL-1", potassium="5,2").replace(b"|HH|||F", b"|N|||C")
    summary = ingest(gw, p["tech"], fixed, tenant=TENANT)
    assert summary.accepted == 1, summary.reasons
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(InvalidInput, match="changed since"):
        reports.current_report(u, TENANT, request_id)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        corrected = reports.issue_report(u, TENANT, request_id)
    assert corrected.status is ReportStatus.CORRECTED and corrected.replaces == final.report_id
    assert corrected.version == 2
    text = text_of(corrected.pdf)
    assert "Compte rendu corrigé" in text and "remplace le compte rendu du" in text and "5,2" in text
    with gw.unit(p["tech"], Purpose.CARE) as u:
        read = reports.current_report(u, TENANT, request_id)
        fhir = reports.report_fhir(u, TENANT, request_id)
        hl7 = reports.report_oru(u, TENANT, request_id)
    assert read.report_id == corrected.report_id
    assert hashlib.sha256(read.pdf).hexdigest() == corrected.pdf_sha256 == rows(raw_engine)[-1].pdf_sha256
    assert fhir["resourceType"] == "DiagnosticReport" and fhir["status"] == "corrected"
    assert fhir["presentedForm"][0]["contentType"] == "application/pdf"
    obx = [seg for seg in hl7.split("\r") if seg.startswith("OBX|") and "2823-3" in seg]
    assert hl7.startswith("MSH|") and len(obx) == 1 and obx[0].split("|")[11] == "C"
    refs = [r for a, _, r, _ in events(raw_engine, "report:issue")]
    assert [final.report_id, request_id] in refs and [corrected.report_id, request_id, final.report_id] in refs


def test_who_may_issue_and_read(lab, gateway, raw_engine):
    """F3: a technician reads but does not issue; a vendor account, even the platform's
    operator, neither issues nor reads (refused, audited); another lab's biologist finds nothing."""
    gw, p = lab
    entered, _, _ = validated(gw, p)
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(AccessDenied):
        reports.issue_report(u, TENANT, entered.request_id)
    with gw.unit(p["tech"], Purpose.CARE) as u, pytest.raises(NotFound, match="no report issued"):
        reports.current_report(u, TENANT, entered.request_id)
    for role in ("operator", "support", "platform_admin"):
        who = vendor_user(gw, role)
        with gw.unit(who, Purpose.SUPPORT) as u, pytest.raises(AccessDenied):
            reports.issue_report(u, TENANT, entered.request_id)
        with gw.unit(who, Purpose.SUPPORT) as u, pytest.raises(AccessDenied):
            reports.current_report(u, TENANT, entered.request_id)
    assert [o for _, o, _, _ in events(raw_engine, "report:")].count("denied") >= 7
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises((AccessDenied, NotFound)):
        reports.issue_report(u, TENANT, entered.request_id)
    with gw.unit(p["other"], Purpose.CARE) as u, pytest.raises(NotFound):
        reports.issue_report(u, "lab-x", entered.request_id)
    assert rows(raw_engine) == []


def test_cumulative_report(lab):
    """A patient's cumulative report: one column per request, the values of each."""
    gw, p = lab
    validated(gw, p)
    validated(gw, p)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        pdf = reports.cumulative_report(u, TENANT, "pat-w1")
    text = text_of(pdf)
    assert "ROUX" in text and text.count("4,7") == 2
