"""`make demo`'s command, end to end on a small scale, as a new user would run it."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pdfplumber
import pypdfium2
import zxingcpp

from labvault.synth import LabGenerator
from labvault.synth.load import lab_spec
from tests.conftest import need


def pdf_text(path: Path) -> str:
    with pdfplumber.open(io.BytesIO(path.read_bytes())) as doc:
        return "\n".join(page.extract_text() or "" for page in doc.pages)


def check_lab_day(home: Path, text: str) -> None:
    """The lab's day (issue 15's path): the request's specimen id, printed, is what zxing-cpp reads
    from the labels PDF; the analyser's critical potassium opens a call-back task and eGFR is
    computed; the self-validation is refused; the report PDF holds each value, unit, range, flag
    and the biologist; the corrected one says which report it replaces. No NIR printed."""
    day = text[text.index("La journée du laboratoire") : text.index("The audit trail")]
    specimen = re.search(r"specimen ([0-9a-f]{32}) \(SER", day)
    assert specimen, day[:1500]
    sid = specimen.group(1)
    assert f"lu: {sid} = {sid}" in day
    doc = pypdfium2.PdfDocument((home / "etiquettes.pdf").read_bytes())
    assert [b.text for b in zxingcpp.read_barcodes(doc[0].render(scale=6).to_pil())] == [sid]
    assert f"specimen {sid} scanned at reception: received" in day
    assert f"analyser ORU^R01 naming {sid} in SPM-2: 1 accepted, 0 refused" in day
    assert "potassium 6.8 mmol/L: flag HH (critical), judged by catalogue v0" in day
    assert re.search(r"call-back task [0-9a-f]{32} opened \(open\): the prescriber to be called within 30 min", day)
    assert re.search(r"eGFR \(CKD-EPI 2021\) computed from the creatinine: \d+ mL/min/\{1\.73_m2\}", day)
    assert "technical validation by Léa Girard (bio-rhone): 4 results" in day
    assert "biological validation by Léa Girard (bio-rhone) too: refused (" in day
    assert (
        "biological validation of her own correction by Dr Claire Moreau (bio-rhone): refused "
        "(a result is never validated biologically by the person who entered it)"
    ) in day
    assert "biological validation by Dr Julien Dumas (bio-rhone): corrected" in day
    first, second = pdf_text(home / "compte-rendu-v1.pdf"), pdf_text(home / "compte-rendu-v2.pdf")
    for line in (
        "Potassium * 6,8 HH mmol/L 3,5 à 5,1",
        "Sodium 141 N mmol/L 136 à 145",
        "Créatinine 9,0 N mg/L 5,5 à 10,5",
        "Validé par Dr Claire Moreau (bio-rhone), biologiste",
    ):
        assert line in first and f"| {line}" in day, line
    assert "remplace le compte rendu du" not in first
    assert "Sodium (corrigé) 138 N mmol/L 136 à 145" in second and "Dr Julien Dumas (bio-rhone)" in second
    replaces = re.search(r"Ce compte rendu remplace le compte rendu du \d\d/\d\d/\d{4} \d\d:\d\d\.", second)
    assert replaces and f"| {replaces.group(0)}" in day
    patient = LabGenerator(lab_spec(0)[0], 2021 + 15).patient(0).identity
    assert patient.nir and patient.nir not in text and patient.family_name not in day


def check_breach(home, text: str) -> None:
    """The end of the 2021 story (I1-I5, H3): the file found online analysed, each lab's affected
    patients counted exactly (equal to the file's own), the migrated lab's part traced to its package,
    the other lab's to none; one incident, each lab its own notice, clock, draft (JSON, HTML, PDF),
    the first lab's letters one per affected patient; the vendor's operator refused the list."""
    step = text[text.index("9c. La fuite") : text.index("10. The audit trail")]
    parts = re.findall(r"    (bio-\w+): (\d+) patients( = the file's own)?, (\d+) results; .*; source: (.*)", step)
    assert len(parts) == 2, step
    assert all(exact for _, _, exact, _, _ in parts), step  # exactly the file's own patients, per lab
    sources = {lab: src for lab, _, _, _, src in parts}
    first, second = sorted(sources, key=lambda lab: "no package" in sources[lab])
    assert sources[first].startswith("package ") and "no package of the lab explains it" in sources[second]
    assert f"{first}'s part came from package " in step
    patients = {lab: int(n) for lab, n, _, _, _ in parts}
    m = re.search(rf"{first}: (\d+) Art\. 34 letters", step)
    assert m and int(m.group(1)) == patients[first]
    letters = sorted((home / "breach" / first / "lettres").glob("lettre-*.pdf"))
    assert len(letters) == patients[first] and all(p.read_bytes().startswith(b"%PDF") for p in letters)
    for lab in (first, second):
        other = second if lab == first else first
        assert f"{lab}'s draft names {other}: no" in step
        draft = json.loads((home / "breach" / lab / "art33-v1.json").read_text())
        assert other not in json.dumps(draft)
        assert (home / "breach" / lab / "art33-v1.pdf").read_bytes().startswith(b"%PDF")
        assert "<html" in (home / "breach" / lab / "art33-v1.html").read_text()
    assert "2 notices raised on the labs' channels; 24 hours later, 2 reminders" in step
    assert "the vendor's operator asks for the affected list: refused (" in step


def test_demo_end_to_end(tmp_path):
    need(shutil.which("age") is not None, "the age CLI is missing: apt-get install age")
    env = {**os.environ, "LABVAULT_HOME": str(tmp_path / "demo"), "LABVAULT_PASSPHRASE": "demo passphrase here"}
    env.pop("LABVAULT_DATABASE_URL", None)
    env.pop("LABVAULT_KEY_PROVIDER", None)
    args = [sys.executable, "-m", "labvault.cli", "demo", "--labs", "2", "--patients", "60"]
    for _ in range(2):  # a second run rebuilds the demo home
        out = subprocess.run(args, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "total: 2 labs, 120 patients" in text
    assert "2 of 2 labs synthetic" in text and text.count(" synthetic ") >= 2  # each lab marked
    assert text.count("not found") == 4 and "FOUND" not in text
    assert "nothing in clear" in text
    check_lab_day(tmp_path / "demo", text)
    # how to open the web interface on the demo home, with an account and its current TOTP code
    assert "open http://127.0.0.1:8000/ in a browser" in text and "biologist (password only)" in text
    m = re.search(r"\.venv/bin/python -c '(import pyotp; print\(pyotp\.TOTP\(\"[A-Z2-7]+\"\)\.now\(\)\))'", text)
    assert m, text[-1500:]
    code = subprocess.run([sys.executable, "-c", m.group(1)], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"\d{6}\n", code)
    assert "INS/NIR" in text and "results (8 newest shown)" in text
    # The migration scenario: everything refused, the instructed package opened by the age CLI.
    assert "the operator asks for every field since 2015: REFUSED (beyond instruction 'MIG-2021-NEWLIS'" in text
    assert "(= the manifest); free-text comments in it: none" in text
    assert "package still on disk: no; package key in the key provider: no" in text
    assert "signature verifies" in text
    # Monitoring (H1, H2, H3): the night reads, the refused export and the canary raise alerts, references
    # only; the outside report about 56 leaked lines closes only after its assessment.
    alerts = ("CRITICAL canary-touched", "HIGH     bulk-read-vendor", "HIGH     export-refused", "MEDIUM   off-hours")
    for alert in alerts:
        assert f"ALERTE {alert}" in text, alert
    assert "close without assessment: REFUSED (an advisory is closed only after its breach assessment" in text
    assert "assessed (breach: yes, labs told), then: closed" in text
    check_breach(tmp_path / "demo", text)
    # the vendor's own administrator: each attempt refused with its reason, none let through (E1, F2, D2, A8)
    assert "ALLOWED" not in text
    for attempt in (
        "add its own account to",
        "mint a token for",
        "demote",
        "fill bio-reelle with generated data",
        "crypto-shred bio-reelle without its signed deletion instruction",
    ):
        assert re.search(re.escape(attempt) + r"[^\n]*: refused \(", text), attempt


def test_demo_refuses_a_real_home(tmp_path):
    home = tmp_path / "real"
    home.mkdir()
    (home / "keyring.json").write_text("{}")
    env = {**os.environ, "LABVAULT_HOME": str(home), "LABVAULT_PASSPHRASE": "demo passphrase here"}
    out = subprocess.run([sys.executable, "-m", "labvault.cli", "demo"], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "not a demo home" in out.stderr
    assert (home / "keyring.json").read_text() == "{}"
