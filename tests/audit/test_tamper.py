"""Tampering with the audit trail, on a real SQLite file and on PostgreSQL: each kind detected,
with the right sequence number."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from labvault.access import Purpose
from labvault.audit import chain, service
from labvault.errors import NotFound
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab

LAB = "lab-a"


@pytest.fixture
def audited(gateway):
    make_lab(gateway, LAB)
    load_lab(gateway, ADMIN, LAB, patients=6, seed=4, batch=2)
    bio = lab_user(gateway, LAB)
    from labvault.synth import LabGenerator

    for rec in LabGenerator(LAB, 4).patients(6):
        with gateway.unit(bio, Purpose.CARE) as u:
            u.find_patients_by_nir(LAB, rec.identity.nir)
            u.results_of(LAB, rec.identity.patient_id)
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        service.checkpoint(u, LAB)
    return gateway


def verify(gw, kept=None):
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return service.verify_log(u, LAB, kept)


def events(raw, lab=LAB):
    with raw.connect() as conn:
        return conn.execute(text("SELECT * FROM audit_event WHERE tenant_id = :t ORDER BY seq"), {"t": lab}).all()


def tamper(raw, *statements):
    """Change the audit table as an administrator of the database would: triggers out of the way."""
    with raw.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # superuser: no triggers
        else:
            for table in ("audit_event", "audit_checkpoint"):
                for verb in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
        for sql, params in statements:
            conn.execute(text(sql), params)


def forget_pinned_checkpoints(gw, lab=LAB):
    """What only someone holding the keyring passphrase (the platform KEK) can do: re-seal the pin
    without the lab's last checkpoint."""
    pin = gw.pin.read()
    pin["labs"].pop(lab, None)
    gw.pin._write(pin)


def test_intact_log_verifies(audited):
    report = verify(audited)
    assert report.ok and report.events > 20 and report.checkpoints == 1


def test_edit_one_field(audited, raw_engine):
    """G4: edit one field."""
    tamper(raw_engine, ("UPDATE audit_event SET actor = 'someone-else' WHERE tenant_id = :t AND seq = 7", {"t": LAB}))
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == 7 and "altered" in report.problem


def test_delete_one(audited, raw_engine):
    """G4: delete one."""
    tamper(raw_engine, ("DELETE FROM audit_event WHERE tenant_id = :t AND seq = 9", {"t": LAB}))
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == 9 and "missing" in report.problem


def test_insert_a_forged_one(audited, raw_engine):
    """G4: insert a forged one."""
    rows = events(raw_engine)
    last = rows[-1]
    forged = {
        "tenant_id": LAB,
        "seq": last.seq + 1,
        "at": last.at,
        "actor": "ghost",
        "actor_roles": "",
        "action": "patient:result:read",
        "object_type": "result",
        "object_refs": None,
        "record_count": 0,
        "purpose": "care",
        "grant_id": None,
        "source_addr": None,
        "user_agent": None,
        "outcome": "allowed",
    }
    tamper(
        raw_engine,
        (
            "INSERT INTO audit_event (tenant_id, seq, at, actor, actor_roles, action, object_type, object_refs, "
            "record_count, purpose, grant_id, source_addr, user_agent, outcome, prev_hash, hash) VALUES (:tenant_id, "
            ":seq, :at, :actor, :actor_roles, :action, :object_type, :object_refs, :record_count, :purpose, :grant_id, "
            ":source_addr, :user_agent, :outcome, :prev, :hash)",
            {**forged, "prev": bytes(32), "hash": bytes(32)},
        ),
    )
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == last.seq + 1


def test_swap_two(audited, raw_engine):
    """G4: swap two."""
    tamper(
        raw_engine,
        ("UPDATE audit_event SET seq = -1 WHERE tenant_id = :t AND seq = 5", {"t": LAB}),
        ("UPDATE audit_event SET seq = 5 WHERE tenant_id = :t AND seq = 6", {"t": LAB}),
        ("UPDATE audit_event SET seq = 6 WHERE tenant_id = :t AND seq = -1", {"t": LAB}),
    )
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == 5


