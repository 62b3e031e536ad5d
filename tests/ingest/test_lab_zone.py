"""Times in the lab's zone: a local time received without a zone is read in the lab's time zone (set
per lab, Europe/Paris by default), a time with its offset keeps it, so no naive time meets an aware
one; ``labvault tenant add --timezone`` sets the zone and refuses an unknown one."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from labvault.access import Purpose
from labvault.cli import main
from labvault.domain.mapped import Mapped
from labvault.domain.models import Identity, IdentityStatus, Request, Result, Specimen
from labvault.ingest import intake
from tests.conftest import ADMIN, TEST_RETENTION, lab_user

LOCAL = datetime(2024, 7, 1, 8, 30)  # written without a zone, as HPRIM and CSV write times
OFFSET = datetime(2024, 7, 1, 9, 0, tzinfo=timezone(timedelta(hours=5)))  # written with its offset


def _envelope(tag: str, requested_at: datetime, reported_at: datetime) -> intake.Envelope:
    ident = Identity(
        patient_id=f"pat-{tag}",
        nir=None,
        identity_status=IdentityStatus.PROVISIONAL,
        family_name="MARTIN",
        given_names="Anne",
        birth_date=date(1970, 1, 2),
        sex="F",
        local_ids=[("urn:oid:1.2.3.4", f"IPP-{tag}")],
    )
    req = Request(f"req-{tag}", ident.patient_id, None, requested_at, reported_at=reported_at, message_at=LOCAL)
    spe = Specimen(f"spe-{tag}", req.request_id, "SER", requested_at, received_at=LOCAL)
    res = Result(
        f"res-{tag}", req.request_id, "2823-3", "Potassium", value_num=4.1, value_repr="4.1", validated_at=LOCAL
    )
    mapped = Mapped(ident, [], [req], [spe], [res], [], [], tag, "LIS")
    return intake.Envelope(intake.message_key("hprim:LIS", tag), "hprim", [mapped])


@pytest.mark.parametrize(("zone", "lab"), [(None, "lab-paris"), ("America/Cayenne", "lab-cayenne")])
def test_a_local_time_is_read_in_the_labs_zone_and_an_offset_is_kept(gateway, zone, lab):
    """every stored instant is zone-aware: a local time in the lab's zone, an offset kept."""
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        extra = {"timezone": zone} if zone else {}
        u.create_tenant(lab, f"Lab {lab}", "690000017", retention=TEST_RETENTION, synthetic=True, **extra)
    who = lab_user(gateway, lab, "technician")
    with gateway.unit(who, Purpose.INGEST) as u:
        assert intake.store(u, lab, [_envelope("z1", LOCAL, OFFSET)], feed="test") == ["accepted"]
    reader = lab_user(gateway, lab, "biologist")
    with gateway.unit(reader, Purpose.CARE) as u:
        (req,) = u.requests_of(lab, "pat-z1")
        (res,) = u.results_of(lab, "pat-z1")
    expected = LOCAL.replace(tzinfo=ZoneInfo(zone or "Europe/Paris"))
    assert req.requested_at.tzinfo is not None and req.requested_at == expected
    assert req.requested_at.astimezone(UTC) == expected.astimezone(UTC)
    assert req.reported_at == OFFSET  # the offset written is kept: the same instant
    assert res.validated_at == expected
    # Paris is UTC+2 in July, Cayenne UTC-3: the same local time is five hours apart.
    hours = {None: 6, "America/Cayenne": 11}[zone]
    assert req.requested_at.astimezone(UTC).hour == hours


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_tenant_add_sets_the_zone_and_refuses_an_unknown_one(tmp_path, monkeypatch, capsys):
    """the lab's zone is set at its creation; an unknown zone is one line, non-zero, no lab made."""
    monkeypatch.setenv("LABVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LABVAULT_PASSPHRASE", "zone test passphrase")
    monkeypatch.delenv("LABVAULT_DATABASE_URL", raising=False)
    monkeypatch.delenv("LABVAULT_KEY_PROVIDER", raising=False)
    assert run(capsys, "init", "--admin-name", "Alice Martin", "--admin-email", "alice@vendor.invalid")[0] == 0
    base = ("tenant", "add", "--finess", "690000123", "--retention", "results=10y", "--retention-ref", "test rule")
    code, out, err = run(capsys, *base, "bio-mars", "--name", "Bio Mars", "--timezone", "Mars/Olympus_Mons")
    lines = [x for x in err.splitlines() if x.strip()]
    assert code != 0 and len(lines) == 1 and "time zone" in lines[0] and "Traceback" not in err
    code, out, err = run(capsys, *base, "bio-cayenne", "--name", "Bio Cayenne", "--timezone", "America/Cayenne")
    assert code == 0, err
    assert "time zone America/Cayenne" in out
    code, out, _ = run(capsys, "tenant", "list", "--json")
    labs = {x["id"]: x for x in map(json.loads, out.strip().splitlines())}
    assert set(labs) == {"bio-cayenne"}  # the refused lab was not half-made
    assert labs["bio-cayenne"]["timezone"] == "America/Cayenne"
