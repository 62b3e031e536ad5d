"""``POST /api/v1/tenants/{tenant}/ingest``: one result file over HTTP, read and stored by the same
service as ``labvault ingest`` (``labvault.ingest.service``), with the same outcomes.

Bodies are written from the synthetic generator in each format (HL7 v2 batch, HPRIM Santé, FHIR
bundle, FHIR ndjson, CSV) and read from ../shared/realdata; callers are a lab's feed (service
account token), lab staff (session), another lab's feed, a ``read`` token, and every vendor role
by session and by its own ``ingest`` token.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labvault.access import Purpose
from labvault.api.middleware import INGEST_MAX_BODY
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.interop import fhir_out
from labvault.interop.writers import CSV_FIELDS, CsvWriter, HprimWriter, PatientReport
from labvault.store import schema as t
from labvault.synth.generator import LabGenerator
from labvault.synth.hl7 import messages
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_scopes import feed_token, snapshot
from tests.conftest import lab_user, need
from tests.interop.messages import NIR, oru

URL = f"/api/v1/tenants/{LAB_A}/ingest"
SEED = 11  # not the seed the labs were loaded with: these patients and messages are new
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")


def _reports(records) -> list[PatientReport]:
    return [PatientReport(r.identity, r.requests, r.specimens, r.results, []) for r in records]


def _resources(r, lab: str) -> list[dict]:
    pid = r.identity.patient_id
    return (
        [fhir_out.patient(r.identity, lab)]
        + [fhir_out.service_request(q) for q in r.requests]
        + [fhir_out.specimen(s, patient_id=pid) for s in r.specimens]
        + [fhir_out.observation(x, pid) for x in r.results]
    )


def generated(lab: str = LAB_A) -> dict[str, tuple[str, bytes, int, list[str]]]:
    """format -> (Content-Type, body, messages in it, the NIRs of its patients), from the generator.
    Each format carries orders of its own: the same order in two formats is one order (same ids)."""
    gen = LabGenerator(lab, SEED)
    records = list(gen.patients(10))
    hl7_nirs = [r.identity.nir for r in records[:1]]
    records = records[4:]  # the 4 HL7 messages below hold orders of patients 0 to 3 at most
    nirs = [r.identity.nir for r in records]
    hprim = io.BytesIO()
    with HprimWriter(hprim, sender="LAB", prescribers=gen.prescribers) as w:
        w.write(_reports(records[:2]))
    csv = io.BytesIO()
    with CsvWriter(csv, CSV_FIELDS, prescribers=gen.prescribers) as w:
        w.write(_reports(records[2:3]))
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": x} for x in _resources(records[3], lab)],
    }
    ndjson = "".join(json.dumps(x) + "\n" for r in records[4:6] for x in _resources(r, lab)).encode()
    hl7 = list(messages(lab, SEED, 4))
    return {
        "hl7v2": ("x-application/hl7-v2+er7", b"".join(hl7), 4, hl7_nirs),
        "hprim": ("application/x-hprim", hprim.getvalue(), 1, nirs[:2]),
        "csv": ("text/csv; charset=utf-8", csv.getvalue(), len(records[2].requests), nirs[2:3]),
        "fhir-json": ("application/fhir+json", json.dumps(bundle).encode(), 1, nirs[3:4]),
        "fhir-ndjson": ("application/fhir+ndjson", ndjson, 2, nirs[4:6]),
    }


def counts(api) -> dict[str, int]:
    with api.gateway.engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(getattr(t, name))).scalar_one()
            for name in ("ingest_message", "quarantine", "result", "patient_identity")
        }


def denied(api, action: str) -> int:
    e = t.audit_event
    with api.gateway.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(e).where(e.c.action == action, e.c.outcome == "denied")
        ).scalar_one()


def held(api, lab: str = LAB_A) -> dict[str, str]:
    """The lab's quarantined messages (id -> reason), read by a technician of the lab."""
    with api.gateway.unit(lab_user(api.gateway, lab, "technician"), Purpose.CARE) as u:
        return {i.quarantine_id: i.reason for i in intake.listing(u, lab)}


