"""The one counter type: named counts by attribute or key, zero until counted."""

from __future__ import annotations

from labvault.counts import Counts
from labvault.mllp.listener import Stats


def test_counts_by_attribute_and_by_key():
    c = Counts()
    assert c.results == 0 and dict(c) == {}
    c.results += 3
    c["requests"] += 1
    assert (c["results"], c.requests, dict(c)) == (3, 1, {"results": 3, "requests": 1})
    c.update(Counts(results=2))
    assert c.results == 5


def test_private_names_stay_attributes():
    s = Stats()
    s.frames += 1
    s.refused["per-address-cap"] += 2
    assert dict(s) == {"frames": 1} and dict(s.refused) == {"per-address-cap": 2}
    assert not hasattr(Counts(), "_missing")
