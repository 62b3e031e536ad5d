"""The alerts over HTTP (H1): the pages (list, one alert with its history, acknowledge, resolve;
the lab's channels added and removed after a TOTP step-up) and the JSON API. A lab's account sees
its own lab's alerts only, the vendor's security officer every lab's; support, another lab's
admin or a biologist get nothing of it and change nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.access.principal import MONITOR
from labvault.monitoring import alerts
from labvault.monitoring.findings import Finding, Severity
from labvault.store import schema as t
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login
from tests.api.test_step_up import STALE, checked_ago


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch):
    """The channels here point at receivers on 127.0.0.1 (webhooks over plain http) or at names
    that do not resolve: the operator's opt-in LABVAULT_CHANNELS_ALLOW_PRIVATE (off by default,
    tests/monitoring/test_channel_targets.py)."""
    monkeypatch.setenv("LABVAULT_CHANNELS_ALLOW_PRIVATE", "1")


ADMIN_A = f"lab_admin@{LAB_A}"


def _raise(api, lab: str = LAB_A, rule: str = "bulk-read") -> str:
    with api.gateway.unit(MONITOR, Purpose.MONITORING) as u:
        alert_id = alerts.raise_alert(
            u, Finding(rule, Severity.HIGH, lab, f"{rule}: many patients by one account", "acct-7", ("acct-7",))
        )
    assert alert_id
    return alert_id


def _state(api, alert_id: str) -> tuple[str, str | None]:
    with api.gateway.engine.connect() as conn:
        row = conn.execute(select(t.alert.c.state, t.alert.c.reason).where(t.alert.c.alert_id == alert_id)).one()
    return row.state, row.reason


def test_the_lab_admin_reads_acknowledges_and_resolves_its_labs_alert(api):
    """H1: the lab's admin finds the alert in the list (filtered by state), opens it (references,
    history), acknowledges it and resolves it with a reason (none: refused, nothing changes)."""
    mine, theirs = _raise(api), _raise(api, LAB_B)
    admin = _page_login(api, ADMIN_A)
    page = admin.get("/alerts")
    assert page.status_code == 200 and f'href="/alerts/{mine}"' in page.text and theirs not in page.text
    assert 'href="/alerts"' in page.text  # the menu entry
    assert mine not in admin.get("/alerts?state=resolved").text
    page = admin.get(f"/alerts/{mine}")
    assert page.status_code == 200 and "acct-7" in page.text and "bulk-read" in page.text
    csrf = _form_csrf(page.text)
    r = admin.post(f"/alerts/{mine}/ack", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{mine}"
    assert _state(api, mine) == ("acknowledged", None)
    r = admin.post(f"/alerts/{mine}/resolve", data={"csrf": csrf, "reason": " "})
    assert r.status_code == 400 and "needs a reason" in r.text and _state(api, mine)[0] == "acknowledged"
    r = admin.post(f"/alerts/{mine}/resolve", data={"csrf": csrf, "reason": "inventory"}, follow_redirects=False)
    assert r.status_code == 303 and _state(api, mine) == ("resolved", "inventory")
    page = admin.get(f"/alerts/{mine}")
    assert "/ack" not in page.text and "/resolve" not in page.text
    r = admin.post(f"/alerts/{mine}/ack", data={"csrf": csrf})
    assert r.status_code == 400 and "resolved" in r.text


def test_what_a_vendor_account_another_lab_or_a_biologist_can_do_with_it(api):
    """H1, G1, G2: support reads and acknowledges nothing; another lab's admin does not find it;
    a biologist of the lab is refused the list; the security officer reads it (references only)."""
    alert_id = _raise(api)
    for key in ("support", f"lab_admin@{LAB_B}", f"biologist@{LAB_A}"):
        c = _page_login(api, key)
        assert c.get(f"/alerts/{alert_id}").status_code in (403, 404), key
        page = c.get("/alerts")
        assert alert_id not in page.text, key
        csrf = _form_csrf(c.get("/patients").text) if key != "support" else _form_csrf(c.get("/step-up").text)
        assert c.post(f"/alerts/{alert_id}/ack", data={"csrf": csrf}).status_code in (403, 404), key
    assert _state(api, alert_id) == ("open", None)
    officer = _page_login(api, "security_officer")
    assert f'href="/alerts/{alert_id}"' in officer.get(f"/alerts?tenant={LAB_A}").text
    seen = officer.get(f"/alerts/{alert_id}")
    assert seen.status_code == 200
    # The lab answers its own alerts: the vendor's page offers no form to acknowledge or resolve it.
    assert f'action="/alerts/{alert_id}/ack"' not in seen.text
    assert f'action="/alerts/{alert_id}/resolve"' not in seen.text
    lab_admin = _page_login(api, f"lab_admin@{LAB_A}")
    assert f'action="/alerts/{alert_id}/ack"' in lab_admin.get(f"/alerts/{alert_id}").text


def test_the_labs_channels_added_after_a_step_up_with_the_key_shown_once(api):
    """H1, G4: the lab admin (TOTP at login counts as the step-up) adds a webhook channel: its
    signing key is shown once; a stale step-up is sent to /step-up and adds nothing; removing it;
    a vendor account opens no lab's channel page."""
    admin = _page_login(api, ADMIN_A)
    csrf = _form_csrf(admin.get("/alerts/channels").text)
    data = {"csrf": csrf, "kind": "webhook", "target": "https://it.lab-a.invalid/hook", "level": "1"}
    page = admin.post("/alerts/channels/add", data=data)
    assert page.status_code == 200 and "https://it.lab-a.invalid/hook" in page.text
    with api.gateway.engine.connect() as conn:
        [ch] = conn.execute(select(t.notify_channel)).all()
    assert ch.tenant_id == LAB_A and ch.secret_wrapped is not None
    assert "webhook" in page.text and "<code>" in page.text
    assert admin.get("/alerts/channels").text.count("HMAC-SHA256") == 0  # shown once only
    checked_ago(api, ADMIN_A, STALE)
    r = admin.post("/alerts/channels/add", data={**data, "target": "https://other.invalid/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/step-up?next=/alerts/channels"
    r = admin.post(f"/alerts/channels/{ch.channel_id}/remove", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/step-up")
    for key in ("security_officer", "support"):
        assert _page_login(api, key).get("/alerts/channels").status_code == 403


def test_the_json_api(api, admin_a, admin_b, support, security_officer):
    """H1: GET /api/v1/alerts and /alerts/{id} for the lab's admin and the security officer only;
    support cannot acknowledge, nor can the security officer (a lab's alert is answered by the lab);
    the lab's admin acknowledges and resolves with a reason."""
    alert_id = _raise(api)
    assert [a["alert_id"] for a in admin_a.get("/api/v1/alerts").json()] == [alert_id]
    assert admin_b.get("/api/v1/alerts").json() == []
    assert admin_b.get(f"/api/v1/alerts/{alert_id}").status_code == 404
    assert support.get("/api/v1/alerts").status_code == 403
    assert support.post(f"/api/v1/alerts/{alert_id}/ack", json={}).status_code == 403
    assert security_officer.get(f"/api/v1/alerts/{alert_id}").json()["deliveries"] == []
    assert security_officer.post(f"/api/v1/alerts/{alert_id}/ack", json={}).status_code == 403
    assert security_officer.post(f"/api/v1/alerts/{alert_id}/resolve", json={"reason": "x"}).status_code == 403
    r = admin_a.post(f"/api/v1/alerts/{alert_id}/ack", json={"reason": "looking"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert admin_a.post(f"/api/v1/alerts/{alert_id}/resolve", json={}).status_code == 422
    r = admin_a.post(f"/api/v1/alerts/{alert_id}/resolve", json={"reason": "inventory"})
    assert r.status_code == 200 and r.json()["state"] == "resolved"
    assert [a["state"] for a in admin_a.get("/api/v1/alerts?state=resolved").json()] == ["resolved"]
