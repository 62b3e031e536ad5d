"""``labvault incident`` as the security officer and a lab's people run it (I1..I5): the processor's
incident over two labs, the notices delivered to each lab as alerts, a lab's draft in three
formats, the vendor refused on a lab's draft and decision; errors are one line, non-zero exit."""

from __future__ import annotations

import json

import pypdfium2

from labvault.crypto.keys import PLATFORM
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_grant_cli import account, as_

LAB_A, LAB_B = "bio-lyon", "bio-grenoble"


def test_incident_cli(home, capsys, monkeypatch, tmp_path):
    """I1, I2, I3, I5, G1: open, notice, list per lab, draft json/html/pdf, decide; refusals."""
    assert run(capsys, "init")[0] == 0
    for lab, finess in ((LAB_A, "690000123"), (LAB_B, "380000123")):
        args = ["--name", f"Lab {lab}", "--finess", finess, "--retention", "results=10y"]
        assert run(capsys, "tenant", "add", lab, *args, "--retention-ref", "CSP art. R.1112-7")[0] == 0
    so = account(PLATFORM, "Sam Officer", "so@vendor.invalid", "security_officer")
    admin = account(LAB_A, "Paul Lefebvre", "admin@bio-lyon.invalid", "lab_admin")
    # the CLI's operator (the platform admin) opens nothing
    code, _, err = run(
        capsys, "incident", "open", "--title", "Fuite", "--aware-at", "2026-12-07T08:00:00Z", "--lab", LAB_A
    )
    assert code != 0 and "incident:manage" in one_line_error(err)
    as_(monkeypatch, so)
    code, out, err = run(
        capsys,
        "incident",
        "open",
        "--title",
        "Fichier publié",
        "--aware-at",
        "2026-12-07T08:00:00Z",
        "--lab",
        LAB_A,
        "--lab",
        LAB_B,
        "--as",
        "so@vendor.invalid",
    )
    assert code == 0, err
    inc = json.loads(out)
    iid = inc["incident_id"]
    assert sorted(p["tenant"] for p in inc["parts"]) == sorted([LAB_A, LAB_B])
    as_(monkeypatch, so)
    code, out, err = run(capsys, "incident", "notice", iid, "--measure", "fichier retiré", "--as", "so@vendor.invalid")
    assert code == 0, err
    sent = [json.loads(line) for line in out.splitlines()]
    assert {s["tenant"] for s in sent} == {LAB_A, LAB_B} and all(s["alert"] for s in sent)
    as_(monkeypatch, so)
    code, _, err = run(
        capsys,
        "incident",
        "draft",
        iid,
        "--tenant",
        LAB_A,
        "--output",
        str(tmp_path / "x.json"),
        "--as",
        "so@vendor.invalid",
    )
    assert code != 0 and "incident:decide" in one_line_error(err)
    for fmt in ("json", "html", "pdf"):
        as_(monkeypatch, admin)
        out_file = tmp_path / f"draft.{fmt}"
        code, out, err = run(
            capsys,
            "incident",
            "draft",
            iid,
            "--tenant",
            LAB_A,
            "--format",
            fmt,
            "--output",
            str(out_file),
            "--as",
            "admin@bio-lyon.invalid",
        )
        assert code == 0, err
        assert json.loads(out)["version"] == 1  # one version, rendered three ways
    body = json.loads((tmp_path / "draft.json").read_text())
    assert body["responsable_du_traitement"]["identifiant"] == LAB_A and body["phase"] == "initial"
    assert LAB_B not in (tmp_path / "draft.json").read_text() and LAB_B not in (tmp_path / "draft.html").read_text()
    doc = pypdfium2.PdfDocument((tmp_path / "draft.pdf").read_bytes())
    assert "Projet de notification" in doc[0].get_textpage().get_text_range()
    as_(monkeypatch, admin)
    code, out, err = run(capsys, "incident", "list", "--tenant", LAB_A, "--as", "admin@bio-lyon.invalid")
    assert code == 0 and json.loads(out)["labs"] == [LAB_A] and LAB_B not in out
    as_(monkeypatch, admin)
    code, _, err = run(
        capsys,
        "incident",
        "exempt",
        iid,
        "--tenant",
        LAB_A,
        "--ground",
        "lost",
        "--reason",
        "x",
        "--as",
        "admin@bio-lyon.invalid",
    )
    assert code != 0 and "encrypted, measures, disproportionate" in one_line_error(err)
    as_(monkeypatch, admin)
    code, _, err = run(capsys, "incident", "show", iid, "--tenant", LAB_B, "--as", "admin@bio-lyon.invalid")
    assert code != 0 and "cannot act on lab" in one_line_error(err)
    code, out, _ = run(capsys, "incident", "remind")
    assert code == 0 and out == ""  # notices already delivered, no clock past 24 h yet
