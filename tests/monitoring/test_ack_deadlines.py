"""The acknowledgement deadlines' setting (H1): minutes per severity, or seconds with an ``s``
(drills, the end-to-end replay), 5 seconds to 7 days; the rest keep their defaults."""

from __future__ import annotations

from datetime import timedelta

import pytest

from labvault.errors import InvalidInput
from labvault.monitoring.alerts import DEFAULT_ACK, ack_deadlines
from labvault.monitoring.findings import Severity


def test_minutes_and_seconds_per_severity_the_rest_by_default():
    """H1: ``critical=10,high=20s``: 10 minutes, 20 seconds; medium and low keep their defaults."""
    got = ack_deadlines("critical=10, high=20s")
    assert got[Severity.CRITICAL] == timedelta(minutes=10)
    assert got[Severity.HIGH] == timedelta(seconds=20)
    assert got[Severity.MEDIUM] == DEFAULT_ACK[Severity.MEDIUM] == timedelta(hours=4)
    assert got[Severity.LOW] == timedelta(hours=24)
    assert ack_deadlines("HIGH=5S")[Severity.HIGH] == timedelta(seconds=5)
    assert ack_deadlines("low=10080")[Severity.LOW] == timedelta(days=7)
    assert ack_deadlines(None) == ack_deadlines("") == DEFAULT_ACK


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("high=4s", "5 seconds to 7 days"),
        ("high=0", "5 seconds to 7 days"),
        ("low=10081", "5 seconds to 7 days"),
        ("high=20m", "severity=minutes"),
        ("high=s", "severity=minutes"),
        ("urgent=10", "severity=minutes"),
        ("high", "severity=minutes"),
    ],
)
def test_a_deadline_out_of_bounds_or_malformed_is_refused_with_the_reason(text, words):
    """H1: under 5 seconds, over 7 days, another unit or an unknown severity: refused, named."""
    with pytest.raises(InvalidInput, match=words):
        ack_deadlines(text)
