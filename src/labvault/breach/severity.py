"""The ENISA severity of a personal data breach (ENISA, "Recommendations for a methodology of the
assessment of severity of personal data breaches", 2013): ``SE = DPC x EI + CB``.

- DPC, the data processing context: health data (results, sensitive categories) start at 4, basic
  identity data at 1;
- EI, the ease of identification: 1 (maximum) when the NIR, or a name with the birth date, is
  exposed; 0.75 a name alone; 0.5 a birth date with the sex; 0.25 otherwise;
- CB, the circumstances: loss of confidentiality (+0.25 to known recipients, +0.5 when published or
  sent to unknown recipients), malicious intent (+0.5), loss of integrity (+0.25), availability
  (+0.25).

Each part carries its reason (words, never a value); a person may change a part with a reason
(``labvault.access.incidents.Incidents.incident_update``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from labvault.errors import InvalidInput

HEALTH_FIELDS = frozenset({"code", "label", "value", "unit", "text", "results", "free_text"})
NAME_FIELDS = frozenset({"family_name", "birth_name", "given_names", "full_name", "names"})
CIRCUMSTANCES = {
    "public": (0.5, "published or sent to unknown recipients"),
    "known-recipients": (0.25, "disclosed to known recipients"),
    "malicious": (0.5, "malicious intent"),
    "integrity": (0.25, "loss of integrity"),
    "availability": (0.25, "loss of availability"),
}


def level(score: float) -> str:
    """ENISA's levels: low (< 2), medium (< 3), high (< 4), very high."""
    if score < 2:
        return "low"
    if score < 3:
        return "medium"
    if score < 4:
        return "high"
    return "very high"


def score(
    categories: Mapping[str, int] | None,
    fields: Iterable[str],
    circumstances: Iterable[str] = ("public",),
) -> dict[str, Any]:
    """The prefilled score of one scope: its parts with their reasons, the total and its level."""
    kinds = set(fields)
    cats = {k: v for k, v in (categories or {}).items() if v}
    if cats or kinds & HEALTH_FIELDS:
        named = ", ".join(sorted(cats)) or "results"
        dpc, dpc_why = 4.0, f"health data ({named})"
    else:
        dpc, dpc_why = 1.0, "basic identity data"
    has_name = bool(kinds & NAME_FIELDS)
    if "nir" in kinds or (has_name and "birth_date" in kinds):
        ei, ei_why = 1.0, "NIR or name with birth date: identified at once"
    elif has_name:
        ei, ei_why = 0.75, "names without birth date"
    elif "birth_date" in kinds and "sex" in kinds:
        ei, ei_why = 0.5, "birth date and sex"
    else:
        ei, ei_why = 0.25, "no direct identifier"
    cb = 0.0
    cb_why = []
    for c in circumstances:
        if c not in CIRCUMSTANCES:
            raise InvalidInput(f"unknown circumstance: one of {', '.join(CIRCUMSTANCES)}")
        add, why = CIRCUMSTANCES[c]
        cb += add
        cb_why.append(why)
    total = round(dpc * ei + cb, 2)
    return {
        "method": "ENISA 2013",
        "dpc": dpc,
        "dpc_reason": dpc_why,
        "ei": ei,
        "ei_reason": ei_why,
        "cb": round(cb, 2),
        "cb_reason": "; ".join(cb_why) or "none",
        "score": total,
        "level": level(total),
    }


def edited(
    base: Mapping[str, Any], *, dpc: float | None = None, ei: float | None = None, cb: float | None = None
) -> dict[str, Any]:
    """A score with some parts changed by a person (the reason is kept sealed by the register)."""
    out = dict(base)
    for name, value, bounds in (("dpc", dpc, (1, 4)), ("ei", ei, (0.25, 1)), ("cb", cb, (0, 2))):
        if value is None:
            continue
        if not bounds[0] <= value <= bounds[1]:
            raise InvalidInput(f"the severity's {name} is between {bounds[0]} and {bounds[1]}")
        out[name] = float(value)
        out[f"{name}_reason"] = "changed by a person (reason in the register)"
    out["score"] = round(float(out["dpc"]) * float(out["ei"]) + float(out["cb"]), 2)
    out["level"] = level(out["score"])
    return out
