"""Work under an instruction: re-checked at use, and a demand beyond it refused, audited and alerted
(the scenario: the operator asks for everything; the lab instructed 2019-2020 without free text)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text as sql

from labvault.access import Purpose
from labvault.access.instructed import ScopeExceeded, demand, instruction_in_force
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.instructions import document, signers
from labvault.instructions.document import UnknownSigner
from tests.conftest import lab_user, make_lab

AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
NOW = datetime.now(UTC).replace(microsecond=0)
ASKED = {"identity": ["nir", "family_name"], "result": ["code", "value_num"]}


def record() -> dict:
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    return {
        "id": "MIG-1",
        "tenant": "lab-a",
        "kind": "migration_out",
        "purpose": "Move 2019-2020 to the new LIS",
        "fields": ASKED,
        "selection": {"collected_from": "2019-01-01", "collected_to": "2020-12-31"},
        "destination": {"name": "NewLIS SAS", "country": "FR", "recipient_age_key": AGE},
        "expected_volume": 1000,
        "deletion_deadline": z(NOW + timedelta(days=30)),
        "valid_from": z(NOW - timedelta(hours=1)),
        "valid_until": z(NOW + timedelta(days=7)),
    }


@pytest.fixture
def world(gateway):
    make_lab(gateway, "lab-a")
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    bio = lab_user(gateway, "lab-a", "biologist", name="Bio")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signer = signers.add_signer(u, "lab-a", email=f"{bio.account_id}@lab.invalid", public_key=public.hex())
    signed = document.sign(document.from_record(record()), Signer(private))
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        v = document.check_signed(signed, public_keys=signers.active_keys(u, "lab-a"), tenant="lab-a", now=NOW)
        signers.record_instruction(
            u,
            "lab-a",
            instruction_id=v.instruction.id,
            kind=v.instruction.kind,
            signer_id=v.signer_id,
            body=v.record,
            signature=v.signature,
            valid_until=v.instruction.valid_until,
        )
    operator = lab_user(gateway, PLATFORM, "operator", name="Op")
    return gateway, admin, operator, signer


def alerts(gw) -> list[str]:
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        return [
            r[0]
            for r in c.execute(
                sql("SELECT action FROM audit_event WHERE tenant_id = 'lab-a' AND outcome = 'alert' ORDER BY seq")
            )
        ]


def test_the_instructed_scope_passes(world):
    gw, _, operator, _ = world
    with gw.unit(operator, Purpose.SUPPORT) as u:
        instr = instruction_in_force(u, "lab-a", "MIG-1")
        demand(u, instr, fields=ASKED, collected_from=date(2019, 1, 1), collected_to=date(2020, 12, 31), volume=1050)
    assert alerts(gw) == []


def test_asking_for_everything_is_refused_audited_and_alerted(world):
    """A1, A3: asking for everything is refused audited and alerted."""
    gw, _, operator, _ = world
    everything = {cat: list(names) for cat, names in document.FIELDS.items()}
    with pytest.raises(ScopeExceeded) as caught, gw.unit(operator, Purpose.SUPPORT) as u:
        instr = instruction_in_force(u, "lab-a", "MIG-1")
        demand(u, instr, fields=everything, collected_from=None, collected_to=None, volume=5000)
    msg = str(caught.value)
    assert "free_text.result.comment is not in the instruction" in msg
    assert "period starts before" in msg and "period ends after" in msg and "exceed the expected volume" in msg
    assert alerts(gw) == ["instruction:excess"]


def test_revoked_signer_or_expiry_stops_the_work(world):
    """A1: revoked signer or expiry stops the work."""
    gw, admin, operator, signer = world
    with pytest.raises(document.Expired), gw.unit(operator, Purpose.SUPPORT) as u:
        instruction_in_force(u, "lab-a", "MIG-1", now=NOW + timedelta(days=8))
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, "lab-a", signer.signer_id)
    with pytest.raises(UnknownSigner, match="revoked"), gw.unit(operator, Purpose.SUPPORT) as u:
        instruction_in_force(u, "lab-a", "MIG-1")
