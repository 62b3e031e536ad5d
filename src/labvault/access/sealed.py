"""Sealed records of the instruction domain, through the gateway: who may sign a lab's
instructions (each registration sealed under the lab's KEK) and the instructions received (their
bodies sealed with the lab's data key, as they may name patients).

``labvault.instructions.signers`` keeps the rows and decides; the keys are used only here (the
seal itself is ``labvault.crypto.seals``). Each function authorises the action it serves (the
caller has, usually, already: then it costs a lookup, no event).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select

from labvault.crypto.digest import sha256_hex
from labvault.crypto.seals import RecordSeal
from labvault.errors import NotFound
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

# Each registration sealed under the lab's own KEK: a tenant_key row of this purpose (one version
# per signer) whose wrapped secret names the signer and its key. Whoever can only write to the
# database cannot make one that opens.
SIGNER_SEAL = "signer"


def seal_signer(u: Unit, tenant_id: str, signer_id: str, public_key: str, now: datetime) -> None:
    """Seal a signer's registration (its id and public key, hex) under the lab's KEK."""
    u._authorise(tenant_id, "signer:manage")
    tk = t.tenant_key
    version = (
        u.conn.execute(select(func.max(tk.c.version)).where(u._tf(tk, tenant_id), tk.c.purpose == SIGNER_SEAL)).scalar()
        or 0
    ) + 1
    record = {"tenant": tenant_id, "signer_id": signer_id, "public_key": public_key}
    u.conn.execute(
        insert(tk).values(
            tenant_id=tenant_id,
            purpose=SIGNER_SEAL,
            version=version,
            state="active",
            created_at=now,
            wrapped=RecordSeal(u._gw.keys, SIGNER_SEAL).seal(tenant_id, version, record),
        )
    )


def sealed_signers(u: Unit, tenant_id: str) -> set[tuple[str, str]]:
    """(signer id, public key hex) of every registration sealed under the lab's KEK."""
    u._authorise(tenant_id, "signer:list")
    tk = t.tenant_key
    seal = RecordSeal(u._gw.keys, SIGNER_SEAL)
    out = set()
    for r in u.conn.execute(
        select(tk.c.version, tk.c.wrapped).where(u._tf(tk, tenant_id), tk.c.purpose == SIGNER_SEAL)
    ).all():
        body = seal.open(tenant_id, r.version, r.wrapped)
        if body is not None and body.get("tenant") == tenant_id:
            out.add((str(body.get("signer_id")), str(body.get("public_key"))))
    return out


def store_instruction(u: Unit, tenant_id: str, instruction_id: str, body: Mapping[str, Any], **values: Any) -> None:
    """Keep a received instruction: its canonical body sealed with the lab's data key, with its
    SHA-256, and ``values`` (kind, signer, signature, dates) as they are."""
    u._authorise(tenant_id, "instruction:receive")
    cipher = u._crypto(tenant_id).cipher
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    u.conn.execute(
        insert(t.instruction).values(
            tenant_id=tenant_id,
            instruction_id=instruction_id,
            body_enc=cipher.column("instruction", "body_enc").seal(instruction_id, text),
            key_version=cipher.current_version,
            body_sha256=sha256_hex(text),
            **values,
        )
    )


def instruction_body(u: Unit, tenant_id: str, row: Any) -> str:
    """The canonical JSON of a received instruction's record (``row``: its instruction row; sealed
    with the lab's key, or, if received before sealing existed, as it was kept)."""
    u._authorise(tenant_id, "instruction:read")
    if row.body_enc is None:
        kept: str = row.body
        return kept
    cipher = u._crypto(tenant_id).cipher.column("instruction", "body_enc")
    return cipher.open(row.instruction_id, bytes(row.body_enc)).decode()


# -- the lab's signers and received instructions, read (the gateway checks instructions in force) --
@dataclass(frozen=True)
class SignerKey:
    signer_id: str
    tenant_id: str
    name: str
    email: str
    public_key: str  # hex
    added_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def list_signers(u: Unit, tenant_id: str) -> list[SignerKey]:
    u.authorise(tenant_id, "signer:list")
    u.tenant(tenant_id)
    s = t.instruction_signer
    rows = u.execute(tenant_id, select(s).where(s.c.tenant_id == tenant_id).order_by(s.c.added_at, s.c.signer_id)).all()
    return [SignerKey(r.signer_id, tenant_id, r.name, r.email, r.public_key, r.added_at, r.revoked_at) for r in rows]


def active_keys(u: Unit, tenant_id: str) -> dict[str, bytes]:
    """Public keys (raw bytes) of the lab's signers not revoked, by signer id: only those whose
    registration is sealed under the lab's KEK (a signer row written into the database by other
    means than ``add_signer`` verifies nothing)."""
    registered = sealed_signers(u, tenant_id)
    return {
        k.signer_id: bytes.fromhex(k.public_key)
        for k in list_signers(u, tenant_id)
        if k.active and (k.signer_id, k.public_key) in registered
    }


@dataclass(frozen=True)
class Received:
    instruction_id: str
    tenant_id: str
    kind: str
    signer_id: str
    body: dict[str, Any]
    signature: str
    valid_until: datetime
    received_at: datetime


def body_text(u: Unit, tenant_id: str, r: Any) -> str:
    """The canonical JSON of a received instruction's record (sealed with the lab's key, or, if
    received before sealing existed, as it was kept)."""
    return instruction_body(u, tenant_id, r)


def _received(u: Unit, tenant_id: str, r: Any) -> Received:
    return Received(
        r.instruction_id,
        tenant_id,
        r.kind,
        r.signer_id,
        json.loads(body_text(u, tenant_id, r)),
        r.signature,
        r.valid_until,
        r.received_at,
    )


def list_instructions(u: Unit, tenant_id: str) -> list[Received]:
    u.authorise(tenant_id, "instruction:read")
    u.tenant(tenant_id)
    i = t.instruction
    rows = u.execute(
        tenant_id, select(i).where(i.c.tenant_id == tenant_id).order_by(i.c.received_at, i.c.instruction_id)
    ).all()
    u.audit(tenant_id, "instruction:list", "instruction", len(rows))
    return [_received(u, tenant_id, r) for r in rows]


def get_instruction(u: Unit, tenant_id: str, instruction_id: str) -> Received:
    u.authorise(tenant_id, "instruction:read")
    u.tenant(tenant_id)
    i = t.instruction
    row = u.execute(
        tenant_id, select(i).where(i.c.tenant_id == tenant_id, i.c.instruction_id == instruction_id)
    ).first()
    if row is None:
        raise NotFound("no such instruction for this lab (see 'labvault instruction list')")
    u.audit(tenant_id, "instruction:read", "instruction", 1, refs=[instruction_id])
    return _received(u, tenant_id, row)
