"""Identity vigilance through the faces: ``/api/v1/tenants/{tenant}/identity/...`` and the HTTP ingest
(a queued message is received: 200), ``labvault identity`` (help texts, refusals); vendor accounts
refused everywhere (403, exit 3), each refusal in the lab's trail."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from labvault.store import schema as t
from tests.api.conftest import (  # noqa: F401  (fixtures, as the API tests have them)
    LAB_A,
    admin_a,
    api,
    bio_a,
    cheap_argon2,
    db_url,
    operator,
    support,
    tech_a,
)
from tests.identity.helpers import oru

HL7 = {"content-type": "application/hl7-v2"}
BASE = f"/api/v1/tenants/{LAB_A}/identity"


def denied(api_) -> int:
    ev = t.audit_event
    with api_.gateway.engine.connect() as conn:
        return conn.execute(select(func.count()).where(ev.c.tenant_id == LAB_A, ev.c.outcome == "denied")).scalar_one()


def queue_one(api_, client, control: str = "Q1") -> tuple[str, str]:
    """A message carrying the INS of the lab's first patient with other traits, posted to the ingest
    route: received (200, queued); returns (queue id, candidate)."""
    body = oru(control, ins=api_.nirs[LAB_A][0], family="JEAN", given="PIERRE", born="19500101", value="9.9")
    r = client.post(f"/api/v1/tenants/{LAB_A}/ingest", content=body, headers=HL7)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["accepted"], got["queued"], got["rejected"]) == (0, 1, 0)
    assert got["outcomes"][0]["status"] == "queued"
    r = client.get(f"{BASE}/queue")
    assert r.status_code == 200, r.text
    item = r.json()[-1]
    return item["id"], item["candidate"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_lab_resolves_merges_and_validates_over_http(api, bio_a, tech_a):
    """M2, G1: over HTTP, a queued message is attached by the lab's technician; an identity is shown
    with its status, validated on an identity card, merged and unmerged."""
    qid, candidate = queue_one(api, bio_a)
    assert candidate == api.patients[LAB_A][0]
    before = len(bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{candidate}/requests").json())
    r = tech_a.post(f"{BASE}/queue/{qid}/resolve", json={"action": "attach"})
    assert r.status_code == 200, r.text
    assert r.json()["item"]["status"] == "attached" and r.json()["item"]["resolved_to"] == candidate
    assert len(bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{candidate}/requests").json()) == before + 1
    assert bio_a.get(f"{BASE}/queue").json() == []
    assert [i["status"] for i in bio_a.get(f"{BASE}/queue", params={"all": "true"}).json()] == ["attached"]

    r = bio_a.post(f"{BASE}/patients/{candidate}/status", json={"to": "validated", "evidence": "passport"})
    assert r.status_code == 204, r.text
    shown = bio_a.get(f"{BASE}/patients/{candidate}").json()
    assert (shown["status"], shown["status_evidence"]) == ("validated", "passport")
    r = bio_a.post(f"{BASE}/patients/{candidate}/status", json={"to": "validated", "evidence": "a scan of it"})
    assert r.status_code == 400 and "evidence" in r.json()["error"]

    other = api.patients[LAB_A][1]
    mine, theirs = (
        sorted(q["request_id"] for q in bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{p}/requests").json())
        for p in (candidate, other)
    )
    r = bio_a.post(f"{BASE}/merges", json={"kept": candidate, "merged": other})
    assert r.status_code == 201, r.text
    assert r.json()["requests"] == len(theirs)
    assert bio_a.get(f"{BASE}/patients/{candidate}").json()["merged_from"] == [other]
    r = bio_a.post(f"{BASE}/patients/{other}/unmerge")
    assert r.status_code == 200, r.text
    for p, want in ((candidate, mine), (other, theirs)):
        got = sorted(q["request_id"] for q in bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{p}/requests").json())
        assert got == want


def test_vendor_accounts_are_refused_over_http(api, bio_a, support, operator):
    """F1, F2, G1: the vendor's support (no grant), operator and platform admin: 403 on every
    identity route of the lab, each refusal audited; nothing resolved, nothing merged."""
    qid, candidate = queue_one(api, bio_a)
    other = api.patients[LAB_A][1]
    vendor_admin = api.login("platform_admin")
    calls = [
        ("GET", f"{BASE}/queue", None),
        ("POST", f"{BASE}/queue/{qid}/resolve", {"action": "attach"}),
        ("GET", f"{BASE}/patients/{candidate}", None),
        ("POST", f"{BASE}/patients/{candidate}/status", {"to": "validated", "evidence": "id-card"}),
        ("POST", f"{BASE}/merges", {"kept": candidate, "merged": other}),
        ("POST", f"{BASE}/patients/{other}/unmerge", None),
    ]
    for who in (support, operator, vendor_admin):
        for method, path, body in calls:
            n = denied(api)
            r = who.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            assert denied(api) == n + 1, (method, path)
            assert api.nirs[LAB_A][0] not in r.text
    assert [i["status"] for i in bio_a.get(f"{BASE}/queue").json()] == ["held"]
    assert bio_a.get(f"{BASE}/patients/{other}").json()["merged_into"] is None


def test_the_lab_admin_reads_the_queue_and_resolves_nothing(api, bio_a, admin_a):
    """F1: the lab_admin sees the queue (ids and codes) but stores no medical record: 403 to resolve
    or merge."""
    qid, candidate = queue_one(api, bio_a)
    assert [i["id"] for i in admin_a.get(f"{BASE}/queue").json()] == [qid]
    assert admin_a.post(f"{BASE}/queue/{qid}/resolve", json={"action": "reject"}).status_code == 403
    r = admin_a.post(f"{BASE}/merges", json={"kept": candidate, "merged": api.patients[LAB_A][1]})
    assert r.status_code == 403


def test_the_cli_vendor_operator_is_refused(tmp_path, monkeypatch, capsys):
    """F1, G1: ``labvault identity`` as the CLI's own (vendor) operator: exit 3, one line with the
    reason, for every command on a lab."""
    from tests.cli.test_cli import PW, one_line_error, run

    monkeypatch.setenv("LABVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LABVAULT_PASSPHRASE", PW)
    monkeypatch.delenv("LABVAULT_DATABASE_URL", raising=False)
    monkeypatch.delenv("LABVAULT_KEY_PROVIDER", raising=False)
    run(capsys, "init")
    code, _, err = run(
        capsys,
        "tenant",
        "add",
        "bio-lyon",
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    assert code == 0, err
    for args in (
        ["identity", "queue", "--tenant", "bio-lyon"],
        ["identity", "resolve", "Q-1", "--action", "reject", "--tenant", "bio-lyon"],
        ["identity", "show", "p-1", "--tenant", "bio-lyon"],
        ["identity", "status", "p-1", "--to", "validated", "--evidence", "id-card", "--tenant", "bio-lyon"],
        ["identity", "merge", "p-1", "p-2", "--tenant", "bio-lyon"],
        ["identity", "unmerge", "p-2", "--tenant", "bio-lyon"],
    ):
        code, _, err = run(capsys, *args)
        assert code == 3, (args, err)
        assert "not allowed" in one_line_error(err) or "grant" in one_line_error(err), err
