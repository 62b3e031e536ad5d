"""The ENISA severity prefilled from an analysis (I1): SE = DPC x EI + CB, each part with its reason."""

from __future__ import annotations

import pytest

from labvault.breach import severity
from labvault.errors import InvalidInput


def test_enisa_score_from_categories_fields_and_circumstances():
    """I1: health data with the NIR published by a malicious party is 'very high' (4 x 1 + 1 = 5);
    names alone without results, to known recipients, is low (1 x 0.75 + 0.25 = 1)."""
    s = severity.score({"hiv": 3}, ["nir", "family_name", "value"], ["public", "malicious"])
    assert (s["dpc"], s["ei"], s["cb"], s["score"], s["level"]) == (4.0, 1.0, 1.0, 5.0, "very high")
    assert "hiv" in s["dpc_reason"] and "NIR" in s["ei_reason"]
    low = severity.score({}, ["family_name"], ["known-recipients"])
    assert (low["dpc"], low["ei"], low["score"], low["level"]) == (1.0, 0.75, 1.0, "low")
    mid = severity.score({}, ["birth_date", "sex", "code"], [])
    assert (mid["dpc"], mid["ei"], mid["score"], mid["level"]) == (4.0, 0.5, 2.0, "medium")
    edited = severity.edited(s, ei=0.5)
    assert (edited["score"], edited["level"]) == (3.0, "high") and "changed by a person" in edited["ei_reason"]
    with pytest.raises(InvalidInput, match="ei"):
        severity.edited(s, ei=3)
    with pytest.raises(InvalidInput, match="circumstance"):
        severity.score({}, [], ["leaked"])
