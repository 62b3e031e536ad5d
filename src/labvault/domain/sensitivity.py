"""Sensitivity categories of results, derived from their code through data/sensitivity.toml."""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from labvault.domain.models import LOINC, Sensitivity


@functools.cache
def _code_sets() -> dict[tuple[str, str], Sensitivity]:
    raw = tomllib.loads(resources.files("labvault.domain").joinpath("data/sensitivity.toml").read_text("utf-8"))
    table: dict[tuple[str, str], Sensitivity] = {}
    for category, entry in raw["category"].items():
        sens = Sensitivity(category)
        for code in entry.get("loinc", []):
            table[(LOINC, code["code"])] = sens
        for code in entry.get("local", []):
            table[(code["system"], code["code"])] = sens
    return table


def sensitivity_of(code_system: str, code: str) -> Sensitivity:
    """The category of a result code; ``OTHER`` when no code set names it."""
    return _code_sets().get((code_system, code), Sensitivity.OTHER)


def codes_in(category: Sensitivity) -> list[tuple[str, str]]:
    """Every (system, code) of a category, for tests and documentation."""
    return sorted(k for k, v in _code_sets().items() if v is category)
