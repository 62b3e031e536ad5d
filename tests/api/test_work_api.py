"""The lab's daily work over HTTP: a request entered, its labels, the specimen received, values
entered and validated, the report issued then read again as PDF, FHIR and HL7; a vendor account
refused and audited, another lab finding nothing, bad input answered 4xx with one-line reasons."""

from __future__ import annotations

import base64
import io

import pdfplumber
from sqlalchemy import func, select

from labvault.store import schema as t
from tests.api.conftest import LAB_A, LAB_B

A = f"/api/v1/tenants/{LAB_A}"
BODY = {"tests": ["2823-3", "2951-2"], "collected_at": "2026-12-07T08:30:00+01:00", "collector": "IDE Fontaine"}


def text_of(pdf: bytes) -> str:
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return "\n".join(p.extract_text() or "" for p in doc.pages)


def denied(api, action: str) -> int:
    e = t.audit_event
    with api.gateway.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(e).where(e.c.action == action, e.c.outcome == "denied")
        ).scalar_one()


def test_the_path_over_http(api, tech_a, bio_a):
    """F3, ISO 15189 7.4.1.6: request, labels, reception, values, technical then biological
    validation, the final report issued by a biologist and read again by a technician."""
    patient = api.patients[LAB_A][0]
    r = tech_a.post(f"{A}/requests", json={**BODY, "patient_id": patient})
    assert r.status_code == 201, r.text
    done = r.json()
    (specimen,) = done["specimens"]
    assert specimen["container"] == "SST gold"
    k_id, na_id = (x["result_id"] for x in done["results"])
    r = tech_a.get(f"{A}/requests/{done['request_id']}/labels")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert specimen["specimen_id"] in text_of(r.content) or r.content.startswith(b"%PDF")
    assert tech_a.post(f"{A}/specimens/{specimen['specimen_id']}/receive").json()["status"] == "received"
    assert tech_a.post(f"{A}/results/{k_id}/value", json={"value": "4,7"}).json()["workflow"] == "entered"
    assert tech_a.post(f"{A}/results/{na_id}/value", json={"value": "139"}).status_code == 200
    r = tech_a.post(f"{A}/results/validate", json={"ids": [k_id, na_id], "level": "technical"})
    assert [x["workflow"] for x in r.json()] == ["technical", "technical"]
    r = tech_a.post(f"{A}/results/validate", json={"ids": [k_id], "level": "biological"})
    assert r.status_code == 403
    r = bio_a.post(f"{A}/results/validate", json={"ids": [k_id, na_id], "level": "biological"})
    assert [x["status"] for x in r.json()] == ["final", "final"]
    assert tech_a.post(f"{A}/requests/{done['request_id']}/report").status_code == 403
    r = bio_a.post(f"{A}/requests/{done['request_id']}/report")
    assert r.status_code == 201 and r.headers["x-report-status"] == "final"
    issued = r.content
    assert "4,7" in text_of(issued)
    r = tech_a.get(f"{A}/requests/{done['request_id']}/report")
    assert r.status_code == 200 and r.content == issued
    fhir = tech_a.get(f"{A}/requests/{done['request_id']}/report.fhir").json()
    assert fhir["status"] == "final" and base64.b64decode(fhir["presentedForm"][0]["data"]) == issued
    hl7 = tech_a.get(f"{A}/requests/{done['request_id']}/report.hl7").text
    assert hl7.startswith("MSH|") and "2823-3" in hl7


def test_vendor_and_other_lab_refused(api, tech_a, support, operator, bio_b):
    """F3, G1: a vendor account neither enters nor reads the lab's work (403, audited); another
    lab's biologist gets 403/404 and nothing of lab A."""
    patient = api.patients[LAB_A][0]
    request_id = tech_a.post(f"{A}/requests", json={**BODY, "patient_id": patient}).json()["request_id"]
    before = denied(api, "request:enter")
    for c in (support, operator):
        assert c.post(f"{A}/requests", json={**BODY, "patient_id": patient}).status_code == 403
        assert c.get(f"{A}/requests/{request_id}/report").status_code in (403, 404)
    assert denied(api, "request:enter") == before + 2
    assert denied(api, "report:read") >= 2
    assert bio_b.post(f"{A}/requests", json={**BODY, "patient_id": patient}).status_code in (403, 404)
    assert bio_b.get(f"{A}/requests/{request_id}/labels").status_code in (403, 404)
    r = bio_b.post(f"/api/v1/tenants/{LAB_B}/requests/{request_id}/report")
    assert r.status_code == 404


