"""G4: checkpoints verified against the platform key pinned at init, never against a key read
from the checkpoint's row; checkpoints chained; the lab's last checkpoint pinned outside the
database; the lab's pulled checkpoints catch what the pin cannot. On a real SQLite file and on
PostgreSQL, played by an administrator of the database (``raw_engine``)."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from hashlib import sha256

import pytest
from sqlalchemy import text

from labvault.access import Purpose
from labvault.audit import chain, merkle, service
from labvault.crypto.signing import Signer
from labvault.errors import AccessDenied
from labvault.ids import utcnow
from tests.audit.test_tamper import LAB, audited, events, tamper, verify  # noqa: F401 (fixture)
from tests.conftest import ADMIN, lab_user


def checkpoint(gw) -> dict:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return service.checkpoint(u, LAB)


def more_events(gw, n: int = 3) -> None:
    for _ in range(n):
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            service.verify_log(u, LAB)


def lab_account(gw, role: str):
    """The lab's own account for ``role`` (one place to adapt how lab accounts are made)."""
    return lab_user(gw, LAB, role, name=role.replace("_", ""))


def pull(gw, since: int = 0) -> list[dict]:
    with gw.unit(lab_account(gw, "lab_dpo"), Purpose.ADMINISTRATION) as u:
        return service.pull_checkpoints(u, LAB, since)


def stored_checkpoints(raw) -> list:
    with raw.connect() as conn:
        return conn.execute(text("SELECT * FROM audit_checkpoint WHERE tenant_id = :t ORDER BY size"), {"t": LAB}).all()


def rehash_without(raw, gone: int) -> list[tuple[str, dict]]:
    """Statements deleting event ``gone`` and re-hashing the chain after it, consistently."""
    rows = events(raw)
    statements = [("DELETE FROM audit_event WHERE tenant_id = :t AND seq = :s", {"t": LAB, "s": gone})]
    prev = rows[gone - 2].hash if gone > 1 else chain.GENESIS
    for row in rows[gone:]:
        ev = {k: getattr(row, k) for k in chain.FIELDS}
        ev["seq"] = row.seq - 1
        digest = chain.event_hash(prev, ev)
        statements.append(
            (
                "UPDATE audit_event SET seq = :n, prev_hash = :p, hash = :h WHERE tenant_id = :t AND seq = :s",
                {"n": row.seq - 1, "p": prev, "h": digest, "t": LAB, "s": row.seq},
            )
        )
        prev = digest
    return statements


def forged_checkpoints(raw, sizes: list[int], statements) -> list[tuple[str, dict]]:
    """Checkpoints over the forged log at ``sizes``, signed with the forger's own key, stored
    with that key in the row (the chain is re-derived from the statements' effect)."""
    priv, pub = Signer.generate()
    signer = Signer(priv)
    hashes = [r.hash for r in events(raw)]
    gone = statements[0][1]["s"]
    new_hashes = hashes[: gone - 1] + [p["h"] for _, p in statements[1:]]
    out, prev = [], None
    for i, size in enumerate(sizes, 1):
        leaves = [merkle.leaf_hash(h) for h in new_hashes[:size]]
        body = {
            "log": service.LOG,
            "tenant": LAB,
            "index": i,
            "size": size,
            "root": merkle.root(leaves).hex(),
            "head": new_hashes[size - 1].hex(),
            "at": utcnow().isoformat(),
            "key": sha256(pub).hexdigest(),
            "prev": prev,
        }
        prev = {"index": i, "size": size, "root": body["root"]}
        out.append(
            (
                "INSERT INTO audit_checkpoint (tenant_id, size, root, head, at, body, signature, "
                "signer_public_key) VALUES (:t, :s, :r, :h, :at, :b, :sig, :pk)",
                {
                    "t": LAB,
                    "s": size,
                    "r": bytes.fromhex(body["root"]),
                    "h": new_hashes[size - 1],
                    "at": utcnow(),
                    "b": json.dumps(body, sort_keys=True),
                    "sig": signer.sign(body),
                    "pk": pub.hex(),
                },
            )
        )
    return out


