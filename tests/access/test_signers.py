"""Instruction signers: registered by the lab's lab_admin only, for its own named accounts;
revocation takes a key out of the valid set; received instructions are kept per lab."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labvault.access import Purpose
from labvault.crypto.signing import Signer
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.instructions import signers
from tests.conftest import ADMIN, lab_user, make_lab


@pytest.fixture
def labs(gateway):
    make_lab(gateway, "lab-a")
    make_lab(gateway, "lab-b", "690000025")
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    bio = lab_user(gateway, "lab-a", "biologist", name="Bio")
    return gateway, admin, bio


def _key() -> str:
    return Signer.generate()[1].hex()


def test_lab_admin_registers_and_revokes(labs):
    gw, admin, bio = labs
    key = _key()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        s = signers.add_signer(u, "lab-a", email=f"{bio.account_id}@lab.invalid", public_key=key.upper())
    assert s.public_key == key and s.active
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        assert signers.active_keys(u, "lab-a") == {s.signer_id: bytes.fromhex(key)}
        signers.revoke_signer(u, "lab-a", s.signer_id)
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        assert signers.active_keys(u, "lab-a") == {}
        [listed] = signers.list_signers(u, "lab-a")
        assert not listed.active
    with pytest.raises(InvalidInput, match="already revoked"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, "lab-a", s.signer_id)


def test_who_may_register(labs):
    """A1: who may register."""
    gw, _admin, bio = labs
    email = f"{bio.account_id}@lab.invalid"
    with pytest.raises(AccessDenied), gw.unit(bio, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    with pytest.raises(AccessDenied), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    other_admin = lab_user(gw, "lab-b", "lab_admin", name="Other")
    with pytest.raises(AccessDenied), gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    with (
        pytest.raises(InvalidInput, match="named person's account of this lab"),
        gw.unit(other_admin, Purpose.ADMINISTRATION) as u,
    ):
        signers.add_signer(u, "lab-b", email=email, public_key=_key())  # bio belongs to lab A


def test_bad_keys_and_duplicates(labs):
    gw, admin, bio = labs
    email = f"{bio.account_id}@lab.invalid"
    with pytest.raises(InvalidInput, match="64 hexadecimal"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key="abc")
    key = _key()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=key)
    with pytest.raises(InvalidInput, match="already registered"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=key)
    with pytest.raises(NotFound), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, "lab-a", "nope")


def test_received_instructions_are_kept_per_lab(labs):
    gw, admin, _ = labs
    until = datetime.now(UTC) + timedelta(days=3)
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.record_instruction(
            u,
            "lab-a",
            instruction_id="I-1",
            kind="export",
            signer_id="s1",
            body={"id": "I-1"},
            signature="c2ln",
            valid_until=until,
        )
    with pytest.raises(InvalidInput, match="already received"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.record_instruction(
            u,
            "lab-a",
            instruction_id="I-1",
            kind="export",
            signer_id="s1",
            body={"id": "I-1"},
            signature="c2ln",
            valid_until=until,
        )
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        got = signers.get_instruction(u, "lab-a", "I-1")
    assert got.body == {"id": "I-1"} and got.kind == "export"
    other_admin = lab_user(gw, "lab-b", "lab_admin", name="Other")
    with gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        assert signers.list_instructions(u, "lab-b") == []
    with pytest.raises(AccessDenied), gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        signers.list_instructions(u, "lab-a")


def test_a_received_instruction_is_sealed_at_rest_and_follows_key_rotation(gateway, db_url):
    """C1, C3: It may name patients by INS and its purpose is free text: neither is in the database in clear."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text as sql

    from labvault.crypto.signing import Signer
    from labvault.instructions import document
    from tests.conftest import ADMIN, lab_user, make_lab

    make_lab(gateway, "lab-a")
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=f"{admin.account_id}@lab.invalid", public_key=public.hex())
    now = datetime.now(UTC).replace(microsecond=0)
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    nir, purpose = "185057800608491", "Import of Mme Zéphyrine Quintal-Brébeuf's file from OldLIS"
    rec = {
        "id": "IN-1",
        "tenant": "lab-a",
        "kind": "migration_in",
        "purpose": purpose,
        "fields": {
            "identity": ["nir", "family_name", "given_names", "birth_date", "sex"],
            "request": ["requested_at"],
            "result": ["code", "code_system", "label", "status"],
        },
        "selection": {"collected_from": "2019-01-01", "collected_to": "2020-12-31", "patients": [nir]},
        "source": {"name": "OldLIS"},
        "valid_from": z(now - timedelta(hours=1)),
        "valid_until": z(now + timedelta(days=1)),
    }
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.receive(u, "lab-a", document.sign(document.from_record(rec), Signer(private)), now)
    with gateway.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        rows = [tuple(r) for r in c.execute(sql("SELECT * FROM instruction"))]
    dump = repr(rows).encode()
    assert nir.encode() not in dump and b"Quintal" not in dump and len(rows) == 1
    gateway.rotate_keys(ADMIN, "lab-a")
    with gateway.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        assert c.execute(sql("SELECT key_version FROM instruction")).scalar_one() == 2  # re-sealed
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        got = signers.get_instruction(u, "lab-a", "IN-1")
    assert got.body["selection"]["patients"] == [nir] and got.body["purpose"] == purpose
    from labvault.access.instructed import instruction_in_force

    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        assert instruction_in_force(u, "lab-a", "IN-1").patients == (nir,)
