"""Instruction signers: registered by the lab's lab_admin only, for its own named accounts;
revocation takes a key out of the valid set; received instructions are kept per lab."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labvault.access import Purpose, signers
from labvault.crypto.signing import Signer
from labvault.errors import AccessDenied, InvalidInput, NotFound
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
    gw, admin, bio = labs
    email = f"{bio.account_id}@lab.invalid"
    with pytest.raises(AccessDenied), gw.unit(bio, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    with pytest.raises(AccessDenied), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    other_admin = lab_user(gw, "lab-b", "lab_admin", name="Other")
    with pytest.raises(AccessDenied), gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=email, public_key=_key())
    with pytest.raises(InvalidInput, match="named person's account of this lab"), \
            gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
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
        signers.record_instruction(u, "lab-a", instruction_id="I-1", kind="export", signer_id="s1",
                                   body={"id": "I-1"}, signature="c2ln", valid_until=until)
    with pytest.raises(InvalidInput, match="already received"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.record_instruction(u, "lab-a", instruction_id="I-1", kind="export", signer_id="s1",
                                   body={"id": "I-1"}, signature="c2ln", valid_until=until)
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        got = signers.get_instruction(u, "lab-a", "I-1")
    assert got.body == {"id": "I-1"} and got.kind == "export"
    other_admin = lab_user(gw, "lab-b", "lab_admin", name="Other")
    with gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        assert signers.list_instructions(u, "lab-b") == []
    with pytest.raises(AccessDenied), gw.unit(other_admin, Purpose.ADMINISTRATION) as u:
        signers.list_instructions(u, "lab-a")
