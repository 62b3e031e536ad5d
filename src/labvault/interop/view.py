"""A patient's results as people read them (the CLI's table, the web page): newest first, each
beside the earlier values of the same test, values as the sender wrote them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from labvault.domain.models import Request, Result
from labvault.interop.fhir_out import number_text

PREVIOUS = 3  # earlier values of the same test shown beside a result


def range_text(r: Result) -> str:
    """The reference range as text: the sender's, else its bounds (``3.5-5.1``, ``<10``)."""
    if r.ref_text:
        return r.ref_text
    if r.ref_low is not None and r.ref_high is not None:
        return f"{r.ref_low:g}-{r.ref_high:g}"
    if r.ref_high is not None:
        return f"<{r.ref_high:g}"
    if r.ref_low is not None:
        return f">{r.ref_low:g}"
    return ""


def value_text(r: Result) -> str:
    """The value as the sender wrote it, with its comparator (``<0.5``, ``12.50``); a row stored
    before the text was kept shows its number as stored; else the text."""
    try:
        text = number_text(r.value_repr, r.value_num)
    except ValueError:
        text = "(not a number)"
    if text is None:
        return r.value_text or ""
    return f"{r.comparator or ''}{text}"


def _utc(value: datetime) -> datetime:
    """A stored time without a zone is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Line:
    """One result as shown: when, from which request, what, and the earlier values of its test."""

    at: datetime
    request: str
    result: Result
    previous: tuple[tuple[datetime, Result], ...]

    def as_json(self) -> dict:
        r = self.result
        return {
            "date": self.at.isoformat(),
            "request_id": r.request_id,
            "request": self.request,
            "result_id": r.result_id,
            "code_system": r.code_system,
            "code": r.code,
            "label": r.label,
            "status": str(r.status),
            "value": value_text(r) or None,
            "comparator": r.comparator,
            "unit": r.unit,
            "flag": r.flag,
            "reference_range": range_text(r) or None,
            "validated_by": r.validated_by,
            "validated_at": None if r.validated_at is None else r.validated_at.isoformat(),
            "comment": r.comment,
            "previous": [
                {
                    "date": at.isoformat(),
                    "result_id": p.result_id,
                    "value": value_text(p) or None,
                    "unit": p.unit,
                    "status": str(p.status),
                    "flag": p.flag,
                }
                for at, p in self.previous
            ],
        }


def result_lines(results: Sequence[Result], requests: Sequence[Request], previous: int = PREVIOUS) -> list[Line]:
    """Results newest first (validation time, else the request's date), each with the ``previous``
    earlier results of the same test (code system and code) of the patient, newest first."""
    by_id = {q.request_id: q for q in requests}

    def when(r: Result) -> datetime:
        q = by_id.get(r.request_id)
        at = r.validated_at or (q.requested_at if q is not None else None)
        return _utc(at) if at is not None else datetime.min.replace(tzinfo=UTC)

    dated = sorted(((when(r), r) for r in results), key=lambda x: (x[0], x[1].request_id, x[1].result_id), reverse=True)
    same_test: dict[tuple[str, str], list[tuple[datetime, Result]]] = {}
    place: list[int] = []  # each result's place among its test's results, newest first
    for at, r in dated:
        group = same_test.setdefault((r.code_system, r.code), [])
        place.append(len(group))
        group.append((at, r))
    lines = []
    for k, (at, r) in enumerate(dated):
        group = same_test[(r.code_system, r.code)]
        earlier = tuple((a, p) for a, p in group[place[k] + 1 :] if a < at)[:previous]
        q = by_id.get(r.request_id)
        lines.append(Line(at, (q.accession if q is not None and q.accession else r.request_id), r, earlier))
    return lines
