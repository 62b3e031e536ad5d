"""``labvault retention`` and ``labvault tenant end``, as an operator uses them: one-line errors,
nothing created or deleted on a refusal; a purge with the clock moved deletes exactly what the
generated data says is due; the end of a contract leaves a certificate that verifies."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pytest
from sqlalchemy import func, select

from labvault.access import Purpose
from labvault.config import Settings
from labvault.crypto.signing import verify
from labvault.retention import policy
from labvault.runtime import open_runtime
from labvault.store import schema as t
from labvault.synth import LabGenerator
from labvault.synth.load import SYNTHETIC_RETENTION, lab_spec
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import first_lab_admin
from tests.retention.test_retention import Lab

LAB = lab_spec(0)[0]
RULE = ["--retention", "results=10y", "--retention-ref", "CSP art. R.1112-7"]


def _labs(capsys) -> list[str]:
    code, out, _ = run(capsys, "tenant", "list", "--json")
    assert code == 0
    return [json.loads(x)["id"] for x in out.splitlines() if x.strip()]


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        ([], "retention rule for 'results'"),
        (["--retention", "results=10y"], "legal reference"),
        (["--retention", "hiv=30y", "--retention-ref", "ref"], "'results'"),
        (["--retention", "results=10", "--retention-ref", "ref"], "3650d or 10y"),
        (["--retention", "results=0d", "--retention-ref", "ref"], "at least one day"),
        (["--retention", "results", "--retention-ref", "ref"], "CATEGORY=DURATION"),
        (
            ["--retention", "results=10y", "--retention", "other=1y", "--retention-ref", "ref"],
            "unknown retention category",
        ),
    ],
)
def test_a_lab_is_not_added_without_its_results_rule(home, capsys, extra, expect):
    run(capsys, "init")
    code, _, err = run(capsys, "tenant", "add", "bio-lyon", "--name", "Bio Lyon", "--finess", "690000123", *extra)
    assert code == 1 and expect in one_line_error(err)
    assert _labs(capsys) == []


def _lab_from_generator(patients: int, seed: int) -> Lab:
    lab = Lab()
    for rec in LabGenerator(LAB, seed).patients(patients):
        lab.identities[rec.identity.patient_id] = rec.identity
        for q in rec.requests:
            q.requested_at = q.requested_at.replace(tzinfo=q.requested_at.tzinfo or UTC)
            lab.requests[q.request_id] = q
        for s in rec.specimens:
            s.collected_at = s.collected_at.replace(tzinfo=s.collected_at.tzinfo or UTC)
            lab.specimens[s.specimen_id] = s
        lab.results.update({r.result_id: r for r in rec.results})
    return lab


def _count(table, action: str | None = None) -> int:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as conn:
            q = select(func.count()).select_from(table).where(table.c.tenant_id == LAB)
            if action:
                q = q.where(table.c.action == action)
            return conn.execute(q).scalar_one()
    finally:
        rt.close()


def _admin_unit(fn) -> None:
    """The lab's lab_admin acting in process (MFA login is tested elsewhere)."""
    rt = open_runtime(Settings.from_env())
    try:
        admin = first_lab_admin(rt.gateway, rt.operator, LAB)  # invited by the platform
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            fn(u)
    finally:
        rt.close()