def test_forgery_resigned_with_another_key_is_reported(audited, raw_engine):
    """G4: triggers out of the way, an event deleted, the chain re-hashed, every checkpoint
    re-signed with the administrator's own key stored in the row: reported, at the first
    checkpoint, naming the pinned key."""
    checkpoint(audited)
    more_events(audited)
    sizes = [c.size for c in stored_checkpoints(raw_engine)]
    statements = rehash_without(raw_engine, 9)
    forged = forged_checkpoints(raw_engine, [s - 1 for s in sizes], statements)
    tamper(raw_engine, ("DELETE FROM audit_checkpoint WHERE tenant_id = :t", {"t": LAB}), *statements, *forged)
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == 1  # no checkpoint the pinned key signed is left
    assert (
        f"{sizes[0] - 1}: the stored checkpoint 1 ({sizes[0] - 1} events) is not signed by the platform's "
        "pinned key" in "\n".join(report.details)
    )
    assert f"signed checkpoint 2 (of {sizes[-1]} events), pinned outside the database, is missing" in report.problem
    # even were the pin gone from the home, the keys the KEK opens do not verify the forger's
    audited.pin.path.unlink()
    report = verify(audited)
    assert not report.ok and any("pinned key" in d for d in report.details)


def test_deleting_every_checkpoint_is_reported(audited, raw_engine):
    """G4: the pin outside the database remembers the lab's last checkpoint."""
    last = checkpoint(audited)["body"]
    more_events(audited)
    assert verify(audited).ok
    tamper(raw_engine, ("DELETE FROM audit_checkpoint WHERE tenant_id = :t", {"t": LAB}))
    report = verify(audited)
    assert not report.ok and report.first_bad_seq == 1
    assert f"signed checkpoint {last['index']} (of {last['size']} events)" in report.problem
    assert "missing" in report.problem


def test_a_missing_checkpoint_in_the_middle_is_reported(audited, raw_engine):
    """G4: each checkpoint names the one before it (index, size, root)."""
    sizes = []
    for _ in range(3):
        more_events(audited, 2)
        sizes.append(checkpoint(audited)["body"]["size"])
    first = next(c.size for c in stored_checkpoints(raw_engine))
    tamper(raw_engine, ("DELETE FROM audit_checkpoint WHERE tenant_id = :t AND size = :s", {"t": LAB, "s": sizes[1]}))
    report = verify(audited)
    assert not report.ok and "missing" in report.problem
    assert report.first_bad_seq == sizes[0] + 1 and first < sizes[0]


def test_reordered_checkpoints_are_reported(audited, raw_engine):
    """G4: two checkpoint rows swapped (each keeps a valid signature of its own body)."""
    more_events(audited, 2)
    a = checkpoint(audited)["body"]["size"]
    more_events(audited, 2)
    b = checkpoint(audited)["body"]["size"]
    tamper(
        raw_engine,
        ("UPDATE audit_checkpoint SET size = -1 WHERE tenant_id = :t AND size = :s", {"t": LAB, "s": a}),
        ("UPDATE audit_checkpoint SET size = :a WHERE tenant_id = :t AND size = :s", {"t": LAB, "s": b, "a": a}),
        ("UPDATE audit_checkpoint SET size = :b WHERE tenant_id = :t AND size = -1", {"t": LAB, "b": b}),
    )
    report = verify(audited)
    assert not report.ok and report.first_bad_seq <= a


def test_events_no_checkpoint_covers_are_reported_once_old(audited):
    """G4: events older than the scheduler's interval that no checkpoint covers."""
    more_events(audited, 2)
    size = checkpoint(audited)["body"]["size"]
    more_events(audited, 2)
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        assert service.verify_log(u, LAB).ok
        late = service.verify_log(u, LAB, now=utcnow() + timedelta(hours=3))
        unchecked = service.verify_log(u, LAB, now=utcnow() + timedelta(hours=3), max_unsigned_age=None)
    assert not late.ok and late.first_bad_seq == size + 1 and "no signed checkpoint covers them" in late.problem
    assert unchecked.ok


@pytest.fixture
def unsigned(gateway):
    """A lab with events and no checkpoint yet."""
    from tests.conftest import make_lab

    make_lab(gateway, LAB)
    for _ in range(3):
        more_events(gateway, 3)
    return gateway