def test_each_format_is_stored_then_found_a_duplicate(api, bio_a):
    """M2, M5, F1: a lab's feed posts one file of each format with its Content-Type (and once more
    as text/plain, detected from the content): every message stored, readable by the lab's
    biologist; the same file again creates nothing."""
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    for fmt, (ctype, body, n, nirs) in generated().items():
        r = feed.post(URL, content=body, headers={"content-type": ctype})
        assert r.status_code == 200, (fmt, r.text[:300])
        out = r.json()
        assert (out["format"], out["messages"], out["accepted"], out["rejected"]) == (fmt, n, n, 0), (fmt, out)
        assert out["results"] > 0 and [o["status"] for o in out["outcomes"]] == ["accepted"] * n
        for nir in nirs:
            found = bio_a.get(f"/api/v1/tenants/{LAB_A}/patients", params={"nir": nir})
            assert found.status_code == 200 and len(found.json()) == 1, (fmt, found.text[:200])
        again = feed.post(URL, content=body, headers={"content-type": "text/plain"})
        assert again.status_code == 200, (fmt, again.text[:300])
        assert (again.json()["format"], again.json()["duplicates"], again.json()["accepted"]) == (fmt, n, 0)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_refused_message_is_kept_in_the_quarantine_with_its_reason(api, tech_a):
    """M2, G2: in a batch, the message with a bad NIR is refused with a precise reason that holds
    no value of it, kept in the lab's encrypted quarantine; the others are stored; the answer is
    422 with each message's outcome. Lab staff post with their session."""
    bad = NIR[:-2] + "00"
    body = oru("Q1") + oru("Q2", nir=bad) + oru("Q3")
    r = tech_a.post(URL, content=body, headers={"content-type": "x-application/hl7-v2+er7"})
    assert r.status_code == 422, r.text
    out = r.json()
    assert [o["status"] for o in out["outcomes"]] == ["accepted", "rejected", "accepted"]
    assert (out["accepted"], out["rejected"], out["messages"]) == (2, 1, 3)
    reason = out["outcomes"][1]["reason"]
    assert reason.startswith("body, message 2") and "not a valid NIR" in reason
    assert out["error"].startswith("1 of 3 message(s) refused") and bad not in r.text and "DUPONT" not in r.text
    [qid] = out["quarantine_ids"]
    assert out["outcomes"][1]["quarantine_id"] == qid and held(api) == {qid: reason}


def test_a_real_file_is_read_as_labvault_ingest_reads_it(api):
    """M2, M5: real files (NIST HL7 v2 case, an HPRIM file, an official FHIR bundle) get the very
    outcome the ingest service gives them, refusal reasons included, and the refused ones are in
    the quarantine."""
    need(REALDATA.is_dir(), "../shared/realdata is absent")
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    files = [
        REALDATA / "hl7v2/nist/ORU_R01_2.5.1_SampleTestCase1.hl7",
        sorted((REALDATA / "hprim/libhprim").iterdir())[0],
        REALDATA / "fhir/r4-official/Bundle-lri-example.json",
    ]
    for path in files:
        need(path.is_file(), f"{path} is absent")
        data = path.read_bytes()
        expected = [p.reason for p in ingest.read(data, file="body")]
        r = feed.post(URL, content=data, headers={"content-type": "text/plain"})
        out = r.json()
        assert r.status_code == (422 if any(expected) else 200), (path.name, r.text[:300])
        assert [o.get("reason") for o in out["outcomes"]] == expected, path.name
        assert out["format"] == ingest.detect(data)
        assert set(out["quarantine_ids"]) <= set(held(api))


