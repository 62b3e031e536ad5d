"""Coverage-guided fuzzing with atheris (libFuzzer), bounded, in the normal test run: each reader for
``SECONDS`` with a fixed seed, in its own process (``tests.fuzz.atheris_target``); any exception
other than the reader's input error is a crash and fails the test. And the proof that this can
fail: the same run with a bug injected into the reader reports it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import harness

pytest.importorskip("atheris", reason="atheris (PyPI) is in the test extras: pip install atheris")

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 5  # per reader: thousands of inputs past the seeds; with the start of its process, under 10 s
SEED = 20261207


def fuzz(reader: str, tmp_path: Path, *extra: str, seconds: int = SECONDS) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    cmd = [
        sys.executable,
        "-m",
        "tests.fuzz.atheris_target",
        reader,
        str(tmp_path / "corpus"),
        *extra,
        "--",
        f"-seed={SEED}",
        f"-max_total_time={seconds}",
        "-max_len=8192",
        "-timeout=20",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
        "-print_final_stats=1",
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120)


@pytest.mark.parametrize("reader", harness.READERS)
def test_atheris_finds_no_crash(reader, tmp_path):
    run = fuzz(reader, tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "Done" in out and "stat::number_of_executed_units" in out, out[-2000:]
    executed = int(out.split("stat::number_of_executed_units:")[1].split()[0])
    assert executed >= 500, out[-2000:]  # well past the seeds (about 3,000 a run for hl7v2, the slowest)
    assert not list(tmp_path.glob("crash-*"))


def test_atheris_reports_a_bug_injected_into_a_reader(tmp_path):
    """The harness can fail: a KeyError raised inside the HL7 mapper ends the run with the traceback,
    a non-zero status and the input that caused it kept as a crash file."""
    run = fuzz("hl7v2", tmp_path, "--inject-bug", seconds=5)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-3000:]
    assert "Uncaught Python exception" in out and "KeyError: 'injected bug'" in out, out[-3000:]
    assert list(tmp_path.glob("crash-*"))
