"""Who may sign a lab's instructions, and the signed instructions the platform has received.

A lab's ``lab_admin`` registers signers: named, active accounts of the lab, each with an Ed25519
public key whose private half never reaches the platform. Revoking a signer keeps its key (what
it signed before stays verifiable) but stops new instructions signed with it. Received
instructions are stored as signed (canonical body and signature), for the processor's record of
documented instructions (GDPR Art. 28(3)(a)).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from labvault.access import sealed
from labvault.access.sealed import (
    Received,
    SignerKey,
    active_keys,
    body_text,
    get_instruction,
    list_instructions,
    list_signers,
)
from labvault.errors import InvalidInput, LabvaultError, NotFound
from labvault.ids import new_id, utcnow
from labvault.instructions import document
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit


def _key_hex(public_key: str) -> str:
    value = public_key.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInput("a signer's public key is 64 hexadecimal characters (an Ed25519 key)")
    return value


def add_signer(u: Unit, tenant_id: str, *, email: str, public_key: str) -> SignerKey:
    """Register a named account of the lab as a signer of its instructions."""
    key = _key_hex(public_key)
    u.authorise(tenant_id, "signer:manage")
    acct = u.execute(
        tenant_id,
        select(t.account).where(t.account.c.tenant_id == tenant_id, t.account.c.email == email.strip().lower()),
    ).first()
    if acct is None or not acct.active or acct.kind != "person":
        raise InvalidInput("a signer is an active, named person's account of this lab")
    existing = u.execute(
        tenant_id,
        select(t.instruction_signer.c.signer_id).where(
            t.instruction_signer.c.tenant_id == tenant_id, t.instruction_signer.c.public_key == key
        ),
    ).first()
    if existing is not None:
        raise InvalidInput("this public key is already registered for this lab")
    row = {
        "tenant_id": tenant_id,
        "signer_id": new_id(),
        "name": acct.name,
        "email": acct.email,
        "public_key": key,
        "added_by": u.principal.account_id,
        "added_at": utcnow(),
    }
    u.execute(tenant_id, insert(t.instruction_signer).values(**row))
    sealed.seal_signer(u, tenant_id, row["signer_id"], key, row["added_at"])
    u.audit(tenant_id, "signer:add", "signer", 1, refs=[row["signer_id"]])
    return SignerKey(row["signer_id"], tenant_id, acct.name, acct.email, key, row["added_at"], None)


def revoke_signer(u: Unit, tenant_id: str, signer_id: str) -> None:
    u.authorise(tenant_id, "signer:manage")
    s = t.instruction_signer
    row = u.execute(tenant_id, select(s).where(s.c.tenant_id == tenant_id, s.c.signer_id == signer_id)).first()
    if row is None:
        raise NotFound("no such signer in this lab (see 'labvault signer list')")
    if row.revoked_at is not None:
        raise InvalidInput("this signer is already revoked")
    u.execute(
        tenant_id,
        update(s)
        .where(s.c.tenant_id == tenant_id, s.c.signer_id == signer_id)
        .values(revoked_at=utcnow(), revoked_by=u.principal.account_id),
    )
    u.audit(tenant_id, "signer:revoke", "signer", 1, refs=[signer_id])


def record_instruction(
    u: Unit,
    tenant_id: str,
    *,
    instruction_id: str,
    kind: str,
    signer_id: str,
    body: dict,
    signature: str,
    valid_until: datetime,
) -> Received:
    """Keep a verified, signed instruction (the caller has checked it against ``active_keys``)."""
    u.authorise(tenant_id, "instruction:receive")
    i = t.instruction
    if u.execute(
        tenant_id, select(i.c.instruction_id).where(i.c.tenant_id == tenant_id, i.c.instruction_id == instruction_id)
    ).first():
        raise InvalidInput(f"instruction '{instruction_id}' was already received for this lab")
    now = utcnow()
    sealed.store_instruction(
        u,
        tenant_id,
        instruction_id,
        body,
        kind=kind,
        signer_id=signer_id,
        signature=signature,
        valid_until=valid_until,
        received_at=now,
        received_by=u.principal.account_id,
    )
    u.audit(tenant_id, "instruction:receive", "instruction", 1, refs=[instruction_id, signer_id])
    return Received(instruction_id, tenant_id, kind, signer_id, body, signature, valid_until, now)


def receive(u: Unit, tenant_id: str, doc: object, now: datetime) -> Received:
    """Verify a signed instruction (signature, current signer, lab, validity, deadline) and keep it.
    A refusal is audited (without any value of the document) and nothing is kept."""
    u.authorise(tenant_id, "instruction:receive")
    try:
        v = document.check_signed(doc, public_keys=active_keys(u, tenant_id), tenant=tenant_id, now=now)
    except LabvaultError:
        u.audit(tenant_id, "instruction:receive", "instruction", 0, outcome="denied")
        raise
    return record_instruction(
        u,
        tenant_id,
        instruction_id=v.instruction.id,
        kind=v.instruction.kind,
        signer_id=v.signer_id,
        body=v.record,
        signature=v.signature,
        valid_until=v.instruction.valid_until,
    )


__all__ = [
    "Received",
    "SignerKey",
    "active_keys",
    "add_signer",
    "body_text",
    "get_instruction",
    "list_instructions",
    "list_signers",
    "receive",
    "record_instruction",
    "revoke_signer",
]