def test_truncated_tail_with_every_checkpoint_gone_and_the_pin_put_back(unsigned, raw_engine, tmp_path):
    """G4, G6: the last events deleted, the chain consistent, every checkpoint deleted, and the
    pin file put back as it was before them (a copy of the home, no key needed): the database
    and the pin look intact; the lab's pulled checkpoints do not."""
    audited = unsigned
    saved = tmp_path / "pin-before.json"
    shutil.copy(audited.pin.path, saved)
    checkpoint(audited)
    more_events(audited, 2)
    last = checkpoint(audited)["body"]
    kept = pull(audited)
    assert [x["body"]["index"] for x in kept if x["type"] == "checkpoint"] == [1, 2]
    assert not verify(audited, kept).details
    tamper(
        raw_engine,
        ("DELETE FROM audit_checkpoint WHERE tenant_id = :t", {"t": LAB}),
        ("DELETE FROM audit_event WHERE tenant_id = :t AND seq > :s", {"t": LAB, "s": last["size"] - 2}),
    )
    shutil.copy(saved, audited.pin.path)
    report = verify(audited, kept)  # shorter than what the lab pulled...
    assert not report.ok and report.first_bad_seq == last["size"] - 1 and "truncated" in report.problem
    assert verify(audited).ok  # ...while what the vendor holds is consistent


def test_pulled_checkpoints_catch_a_re_pinned_key(audited, raw_engine):
    """G4: someone with the keyring passphrase and the database re-writes the pin with a key of
    their own and re-signs: the lab's pulled checkpoints (signed by the key the lab pinned) no
    longer verify."""
    more_events(audited, 2)
    checkpoint(audited)
    kept = pull(audited)
    _priv, pub = Signer.generate()
    pin = audited.pin.read()
    pin["keys"] = [{"version": 1, "public": pub.hex(), "fingerprint": sha256(pub).hexdigest()}]
    pin["labs"].pop(LAB)
    audited.pin._write(pin)
    tamper(raw_engine, ("DELETE FROM audit_checkpoint WHERE tenant_id = :t", {"t": LAB}))
    report = verify(audited, kept)
    assert not report.ok and "lab's" in report.problem and "pinned key" in report.problem


def test_a_pin_replaced_or_deleted_is_reported(audited, tmp_path):
    """G4: a pin sealed under another keyring (or none) does not open: reported, never trusted."""
    from labvault.audit.pin import PinStore
    from labvault.crypto.keys import PLATFORM, LocalKeyring

    other = LocalKeyring.create(tmp_path / "other.json", "another passphrase", scrypt_n=2**14)
    other.create_scope(PLATFORM)
    _, pub = Signer.generate()
    audited.pin.path.unlink()
    PinStore(audited.pin.path, other).create(pub)
    report = verify(audited)
    assert not report.ok and "does not open under the platform's key" in report.problem
    audited.pin.path.unlink()
    report = verify(audited)
    assert not report.ok and "no pinned platform key" in report.problem


def test_platform_key_rotation_is_signed_by_the_previous_key(audited, raw_engine):
    """G4: after a rotation, checkpoints signed by the new key verify; a key record the database
    administrator adds (not signed by the key before) is not trusted, nor what it signs."""
    from labvault.audit.pin import fingerprint

    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        old = u.platform_keys()
        out = u.rotate_platform_key()
    more_events(audited, 2)
    cp = checkpoint(audited)
    assert cp["body"]["key"] == out["fingerprint"] != fingerprint(old[0])
    assert verify(audited).ok
    assert [x["body"]["previous"] for x in pull(audited) if x["type"] == "platform-key"] == [fingerprint(old[0])]
    # the pin lost the new key (a crash before it was written): the signed record still leads to it
    pin = audited.pin.read()
    pin["keys"] = pin["keys"][:1]
    audited.pin._write(pin)
    assert verify(audited).ok
    # a forged rotation record, signed by the forger's own key
    priv, pub = Signer.generate()
    body = {
        "kind": "platform-key",
        "version": 9,
        "public": pub.hex(),
        "fingerprint": fingerprint(pub),
        "previous": fingerprint(pub),
        "at": utcnow().isoformat(),
    }
    tamper(
        raw_engine,
        (
            "INSERT INTO signed_record (tenant_id, record_id, kind, body, signature, signer_public_key, "
            "created_at) VALUES ('platform', 'forged-key', 'platform-key', :b, :s, :k, :at)",
            {"b": json.dumps(body, sort_keys=True), "s": Signer(priv).sign(body), "k": pub.hex(), "at": utcnow()},
        ),
    )
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        assert pub not in u.platform_keys()


