"""The grant routes as a lab's admin uses them: who asks (name and e-mail), the ticket, the reason,
the exact scope and the duration, before approving; a grant for the whole lab is refused with the
reason; labs say whether they are synthetic."""

from __future__ import annotations

from sqlalchemy import func, select

from labvault.store import schema as t
from tests.api.conftest import LAB_A

GRANTS = f"/api/v1/tenants/{LAB_A}/grants"
BODY = {
    "ticket": "SUP-42",
    "reason": "the lab reports a wrong unit on a result",
    "hours": 2,
    "fields": ["identity", "results"],
}


def _grants_of(api, account: str) -> int:
    with api.gateway.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", LAB_A, True)))
        return conn.execute(
            select(func.count()).select_from(t.access_grant).where(t.access_grant.c.account_id == account)
        ).scalar_one()


def test_a_grant_for_the_whole_lab_is_refused_with_the_reason(api, support):
    """F2: no patients and no period: 400 naming why; nothing kept. A half period too."""
    me = support.get("/api/v1/me").json()
    r = support.post(GRANTS, json=BODY)
    assert r.status_code == 400 and "never the whole lab" in r.json()["error"], r.text
    r = support.post(GRANTS, json={**BODY, "period_from": "2024-01-01"})
    assert r.status_code == 400 and "both ends" in r.json()["error"], r.text
    assert _grants_of(api, me["account_id"]) == 0


def test_the_lab_admin_sees_who_asks_the_ticket_reason_scope_and_duration(api, support, admin_a, admin_b):
    """F2: GET grants and grants/{id} show the requester's name and e-mail, ticket, reason, the
    named scope (patients, period, fields) and the hours; another lab's admin sees nothing."""
    me = support.get("/api/v1/me").json()
    pid = api.patients[LAB_A][0]
    r = support.post(GRANTS, json={**BODY, "patients": [pid], "period_from": "2019-01-01", "period_to": "2019-12-31"})
    assert r.status_code == 201, r.text
    gid = r.json()["grant_id"]
    listed = [g for g in admin_a.get(GRANTS).json() if g["grant_id"] == gid]
    shown = admin_a.get(f"{GRANTS}/{gid}")
    assert shown.status_code == 200 and listed == [shown.json()]
    g = shown.json()
    assert g["requested_by"] == {
        "name": me["name"],
        "email": api.accounts["support"].email,
        "account": me["account_id"],
    }
    assert (g["ticket"], g["reason"], g["hours"], g["state"]) == ("SUP-42", BODY["reason"], 2, "pending")
    assert g["patients"] == [pid] and g["fields"] == ["identity", "results"]
    assert g["period"] == {"from": "2019-01-01", "to": "2019-12-31"}
    assert g["scope"] == (
        "1 named patient(s); requests dated 2019-01-01 to 2019-12-31; fields identity, results; no sensitive category"
    )
    r = admin_b.get(f"{GRANTS}/{gid}")
    assert r.status_code == 403 and r.json()["error"]


def test_labs_say_whether_they_are_synthetic(api, support):
    """A8: the API's lab list marks synthetic labs (the test labs hold generated data)."""
    r = support.get("/api/v1/tenants")
    assert r.status_code == 200
    assert {x["id"]: x["synthetic"] for x in r.json()} == {"lab-a": True, "lab-b": True}
