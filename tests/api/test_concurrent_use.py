"""One account used from two places at once leaves a security event in the lab's audit trail."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from labvault.store import schema as t
from tests.api.conftest import LAB_A


def alerts(raw_engine, tenant: str) -> list:
    with raw_engine.connect() as conn:
        return conn.execute(
            select(t.audit_event).where(
                t.audit_event.c.tenant_id == tenant, t.audit_event.c.action == "account:concurrent-use"
            )
        ).all()


def account_id(c) -> str:
    return c.get("/api/v1/me").json()["account_id"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
@pytest.mark.parametrize("role", ["biologist", "lab_admin"])  # without and with the MFA step
def test_concurrent_use_is_audited(api, raw_engine, role):
    key = f"{role}@{LAB_A}"
    first = api.login(key, addr="198.51.100.20", ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    # the same person again, same browser and place: no alert
    again = api.login(key, addr="198.51.100.20", ua="Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    assert again.get("/api/v1/me").status_code == 200
    assert alerts(raw_engine, LAB_A) == []
    # another browser at another address, while the first session is live: alert
    second = api.login(key, addr="192.0.2.55", ua="Mozilla/5.0 (Windows NT 10.0) Chrome/126.0")
    assert first.get("/api/v1/me").status_code == 200 and second.get("/api/v1/me").status_code == 200
    rows = alerts(raw_engine, LAB_A)
    assert len(rows) == 1, rows
    ev = rows[0]
    assert json.loads(ev.object_refs) == [account_id(first)]
    assert ev.outcome == "alert"
    assert ev.source_addr == "192.0.2.55" and "Chrome" in (ev.user_agent or "")


def test_other_user_agent_alone_is_enough(api, raw_engine):
    key = f"biologist@{LAB_A}"
    api.login(key, addr="198.51.100.20", ua="Firefox/128.0")
    api.login(key, addr="198.51.100.20", ua="curl/8.5.0")
    assert len(alerts(raw_engine, LAB_A)) == 1


def test_other_address_alone_is_enough(api, raw_engine):
    key = f"biologist@{LAB_A}"
    api.login(key, addr="198.51.100.20", ua="Firefox/128.0")
    api.login(key, addr="198.51.100.21", ua="Firefox/128.0")
    assert len(alerts(raw_engine, LAB_A)) == 1


def test_different_accounts_do_not_alert(api, raw_engine):
    api.login(f"biologist@{LAB_A}", addr="198.51.100.20", ua="Firefox/128.0")
    api.login(f"technician@{LAB_A}", addr="192.0.2.55", ua="Chrome/126.0")
    assert alerts(raw_engine, LAB_A) == []
