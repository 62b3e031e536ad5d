"""`labvault bench ingest` runs end to end (figures are measured by `make bench`, not asserted here)."""

import json
import subprocess
import sys


def test_bench_ingest_prints_its_json_last():
    out = subprocess.run(
        [sys.executable, "-m", "labvault.cli", "bench", "ingest", "--results", "3000", "--batch", "1000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("results", "encrypted_per_s", "clear_per_s", "ratio", "peak_rss_mb"):
        assert key in figures
    assert figures["results"] == 3000 and figures["encrypted_per_s"] > 0 and figures["clear_per_s"] > 0
