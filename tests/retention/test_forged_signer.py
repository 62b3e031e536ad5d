"""A signer written into the database by hand signs nothing the platform accepts: only a
registration made by the lab's admin (``add_signer``, sealed under the lab's KEK) verifies an
instruction. Someone with write access to the database who inserts their own key as a signer of a
real lab cannot sign themselves a deletion instruction. On SQLite and a real PostgreSQL 15."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from labvault.crypto.signing import Signer
from labvault.errors import LabvaultError
from labvault.ids import new_id, utcnow
from labvault.store import schema as t
from tests.conftest import ADMIN, lab_user
from tests.retention.test_deletion import LAB, deletion_doc, lab_signer, real_lab, receive, shred, state


def forge_signer(raw_engine, gw) -> Signer:
    """The attacker's one statement: a signer row of the lab holding the attacker's own key."""
    person = lab_user(gw, LAB, "biologist", name="Victim")
    private, public = Signer.generate()
    with raw_engine.begin() as conn:
        conn.execute(
            insert(t.instruction_signer).values(
                tenant_id=LAB,
                signer_id=new_id(),
                name="Victim",
                email=f"{person.account_id}@lab.invalid",
                public_key=public.hex(),
                added_by="nobody",
                added_at=utcnow(),
            )
        )
    return Signer(private)


def test_a_signer_inserted_in_the_database_signs_no_deletion(gateway, raw_engine):
    """D2, A1, G1: a deletion instruction signed with a key inserted as a signer in the database is
    refused when received, and the real lab keeps its data and keys."""
    real_lab(gateway)
    before = state(gateway)
    forged = forge_signer(raw_engine, gateway)
    with pytest.raises(LabvaultError):
        iid = receive(gateway, deletion_doc(forged))
        shred(gateway, ADMIN, instruction_id=iid)
    assert state(gateway) == before and before["keyring_scope"]


def test_a_signer_the_lab_registered_still_signs(gateway):
    """D2: a signer the lab's admin registered still signs the lab's deletion instruction."""
    real_lab(gateway)
    signer, _ = lab_signer(gateway)
    record = shred(gateway, ADMIN, instruction_id=receive(gateway, deletion_doc(signer)))
    assert record["body"]["instruction"]["id"] == "DEL-1" and not gateway.keys.has_scope(LAB)
