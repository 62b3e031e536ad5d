"""H1: a lease row whose expiry lies far beyond any holder's renewal (written by hand
in the database) must not keep the real consumer waiting for ever: no holder renews a lease past
its own ``now + lease_seconds``, so such a lease is taken over."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from labvault.access.principal import MONITOR
from labvault.crypto.keys import PLATFORM
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.consumer import LEASE, Consumer
from labvault.store import schema as t
from tests.conftest import make_lab
from tests.monitoring.events import ListSink

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@SQLITE
def test_a_lease_written_into_the_far_future_does_not_starve_the_consumer(gateway):
    gw = gateway
    make_lab(gw, "lab-a")
    with gw.engine.begin() as c:  # someone who writes rows: a lease "held" until 9999
        c.execute(
            insert(t.monitor_cursor).values(
                tenant_id=PLATFORM, consumer=LEASE, seq=4242, updated_at=datetime(9999, 1, 1, tzinfo=UTC)
            )
        )
    real = Consumer(gw, MONITOR, rules_mod.shipped(), sink=ListSink())
    real.poll()
    assert not real.waiting, "a lease no holder could have renewed keeps the real consumer out for ever"
