"""The rows of the migration procedure (``labvault.migration.service`` keeps its logic there):
the job table, and the few facts the procedure reads about accounts and instructions.

No personal value lives in these rows: figures, field names, hashes, ids, paths of ciphertext
files and keys wrapped by the key provider. The caller has authorised the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, insert, select, update

from labvault.errors import NotFound
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

OPEN = ("purged", "closed")  # states after which nothing is held any more


def get(u: Unit, tenant_id: str, migration_id: str):
    m = t.migration_job
    row = u.execute(tenant_id, select(m).where(m.c.tenant_id == tenant_id, m.c.migration_id == migration_id)).first()
    if row is None:
        raise NotFound(f"no migration '{migration_id}' for lab '{tenant_id}' (see 'labvault migrate status')")
    return row


def put(u: Unit, *, tenant_id: str, **values: Any) -> None:
    u.execute(tenant_id, insert(t.migration_job).values(tenant_id=tenant_id, **values))


def set_(u: Unit, tenant_id: str, migration_id: str, **values: Any) -> None:
    m = t.migration_job
    u.execute(tenant_id, update(m).where(m.c.tenant_id == tenant_id, m.c.migration_id == migration_id).values(**values))


def all_of(u: Unit, tenant_id: str) -> Sequence[Row[Any]]:
    m = t.migration_job
    return u.execute(tenant_id, select(m).where(m.c.tenant_id == tenant_id).order_by(m.c.planned_at)).all()


def holding(u: Unit, tenant_id: str, *, due_at: datetime | None = None) -> list[str]:
    """Jobs that may still hold a copy (not purged or closed); with ``due_at``: those whose
    deletion deadline has come by then."""
    m = t.migration_job
    q = select(m.c.migration_id).where(m.c.tenant_id == tenant_id, m.c.state.not_in(OPEN))
    if due_at is not None:
        q = q.where(m.c.deadline <= due_at)
    return list(u.execute(tenant_id, q).scalars())


def account_email(u: Unit, tenant_id: str, account_id: str) -> str | None:
    a = t.account
    row = u.execute(
        tenant_id, select(a.c.email).where(a.c.tenant_id == tenant_id, a.c.account_id == account_id)
    ).first()
    return None if row is None else row.email.lower()


def account_of_email(u: Unit, tenant_id: str, email: str) -> str | None:
    a = t.account
    row = u.execute(
        tenant_id, select(a.c.account_id).where(a.c.tenant_id == tenant_id, a.c.email == email.lower())
    ).first()
    return None if row is None else row.account_id


def instruction_as_signed(u: Unit, tenant_id: str, instruction_id: str) -> tuple[str, str]:
    """(canonical body, signature) of a received instruction, as signed."""
    from labvault.instructions.signers import body_text

    i = t.instruction
    row = u.execute(
        tenant_id, select(i).where(i.c.tenant_id == tenant_id, i.c.instruction_id == instruction_id)
    ).first()
    if row is None:
        raise NotFound("no such instruction for this lab (see 'labvault instruction list')")
    return body_text(u, tenant_id, row), row.signature
