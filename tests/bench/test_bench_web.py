"""``labvault bench web``: the signed-in patient page served and measured beside the API's read,
the figures in one JSON object on the last line (what it measures, not how fast: no timing here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REQUIRED = (
    "pages_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "api_requests_per_s",
    "ratio_to_api",
    "results_per_page",
    "audit_pages_per_s",
    "audit_p99_ms",
)


def test_bench_web_prints_one_json_object_last(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "labvault.cli", "bench", "web", "--seconds", "1", "--patients", "30"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [k for k in REQUIRED if k not in out] == []
    assert out["bench"] == "web" and out["errors"] == 0 and out["api_errors"] == 0 and out["audit_errors"] == 0
    assert out["pages"] > 0 and out["results_per_page"] >= 25
    assert out["bytes_per_page"] > 5000  # whole pages (tables and charts), not redirects to the login page
