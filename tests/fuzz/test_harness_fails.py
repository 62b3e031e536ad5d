"""The fuzz harness can fail: a bug inside a reader (KeyError, TypeError, IndexError...) is not
turned into the reader's input error any more, so it escapes the harness, and hypothesis reports it.
Each reader gets a deliberate bug, monkeypatched into one of its functions."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from labvault.interop import csv_in, fhir, hl7v2, hprim
from tests.fuzz import harness
from tests.fuzz.strategies import GENERATORS

BUGS = {  # reader -> (module or class, attribute, exception raised)
    "hl7v2": (hl7v2._Mapper, "_result", KeyError),  # not _code: its answers are memoised across messages
    "hprim": (hprim._Mapper, "_result", TypeError),
    "fhir": (fhir._Builder, "_result", IndexError),
    "csv": (csv_in, "_result", KeyError),
}


@pytest.mark.parametrize("reader", harness.READERS)
def test_a_bug_in_a_reader_escapes_the_harness(reader, monkeypatch):
    owner, name, exc = BUGS[reader]

    def bug(*args, **kwargs):
        raise exc("deliberate bug")

    monkeypatch.setattr(owner, name, bug)
    with pytest.raises(exc, match="deliberate bug"):  # the valid seed reaches the bug
        harness.check(reader, harness.seeds(reader, real=0)[0])

    @settings(
        max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )  # deterministic: the same inputs on every worker
    @given(GENERATORS[reader])
    def fuzzed(data):
        harness.check(reader, data)

    with pytest.raises(exc):  # and the hypothesis run over generated inputs fails with it
        fuzzed()


def test_the_readers_input_errors_are_accepted():
    """The harness is no blanket: refusals of bad input pass, and are returned for inspection."""
    assert any(
        "MSH-9: unsupported message type" in m
        for m in harness.check("hl7v2", harness.hl7_message({("MSH", 9): "ADT^A01"}))
    )
    assert harness.check("csv", b"patient.nir,result.code\r\n") != []
