"""``labvault simulate`` (issue 16's must-show; H1, G5): a generated normal working week of three
synthetic labs raises no alert and at least 95 % of its accesses are explained; the same week with
a support account's night-time bulk read fails the check. The simulated clock runs only in a home
the simulation created."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from labvault.cli import main
from labvault.cli.week import HOURS, new_home
from labvault.domain.hours import parse_hours
from labvault.errors import InvalidInput
from labvault.ids import SIMULATION_MARKER, simulated_clock, utcnow
from labvault.synth.load import lab_spec

MONDAY = "2026-11-02"
READS = ("patient:identity:read", "patient:request:read", "patient:result:read", "report:read")


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch):
    """Argon2id at minimal cost for the simulated staff's enrolments and logins, as in the API
    tests: same algorithm and checks, less time (nothing here is about the hashing's cost)."""
    from argon2 import PasswordHasher

    from labvault.accounts import passwords

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_HASHER", cheap)
    monkeypatch.setattr(passwords, "_DUMMY", cheap.hash("labvault-dummy-password-for-timing"))


@pytest.fixture
def real_home(tmp_path, monkeypatch):
    """A user's home named in the environment: the simulation must never create or touch it."""
    h = tmp_path / "real-home"
    monkeypatch.setenv("LABVAULT_HOME", str(h))
    monkeypatch.delenv("LABVAULT_DATABASE_URL", raising=False)
    return h


def _run(capsys, *args: str) -> tuple[int, dict, str]:
    code = main(["simulate", *args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]), err


def test_a_normal_week_of_three_labs_raises_no_alert_and_is_explained(tmp_path, real_home, capsys):
    """H1, G5: seven days, three labs (Monday to Saturday morning, each in its opening hours): no
    alert from the shipped rules or the sweeps, >= 95 % of the accesses explained; the times along
    each lab's trail never go back and every read of the labs' staff is inside the lab's hours;
    the home named by LABVAULT_HOME is never created."""
    sim = tmp_path / "sim"
    code, got, err = _run(
        capsys, "--days", "7", "--labs", "3", "--requests-per-day", "3", "--start", MONDAY, "--home", str(sim)
    )
    assert code == 0, err
    assert (got["days"], got["labs"], got["alerts"], got["alerts_by_rule"]) == (7, 3, 0, {})
    assert got["explained_pct"] >= 95.0
    assert got["accesses"] > 3 * 6 * 3 * 3  # at least three reads per request on 6 working days
    assert got["events"] > got["accesses"]
    assert not real_home.exists()
    assert (sim / SIMULATION_MARKER).is_file()

    zone = ZoneInfo("Europe/Paris")
    with sqlite3.connect(sim / "labvault.db") as db:
        labs = [
            r[0] for r in db.execute("SELECT tenant_id FROM tenant WHERE tenant_id LIKE 'bio-%' ORDER BY tenant_id")
        ]
        hours = {r[0]: parse_hours(r[1]) for r in db.execute("SELECT tenant_id, working_hours FROM tenant")}
        assert len(labs) == 3 and hours[lab_spec(2)[0]] == parse_hours(HOURS[2]) != parse_hours("")
        for lab in labs:
            times = [r[0] for r in db.execute("SELECT at FROM audit_event WHERE tenant_id = ? ORDER BY seq", (lab,))]
            assert times == sorted(times) and len(times) > 100
            reads = db.execute(
                f"SELECT at FROM audit_event WHERE tenant_id = ? AND action IN ({','.join('?' * len(READS))}) "
                "AND actor_roles NOT LIKE '%lab_dpo%'",
                (lab, *READS),
            ).fetchall()
            assert reads
            for (at,) in reads:
                local = datetime.fromisoformat(at).replace(tzinfo=UTC).astimezone(zone)
                assert hours[lab].open_at(local), (lab, at)
                assert date(2026, 11, 2) <= local.date() <= date(2026, 11, 7)  # Monday to Saturday


def test_a_night_bulk_read_by_support_fails_the_check(tmp_path, real_home, capsys):
    """H1: the same simulation with a support account reading 40 patients under a grant at 3 am
    raises the vendor bulk-read and off-hours alerts, and the command exits non-zero with the
    reason on one line."""
    code, got, err = _run(
        capsys, "--days", "1", "--labs", "3", "--requests-per-day", "2", "--start", MONDAY,
        "--home", str(tmp_path / "sim"), "--intrusion",
    )  # fmt: skip
    assert code != 0
    assert {"bulk-read-vendor", "off-hours-read"} <= set(got["alerts_by_rule"])
    assert got["alerts"] >= 2
    failed = [ln for ln in err.splitlines() if ln.startswith("check failed:")]
    assert len(failed) == 1 and "alerts raised" in failed[0]
    assert not real_home.exists()


def test_the_simulation_never_uses_an_existing_home(tmp_path, real_home, capsys):
    """H1: a --home that exists (a real home, or anything) is refused before anything is written;
    the simulated clock refuses a directory the simulation did not create."""
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "labvault.db").write_bytes(b"")
    code = main(["simulate", "--days", "1", "--home", str(existing)])
    _, err = capsys.readouterr()
    assert code != 0 and "--home: this directory exists" in err
    assert sorted(p.name for p in existing.iterdir()) == ["labvault.db"]
    with pytest.raises(InvalidInput):
        new_home(existing)
    with pytest.raises(ValueError, match="only in a home created by"):
        with simulated_clock(datetime(2026, 11, 2, tzinfo=UTC), home=existing):
            pass


def test_the_simulated_clock_moves_forward_only_and_ends_with_its_block(tmp_path):
    """H1: inside the block utcnow is the simulated time, which never goes back; after it, the
    real time again."""
    home = new_home(tmp_path / "sim")
    start = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    with simulated_clock(start, home=home) as clock:
        assert utcnow() == start
        clock.advance(timedelta(minutes=5))
        assert utcnow() == start + timedelta(minutes=5)
        clock.move_to(start)  # earlier: stays
        assert utcnow() == start + timedelta(minutes=5)
        with pytest.raises(ValueError):
            clock.advance(timedelta(seconds=-1))
    assert abs((utcnow() - datetime.now(UTC)).total_seconds()) < 5
