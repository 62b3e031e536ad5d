"""The lab's daily work in the pages, over HTTP: a request entered from the catalogue, its labels
PDF, the specimen received by its barcode, a value entered by hand, technical validation by the
technician, biological validation by a biologist who did not enter it (self-validation refused
with its reason), the report PDF; vendor accounts refused and audited on every route, another
lab's ids not found, an anonymous visitor sent to sign in."""

from __future__ import annotations

import io
import re

import pdfplumber
import pytest

from labvault.crypto.keys import PLATFORM
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.api.test_pages_refusals import _account_id, _denied

WHEN = "2026-06-12T08:30"


def _enter(c, patient_id: str, tests: list[str], **extra) -> str:
    """A request entered through the form; its id (from the page it leads to)."""
    form = c.get(f"/work/requests/new?patient={patient_id}")
    assert form.status_code == 200, form.text
    data = {
        "csrf": _form_csrf(form.text),
        "patient_id": patient_id,
        "test": tests,
        "collected_at": WHEN,
        "collector": "IDE Martin",
        "clinical": "bilan de contrôle",
        "urgency": "urgent",
        "pregnant": "no",
        **extra,
    }
    r = c.post("/work/requests/new", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/work/requests/([^/]+)", r.headers["location"])
    assert m
    return m.group(1)


def _ids(html: str, prefix: str) -> list[str]:
    return re.findall(rf'id="{prefix}-([^"]+)"', html)


def _specimens(c, request_id: str) -> list[str]:
    page = c.get(f"/work/requests/{request_id}")
    assert page.status_code == 200
    return re.findall(r'href="/work/reception\?specimen=([^"]+)"', page.text)


def test_a_request_from_entry_to_the_report(api):
    """G1, M2: the technician enters a request (potassium and sodium share a tube,
    haemoglobin another: two specimens), prints its labels (a PDF naming the patient), receives
    a specimen by its id, enters a value, validates it technically; the biologist validates it
    biologically; the report PDF holds the value and the biologist and is partial while the
    other results wait, their values never shown."""
    tech = _page_login(api, f"technician@{LAB_A}")
    bio = _page_login(api, f"biologist@{LAB_A}")
    patient = api.patients[LAB_A][0]
    page = tech.get(f"/patients/{patient}")
    assert f'href="/work/requests/new?patient={patient}"' in page.text
    request_id = _enter(tech, patient, ["K", "NA", "HB"])
    specimens = _specimens(tech, request_id)
    assert len(specimens) == 2

    r = tech.get(f"/work/requests/{request_id}/labels.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF") and r.headers["content-disposition"].startswith("attachment")
    with pdfplumber.open(io.BytesIO(r.content)) as pdf:
        assert len(pdf.pages) == 2
        text = "\n".join(p.extract_text() or "" for p in pdf.pages)
    with api.gateway.unit(api.accounts.creator(LAB_A), _care()) as u:
        ident = u.get_patient(LAB_A, patient)
    assert ident.family_name.upper() in text and "12/06/2026 08:30" in text

    # reception: the scanner types the id, Enter posts it
    rec = tech.get("/work/reception")
    assert "autofocus" in rec.text
    r = tech.post(
        "/work/reception",
        data={"csrf": _form_csrf(rec.text), "specimen_id": f" {specimens[0]}\n"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    shown = tech.get(r.headers["location"])
    assert "réceptionné" in shown.text and "specimen:received" in shown.text
    again = tech.post("/work/reception", data={"csrf": _form_csrf(rec.text), "specimen_id": specimens[0]})
    assert again.status_code == 400 and "cannot become received" in again.text

    # worklist: the potassium of the received tube entered by hand, then validated technically
    wl = tech.get("/work/worklist")
    waiting = _ids(wl.text, "value")
    assert len(waiting) == 3
    potassium = _result_of(api, request_id, "2823-3")
    assert potassium in waiting
    r = tech.post(
        "/work/worklist/enter",
        data={"csrf": _form_csrf(wl.text), f"value-{potassium}": "4,2"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    wl = tech.get("/work/worklist")
    assert _ids(wl.text, "tech") == [potassium] and "4,2" in wl.text
    r = tech.post(
        "/work/worklist/technical", data={"csrf": _form_csrf(wl.text), "result_id": potassium}, follow_redirects=False
    )
    assert r.status_code == 303, r.text

    # biological validation by the biologist, who did not enter it
    val = bio.get("/work/validation")
    assert _ids(val.text, "bio") == [potassium] and "4,2" in val.text and 'accesskey="v"' in val.text
    r = bio.post(
        "/work/validation", data={"csrf": _form_csrf(val.text), "result_id": potassium}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert _ids(bio.get("/work/validation").text, "bio") == []

    r = bio.get(f"/work/requests/{request_id}/report.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF")
    with pdfplumber.open(io.BytesIO(r.content)) as pdf:
        text = "\n".join(p.extract_text() or "" for p in pdf.pages)
    assert "4,2" in text and "mmol/L" in text
    assert api.accounts[f"biologist@{LAB_A}"].email not in text
    assert re.search(r"partiel", text, re.I)
    assert f'href="/work/requests/{request_id}/report.pdf"' in bio.get(f"/patients/{patient}").text


def _care():
    from labvault.access import Purpose

    return Purpose.CARE


def _result_of(api, request_id: str, code: str) -> str:
    with api.gateway.unit(api.accounts.creator(LAB_A), _care()) as u:
        return next(r.result_id for r in u.results_of_request(LAB_A, request_id) if r.code == code)


def test_self_validation_is_refused_with_its_reason(api):
    """G1: a biologist who entered a value may validate it technically, never biologically: the
    validation screen says why, nothing is validated."""
    bio = _page_login(api, f"biologist@{LAB_A}")
    request_id = _enter(bio, api.patients[LAB_A][1], ["K"])
    (potassium,) = [_result_of(api, request_id, "2823-3")]
    rec = bio.get("/work/reception")
    for sid in _specimens(bio, request_id):
        bio.post("/work/reception", data={"csrf": _form_csrf(rec.text), "specimen_id": sid})
    wl = bio.get("/work/worklist")
    bio.post("/work/worklist/enter", data={"csrf": _form_csrf(wl.text), f"value-{potassium}": "5.1"})
    bio.post("/work/worklist/technical", data={"csrf": _form_csrf(wl.text), "result_id": potassium})
    val = bio.get("/work/validation")
    assert _ids(val.text, "bio") == [potassium]
    r = bio.post("/work/validation", data={"csrf": _form_csrf(val.text), "result_id": potassium})
    assert r.status_code == 403
    assert "never validated biologically by the person who entered it" in r.text
    assert _ids(bio.get("/work/validation").text, "bio") == [potassium]


def test_a_rejected_specimen_and_a_bad_form(api):
    """G1: a specimen rejected with its non-conformity (its results cancelled, gone from the
    worklist); a form without a test or with an unknown code is refused with its reason."""
    tech = _page_login(api, f"technician@{LAB_A}")
    patient = api.patients[LAB_A][2]
    request_id = _enter(tech, patient, ["HB"])
    (sid,) = _specimens(tech, request_id)
    rec = tech.get("/work/reception")
    r = tech.post(
        "/work/reception/reject",
        data={"csrf": _form_csrf(rec.text), "specimen_id": sid, "nonconformity": "haemolysed"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    shown = tech.get(r.headers["location"])
    assert "refusé" in shown.text and "hémolysé" in shown.text
    assert _ids(tech.get("/work/worklist").text, "value") == []
    form = tech.get("/work/requests/new").text
    base = {"csrf": _form_csrf(form), "patient_id": patient, "collected_at": WHEN, "collector": "x"}
    r = tech.post("/work/requests/new", data=base)
    assert r.status_code == 400 and "at least one test" in r.text
    r = tech.post("/work/requests/new", data={**base, "codes": "NOPE"})
    assert r.status_code == 400 and "unknown test code" in r.text


def test_another_labs_ids_are_not_found(api):
    """F1: lab B's biologist gets 404 for lab A's request, labels, report and specimen, and
    receives nothing of them, enters no request for its patient."""
    a = _page_login(api, f"technician@{LAB_A}")
    b = _page_login(api, f"biologist@{LAB_B}")
    request_id = _enter(a, api.patients[LAB_A][3], ["K"])
    (sid,) = _specimens(a, request_id)
    for path in (
        f"/work/requests/{request_id}",
        f"/work/requests/{request_id}/labels.pdf",
        f"/work/requests/{request_id}/report.pdf",
        f"/work/reception?specimen={sid}",
    ):
        assert b.get(path).status_code == 404, path
    rec = b.get("/work/reception")
    r = b.post("/work/reception", data={"csrf": _form_csrf(rec.text), "specimen_id": sid})
    assert r.status_code == 404
    r = b.post(
        "/work/requests/new",
        data={"csrf": _form_csrf(rec.text), "patient_id": api.patients[LAB_A][3], "test": "K", "collected_at": WHEN},
    )
    assert r.status_code == 404
    assert _ids(b.get("/work/worklist").text, "value") == []
    status = a.get(f"/work/reception?specimen={sid}")
    assert "prélevé" in status.text


ROUTES = [
    ("GET", "/work/requests/new", "request:enter"),
    ("POST", "/work/requests/new", "request:enter"),
    ("GET", "/work/requests/{id}", "patient:request:read"),
    ("GET", "/work/requests/{id}/labels.pdf", "patient:request:read"),
    ("GET", "/work/requests/{id}/report.pdf", "patient:result:read"),
    ("GET", "/work/reception", "specimen:event"),
    ("POST", "/work/reception", "specimen:event"),
    ("POST", "/work/reception/reject", "specimen:event"),
    ("GET", "/work/worklist", "result:enter"),
    ("POST", "/work/worklist/enter", "result:enter"),
    ("POST", "/work/worklist/technical", "result:validate:technical"),
    ("GET", "/work/validation", "result:validate:biological"),
    ("POST", "/work/validation", "result:validate:biological"),
]


@pytest.mark.parametrize("key", ["support", "operator", "security_officer"])
def test_what_a_vendor_account_can_do_with_the_work_pages(api, key):
    """F1, F2, G2: nothing. Every route of the lab's daily work refuses a vendor account (403),
    each refusal a ``denied`` event in the vendor's own trail naming the action; the request,
    specimen and value stay as they were."""
    _page_login(api, f"lab_admin@{LAB_A}")  # the lab's admin first: a lab has one
    tech = _page_login(api, f"technician@{LAB_A}")
    request_id = _enter(tech, api.patients[LAB_A][4], ["K"])
    (sid,) = _specimens(tech, request_id)
    result_id = _result_of(api, request_id, "2823-3")
    c = _page_login(api, key)
    csrf = _form_csrf(c.get("/patients").text)
    actor = _account_id(api, api.accounts[key].email)
    bodies = {
        "/work/requests/new": {"patient_id": api.patients[LAB_A][4], "test": "K", "collected_at": WHEN},
        "/work/reception": {"specimen_id": sid},
        "/work/reception/reject": {"specimen_id": sid, "nonconformity": "haemolysed"},
        "/work/worklist/enter": {f"value-{result_id}": "9"},
        "/work/worklist/technical": {"result_id": result_id},
        "/work/validation": {"result_id": result_id},
    }
    for method, path, action in ROUTES:
        before = len(_denied(api, PLATFORM, actor))
        url = path.replace("{id}", request_id)
        r = c.get(url) if method == "GET" else c.post(url, data={"csrf": csrf, **bodies[path]})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "%PDF" not in r.text and sid not in r.text
        events = _denied(api, PLATFORM, actor)
        assert len(events) == before + 1 and events[-1].action == action, (method, path)
    status = tech.get(f"/work/reception?specimen={sid}")
    assert "prélevé" in status.text and "specimen:received" not in status.text
    assert _ids(tech.get("/work/worklist").text, "value") == [result_id]


def test_an_anonymous_visitor_is_sent_to_sign_in(api):
    """E2: every route of the work pages sends an anonymous visitor to the login page."""
    c = api.client()
    for method, path, _ in ROUTES:
        url = path.replace("{id}", "x")
        r = c.get(url, follow_redirects=False) if method == "GET" else c.post(url, data={}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), (method, path)


def test_a_received_request_has_its_report_too(api):
    """G1, M2: a request received from a sender (outside the lab's workflow) has its report from the
    patient page: its final results with their values."""
    bio = _page_login(api, f"biologist@{LAB_A}")
    request_id = api.requests[LAB_A][0]
    with api.gateway.unit(api.accounts.creator(LAB_A), _care()) as u:
        results = [r for r in u.results_of_request(LAB_A, request_id) if r.value_num is not None]
    r = bio.get(f"/work/requests/{request_id}/report.pdf")
    assert r.status_code == 200 and r.content.startswith(b"%PDF"), r.text
    with pdfplumber.open(io.BytesIO(r.content)) as pdf:
        text = "\n".join(p.extract_text() or "" for p in pdf.pages)
    missing = [x.label for x in results if x.label.split()[0] not in text]
    assert results and not missing, (missing, text[:1500])
    assert bio.get(f"/work/requests/{request_id}").status_code == 200


def test_worklists_per_section(api):
    """Worklists per section: potassium (biochemistry) and haemoglobin (haematology) entered
    together; the haematology worklist shows the haemoglobin only, the biochemistry one the
    potassium only; the forms keep the section they were posted from."""
    tech = _page_login(api, f"technician@{LAB_A}")
    request_id = _enter(tech, api.patients[LAB_A][0], ["K", "HB"])
    hb, k = _result_of(api, request_id, "718-7"), _result_of(api, request_id, "2823-3")
    page = tech.get("/work/worklist?section=hematologie")
    assert page.status_code == 200
    assert f"value-{hb}" in page.text and f"value-{k}" not in page.text
    assert 'action="/work/worklist/enter?section=hematologie"' in page.text
    page = tech.get("/work/worklist?section=biochimie")
    assert f"value-{k}" in page.text and f"value-{hb}" not in page.text
    everything = tech.get("/work/worklist")
    assert f"value-{k}" in everything.text and f"value-{hb}" in everything.text
    assert '<option value="hemostase">' in everything.text