def test_truncate_the_tail(audited, raw_engine):
    """G4: truncate the tail."""
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        size = service.checkpoint(u, LAB)["body"]["size"]
    tamper(raw_engine, ("DELETE FROM audit_event WHERE tenant_id = :t AND seq > :s", {"t": LAB, "s": size - 3}))
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == size - 2 and "truncated" in report.problem


def test_rehashed_forgery_caught_by_the_labs_export(audited, raw_engine):
    """G4, G6: rehashed forgery caught by the labs export."""
    with audited.unit(lab_user(audited, LAB, "lab_dpo", name="Dpo"), Purpose.ADMINISTRATION) as u:
        kept = list(service.export(u, LAB))  # what the lab keeps
    rows = events(raw_engine)
    # The forger rewrites event 3 and re-hashes the whole chain after it, consistently, and deletes
    # the stored checkpoints: the database alone now looks intact.
    statements = [("DELETE FROM audit_checkpoint WHERE tenant_id = :t", {"t": LAB})]
    prev = rows[1].hash
    for row in rows[2:]:
        ev = {k: getattr(row, k) for k in chain.FIELDS}
        if row.seq == 3:
            ev["actor"] = "nobody"
        digest = chain.event_hash(prev, ev)
        statements.append(
            (
                "UPDATE audit_event SET actor = :actor, prev_hash = :p, hash = :h WHERE tenant_id = :t AND seq = :s",
                {"actor": ev["actor"], "p": prev, "h": digest, "t": LAB, "s": row.seq},
            )
        )
        prev = digest
    tamper(raw_engine, *statements)
    report = verify(audited)  # the pin outside the database still holds the deleted checkpoint
    assert not report.ok and "pinned outside the database" in report.problem
    # Someone with the keyring passphrase as well re-writes the pin without it:
    forget_pinned_checkpoints(audited)
    assert verify(audited).ok  # internally consistent...
    report = verify(audited, kept)  # ...but not what the lab kept
    assert not report.ok and report.first_bad_seq == 3
    only_checkpoint = [line for line in kept if line["type"] in ("header", "checkpoint")]
    report = verify(audited, only_checkpoint)  # the signed root alone catches it too
    assert not report.ok and "signed checkpoint" in report.problem


def test_forged_checkpoint_signature(audited, raw_engine):
    """G4: forged checkpoint signature."""
    with audited.unit(lab_user(audited, LAB, "lab_dpo", name="Dpo"), Purpose.ADMINISTRATION) as u:
        kept = list(service.export(u, LAB))
    cp = next(line for line in kept if line["type"] == "checkpoint")
    cp["body"]["root"] = "00" * 32
    report = verify(audited, kept)
    assert not report.ok and "signature" in report.problem and report.first_bad_seq == cp["body"]["size"]


def test_application_role_cannot_update_or_delete_audit_rows(audited, db_url):
    """G4: application role cannot update or delete audit rows."""
    from sqlalchemy.exc import DBAPIError

    for sql in (
        "UPDATE audit_event SET actor = 'x' WHERE tenant_id = 'lab-a' AND seq = 1",
        "DELETE FROM audit_event WHERE tenant_id = 'lab-a' AND seq = 1",
    ):
        with pytest.raises(DBAPIError) as err, audited.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT set_config('labvault.tenant', 'lab-a', true)"))
            conn.execute(text(sql))
        assert "permission denied" in str(err.value.orig) or "append-only" in str(err.value.orig)
    if db_url.startswith("postgresql"):
        with pytest.raises(DBAPIError), audited.engine.begin() as conn:
            conn.execute(text("TRUNCATE audit_event"))
    assert verify(audited).ok


def test_every_event_has_the_fields_and_no_personal_value(audited, raw_engine):
    """G2: every event has the fields and no personal value."""
    from labvault.synth import LabGenerator

    rows = events(raw_engine)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert r.actor and r.action and r.purpose and r.outcome and r.at and r.hash and r.prev_hash is not None
    blob = repr(rows)
    for rec in LabGenerator(LAB, 4).patients(6):
        i = rec.identity
        for value in (i.nir, i.family_name, i.birth_date.isoformat(), *(r.label for r in rec.results)):
            assert value not in blob


