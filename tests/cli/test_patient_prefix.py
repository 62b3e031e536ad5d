"""``labvault patient find --prefix``: the start of the family name (two letters at least) and
optionally of the given name, with the birth date."""

from __future__ import annotations

import json

from tests.cli.test_cli import home, one_line_error, run  # noqa: F401 - the fixture, used by name
from tests.cli.test_patient_results import LAB, lab  # noqa: F401 - the fixture, used by name


def _find(capsys, bio: str, *args: str) -> tuple[int, str, str]:
    return run(capsys, "patient", "find", "--tenant", LAB, "--as", bio, "--json", *args)


def test_the_start_of_the_name_finds_the_patient(lab, capsys):
    """M2: "du" with the birth date finds DUPONT; "Du" and "jea" too; another birth date, nobody."""
    for more in (["--family-name", "du"], ["--family-name", "Du", "--given-name", "jea"]):
        code, out, err = _find(capsys, lab, "--prefix", "--birth-date", "1985-07-04", *more)
        assert code == 0, err
        [line] = [x for x in out.splitlines() if x.startswith("{")]
        assert json.loads(line)["patient_id"] == "pat-1"
    code, out, _ = _find(capsys, lab, "--prefix", "--family-name", "du", "--birth-date", "1985-07-05")
    assert code == 1 and "pat-1" not in out
    code, out, _ = _find(capsys, lab, "--family-name", "du", "--given-name", "jea", "--birth-date", "1985-07-04")
    assert code == 1 and "pat-1" not in out  # without --prefix: the exact name


def test_one_letter_or_no_birth_date_is_a_one_line_error(lab, capsys):
    """M3: one letter, or no birth date, is refused with a one-line error naming no value."""
    code, out, err = _find(capsys, lab, "--prefix", "--family-name", "D", "--birth-date", "1985-07-04")
    assert code != 0 and "2 letters of the family name" in one_line_error(err) and "DUPONT" not in out + err
    code, out, err = _find(capsys, lab, "--prefix", "--family-name", "DUP")
    assert code != 0 and "--birth-date" in one_line_error(err)
