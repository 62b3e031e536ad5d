"""``labvault request``, ``specimen`` and ``result`` as a lab's technician uses them: a request
entered for a patient, its specimen received by its barcode, a value entered, technical validation;
biological validation refused to a technician; errors in one line with a non-zero exit."""

from __future__ import annotations

import json

from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_ingest_cli import lab  # noqa: F401  (the lab, its technician and two files)
from tests.interop.messages import NIR


def test_a_technician_works_from_the_cli(lab, capsys):
    """F2 (a technician never validates biologically), G1: the whole path by hand from the CLI."""
    tech, good, _ = lab
    code, _, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", tech, "--json")
    assert code == 0, err
    code, out, err = run(capsys, "patient", "find", "--tenant", "bio-lyon", "--nir", NIR, "--as", tech, "--json")
    assert code == 0, err
    patient = json.loads(out.strip().splitlines()[0])["patient_id"]
    args = ["--tenant", "bio-lyon", "--as", tech]
    code, out, err = run(
        capsys, "request", "enter", "--patient", patient, "--test", "2823-3,718-7",
        "--collected-at", "2026-12-07T07:30:00+01:00", "--collector", "IDE Fontaine", "--urgent", *args,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    specimens = [ln.split()[1] for ln in lines if ln.startswith("specimen")]
    results = {ln.split()[2]: ln.split()[1] for ln in lines if ln.startswith("result")}
    assert len(specimens) == 2 and set(results) == {"2823-3", "718-7"}
    code, out, err = run(capsys, "specimen", "receive", specimens[0], *args)
    assert code == 0 and "received" in out, err
    code, out, err = run(capsys, "result", "enter", results["2823-3"], "4,2", *args)
    assert code == 0 and "entered" in out, err
    code, out, err = run(capsys, "result", "validate", results["2823-3"], "--level", "technical", *args)
    assert code == 0 and "technical" in out, err
    code, out, err = run(capsys, "result", "validate", results["2823-3"], "--level", "biological", *args)
    assert code != 0 and one_line_error(err)
    code, out, err = run(capsys, "specimen", "reject", specimens[1], "--reason", "clotted", *args)
    assert code != 0 and "non-conformity" in one_line_error(err)
    code, out, err = run(capsys, "specimen", "status", specimens[0], *args)
    assert code == 0 and "request:enter" in out and "specimen:received" in out, err
    code, out, err = run(capsys, "request", "enter", "--patient", patient, "--test", "9999-9",
                         "--collected-at", "2026-12-07T07:30", "--collector", "x", *args)  # fmt: skip
    assert code != 0 and "unknown test code" in one_line_error(err)