def test_content_type_size_and_empty_bodies(api):
    """C2: a Content-Type the route does not take, or one the body contradicts, is 415; a body past
    the limit is 413 (announced or streamed); an empty one 400; a body the declared reader refuses
    is quarantined with that reader's reason. Only the quarantined one leaves a trace."""
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    start = counts(api)
    for ctype, body, status, words in (
        ("image/png", oru("C1"), 415, "Content-Type not taken"),
        ("text/csv", oru("C1"), 415, "says CSV but the body reads as HL7 v2"),
        ("application/fhir+json", oru("C1"), 415, "says FHIR JSON or FHIR ndjson but the body reads as HL7 v2"),
        ("text/plain", b"", 400, "empty body"),
        ("text/plain", b" \r\n", 400, "empty body"),
    ):
        r = feed.post(URL, content=body, headers={"content-type": ctype})
        assert r.status_code == status and words in r.json()["error"], (ctype, r.status_code, r.text)
    big = oru("C2") + b"\r" * (INGEST_MAX_BODY - len(oru("C2")) + 1)
    r = feed.post(URL, content=big, headers={"content-type": "text/plain"})
    assert r.status_code == 413 and str(INGEST_MAX_BODY) in r.json()["error"]

    def chunks():
        yield oru("C3")
        for _ in range(INGEST_MAX_BODY // 65536 + 1):
            yield b"\r" * 65536

    r = feed.post(URL, content=chunks(), headers={"content-type": "text/plain"})
    assert r.status_code == 413
    assert counts(api) == start
    r = feed.post(URL, content=b"not a result file", headers={"content-type": "x-application/hl7-v2+er7"})
    assert r.status_code == 422 and "MSH" in r.json()["outcomes"][0]["reason"], r.text
    assert counts(api) == {**start, "quarantine": start["quarantine"] + 1}
    # under the limit but past the other routes' 64 KiB: taken here
    body = generated()["fhir-ndjson"]
    assert len(body[1]) > 64 * 1024
    assert feed.post(URL, content=body[1], headers={"content-type": body[0]}).status_code == 200


def test_who_may_ingest_into_a_lab(api, tech_a, admin_a):
    """F1, F2, G1, E2: every vendor role, by session and by its own ingest token, is refused with
    the reason and the refusal recorded; so are another lab's feed and a read token; nothing is
    stored or quarantined. The lab's feed and technician can; the lab's admin, who writes no
    results, cannot."""
    body = oru("W1")
    hl7 = {"content-type": "x-application/hl7-v2+er7"}
    before = snapshot(api)
    for role in VENDOR_ROLES:
        session = api.login(role)
        token = api.bearer(api.token(session, ["ingest"])[1])
        for c in (session, token):
            n = denied(api, "patient:result:create")
            r = c.post(URL, content=body, headers=hl7)
            assert r.status_code == 403 and "vendor accounts do not write lab data" in r.json()["error"], (role, r.text)
            assert denied(api, "patient:result:create") == n + 1, role
    other = api.bearer(feed_token(api, LAB_B, ["ingest"]))
    n = denied(api, "patient:result:create")
    r = other.post(URL, content=body, headers=hl7)
    assert r.status_code == 403 and f"account of lab '{LAB_B}' cannot act on lab '{LAB_A}'" in r.json()["error"]
    assert denied(api, "patient:result:create") == n + 1
    reader = api.bearer(feed_token(api, LAB_A, ["read"]))
    r = reader.post(URL, content=body, headers=hl7)
    assert r.status_code == 403 and "does not include 'ingest'" in r.json()["error"]
    r = admin_a.post(URL, content=body, headers=hl7)
    assert r.status_code == 403 and "patient:result:create" in r.json()["error"]
    assert tech_a.post("/api/v1/tenants/no-such-lab/ingest", content=body, headers=hl7).status_code in (403, 404)
    after = snapshot(api)
    for table in ("ingest_message", "quarantine", "result", "patient_identity", "request", "specimen"):
        assert after[table] == before[table], table

    assert api.bearer(feed_token(api, LAB_A, ["ingest"])).post(URL, content=body, headers=hl7).status_code == 200
    r = tech_a.post(URL, content=body, headers=hl7)
    assert r.status_code == 200 and r.json()["duplicates"] == 1


def test_a_body_that_is_no_lab_message_is_415_and_not_quarantined(api):
    """A YAML file, a text note, bytes: none of the formats, no Content-Type naming one: 415 with
    the reason, nothing stored, nothing kept in the quarantine (it is no lab message)."""
    feed = api.bearer(feed_token(api, LAB_A, ["ingest"]))
    start = counts(api)
    for ctype, body in (
        ("text/plain", b"version: 1\nkind: migration_in\n"),
        ("application/octet-stream", b"\x00\x01"),
        (None, b"just a note"),
    ):
        r = feed.post(URL, content=body, headers={"content-type": ctype} if ctype else {})
        assert r.status_code == 415 and "format not recognised" in r.json()["error"], (ctype, r.text)
    assert counts(api) == start
