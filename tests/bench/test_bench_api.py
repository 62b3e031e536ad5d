"""``labvault bench api``: a real server and a real load generator, each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REQUIRED = (
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "errors",
    "requests",
    "seconds",
    "connections",
    "server",
    "health_requests_per_s",
)


def test_bench_api_prints_one_json_object_last(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABVAULT_")}
    proc = subprocess.run(
        [sys.executable, "-m", "labvault.cli", "bench", "api", "--seconds", "2", "--patients", "20"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1])
    missing = [k for k in REQUIRED if k not in out]
    assert missing == [], missing
    assert out["requests"] > 0
    assert out["errors"] == 0, out.get("error_kinds")
    assert out["health_requests"] > 0 and out["health_errors"] == 0
    assert out["connections"] >= 1 and isinstance(out["server"], dict)
    assert out["results_per_read"] > 0  # the reads returned decrypted results, not empty lists
