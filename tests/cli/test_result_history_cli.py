"""``labvault patient history``: a result's versions as a lab reads them; the vendor's operator is refused."""

from __future__ import annotations

import json

from sqlalchemy import text as sql

from labvault.config import Settings
from labvault.runtime import open_runtime
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.cli.test_ingest_cli import lab  # noqa: F401  (a fixture)
from tests.interop.test_csv_in import row, table


def test_history_of_a_csv_result_sent_again(lab, capsys, tmp_path):
    """A CSV request sent again with another value: the CLI shows both versions, oldest first."""
    tech, _, _ = lab
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    first.write_bytes(table([row("A1", value="4.2")]))
    second.write_bytes(table([row("A1", value="4.6")]))
    for f in (first, second):
        code, out, err = run(capsys, "ingest", "--tenant", "bio-lyon", str(f), "--as", tech, "--json")
        assert code == 0 and json.loads(out.strip().splitlines()[-1])["accepted"] == 1, (out, err)
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as conn:
            (rid,) = conn.execute(sql("SELECT result_id FROM result")).scalars()
    finally:
        rt.close()
    code, out, err = run(capsys, "patient", "history", rid, "--tenant", "bio-lyon", "--as", tech, "--json")
    assert code == 0, err
    versions = [(v["version"], v["value_num"], v["status"]) for v in json.loads(out)]
    assert versions == [(1, 4.2, "final"), (2, 4.6, "final")]
    code, out, _ = run(capsys, "patient", "history", rid, "--tenant", "bio-lyon", "--as", tech)
    assert code == 0 and "2 (current)" in out and "4.6" in out and "4.2" in out
    # The CLI's own operator is vendor staff: no standing access to a lab's results.
    code, _, err = run(capsys, "patient", "history", rid, "--tenant", "bio-lyon")
    assert code != 0 and "grant" in one_line_error(err)
