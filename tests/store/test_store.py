"""The store suite: runs on a SQLite file and on a real PostgreSQL 15 cluster (see conftest)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess

import pytest
from sqlalchemy import select, update

from labvault.access import Gateway, Purpose
from labvault.crypto.signing import verify
from labvault.domain.models import Sensitivity
from labvault.errors import AccessDenied, DecryptionError, InvalidInput, NotFound, TenantShredded
from labvault.store import schema as t
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab, need, sqlite_path

SEED = 11
LABS = ("lab-a", "lab-b")
PATIENTS = 25


@pytest.fixture
def loaded(gateway: Gateway):
    for k, lab in enumerate(LABS):
        make_lab(gateway, lab, f"69000001{k}")
        load_lab(gateway, ADMIN, lab, patients=PATIENTS, seed=SEED, batch=10)
    return gateway


def generated(lab: str):
    return list(LabGenerator(lab, SEED).patients(PATIENTS))


def plaintexts() -> set[str]:
    """Values that must never appear in clear, taken from the generator in memory."""
    out: set[str] = set()
    for lab in LABS:
        for rec in generated(lab):
            i = rec.identity
            out |= {i.nir, i.family_name, i.birth_date.isoformat(), i.birth_date.strftime("%Y%m%d")}
            out |= set(i.given_names.split())
            if i.address:
                out.add(i.address)
            for r in rec.results:
                if r.sensitivity is not Sensitivity.OTHER:
                    out |= {r.code, r.label}
                if r.value_num is not None and len(repr(r.value_num)) >= 7:
                    # shorter decimals ("13.27") also occur inside stored timestamps ("…:13.27…")
                    out.add(repr(r.value_num))
                if r.value_text:
                    out.add(r.value_text)
                if r.comment:
                    out.add(r.comment)
    # Short strings would match random ciphertext bytes by chance; 5+ bytes cannot (p < 1e-5).
    return {v for v in out if len(v.encode()) >= 5}


def packed_values() -> set[bytes]:
    """Result values as they would sit in clear in a packed row: msgpack float64 (9 bytes)."""
    import struct

    return {
        b"\xcb" + struct.pack(">d", r.value_num)
        for lab in LABS
        for rec in generated(lab)
        for r in rec.results
        if r.value_num is not None
    }


def leaks(blob: bytes, values: set[str]) -> list[str]:
    found = sorted(v for v in values if v.encode() in blob)
    return found + sorted(repr(b) for b in packed_values() if b in blob)


def test_dump_reveals_no_personal_or_health_value(loaded, db_url, request):
    """C1: dump reveals no personal or health value."""
    values = plaintexts()
    assert len(values) > 300  # the probe set is real
    path = sqlite_path(db_url)
    if path is not None:
        loaded.engine.dispose()  # close connections; WAL stays on disk until checkpoint
        raw = path.read_bytes()
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if extra.exists():
                raw += extra.read_bytes()
        assert leaks(raw, values) == []
        need(shutil.which("sqlite3") is not None, "sqlite3 CLI not found: apt-get install sqlite3")
        dump = subprocess.run(["sqlite3", str(path), ".dump"], capture_output=True, check=True).stdout
        assert b"INSERT INTO result" in dump or b'INSERT INTO "result"' in dump
        assert leaks(dump, values) == []
    else:
        cluster = request.getfixturevalue("pg_cluster")
        from sqlalchemy.engine import make_url

        dump = cluster.pg_dump(make_url(db_url).database)
        assert b"COPY public.result" in dump
        assert leaks(dump, values) == []
    # The check can fail: the same values are found once decrypted.
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:
        clear = repr([u.get_patient("lab-a", r.identity.patient_id) for r in generated("lab-a")[:3]]).encode()
    assert leaks(clear, values)


def test_lookups_and_read_back(loaded):
    recs = generated("lab-a")
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:
        for rec in recs[:8]:
            i = rec.identity
            assert u.find_patients_by_nir("lab-a", i.nir) == [i]
            spaced = f"{i.nir[0]} {i.nir[1:3]} {i.nir[3:5]} {i.nir[5:]}"
            assert u.find_patients_by_nir("lab-a", spaced) == [i]
            by_name = u.find_patients_by_name(
                "lab-a", i.family_name.upper(), i.given_names.split()[0].lower(), i.birth_date
            )
            assert i in by_name
            got = sorted(u.results_of("lab-a", i.patient_id), key=lambda r: r.result_id)
            assert got == sorted(rec.results, key=lambda r: r.result_id)
            assert sorted(q.request_id for q in u.requests_of("lab-a", i.patient_id)) == sorted(
                q.request_id for q in rec.requests
            )
        with pytest.raises(InvalidInput) as err:
            u.find_patients_by_nir("lab-a", "123")
        assert "123" not in str(err.value)
        with pytest.raises(NotFound):
            u.get_patient("lab-a", "no-such-id")


def test_tenant_isolation(loaded, raw_engine):
    """F1: tenant isolation."""
    a = generated("lab-a")[0].identity
    with loaded.unit(lab_user(loaded, "lab-b"), Purpose.CARE) as u:
        assert u.find_patients_by_nir("lab-b", a.nir) == []
        with pytest.raises(AccessDenied):
            u.find_patients_by_nir("lab-zz", a.nir)
    # A ciphertext copied from lab A's row into lab B's row does not open.
    b = generated("lab-b")[0].identity
    with raw_engine.begin() as conn:
        blob = conn.execute(
            select(t.patient_identity.c.family_name_enc).where(
                t.patient_identity.c.tenant_id == "lab-a", t.patient_identity.c.patient_id == a.patient_id
            )
        ).scalar_one()
        conn.execute(
            update(t.patient_identity)
            .where(t.patient_identity.c.tenant_id == "lab-b", t.patient_identity.c.patient_id == b.patient_id)
            .values(family_name_enc=blob)
        )
    with loaded.unit(lab_user(loaded, "lab-b"), Purpose.CARE) as u, pytest.raises(DecryptionError):
        u.get_patient("lab-b", b.patient_id)


def test_lab_account_cannot_reach_another_lab(loaded):
    from labvault.access import Principal

    tech = Principal("tech-a", "Technicien A", "lab-a", frozenset({"technician"}))
    with loaded.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account("lab-a", tech.account_id, tech.name, "tech-a@lab.invalid", tech.roles)
    b = generated("lab-b")[0].identity
    with pytest.raises(AccessDenied), loaded.unit(tech, Purpose.CARE) as u:
        u.find_patients_by_nir("lab-b", b.nir)


def test_crypto_shredding(loaded, keyring, raw_engine):
    """C3: crypto shredding."""
    with loaded.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        record = u.shred_tenant("lab-a")
    verify(record["body"], record["signature"], bytes.fromhex(record["public_key"]))
    assert record["body"]["tenant"] == "lab-a" and len(record["body"]["keys_destroyed"]) == 2
    assert not keyring.has_scope("lab-a")
    a = generated("lab-a")[0].identity
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:
        for read in (
            lambda: u.find_patients_by_nir("lab-a", a.nir),
            lambda: u.get_patient("lab-a", a.patient_id),
            lambda: u.results_of("lab-a", a.patient_id),
        ):
            with pytest.raises(TenantShredded):
                read()
    with loaded.unit(lab_user(loaded, "lab-b"), Purpose.CARE) as u:
        b = generated("lab-b")[0]
        assert u.find_patients_by_nir("lab-b", b.identity.nir) == [b.identity]
        assert len(u.results_of("lab-b", b.identity.patient_id)) == len(b.results)
    with loaded.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        assert u.signed_records("lab-a", "tenant-shred")[0]["signature"] == record["signature"]
    # A restored backup (status flipped back, wrapped keys put back) still reads nothing: the KEK is gone.
    with raw_engine.begin() as conn:
        conn.execute(update(t.tenant).where(t.tenant.c.tenant_id == "lab-a").values(status="active"))
    loaded.forget_keys()
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u, pytest.raises((TenantShredded, DecryptionError)):
        u.get_patient("lab-a", a.patient_id)


def _versions(gw: Gateway, lab: str) -> dict[int, int]:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return u.key_versions(lab)["rows_by_version"]


def test_rotation_and_resume(loaded):
    """C3: rotation and resume."""
    total = sum(_versions(loaded, "lab-a").values())
    out = loaded.rotate_keys(ADMIN, "lab-a", batch_size=50, max_batches=2)
    assert out == {"version": 2, "resumed": 0, "rows": 100, "finished": 0}
    assert _versions(loaded, "lab-a") == {1: total - 100, 2: 100}
    rec = generated("lab-a")[0]
    loaded.forget_keys()  # as a new process would
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:  # mid-rotation, everything reads
        assert u.find_patients_by_nir("lab-a", rec.identity.nir) == [rec.identity]
        assert len(list(u.iter_results("lab-a"))) == sum(1 for r in generated("lab-a") for _ in r.results)
    out = loaded.rotate_keys(ADMIN, "lab-a", batch_size=500)
    assert out["resumed"] == 1 and out["finished"] == 1 and out["version"] == 2
    assert _versions(loaded, "lab-a") == {2: total}
    assert _versions(loaded, "lab-b") == {1: sum(_versions(loaded, "lab-b").values())}
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:
        assert sorted(u.results_of("lab-a", rec.identity.patient_id), key=lambda r: r.result_id) == sorted(
            rec.results, key=lambda r: r.result_id
        )
    with loaded.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        states = {k["version"]: k["state"] for k in u.key_versions("lab-a")["keys"]}
    assert states == {1: "retired", 2: "active"}
    out = loaded.rotate_keys(ADMIN, "lab-a")
    assert out["version"] == 3 and out["finished"] == 1


def test_nothing_half_written(loaded):
    gen = LabGenerator("lab-a", SEED)
    extra = gen.patient(PATIENTS + 1)
    with loaded.unit(ADMIN, Purpose.CARE) as u:
        before = u.counts("lab-a")
    bad = extra.results[0]
    bad.request_id = "not-stored"
    with pytest.raises(InvalidInput), loaded.unit(lab_user(loaded, "lab-a"), Purpose.INGEST) as u:
        u.add_patients("lab-a", [extra.identity])
        u.add_requests("lab-a", extra.requests)
        u.add_results("lab-a", [bad])
    with pytest.raises(InvalidInput), loaded.unit(lab_user(loaded, "lab-a"), Purpose.INGEST) as u:
        u.add_patients("lab-a", [generated("lab-a")[0].identity])  # already stored
    with loaded.unit(ADMIN, Purpose.CARE) as u:
        assert u.counts("lab-a") == before


def test_events_recorded_without_personal_values(loaded, raw_engine):
    """G2, M3: events recorded without personal values."""
    a = generated("lab-a")[0].identity
    with loaded.unit(lab_user(loaded, "lab-a"), Purpose.CARE) as u:
        u.find_patients_by_nir("lab-a", a.nir)
    with raw_engine.connect() as conn:
        rows = conn.execute(select(t.audit_event).where(t.audit_event.c.tenant_id == "lab-a")).all()
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1].action == "patient:identity:search" and rows[-1].actor == "bio-lab-a-biologist"
    assert leaks(repr(rows).encode(), plaintexts()) == []


def test_sqlite_file_is_wal(tmp_path):
    from labvault.store.engine import make_engine, migrate

    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE sql LIKE '%WITHOUT ROWID%'")}
    assert {"result", "patient_identity", "request"} <= tables
