"""``labvault patient find --results``: a patient's results as a biologist reads them: date,
request, status, value as written with its comparator, unit, flag, reference range, validator,
newest first, each beside the earlier values of the same test; labels whole at any terminal width;
``--json`` for scripts."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime

import pytest

from labvault.access import Principal, Purpose
from labvault.config import Settings
from labvault.domain.models import Identity, IdentityStatus, Request, Result, ResultStatus, Specimen
from labvault.runtime import open_runtime
from tests.cli.helpers import PASSWORD, enrolled_account
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401 - the fixture, used by name

LAB = "bio-lyon"
NIR = "185077512345608"
LONG = "Hémoglobine glyquée (HbA1c) rapportée à l'hémoglobine totale, méthode HPLC certifiée NGSP"
K, HBA1C, URIC = ("2823-3", "Potassium"), ("4548-4", LONG), ("3084-1", "Acide urique")


def _result(rid: str, req: str, code: tuple[str, str], at: datetime | None, **kw) -> Result:
    return Result(rid, req, code[0], code[1], specimen_id=f"s-{req}", validated_at=at, **kw)


def _load() -> None:
    """One patient with three requests over a year, written in through the gateway as the lab's
    technician: potassium each time (as written: 4.2, 4.50, <0.5), HbA1c twice, a pending uric acid."""
    d1, d2, d3 = (datetime(2024, m, 10, 8, 0, tzinfo=UTC) for m in (1, 6, 11))
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            u.ensure_account(LAB, "tech-bio-lyon", "Tech", "tech@bio-lyon.invalid", ["technician"], commitment="test")
        tech = Principal("tech-bio-lyon", "Tech", LAB, frozenset({"technician"}))
        ident = Identity(
            "pat-1",
            NIR,
            IdentityStatus.PROVISIONAL,
            "DUPONT",
            "Jean Pierre",
            date(1985, 7, 4),
            "M",
            local_ids=[("urn:oid:1.2.250.1.999.1", "IPP-417")],
        )
        reqs = [
            Request("q1", "pat-1", None, d1, accession="ACC-2024-0001", reported_at=d1),
            Request("q2", "pat-1", None, d2, accession="ACC-2024-0002", reported_at=d2),
            Request("q3", "pat-1", None, d3, accession="ACC-2024-0003"),
        ]
        results = [
            _result(
                "r1",
                "q1",
                K,
                d1,
                value_num=4.2,
                value_repr="4.2",
                unit="mmol/L",
                ref_low=3.5,
                ref_high=5.1,
                flag="N",
                validated_by="Dr Claire MOREAU",
            ),
            _result(
                "r2",
                "q1",
                HBA1C,
                d1,
                value_num=6.1,
                value_repr="6.10",
                unit="%",
                flag="H",
                ref_text="4.0-6.0",
                validated_by="Dr Claire MOREAU",
            ),
            _result(
                "r3",
                "q2",
                K,
                d2,
                value_num=4.5,
                value_repr="4.50",
                unit="mmol/L",
                ref_low=3.5,
                ref_high=5.1,
                flag="N",
                validated_by="Dr Paul LEFEBVRE",
            ),
            _result(
                "r4",
                "q2",
                HBA1C,
                d2,
                value_num=5.8,
                value_repr="5.8",
                unit="%",
                ref_text="4.0-6.0",
                validated_by="Dr Paul LEFEBVRE",
                status=ResultStatus.CORRECTED,
            ),
            _result(
                "r5",
                "q3",
                K,
                d3,
                value_num=0.5,
                value_repr="0.5",
                comparator="<",
                unit="mmol/L",
                ref_low=3.5,
                ref_high=5.1,
                flag="LL",
                validated_by="Dr Paul LEFEBVRE",
            ),
            _result("r6", "q3", URIC, None, unit="µmol/L", status=ResultStatus.PENDING),
        ]
        with rt.gateway.unit(tech, Purpose.CARE) as u:
            u.add_patients(LAB, [ident])
            u.add_requests(LAB, reqs)
            u.add_specimens(LAB, [Specimen(f"s-{q.request_id}", q.request_id, "SER", q.requested_at) for q in reqs])
            u.add_results(LAB, results)
    finally:
        rt.close()


@pytest.fixture
def lab(home, capsys, monkeypatch):
    """An initialised home, the lab, its patient loaded, an enrolled biologist (returns its e-mail)."""
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys,
        "tenant",
        "add",
        LAB,
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    assert code == 0, err
    _load()
    bio = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "bio@bio-lyon.invalid", "biologist", LAB)
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    return bio


def _find(capsys, bio: str, *more: str) -> str:
    code, out, err = run(capsys, "patient", "find", "--tenant", LAB, "--nir", NIR, "--results", "--as", bio, *more)
    assert code == 0, err
    return out


COLUMNS = ("date", "request", "test", "status", "value", "unit", "flag", "range", "validated", "previous")


def _table(out: str) -> tuple[list[str], list[list[str]]]:
    """The results table: its header lines and its rows, each row the lines between two rules."""
    lines = out.split(" results", 1)[1].splitlines()[1:]
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip() and set(line.strip()) <= set("─━"):
            blocks.append([])
        elif line.strip():
            blocks[-1].append(line)
    return blocks[0], [b for b in blocks[1:] if b]


def _cells(out: str) -> list[dict[str, str]]:
    """Each row's cells by column name, a wrapped cell's lines joined by a space."""
    header, rows = _table(out)
    last = header[-1]  # a wrapped header ("validated" above "by") ends on the line naming every column

    def start(name: str) -> int:
        m = re.search(rf"(?<!\S){name}(?!\S)", last) or (
            re.search(r"(?<!\S)by(?!\S)", last) if name == "validated" else None
        )
        return m.start() if m else -1

    starts = [start(name) for name in COLUMNS]
    assert all(x >= 0 for x in starts) and starts == sorted(starts), header
    ends = [*starts[1:], None]
    return [
        {
            name: " ".join(x for x in (line[a:b].strip() for line in row) if x)
            for name, a, b in zip(COLUMNS, starts, ends, strict=True)
        }
        for row in rows
    ]


@pytest.mark.parametrize("columns", ["220", "100"])
def test_results_newest_first_with_previous_values(lab, capsys, monkeypatch, columns):
    """on a wide and a narrow terminal: every column, newest first (the pending uric
    acid of November, then its potassium <0.5 beside the June 4.50 and January 4.2), values as
    written (4.50, <0.5, 6.10), statuses, validators, ranges; the long label whole, never cut."""
    monkeypatch.setenv("COLUMNS", columns)
    out = _find(capsys, lab)
    assert "6 results" in out and "…" not in out
    assert max(len(x) for x in out.splitlines()) <= int(columns)
    rows = _cells(out)
    assert len(rows) == 6
    assert [r["date"][:10] for r in rows] == ["2024-11-10"] * 2 + ["2024-06-10"] * 2 + ["2024-01-10"] * 2
    uric = next(r for r in rows if r["test"].startswith("Acide urique"))
    assert (uric["status"], uric["value"], uric["unit"]) == ("pending", "", "µmol/L")
    potassium = [r for r in rows if r["test"] == "Potassium (2823-3)"]
    assert [(r["date"][:10], r["value"]) for r in potassium] == [
        ("2024-11-10", "<0.5"),
        ("2024-06-10", "4.50"),
        ("2024-01-10", "4.2"),
    ], out
    nov = potassium[0]
    assert (nov["request"], nov["status"], nov["unit"], nov["flag"], nov["range"]) == (
        "ACC-2024-0003",
        "final",
        "mmol/L",
        "LL",
        "3.5-5.1",
    )
    assert nov["validated"] == "Dr Paul LEFEBVRE"
    assert nov["previous"] == "4.50 mmol/L N (2024-06-10) 4.2 mmol/L N (2024-01-10)"
    assert potassium[1]["previous"] == "4.2 mmol/L N (2024-01-10)" and potassium[2]["previous"] == ""
    hba1c = [r for r in rows if r["test"].endswith("(4548-4)")]
    assert [(r["status"], r["value"], r["flag"], r["range"]) for r in hba1c] == [
        ("corrected", "5.8", "", "4.0-6.0"),
        ("final", "6.10", "H", "4.0-6.0"),
    ]
    # the long label whole: wrapped on its words, none cut
    assert all(r["test"] == f"{LONG} (4548-4)" for r in hba1c)


def test_results_as_json_for_scripts(lab, capsys):
    """``--json``: one object per patient with stable keys; its results newest first, values as
    written, each with the earlier values of its test."""
    out = _find(capsys, lab, "--json")
    [line] = [x for x in out.splitlines() if x.startswith("{")]
    doc = json.loads(line)
    assert doc["identity_status"] == "provisional" and doc["local_ids"] == [
        {"system": "urn:oid:1.2.250.1.999.1", "value": "IPP-417"}
    ]
    res = doc["results"]
    assert list(res[0]) == [
        "date",
        "request_id",
        "request",
        "result_id",
        "code_system",
        "code",
        "label",
        "status",
        "value",
        "comparator",
        "unit",
        "flag",
        "reference_range",
        "validated_by",
        "validated_at",
        "comment",
        "previous",
    ]
    k = [r for r in res if r["code"] == "2823-3"]
    assert [r["value"] for r in k] == ["<0.5", "4.50", "4.2"]
    assert [p["value"] for p in k[0]["previous"]] == ["4.50", "4.2"]
    assert k[0]["comparator"] == "<" and k[0]["reference_range"] == "3.5-5.1" and k[0]["request"] == "ACC-2024-0003"
    assert k[2]["previous"] == []
    uric = next(r for r in res if r["code"] == "3084-1")
    assert uric["status"] == "pending" and uric["value"] is None and uric["unit"] == "µmol/L"
    assert next(r for r in res if r["result_id"] == "r2")["value"] == "6.10"
    assert [r["date"][:10] for r in res] == sorted((r["date"][:10] for r in res), reverse=True)


def test_the_vendor_operator_sees_no_results(lab, capsys):
    """F2: the CLI's vendor operator (no --as) asking for a patient's results is refused with a
    one-line error: vendor staff have no standing access to lab data."""
    code, out, err = run(capsys, "patient", "find", "--tenant", LAB, "--nir", NIR, "--results")
    assert code != 0 and "grant" in one_line_error(err) and "DUPONT" not in out + err
    code, out, err = run(capsys, "patient", "find", "--tenant", LAB, "--nir", NIR, "--results", "--json")
    assert code != 0 and "DUPONT" not in out + err
