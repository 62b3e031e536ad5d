"""docs/compliance.md is the table from each requirement id to its tests: it must match the suite."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("compliance", ROOT / "scripts" / "compliance.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_matches_the_tests():
    """The committed table is what the test docstrings say today (rewrite it with the script)."""
    mod = _script()
    assert mod.main(["--check"]) == 0, "docs/compliance.md is stale: python scripts/compliance.py"


def test_ids_are_read_from_the_start_of_a_docstring_only():
    mod = _script()
    assert mod.ids_of("F2, E2: support reads nothing without a grant") == ["F2", "E2"]
    assert mod.ids_of("K: the record") == ["K"]
    assert mod.ids_of("An OBX-11 of H2: not an id list") == []
    assert mod.ids_of(None) == []


def test_an_unknown_id_is_refused(tmp_path):
    mod = _script()
    (tmp_path / "test_x.py").write_text('def test_a():\n    """A7: nothing"""\n')
    with pytest.raises(SystemExit, match="unknown requirement id"):
        mod.collect(tmp_path)