@pytest.mark.parametrize("role", ["platform_admin", "operator", "support", "security_officer"])
def test_vendor_roles_cannot_pull_a_labs_checkpoints(audited, raw_engine, role):
    """G4, G6: the lab's admin and DPO pull; every vendor role is refused, audited, nothing given."""
    from labvault.access import Principal
    from labvault.crypto.keys import PLATFORM
    from tests.conftest import ADMIN as admin

    vendor = Principal(f"{role.replace('_', '-')}-vendor", "Vendor Person", PLATFORM, frozenset({role}))
    with audited.unit(admin, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            PLATFORM,
            vendor.account_id,
            vendor.name,
            f"{vendor.account_id}@vendor.invalid",
            vendor.roles,
            commitment="test",
        )
    before = len(events(raw_engine))
    with pytest.raises(AccessDenied), audited.unit(vendor, Purpose.ADMINISTRATION) as u:
        service.pull_checkpoints(u, LAB)
    after = events(raw_engine)[before:]
    assert [(e.action, e.outcome, e.actor) for e in after] == [("audit:pull", "denied", vendor.account_id)]
    with audited.unit(lab_account(audited, "lab_admin"), Purpose.ADMINISTRATION) as u:
        assert any(x["type"] == "checkpoint" for x in service.pull_checkpoints(u, LAB))


def test_identity_search_by_a_vendor_only_under_a_lab_approved_grant(audited, raw_engine):
    """G5: a security officer's audit search by NIR is refused the same way for a patient and a
    stranger; under a grant the lab approved naming identity (and within its patients) it
    answers. The grant row is written as the lab's approval leaves it (requests for grants are
    the support procedure's, not this test's)."""
    from sqlalchemy import insert

    from labvault.access import Principal
    from labvault.crypto.keys import PLATFORM
    from labvault.store import schema as t
    from labvault.synth import LabGenerator

    so = Principal("so-vendor", "Sam Officer", PLATFORM, frozenset({"security_officer"}))
    with audited.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(PLATFORM, so.account_id, so.name, "so@vendor.invalid", so.roles, commitment="test")
    patient = LabGenerator(LAB, 4).patient(1).identity
    other = LabGenerator(LAB, 4).patient(2).identity
    stranger = LabGenerator("lab-z", 9).patient(0).identity.nir
    answers = []
    for nir in (patient.nir, stranger):
        with pytest.raises(AccessDenied) as err, audited.unit(so, Purpose.ADMINISTRATION) as u:
            u.patient_id_for_nir(LAB, nir)
        answers.append(str(err.value))
    assert answers[0] == answers[1] and "grant the lab approved" in answers[0]
    now = utcnow()
    with audited.unit(lab_account(audited, "lab_admin"), Purpose.ADMINISTRATION) as u:
        u._scope(LAB)
        u.conn.execute(
            insert(t.access_grant).values(
                tenant_id=LAB,
                grant_id="g-identity-1",
                account_id=so.account_id,
                ticket="SEC-7",
                reason="access review",
                scope_patients=json.dumps([patient.patient_id]),
                scope_fields=json.dumps(["identity"]),
                requested_at=now,
                hours=2,
                approved_by="admin",
                approved_at=now,
                expires_at=now + timedelta(hours=2),
            )
        )
    with audited.unit(so, Purpose.ADMINISTRATION) as u:
        assert u.patient_id_for_nir(LAB, patient.nir) == patient.patient_id
        assert u.patient_id_for_nir(LAB, other.nir) is None  # outside the grant's patients
        assert service.search(u, LAB, patient_id=patient.patient_id)
