"""A lab's pulled checkpoint file that is malformed is refused as bad input, naming the line,
never an internal error (``audit verify --checkpoint FILE``). On SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import pytest

from labvault.access import Purpose
from labvault.audit import service
from labvault.errors import InvalidInput
from tests.audit.test_pinned import lab_account, pull
from tests.audit.test_tamper import LAB, audited  # noqa: F401 (fixture)

MALFORMED = [
    {"type": "checkpoint", "body": {}},
    {"type": "checkpoint", "body": {"size": "x"}},
    {"type": "checkpoint", "body": {"size": None}},
    {"type": "event"},
    {"type": "event", "seq": "a", "hash": "b"},
    {"type": "event", "seq": 1},
]


@pytest.mark.parametrize("line", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_line_of_the_labs_file_is_bad_input(audited, line):
    """G4, G6: verify with the lab's file holding a malformed line: InvalidInput naming the line
    (the CLI prints one line and exits 2), not a KeyError or ValueError (exit 70)."""
    kept = [*pull(audited), line]
    with pytest.raises(InvalidInput) as e, audited.unit(lab_account(audited, "lab_dpo"), Purpose.ADMINISTRATION) as u:
        service.verify_log(u, LAB, kept)
    assert f"line {len(kept)}" in str(e.value)
