"""``labvault monitor digest`` (G5, H1) and ``labvault advisory`` (H2) from the CLI: the lab's DPO
reads the day's digest as JSON; the vendor's platform admin reads the register but cannot add to
it, and gets no lab's digest; errors in one line with a non-zero exit."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from labvault.cli.digest import digest_command
from tests.cli.helpers import enrolled_account, fresh_code
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_ingest_cli import lab  # noqa: F401  (the lab, its technician and two files)

monitor = typer.Typer()
monitor.command("digest")(digest_command)


@monitor.command("noop")
def _noop() -> None:  # a second command keeps ``digest`` a subcommand, as under ``monitor``
    """Nothing."""


def test_digest_and_advisories_from_the_cli(lab, capsys, monkeypatch, tmp_path):
    """G5, H1, H2: the DPO's digest as JSON (references only); a vendor account is refused it; the
    register read by the platform admin, an add refused to it in one line."""
    tech, good, _ = lab
    code, _, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(good), "--as", tech, "--json")
    assert code == 0, err
    dpo = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "dpo@lab.invalid", "lab_dpo", "bio-lyon")
    runner = CliRunner()
    res = runner.invoke(monitor, ["digest", "--tenant", "bio-lyon", "--as", fresh_code(monkeypatch, dpo), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert d["tenant"] == "bio-lyon" and d["accesses"] == d["explained"] + d["unexplained"]
    res = runner.invoke(
        monitor, ["digest", "--tenant", "bio-lyon", "--day", "2026-12-07", "--as", fresh_code(monkeypatch, dpo)]
    )
    assert res.exit_code == 0 and "bio-lyon 2026-12-07" in res.stdout, res.output
    res = runner.invoke(monitor, ["digest", "--tenant", "bio-lyon"])  # the CLI's vendor operator
    assert res.exit_code != 0 and type(res.exception).__name__ == "AccessDenied"
    code, out, err = run(capsys, "advisory", "list")
    assert code == 0 and out.strip() == "", err
    summary = tmp_path / "summary.txt"
    summary.write_text("56 lignes", encoding="utf-8")
    code, _, err = run(
        capsys, "advisory", "add", "--source", "anssi", "--severity", "critical", "--owner", "x",
        "--summary-file", str(summary),
    )  # fmt: skip
    assert code != 0 and "advisory:manage" in one_line_error(err)
