"""The FHIR API against two small holes: links built from the configured public base URL, never the
request's Host header; and a number that is no finite value (a 900,000-digit NM value, read as
infinity before) refused at ingest, with a search that answers whatever was stored earlier."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation

from labvault.access import Purpose
from labvault.config import Settings
from labvault.errors import ConfigError
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.ingest.service import Ingestor, Summary
from labvault.synth import LabGenerator
from tests.api.conftest import LAB_A, PATIENTS, SEED
from tests.conftest import ADMIN, lab_user
from tests.interop.messages import oru

INS = "urn:oid:1.2.250.1.213.1.4.8"
PUBLIC = "https://labvault.lab-a.example/base"
HUGE = "9" * 900_000


def configure(api, url: str | None) -> None:
    """The API's public base URL, as ``LABVAULT_PUBLIC_BASE_URL`` would set it."""
    rt = api.app.state.runtime
    settings = Settings.from_env(
        {"LABVAULT_HOME": str(rt.settings.home), **({"LABVAULT_PUBLIC_BASE_URL": url} if url else {})}
    )
    api.app.state.runtime = dataclasses.replace(rt, settings=settings)


def all_links(body: dict) -> list[str]:
    return [ln["url"] for ln in body.get("link", [])] + [e["fullUrl"] for e in body.get("entry", [])]


def richest_patient():
    return max(LabGenerator(LAB_A, SEED).patients(PATIENTS), key=lambda r: len(r.results))


def test_links_use_the_configured_base_never_the_host_header(api, bio_a):
    configure(api, PUBLIC + "/")
    rec = richest_patient()
    pid = rec.identity.patient_id
    forged = {"host": "attacker.example:8443", "x-forwarded-host": "attacker.example"}
    r = bio_a.get("/fhir/R4/Observation", params={"patient": pid, "_count": 2, "_offset": 2}, headers=forged)
    assert r.status_code == 200, r.text
    body = r.json()
    links = all_links(body)
    assert {ln["relation"] for ln in body["link"]} == {"self", "next", "previous"} and len(links) == 5
    assert all(u.startswith(f"{PUBLIC}/fhir/R4/") for u in links), links
    assert "attacker" not in r.text and "testserver" not in r.text
    nxt = next(ln["url"] for ln in body["link"] if ln["relation"] == "next")
    parts = urlsplit(nxt)
    assert parts.path == "/base/fhir/R4/Observation" and "_offset=4" in parts.query
    r = bio_a.get("/fhir/R4/Patient", params={"identifier": f"{INS}|{rec.identity.nir}"}, headers=forged)
    assert [e["fullUrl"] for e in r.json()["entry"]] == [f"{PUBLIC}/fhir/R4/Patient/{pid}"]
    meta = api.client().get("/fhir/R4/metadata", headers=forged).json()
    assert meta["implementation"]["url"] == f"{PUBLIC}/fhir/R4"


def test_links_default_to_the_local_server_when_unset(api, bio_a):
    configure(api, None)
    pid = richest_patient().identity.patient_id
    body = bio_a.get(
        "/fhir/R4/Observation", params={"patient": pid, "_count": 1}, headers={"host": "attacker.example"}
    ).json()
    assert all(u.startswith("http://127.0.0.1:8000/fhir/R4/") for u in all_links(body))


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://x.example",
        "https://x.example/?q=1",
        "https://user@x.example",
        "x.example",
        "https://x.example/#f",
        "https://x .example",
    ],
)
def test_a_bad_public_base_url_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="LABVAULT_PUBLIC_BASE_URL must be"):
        Settings.from_env({"LABVAULT_HOME": str(tmp_path), "LABVAULT_PUBLIC_BASE_URL": bad})
    (tmp_path / "labvault.toml").write_text('[labvault]\npublic_base_url = "https://lab.example:8443/"\n')
    assert Settings.from_env({"LABVAULT_HOME": str(tmp_path)}).public_base_url == "https://lab.example:8443"


def test_900000_digit_value_refused_at_ingest_and_search_answers(api, bio_a):
    """The reported case end to end: the message is refused (position, no value, quarantined),
    nothing is stored, and the patient's Observation search answers 200."""
    rec = richest_patient()
    pid = rec.identity.patient_id
    tech = lab_user(api.gateway, LAB_A, "technician")
    with api.gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        before = u.counts(LAB_A)["result"]
    summary = Summary("feed.hl7", "hl7v2")
    message = oru("BIG1", nir=rec.identity.nir, value=HUGE)
    Ingestor(api.gateway, tech, LAB_A).ingest_pieces(ingest.read(message, file="feed.hl7"), summary)
    assert (summary.accepted, summary.rejected) == (0, 1)
    [reason] = summary.reasons
    assert reason.startswith("feed.hl7, message 1, OBX[1], OBX-5: number of more than 400 characters"), reason
    assert "9999" not in reason and rec.identity.nir not in reason
    with api.gateway.unit(lab_user(api.gateway, LAB_A, "biologist"), Purpose.CARE) as u:
        [held] = intake.listing(u, LAB_A)
        assert held.reason == reason
    with api.gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        assert u.counts(LAB_A)["result"] == before
    r = bio_a.get("/fhir/R4/Observation", params={"patient": pid, "_count": 500})
    assert r.status_code == 200, r.text
    assert r.json()["total"] >= 1


def test_search_answers_over_numbers_stored_non_finite_earlier(api, bio_a):
    """Rows stored before the readers refused them (value or bounds NaN or infinity): the search
    answers 200 with valid R4, the value left out with dataAbsentReason, the bound left out."""
    rec = richest_patient()
    pid = rec.identity.patient_id
    targets = [r for r in rec.results if r.value_num is not None][:3]
    assert len(targets) == 3
    bad = [
        dataclasses.replace(targets[0], result_id="bad-value-inf", value_num=float("inf")),
        dataclasses.replace(targets[1], result_id="bad-value-nan", value_num=float("nan")),
        dataclasses.replace(targets[2], result_id="bad-bound-inf", ref_low=float("-inf"), ref_high=5.0),
    ]
    tech = lab_user(api.gateway, LAB_A, "technician")
    with api.gateway.unit(tech, Purpose.INGEST) as u:  # the store as the old readers left it
        u.add_results(LAB_A, bad)
    r = bio_a.get("/fhir/R4/Observation", params={"patient": pid, "_count": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    Bundle.model_validate(body)
    got = {e["resource"]["id"]: e["resource"] for e in body["entry"]}
    for rid in ("bad-value-inf", "bad-value-nan"):
        o = got[rid]
        Observation.model_validate(o)
        assert "valueQuantity" not in o and o["dataAbsentReason"]["coding"][0]["code"] == "error"
    o = got["bad-bound-inf"]
    Observation.model_validate(o)
    assert o["valueQuantity"]["value"] == targets[2].value_num
    assert "low" not in o["referenceRange"][0] and o["referenceRange"][0]["high"]["value"] == 5.0
    assert "Infinity" not in r.text and "NaN" not in r.text
