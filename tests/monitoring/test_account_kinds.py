"""G5: a person's principal never claims kind 'system'. An account row whose kind
says 'system' (written by hand: ``create_account`` passes its ``kind`` through unchecked too) must
not turn a session or token for it into the monitoring process."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from labvault.access import Purpose
from labvault.accounts import service as accounts
from labvault.accounts.errors import AuthenticationFailed
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import ADMIN, make_lab

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE
def test_an_account_row_of_kind_system_gives_no_system_principal(gateway):
    gw = gateway
    make_lab(gw, "lab-a")
    so = vendor_user(gw, "security_officer", name="Sec")
    with gw.engine.begin() as c:
        c.execute(
            update(t.account)
            .where(t.account.c.account_id == so.account_id)
            .values(account_id="system:monitor", kind="system")
        )
        row = c.execute(select(t.account).where(t.account.c.account_id == "system:monitor")).first()
    try:
        p = accounts.principal_of(row)  # what a session or a token for this row yields
    except (AuthenticationFailed, AccessDenied):
        return
    with pytest.raises(AccessDenied), gw.unit(p, Purpose.MONITORING) as u:
        u.monitor_cursors("rules")  # monitor:run, and access:review on every lab with it


@SQLITE
def test_create_account_takes_person_or_service_only(gateway):
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u, pytest.raises(InvalidInput):
        accounts.create_account(
            u, tenant_id=PLATFORM, name="Sys Tem", email="sys@vendor.invalid", roles=["support"], kind="system"
        )
