"""Work done under a lab's instruction: the instruction re-checked at the moment of use, and every
demand compared with it before anything is read.

``instruction_in_force`` takes a received instruction from the store and checks it again now (its
signer still current, its signature, its lab, its validity window, its deletion deadline): a
revoked signer or an expired instruction stops the work at the next operation. ``demand``
compares what an operation asks (fields, period, patients, codes, sensitive categories, volume)
with the instruction; asking for more is refused with an error naming the excess, audited as a
refusal, and raised as a security alert (``outcome="alert"``), both kept even though the refused
work is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from labvault.access import sealed as signers
from labvault.access.errors import ScopeExceeded
from labvault.ids import utcnow
from labvault.instructions import document

if TYPE_CHECKING:
    from labvault.access.gateway import Unit


def instruction_in_force(
    u: Unit, tenant_id: str, instruction_id: str, *, now: datetime | None = None
) -> document.Instruction:
    return _in_force(u, tenant_id, instruction_id, now=now)[0]


def _in_force(
    u: Unit, tenant_id: str, instruction_id: str, *, now: datetime | None = None
) -> tuple[document.Instruction, signers.Received, str]:
    """The instruction checked in force now, as received, and its signer's public key (hex)."""
    received = signers.get_instruction(u, tenant_id, instruction_id)
    keys = {k.signer_id: k.public_key for k in signers.list_signers(u, tenant_id)}
    doc: dict[str, Any] = {
        "instruction": received.body,
        "signature": received.signature,
        "signer_public_key": keys.get(received.signer_id, "00" * 32),
    }
    instr = document.verify_signed(
        doc, public_keys=signers.active_keys(u, tenant_id), tenant=tenant_id, now=now or utcnow()
    )
    return instr, received, doc["signer_public_key"]


def enter(
    u: Unit, tenant_id: str, instruction_id: str, *, kinds: Iterable[str], now: datetime | None = None
) -> document.Instruction:
    """Work under an instruction for the rest of this unit: checked in force now, of one of
    ``kinds``; a vendor operator may then read the lab's data within its scope, and nothing else
    (the gateway reads ``u._instruction``)."""
    instr = instruction_in_force(u, tenant_id, instruction_id, now=now)
    if instr.kind not in tuple(kinds):
        raise document.InstructionInvalid(
            f"instruction: kind {instr.kind} is not one of {', '.join(kinds)} for this operation"
        )
    u._instruction = instr
    return instr


def demand(
    u: Unit,
    instruction: document.Instruction,
    *,
    fields: Mapping[str, Iterable[str]],
    collected_from: date | None,
    collected_to: date | None,
    patients: Iterable[str] | None = None,
    codes: Iterable[tuple[str, str]] | None = None,
    sensitive: Iterable[str] = (),
    volume: int | None = None,
) -> None:
    """Refuse (audited, alerted) a demand beyond ``instruction``; return quietly when covered."""
    excess = document.excess(
        instruction, fields, collected_from, collected_to, patients, codes=codes, sensitive=sensitive, volume=volume
    )
    if not excess:
        u._record(instruction.tenant, "instruction:use", "instruction", 1, refs=[instruction.id])
        return
    u._record(
        instruction.tenant, "instruction:excess", "instruction", len(excess), outcome="alert", refs=[instruction.id]
    )
    u._record(instruction.tenant, "instruction:use", "instruction", 0, outcome="denied", refs=[instruction.id])
    raise ScopeExceeded(f"beyond instruction '{instruction.id}': " + "; ".join(excess))


# -- deleting a lab: its signed deletion instruction, or a synthetic lab ------------------------------
def authorise_deletion(
    u: Unit, tenant_id: str, instruction_id: str | None, *, action: str, use: bool = True
) -> dict[str, Any]:
    """Whether this unit may delete the whole lab now (``tenant:end`` or ``tenant:shred``), and on
    what ground, as the certificate states it: ``{"synthetic": bool, "instruction": {...} | None}``.

    A real lab's data is deleted only under the lab's signed instruction of kind ``deletion`` with
    ``scope: lab``, received for it and re-checked here, at the moment of use (signer current,
    signature, lab, validity window, deadline); the certificate names it by id, the SHA-256 of its
    signed record, its signer and signature. A lab created synthetic may go without one. Every
    refusal is audited (``denied``) before anything is changed. No value of the lab's data is read.
    ``use`` False: a check before asking for confirmation (no ``instruction:use`` event).
    """
    from labvault.crypto.signing import canonical
    from labvault.crypto.tokens import sha256_hex
    from labvault.errors import LabvaultError

    u._authorise(tenant_id, action)
    u.tenant(tenant_id)  # an unknown lab: UnknownTenant
    if instruction_id is None:
        if u.is_synthetic(tenant_id):  # the sealed mark, not the column alone
            u._deletion_ground[tenant_id] = {"synthetic": True, "instruction": None}
            return u._deletion_ground[tenant_id]
        u._deny(
            tenant_id,
            action,
            f"lab '{tenant_id}' is not a synthetic lab: deleting its data needs the lab's signed deletion "
            "instruction (kind deletion, scope lab), received for it ('labvault instruction receive'): "
            "give --instruction ID",
        )
    try:
        instr, received, signer_key = _in_force(u, tenant_id, instruction_id)
        if instr.kind != "deletion" or instr.scope != document.SCOPE_LAB:
            raise document.InstructionRefused(
                f"instruction '{instr.id}' is of kind {instr.kind}"
                + (" with scope selection" if instr.kind == "deletion" else "")
                + ": deleting a whole lab needs a deletion instruction with scope lab"
            )
    except LabvaultError:
        u._record(
            tenant_id,
            action,
            "tenant",
            0,
            outcome="denied",
            refs=[instruction_id] if document.ID_RE.fullmatch(instruction_id or "") else None,
        )
        raise
    if use:
        u._record(tenant_id, "instruction:use", "instruction", 1, refs=[instr.id])
    ground = {
        "synthetic": u.is_synthetic(tenant_id),
        "instruction": {
            "id": instr.id,
            "kind": instr.kind,
            "scope": instr.scope,
            "sha256": sha256_hex(canonical(received.body)),
            "signer_id": received.signer_id,
            "signer_public_key": signer_key,
            "signature": received.signature,
            "valid_until": instr.valid_until.isoformat(),
            "deletion_deadline": instr.deletion_deadline.isoformat() if instr.deletion_deadline else None,
        },
    }
    if use:  # the unit that deletes: its shred uses this ground rather than reading the instruction again
        u._deletion_ground[tenant_id] = ground
    return ground
