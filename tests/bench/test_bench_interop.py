"""`labvault bench mllp` and `bench export` run end to end and end with their JSON; what they count
is checked (every message stored, every result exported), the speeds are only recorded."""

import json

from typer.testing import CliRunner

from labvault.cli.app import app


def last_json(args: list[str]) -> dict:
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output[-1500:]
    return json.loads(out.output.strip().splitlines()[-1])


def test_bench_mllp():
    f = last_json(["bench", "mllp", "--messages", "120", "--connections", "2", "--window", "10", "--group", "25"])
    assert f["acked_aa"] == f["stored_requests"] == 120
    assert f["groups"] >= 120 // 25 and f["durable_commit"] is True
    assert f["messages_per_s"] > 0 and f["baseline_per_s"] > 0 and f["database"] == "sqlite"


def test_bench_export():
    f = last_json(["bench", "export", "--results", "3000"])
    assert f["counts"]["Observation"] == 3000 and f["counts"]["Patient"] == 500
    assert f["counts"]["DiagnosticReport"] == f["counts"]["ServiceRequest"] > 0
    assert f["observations_per_s"] > 0 and f["baseline_per_s"] > 0 and f["json_dumps_per_s"] > 0
    assert f["export_rss_growth_mb"] < 100


def test_bench_migrate():
    f = last_json(["bench", "migrate", "--results", "3000"])
    assert f["loaded"] == f["selected"] == 3000  # the instruction covers the whole scratch lab
    assert f["results_per_s"] > 0 and f["pyrage_per_s"] > 0 and f["json_per_s"] > 0 and f["peak_rss_mb"] > 0
    assert f["package_bytes"] > 3000 * 100 and f["plan_s"] > 0 and f["run_s"] > 0 and f["verify_s"] > 0
