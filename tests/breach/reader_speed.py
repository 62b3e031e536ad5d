"""How fast a large leaked file is read: ``python -m tests.breach.reader_speed [ROWS]`` writes a
file of the 2021 layout (12 columns, rows drawn from package-shaped records) and prints one JSON
line: rows, megabytes, seconds to recognise the columns and to read every row, rows per second.
Not a test: a figure for the record (a machine's speed is no pass/fail)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from labvault.breach.reader import open_leak
from labvault.synth import leak
from tests.breach.test_reader_fuzz import _records


def main(n: int) -> dict[str, object]:
    rows = leak.flatten(_records())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "leak.csv"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(leak.big(rows, n, seed=1))
        start = time.perf_counter()
        opened = open_leak(path)
        recognised = time.perf_counter()
        count = sum(1 for r in opened.rows() if r.nir is not None and r.birth_date is not None)
        done = time.perf_counter()
        return {
            "rows": opened.layout.rows,
            "with_nir_and_birth_date": count,
            "megabytes": round(path.stat().st_size / 1e6, 1),
            "recognise_seconds": round(recognised - start, 2),
            "seconds": round(done - start, 2),
            "rows_per_s": int(opened.layout.rows / (done - start)),
        }


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)))