def test_bad_input_is_4xx_with_one_line(api, tech_a):
    """Bad input: 4xx, one line naming the field, never the value."""
    patient = api.patients[LAB_A][0]
    cases = [
        ({**BODY, "patient_id": patient, "tests": ["NOPE-1"]}, 400),
        ({**BODY, "patient_id": "no-such-patient"}, 404),
        ({**BODY, "patient_id": patient, "collected_at": "yesterday"}, 422),
        ({**BODY, "patient_id": patient, "extra": 1}, 422),
        ({**BODY, "patient_id": patient, "tests": []}, 422),
    ]
    for body, status in cases:
        r = tech_a.post(f"{A}/requests", json=body)
        assert r.status_code == status, (body, r.text)
        assert "\n" not in r.json()["error"] and "yesterday" not in r.json()["error"]
    assert tech_a.post(f"{A}/specimens/nope/receive").status_code == 404
    assert tech_a.post(f"{A}/specimens/nope/reject", json={"nonconformity": "x"}).status_code == 400
    assert tech_a.post(f"{A}/results/validate", json={"ids": ["x"], "level": "final"}).status_code == 422
    assert tech_a.get(f"{A}/requests/nope/report").status_code == 404


RULES = 'version = "av-http"\n[[rule]]\nid = "AV"\ntests = ["*"]\nrequire = ["in_reference_range", "no_critical"]\n'


def test_catalogue_rules_and_details_over_http(api, tech_a, bio_a, admin_a, support, operator, bio_b):
    """F3, versioned catalogue and rules: the lab's admin loads a catalogue and writes rules, a
    biologist activates them (named), the admin sets the lab's address and the report prints it;
    vendor accounts and another lab are refused (403/404, audited); bad TOML is a 400 naming the fault."""
    from labvault.lab.catalogue import default_text

    own = default_text().replace('version = "labvault-default-2025.1"', 'version = "lab-a-http"')
    assert tech_a.get(f"{A}/catalogue").json()["number"] == 0
    r = admin_a.post(f"{A}/catalogue", json={"toml": own})
    assert r.status_code == 201, r.text
    assert (r.json()["number"], r.json()["version"]) == (1, "lab-a-http") and "hematologie" in r.json()["sections"]
    assert admin_a.post(f"{A}/catalogue", json={"toml": own}).status_code == 400  # the same version again
    bad = admin_a.post(f"{A}/catalogue", json={"toml": 'version = "x"\n[[test]]\ncode = 1\n'})
    assert bad.status_code == 400 and "\n" not in bad.json()["error"]
    written = admin_a.post(f"{A}/autovalidation-rules", json={"toml": RULES})
    assert written.status_code == 201 and written.json()["activated_by"] is None
    number = written.json()["number"]
    assert admin_a.post(f"{A}/autovalidation-rules/{number}/activate").status_code == 403
    r = bio_a.post(f"{A}/autovalidation-rules/{number}/activate")
    assert r.status_code == 200 and r.json()["activated_by"]
    r = admin_a.put(
        f"{A}/details", json={"address": "12 rue des Tilleuls, 75012 Paris", "working_hours": "mon-fri 07:00-19:00"}
    )
    assert r.status_code == 200 and r.json()["working_hours"] == "mon-fri 07:00-19:00"
    assert admin_a.put(f"{A}/details", json={"working_hours": "every day"}).status_code == 400
    before = denied(api, "catalogue:load")
    for c in (support, operator):
        assert c.post(f"{A}/catalogue", json={"toml": own.replace("lab-a-http", "v9")}).status_code == 403
        assert c.put(f"{A}/details", json={"address": "ailleurs"}).status_code == 403
        assert c.post(f"{A}/autovalidation-rules/{number}/activate").status_code == 403
    assert denied(api, "catalogue:load") == before + 2
    assert bio_b.get(f"{A}/catalogue").status_code in (403, 404)
    assert bio_b.put(f"{A}/details", json={"address": "x"}).status_code in (403, 404)
    # The report prints the lab's address.
    patient = api.patients[LAB_A][0]
    done = tech_a.post(f"{A}/requests", json={**BODY, "patient_id": patient}).json()
    k_id = done["results"][0]["result_id"]
    tech_a.post(f"{A}/specimens/{done['specimens'][0]['specimen_id']}/receive")
    tech_a.post(f"{A}/results/{k_id}/value", json={"value": "4,2"})
    tech_a.post(f"{A}/results/validate", json={"ids": [k_id], "level": "technical"})
    bio_a.post(f"{A}/results/validate", json={"ids": [k_id], "level": "biological"})
    r = bio_a.post(f"{A}/requests/{done['request_id']}/report")
    assert r.status_code == 201
    assert "12 rue des Tilleuls" in text_of(r.content)