def test_run_with_the_clock_moved(home, capsys, monkeypatch):
    run(capsys, "init")
    assert run(capsys, "generate", "--labs", "1", "--patients", "40", "--seed", "4")[0] == 0
    code, out, _ = run(capsys, "retention", "list", LAB)
    [rule] = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and (rule["rule"], rule["days"]) == ("results", SYNTHETIC_RETENTION["results"][0])
    code, _, err = run(capsys, "retention", "run", LAB, "--now", "2100-01-01T00:00:00+00:00")
    assert code == 1 and "LABVAULT_TEST_MODE" in one_line_error(err)
    code, _, err = run(capsys, "retention", "run", "nope")
    assert code == 1 and "unknown lab" in one_line_error(err)

    monkeypatch.setenv("LABVAULT_TEST_MODE", "1")
    lab = _lab_from_generator(40, 4)
    times = sorted(lab.result_time(r) for r in lab.results.values())
    now = times[len(times) // 2] + timedelta(days=3650, hours=1)  # half the results are past their deadline
    want = lab.expected(now, {"results": 3650})
    assert 0 < len(want["result"]) < len(lab.results) and want["patient"]
    code, out, err = run(capsys, "retention", "run", LAB, "--now", now.isoformat(), "--json")
    assert code == 0, err
    [report] = json.loads(out.strip().splitlines()[-1])["labs"]
    assert report["categories"] == {"results": len(want["result"])}
    assert (report["requests"], report["specimens"], report["identities"]) == (
        len(want["request"]),
        len(want["specimen"]),
        len(want["patient"]),
    )
    assert f"{len(want['result']):>9,} deleted" in out
    assert _count(t.result) == len(lab.results) - len(want["result"])
    assert _count(t.patient_identity) == len(lab.identities) - len(want["patient"])
    assert _count(t.audit_event, "retention:purge") == 4  # results, request, specimen, patient

    # Every lab (no TENANT): the rest is past its deadline a century on.
    code, out, err = run(capsys, "retention", "run", "--now", "2200-01-01", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["labs"][0]["categories"]["results"] == len(lab.results) - len(
        want["result"]
    )
    assert _count(t.result) == _count(t.request) == _count(t.patient_identity) == 0


def test_holds_and_refusals(home, capsys, monkeypatch):
    run(capsys, "init")
    assert run(capsys, "generate", "--labs", "1", "--patients", "10", "--seed", "5")[0] == 0
    results = _count(t.result)
    code, _, err = run(capsys, "retention", "set", LAB, "results", "5y", "--ref", "shorter")
    assert code == 3 and "not allowed" in one_line_error(err)  # the vendor does not decide a lab's periods
    code, _, err = run(capsys, "retention", "set", LAB, "results", "5 years", "--ref", "x")
    assert code == 1 and "3650d or 10y" in one_line_error(err)
    code, _, err = run(capsys, "retention", "hold", LAB)
    assert code == 1 and "basis" in one_line_error(err)
    code, _, err = run(capsys, "retention", "hold", LAB, "--basis", "court order")
    assert code == 3 and "not allowed" in one_line_error(err)

    holds = []
    _admin_unit(lambda u: holds.append(policy.place_hold(u, LAB, basis="Tribunal judiciaire, RG 31/00042")))
    monkeypatch.setenv("LABVAULT_TEST_MODE", "1")
    code, out, err = run(capsys, "retention", "run", LAB, "--now", "2200-01-01T00:00:00+00:00", "--json")
    assert code == 0, err
    assert "held" in out and json.loads(out.strip().splitlines()[-1])["labs"][0]["held"] == ["results"]
    assert _count(t.result) == results
    code, out, _ = run(capsys, "retention", "list", LAB)
    assert any(json.loads(x).get("hold") == holds[0].hold_id and json.loads(x)["active"] for x in out.splitlines())
    code, _, err = run(capsys, "tenant", "end", LAB, "--delete", "--yes")
    assert code == 1 and "legal hold" in one_line_error(err)
    assert _count(t.result) == results


def test_tenant_end_delete_and_certificate(home, capsys):
    code, out, _ = run(capsys, "init")
    platform_key = bytes.fromhex(next(x for x in out.splitlines() if x.startswith("signing")).split("ed25519:")[1])
    assert run(capsys, "generate", "--labs", "2", "--patients", "10", "--seed", "6")[0] == 0
    other = lab_spec(1)[0]
    for args, expect in (
        (["tenant", "end", LAB], "exactly one"),
        (["tenant", "end", LAB, "--delete", "--return", "I"], "exactly one"),
        (["tenant", "end", "nope", "--delete", "--yes"], "unknown lab"),
        (["tenant", "certificate", LAB], "no end-of-contract certificate"),
    ):
        code, _, err = run(capsys, *args)
        assert code == 1 and expect in one_line_error(err)
    results = _count(t.result)
    code, out, err = run(capsys, "tenant", "end", LAB, "--delete", "--yes")
    assert code == 0, err
    record = json.loads(out.strip().splitlines()[-1])
    verify(record["body"], record["signature"], platform_key)
    assert record["body"]["synthetic"] is True and record["body"]["instruction"] is None  # generated labs
    assert {s["store"] for s in record["body"]["stores"]} == {"database", "key provider", "packages"}
    assert record["body"]["stores"][0]["rows_deleted"]["result"] == results
    for name in t.PERSONAL_TABLES:
        assert _count(t.metadata.tables[name]) == 0, name
    rt = open_runtime(Settings.from_env())
    try:
        assert not rt.gateway.keys.has_scope(LAB) and rt.gateway.keys.has_scope(other)
        with rt.gateway.engine.connect() as conn:
            assert (
                conn.execute(
                    select(func.count()).select_from(t.result).where(t.result.c.tenant_id == other)
                ).scalar_one()
                > 0
            )
    finally:
        rt.close()
    code, out, err = run(capsys, "tenant", "certificate", LAB)
    assert code == 0 and json.loads(out)["signature_check"] == "valid", err
    # A certificate altered in the database no longer verifies.
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.begin() as conn:
            body = json.loads(
                conn.execute(select(t.signed_record.c.body).where(t.signed_record.c.kind == "tenant-end")).scalar_one()
            )
            body["stores"][0]["rows_deleted"]["result"] = 0
            conn.execute(
                t.signed_record.update().where(t.signed_record.c.kind == "tenant-end").values(body=json.dumps(body))
            )
    finally:
        rt.close()
    code, out, _ = run(capsys, "tenant", "certificate", LAB)
    assert code == 1 and json.loads(out)["signature_check"] == "INVALID"
