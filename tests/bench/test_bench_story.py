"""`labvault bench story` runs end to end at a tiny scale (its figures are measured at full scale by
hand, never asserted here)."""

import json
import os
import subprocess
import sys

from labvault.bench.story import split
from labvault.synth import LabGenerator
from labvault.synth.load import lab_spec

STEPS = ("setup", "ingest", "migrate", "leak", "analyse", "incident")


def test_the_story_at_a_tiny_scale_gives_each_lab_a_notice_of_its_own_patients(tmp_path):
    """I1, I2, I3, I5: 3 labs of 100 generated patients stored through the gateway, 2 of them
    migrated under signed instruction; their packages and the third lab's extraction leaked as one
    flat file; the analysis finds every patient of each lab and names the two packages (and no
    package for the third lab); the incident's notice to each lab names exactly its own patients,
    and each lab's DPO writes its draft. The last line is the JSON of the steps' seconds, and the
    scratch home is gone afterwards."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "labvault.cli", "bench", "story", "--labs", "3", "--patients", "300"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert tuple(figures["steps"]) == STEPS
    assert all(figures["steps"][s] >= 0 for s in STEPS)
    assert figures["total_seconds"] >= sum(figures["steps"].values()) * 0.99

    labs = [lab_spec(k)[0] for k in range(3)]
    per_lab = split(300, 3)
    assert figures["expected"] == dict(zip(labs, per_lab, strict=True))
    # What the generator made: every patient of every lab, and the results the two packages hold.
    made = {t: [LabGenerator(t, 7).patient(i) for i in range(n)] for t, n in zip(labs, per_lab, strict=True)}
    assert figures["stored"]["patients"] == 300
    assert figures["stored"]["results"] == sum(len(r.results) for rs in made.values() for r in rs)
    packaged = {p["tenant"]: p["results"] for p in figures["packages"]}
    assert packaged == {t: sum(len(r.results) for r in made[t]) for t in labs[:2]}
    # The file: one row per person, as the 2021 file.
    assert figures["leaked_rows"] == 300
    assert figures["analysis"]["rows"] == figures["leaked_rows"]
    assert figures["analysis"]["unmatched"] == 0 and figures["analysis"]["ambiguous"] == 0
    assert figures["sources"] == {"named": sorted(labs[:2]), "unexplained": 1}
    # Each lab: its affected patients, its notice and its draft.
    assert figures["affected"] == figures["expected"]
    assert figures["notices"] == figures["expected"]
    assert set(figures["drafts"]) == set(labs) and all(n > 1000 for n in figures["drafts"].values())
    assert list(tmp_path.iterdir()) == []
