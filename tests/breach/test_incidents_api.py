"""The incident register over HTTP (I1..I5): the security officer opens the processor's incident
over two labs and sends the notices; each lab reads its own part, notice and draft only; no vendor
role drafts, decides, exempts or downloads the letters of a lab; another lab is refused; errors
are 4xx with a one-line reason."""

from __future__ import annotations

import pypdfium2

from labvault.ids import utcnow
from tests.api.conftest import (  # noqa: F401  (fixtures)
    LAB_A,
    LAB_B,
    admin_a,
    admin_b,
    api,
    cheap_argon2,
    db_url,
    operator,
    security_officer,
    support,
)


def test_incidents_over_http(api, security_officer, operator, support, admin_a, admin_b):
    """I1, I2, I3, I5, G1: one part per lab; each lab sees only its own; vendor roles refused on a
    lab's decisions, drafts, exemption and letters; lab B refused on lab A's part."""
    body = {"title": "Fichier publié sur un forum", "aware_at": utcnow().isoformat(), "labs": [LAB_A, LAB_B]}
    for vendor in (operator, support):
        r = vendor.post("/api/v1/incidents", json=body)
        assert r.status_code == 403 and "incident:manage" in r.json()["error"]
    r = security_officer.post("/api/v1/incidents", json=body)
    assert r.status_code == 201, r.text
    inc = r.json()
    assert sorted(p["tenant"] for p in inc["parts"]) == sorted([LAB_A, LAB_B])
    iid = inc["incident_id"]
    r = security_officer.post(f"/api/v1/incidents/{iid}/notices", json={"measures": ["fichier retiré"]})
    assert r.status_code == 200 and {v["phase"] for v in r.json()} == {"initial"}

    mine = admin_a.get("/api/v1/incidents", params={"tenant": LAB_A}).json()
    assert [i["labs"] for i in mine] == [[LAB_A]] and LAB_B not in str(mine)
    notices = admin_a.get(f"/api/v1/incidents/{iid}/labs/{LAB_A}/notices")
    assert notices.status_code == 200 and notices.json()[0]["body"]["lab"]["id"] == LAB_A
    assert LAB_B not in notices.text
    assert admin_a.post(f"/api/v1/incidents/{iid}/labs/{LAB_A}/drafts", json={}).status_code == 201
    html = admin_a.get(f"/api/v1/incidents/{iid}/labs/{LAB_A}/drafts/1", params={"format": "html"})
    assert html.status_code == 200 and "Projet de notification" in html.text and LAB_B not in html.text
    pdf = admin_a.get(f"/api/v1/incidents/{iid}/labs/{LAB_A}/drafts/1", params={"format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf" and len(pypdfium2.PdfDocument(pdf.content)) >= 1
    timeline = admin_a.get(f"/api/v1/incidents/{iid}/timeline", params={"tenant": LAB_A}).json()
    assert [s["step"] for s in timeline] == ["opened", "notice", "drafted"]

    lab_routes = {
        ("post", "drafts"): {},
        ("post", "decision"): {"decision": "notify", "reasoning": "risque"},
        ("post", "exemption"): {"ground": "encrypted", "reason": "copie chiffrée"},
        ("post", "letters"): {"patients": [api.patients[LAB_A][0]]},
        ("post", "notified"): {"at": utcnow().isoformat(), "reference": "CNIL-1"},
        ("get", "drafts"): None,
    }
    for client in (security_officer, operator, support, admin_b):
        for (method, tail), payload in lab_routes.items():
            url = f"/api/v1/incidents/{iid}/labs/{LAB_A}/{tail}"
            r = client.get(url) if method == "get" else client.post(url, json=payload)
            assert r.status_code == 403, (tail, r.status_code, r.text)
            assert len(r.json()["error"].splitlines()) == 1
    assert admin_b.get(f"/api/v1/incidents/{iid}", params={"tenant": LAB_A}).status_code == 403
    assert admin_a.post(f"/api/v1/incidents/{iid}/labs/{LAB_A}/letters", json={}).status_code == 403  # DPO only
    # a notification in the future: 400 with its reason; in time: recorded
    r = admin_a.post(
        f"/api/v1/incidents/{iid}/labs/{LAB_A}/notified", json={"at": "2099-01-01T00:00:00+00:00", "reference": "X"}
    )
    assert r.status_code == 400 and "future" in r.json()["error"]
    r = admin_a.post(
        f"/api/v1/incidents/{iid}/labs/{LAB_A}/notified", json={"at": utcnow().isoformat(), "reference": "CNIL-1"}
    )
    assert r.status_code == 200 and r.json()["state"] == "notified"
    assert admin_a.get(f"/api/v1/incidents/{iid}/labs/{LAB_A}/drafts/7").status_code == 404
