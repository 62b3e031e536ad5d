"""Hypothesis over every reader with near-valid inputs (``strategies``) and mutated bytes: the only
refusal accepted is the reader's input error (``harness.check``); a bug in a reader fails the test."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.strategies import GENERATORS

SETTINGS = settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("reader", harness.READERS)
def test_near_valid_inputs(reader):
    @SETTINGS
    @given(GENERATORS[reader])
    def run(data):
        harness.check(reader, data)

    run()


@pytest.mark.parametrize("reader", harness.READERS)
def test_mutated_bytes(reader):
    seeds = harness.seeds(reader, real=30)

    @SETTINGS
    @given(
        st.sampled_from(seeds),
        st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 40), st.binary(max_size=10)), max_size=8),
    )
    def run(seed, edits):
        data = bytearray(seed)
        for pos, cut, insert in edits:
            at = pos % (len(data) + 1)
            data[at : at + cut] = insert
        harness.check(reader, bytes(data))

    run()
