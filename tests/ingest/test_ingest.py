"""Ingest through the gateway: whole messages or nothing, idempotency, the encrypted quarantine."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text as sql

from labvault.access import Purpose
from labvault.errors import AccessDenied, InvalidInput, TenantKeyMissing
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.ingest.errors import NotALabMessage
from labvault.ingest.service import Ingestor, Summary, detect
from tests.conftest import ADMIN, lab_user, make_lab, sqlite_path
from tests.interop.messages import NIR, oru


@pytest.fixture
def lab(gateway):
    make_lab(gateway, "lab-a")
    return gateway, lab_user(gateway, "lab-a", "technician")


def _ingest(gw, who, data: bytes, name: str = "feed.hl7", group: int = 1) -> Summary:
    s = Summary(name, "hl7v2")
    Ingestor(gw, who, "lab-a", group=group).ingest_pieces(ingest.read(data, file=name), s)
    return s


def test_detects_each_format():
    assert detect(oru()) == "hl7v2"
    assert detect(b"\xef\xbb\xbf\x0bMSH|^~\\&|") == "hl7v2"
    assert detect(b"H|~^\\&|||LAB") == "hprim"
    assert detect(b"hello world") is None


def test_stores_a_message_and_its_twin_creates_nothing(lab):
    gw, who = lab
    s = _ingest(gw, who, oru())
    assert (s.accepted, s.duplicates, s.rejected, s.results) == (1, 0, 0, 2)
    again = _ingest(gw, who, oru())
    assert (again.accepted, again.duplicates, again.rejected) == (0, 1, 0)
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        counts = u.counts("lab-a")
    assert counts["result"] == 2 and counts["request"] == 1 and counts["patient_identity"] == 1


def test_a_known_patient_keeps_one_identity(lab):
    gw, who = lab
    s = _ingest(gw, who, oru("C1") + oru("C2") + oru("C3"), group=2)
    assert s.accepted == 3
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        counts = u.counts("lab-a")
    assert counts["patient_identity"] == 1 and counts["prescriber"] == 1
    assert counts["request"] == 3 and counts["result"] == 6
    bio = lab_user(gw, "lab-a", "biologist")
    with gw.unit(bio, Purpose.CARE) as u:
        [patient] = u.find_patients_by_nir("lab-a", NIR)
        assert len(u.requests_of("lab-a", patient.patient_id)) == 3


def test_refused_messages_go_to_the_encrypted_quarantine(lab):
    """C1: refused messages go to the encrypted quarantine."""
    gw, who = lab
    bad_nir = NIR[:-2] + "00"
    data = (
        oru("OK1") + oru("BAD1", nir=bad_nir) + oru("BAD2").replace(b"ORU^R01^ORU_R01", b"ADT^A01^ADT_A01") + oru("OK2")
    )
    s = _ingest(gw, who, data, group=10)
    assert (s.accepted, s.rejected) == (2, 2)
    assert all(r.startswith("feed.hl7, message ") for r in s.reasons), s.reasons
    assert bad_nir not in " ".join(s.reasons)
    bio = lab_user(gw, "lab-a", "biologist")
    with gw.unit(bio, Purpose.CARE) as u:
        held = intake.listing(u, "lab-a")
        assert [h.quarantine_id for h in held] == s.quarantine_ids
        item, raw = intake.get(u, "lab-a", s.quarantine_ids[0])
    assert raw.startswith(b"MSH|") and b"BAD1" in raw and item.reason == s.reasons[0]
    path = sqlite_path(gw.engine.url.render_as_string(hide_password=False))
    if path is not None:  # the stored bytes hold neither the message nor the reason in clear
        blob = path.read_bytes() + (
            path.with_name(path.name + "-wal").read_bytes() if path.with_name(path.name + "-wal").exists() else b""
        )
        assert b"DUPONT" not in blob and b"BAD1" not in blob and b"feed.hl7" not in blob


def test_replay_and_drop(lab, monkeypatch):
    gw, who = lab
    s = _ingest(gw, who, oru("T1", oid="1.2.250.1.213.1.4.10"))
    assert s.rejected == 1 and "test INS" in s.reasons[0]
    [qid] = s.quarantine_ids
    bio = lab_user(gw, "lab-a", "biologist")
    still = Ingestor(gw, bio, "lab-a").replay(qid)
    assert still.rejected == 1
    replayed = Ingestor(gw, bio, "lab-a", test_mode=True).replay(qid)
    assert (replayed.accepted, replayed.results) == (1, 2)
    with gw.unit(bio, Purpose.CARE) as u:
        assert intake.listing(u, "lab-a") == []
        item, raw = intake.get(u, "lab-a", qid)
    assert item.status == "replayed" and raw is None
    with pytest.raises(InvalidInput, match="already replayed"):
        Ingestor(gw, bio, "lab-a").replay(qid)
    s2 = _ingest(gw, who, b"MSH|^~\\&|broken")
    with gw.unit(bio, Purpose.CARE) as u:
        intake.resolve(u, "lab-a", s2.quarantine_ids[0], intake.DROPPED)
        assert intake.get(u, "lab-a", s2.quarantine_ids[0])[1] is None


def test_quarantine_is_per_lab_and_needs_lab_roles(lab):
    """F1: quarantine is per lab and needs lab roles."""
    gw, who = lab
    s = _ingest(gw, who, b"MSH|^~\\&|broken")
    make_lab(gw, "lab-b", "690000025")
    other = lab_user(gw, "lab-b", "biologist")
    with pytest.raises(AccessDenied), gw.unit(other, Purpose.CARE) as u:
        intake.get(u, "lab-a", s.quarantine_ids[0])
    with pytest.raises(AccessDenied), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        intake.listing(u, "lab-a")
    service = lab_user(gw, "lab-a", "service", name="Feed")
    with pytest.raises(AccessDenied), gw.unit(service, Purpose.INGEST) as u:
        intake.resolve(u, "lab-a", s.quarantine_ids[0], intake.DROPPED)


def test_vendor_accounts_cannot_ingest(lab):
    """F2: vendor accounts cannot ingest."""
    gw, _ = lab
    with pytest.raises(AccessDenied):
        Ingestor(gw, ADMIN, "lab-a").preflight()


def test_a_failing_store_leaves_the_group_whole(lab, monkeypatch):
    """A store error inside a group: the group is retried one message per transaction, the bad
    one is quarantined, the others are stored; nothing is half-written."""
    gw, who = lab
    real = intake.store

    def flaky(u, tenant_id, envelopes, *, feed):
        if any(e.mapped[0].control_id == "BOOM" for e in envelopes):
            real(u, tenant_id, envelopes, feed=feed)  # writes, then fails: the unit must roll back
            raise InvalidInput("simulated store failure")
        return real(u, tenant_id, envelopes, feed=feed)

    monkeypatch.setattr(intake, "store", flaky)
    s = _ingest(gw, who, oru("A") + oru("BOOM") + oru("B"), group=3)
    assert (s.accepted, s.rejected) == (2, 1) and "simulated store failure" in s.reasons[0]
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        assert u.counts("lab-a")["request"] == 2


def test_audit_records_the_ingest_without_values(lab):
    """G1, G2: audit records the ingest without values."""
    gw, who = lab
    _ingest(gw, who, oru("A") + oru("A") + b"MSH|^~\\&|broken\r", group=5)
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        actions = [
            r[0] for r in c.execute(sql("SELECT action FROM audit_event WHERE tenant_id = 'lab-a' ORDER BY seq"))
        ]
    assert "ingest:message" in actions and "ingest:duplicate" in actions and "quarantine:create" in actions


@pytest.mark.parametrize(
    ("name", "reason"), [("missing.hl7", "no such file"), ("d", "is a directory"), ("x.txt", "format not recognised")]
)
def test_unreadable_inputs_are_refused_with_a_reason(tmp_path, lab, name, reason):
    """A missing file, a folder, a file in none of the formats: refused with the reason, before
    anything is stored (the good file given with it neither), and not kept in the quarantine."""
    gw, who = lab
    (tmp_path / "d").mkdir()
    (tmp_path / "x.txt").write_bytes(b"\x00\x01 binary")
    (tmp_path / "good.hl7").write_bytes(oru("G1"))
    with pytest.raises(InvalidInput, match=reason) as caught:
        Ingestor(gw, who, "lab-a").ingest_files([tmp_path / "good.hl7", tmp_path / name])
    assert str(tmp_path / name) in str(caught.value)
    if name == "x.txt":
        assert isinstance(caught.value, NotALabMessage) and caught.value.http_status == 415
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        assert [
            c.execute(sql(f"SELECT count(*) FROM {tbl} WHERE tenant_id = 'lab-a'")).scalar_one()
            for tbl in ("ingest_message", "quarantine")
        ] == [0, 0]


def test_sqlite_store_is_not_left_locked(lab):
    gw, who = lab
    _ingest(gw, who, oru("L1"))
    path = sqlite_path(gw.engine.url.render_as_string(hide_password=False))
    if path is None:
        pytest.skip("SQLite only")
    con = sqlite3.connect(path, timeout=0.1)
    con.execute("BEGIN IMMEDIATE")
    con.rollback()
    con.close()


def test_a_run_an_error_stops_counts_exactly_what_it_stored(tmp_path, lab):
    """The lab's key destroyed by another process after the first transaction of the run (a shred
    from the CLI): the run stops with that error, and its summaries count what was committed before
    it, no more, no less (``labvault ingest`` prints them, then the error)."""
    gw, who = lab
    first, second = tmp_path / "first.hl7", tmp_path / "second.hl7"
    first.write_bytes(b"".join(oru(f"F{k}") for k in range(4)) + oru("F9", nir=NIR[:-2] + "00"))
    second.write_bytes(oru("S1"))
    ing = Ingestor(gw, who, "lab-a", group=2)

    def shred_after_the_first_group(name: str, done: int, total: int) -> None:
        if done == 2:
            gw.keys.destroy_scope("lab-a")

    with pytest.raises(TenantKeyMissing):
        ing.ingest_files([first, second], progress=shred_after_the_first_group)
    assert [(s.file, s.accepted, s.results, s.rejected) for s in ing.summaries] == [(str(first), 2, 4, 0)]
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        assert [
            c.execute(sql(f"SELECT count(*) FROM {tbl} WHERE tenant_id = 'lab-a'")).scalar_one()
            for tbl in ("ingest_message", "result", "quarantine")
        ] == [2, 4, 0]