def test_one_event_per_operation(gateway, raw_engine):
    """G1: one event per operation."""
    make_lab(gateway, LAB)
    load_lab(gateway, ADMIN, LAB, patients=2, seed=4, batch=2)
    bio = lab_user(gateway, LAB)
    from labvault.synth import LabGenerator

    rec = LabGenerator(LAB, 4).patient(0)
    before = len(events(raw_engine))
    with gateway.unit(bio, Purpose.CARE) as u:
        u.find_patients_by_nir(LAB, rec.identity.nir)
        u.get_patient(LAB, rec.identity.patient_id)
        u.requests_of(LAB, rec.identity.patient_id)
        u.results_of(LAB, rec.identity.patient_id)
    with pytest.raises(NotFound), gateway.unit(bio, Purpose.CARE) as u:
        u.get_patient(LAB, "no-such-patient")
    rows = events(raw_engine)[before:]
    assert [r.action for r in rows] == [
        "patient:identity:search",
        "patient:identity:read",
        "patient:request:read",
        "patient:result:read",
        "patient:identity:read",
    ]
    assert [r.outcome for r in rows] == ["allowed"] * 4 + ["error"]
    assert all(r.actor == bio.account_id and r.purpose == "care" for r in rows)
    assert json.loads(rows[1].object_refs) == [rec.identity.patient_id]


def test_only_audit_roles_query_and_queries_are_audited(audited, raw_engine):
    """G5, G1: only audit roles query and queries are audited."""
    from labvault.errors import AccessDenied

    for role in ("biologist", "technician"):
        with pytest.raises(AccessDenied), audited.unit(lab_user(audited, LAB, role), Purpose.ADMINISTRATION) as u:
            service.search(u, LAB)
    dpo = lab_user(audited, LAB, "lab_dpo", name="Dpo")
    with audited.unit(dpo, Purpose.ADMINISTRATION) as u:
        pid = u.patient_id_for_nir(
            LAB, __import__("labvault.synth", fromlist=["x"]).LabGenerator(LAB, 4).patient(1).identity.nir
        )
        history = service.search(u, LAB, patient_id=pid)
    assert history and {e["action"] for e in history} >= {"patient:identity:search", "patient:result:read"}
    assert events(raw_engine)[-1].action == "audit:search" and events(raw_engine)[-1].actor == dpo.account_id


def test_retention_cut_keeps_verification(audited, raw_engine):
    """G3, G4: retention cut keeps verification."""
    from datetime import timedelta

    from labvault.errors import InvalidInput
    from labvault.ids import utcnow

    admin = lab_user(audited, LAB, "lab_admin", name="Adm")
    with pytest.raises(InvalidInput), audited.unit(admin, Purpose.ADMINISTRATION) as u:
        service.set_retention(u, LAB, 400, None)  # longer than a year: needs a reason
    with audited.unit(admin, Purpose.ADMINISTRATION) as u:
        service.set_retention(u, LAB, 180, None)
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        first_cp = service.checkpoint(u, LAB)["body"]["size"]
    total_before = len(events(raw_engine))
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        out = service.purge(u, LAB)  # nothing is 180 days old yet
    assert out["deleted"] == 0
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        out = service.purge(u, LAB, now=utcnow() + timedelta(days=181))
    assert out["cut"] == first_cp and out["deleted"] == first_cp
    remaining = events(raw_engine)
    assert remaining[0].seq == first_cp + 1 and len(remaining) == total_before - first_cp + 2
    report = verify(audited)
    assert report.ok, report.problem
    tamper(
        raw_engine,
        ("UPDATE audit_event SET actor = 'x' WHERE tenant_id = :t AND seq = :s", {"t": LAB, "s": first_cp + 1}),
    )
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == first_cp + 1
