"""``labvault breach analyze`` as the vendor's security officer and a lab's DPO run it, and what the
CLI operator (the platform admin ``init`` made) and a lab's DPO on another lab get: one clear line on
stderr, a non-zero exit, and never a value of the leaked file."""

from __future__ import annotations

import json
from datetime import date

from labvault.access import Purpose
from labvault.config import Settings
from labvault.domain.models import Identity, IdentityStatus
from labvault.runtime import open_runtime
from tests.cli.helpers import PASSWORD, enrolled_account, fresh_code
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_grant_cli import account, as_

LAB = "bio-lyon"
NIR = "184127645108946"
HEADER = "nom;prénom;NIR;ddn;sexe;date d'examen;code;libellé;résultat;unité;commentaire\n"
ROWS = [
    "LEFEVRE;Jean;1841276451089;05/12/1984;M;04/01/2021;7917-8;Sérologie VIH;négatif;;\n",
    "DUPRE-MARTIN;Élodie;;14/03/1990;F;05/01/2021;2106-3;hCG urinaire;positif;;grossesse débutante\n",
    "INCONNU;Paul;;01/01/1950;M;06/01/2021;718-7;Hémoglobine;13.5;g/dL;\n",
]


def _patients() -> None:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.operator, Purpose.GENERATE) as u:
            u.add_patients(
                LAB,
                [
                    Identity("p-1", NIR, IdentityStatus.QUALIFIED, "Lefèvre", "Jean", date(1984, 12, 5), "M"),
                    Identity("p-2", None, IdentityStatus.PROVISIONAL, "Dupré-Martin", "Élodie", date(1990, 3, 14), "F"),
                ],
            )
    finally:
        rt.close()


def test_breach_analyze_from_the_cli(home, capsys, monkeypatch, tmp_path):
    """I1, G1: the security officer's ``breach analyze --json`` gives the lab's counts (2 patients,
    2 records, HIV and pregnancy exposed) and one unmatched row; the CLI operator (platform_admin) is
    refused in one line, exit 3; a lab's DPO naming another lab is refused; an unreadable file and a
    missing one fail in one line naming no value of the file."""
    assert run(capsys, "init")[0] == 0
    args = ["--name", "Bio Lyon", "--finess", "690000123", "--retention", "results=10y", "--synthetic"]
    code, _, err = run(capsys, "tenant", "add", LAB, *args, "--retention-ref", "CSP art. R.1112-7")
    assert code == 0, err
    _patients()
    leak = tmp_path / "fuite.csv"
    leak.write_text(HEADER + "".join(ROWS), encoding="utf-8")

    code, _, err = run(capsys, "breach", "analyze", str(leak))
    line = one_line_error(err)
    assert code == 3 and "breach:analyze" in line and "LEFEVRE" not in err

    so = account("platform", "Claire Sec", "sec@vendor.invalid", "security_officer")
    as_(monkeypatch, so)
    code, out, err = run(capsys, "breach", "analyze", str(leak), "--json", "--as", "sec@vendor.invalid")
    assert code == 0, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert (doc["rows_total"], doc["rows_matched"], doc["rows_unmatched"]) == (3, 2, 1)
    (part,) = doc["matches"]
    assert (part["tenant_id"], part["patients"], part["records"]) == (LAB, 2, 2)
    assert part["categories"] == {"hiv": 1, "pregnancy": 1}
    assert "LEFEVRE" not in out and "1841276451089" not in out and "Paul" not in out

    code, _, err = run(
        capsys,
        "tenant",
        "add",
        "bio-paris",
        *args[2:],
        "--name",
        "Bio Paris",
        "--finess",
        "750000123",
        "--retention-ref",
        "CSP art. R.1112-7",
    )
    assert code == 0, err
    dpo = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "dpo@bio-paris.invalid", "lab_dpo", "bio-paris")
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    code, _, err = run(capsys, "breach", "analyze", str(leak), "--tenant", LAB, "--as", fresh_code(monkeypatch, dpo))
    assert code == 3 and "cannot act on lab" in one_line_error(err)

    as_(monkeypatch, so)
    bad = tmp_path / "fuite.xlsx"
    bad.write_bytes(b"PK\x03\x04 LEFEVRE 1841276451089 not a workbook")
    code, _, err = run(capsys, "breach", "analyze", str(bad), "--as", "sec@vendor.invalid")
    line = one_line_error(err)
    assert code != 0 and "LEFEVRE" not in line and "1841276451089" not in line
    code, _, err = run(capsys, "breach", "analyze", str(tmp_path / "absent.csv"), "--as", "sec@vendor.invalid")
    assert code != 0 and one_line_error(err)
