"""Retention's records: rule and hold rows, and the deletions retention decides.

``labvault.retention`` decides what is due and when (durations, holds, hooks, reports); this
module authorises, reads and writes the ``retention_rule`` and ``legal_hold`` rows through the
unit's ``execute``, and asks the gateway to delete a lab's personal rows (``Unit.purge_results``,
``purge_quarantine``, ``delete_lab_rows``: in batches, decrypting only what a decision needs).
Audit events carry counts and category names, never a value.

Categories: ``results`` (every result: the default rule), each sensitive category of
``Sensitivity`` but ``other`` (an override for the results of that category) and ``quarantine``
(refused messages). A hold's scope is one of them or ``*`` (everything).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from labvault.domain.retention import (  # noqa: F401 - the checks and categories, for retention's callers
    CATEGORIES,
    EVERYTHING,
    MAX_DAYS,
    QUARANTINE,
    RESULTS,
    SENSITIVE,
    check_rule,
    check_rules,
)
from labvault.errors import InvalidInput, NotFound
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

BATCH = 500  # requests per purge batch (ids per IN list stay well under SQLite's limit)


@dataclass(frozen=True)
class Rule:
    category: str
    days: int
    legal_reference: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True)
class Hold:
    hold_id: str
    basis: str
    scope: str
    set_by: str
    set_at: datetime
    released_by: str | None
    released_at: datetime | None

    @property
    def active(self) -> bool:
        return self.released_at is None


def write_rules(u: Unit, tenant_id: str, rules: Mapping[str, tuple[int, str]]) -> None:
    """Insert or replace checked rules (``check_rule``); the gateway authorises ``retention:manage``."""
    u.write_retention_rules(tenant_id, rules)


def set_rule(u: Unit, tenant_id: str, category: str, days: int, legal_reference: str) -> Rule:
    category, days, ref = check_rule(category, days, legal_reference)
    u.authorise(tenant_id, "retention:manage")
    u.tenant(tenant_id)
    write_rules(u, tenant_id, {category: (days, ref)})
    return next(x for x in rules(u, tenant_id, action=None) if x.category == category)


def rules(u: Unit, tenant_id: str, *, action: str | None = "retention:read") -> list[Rule]:
    """The lab's rules (``action`` None: the caller has authorised already)."""
    if action is not None:
        u.authorise(tenant_id, action)
        u.tenant(tenant_id)
    r = t.retention_rule
    rows = u.execute(tenant_id, select(r).where(r.c.tenant_id == tenant_id).order_by(r.c.category)).all()
    return [Rule(x.category, x.days, x.legal_reference, x.set_by, x.set_at) for x in rows]


def place_hold(u: Unit, tenant_id: str, *, basis: str, scope: str = EVERYTHING) -> Hold:
    """A legal hold, only with its recorded basis (a court order, a claim, an authority's request)."""
    text = (basis or "").strip()
    if not text or len(text) > 2000:
        raise InvalidInput("a legal hold needs its basis (1-2000 characters): what requires the data to be kept")
    if scope != EVERYTHING and scope not in CATEGORIES:
        raise InvalidInput(f"a hold's scope is '*' or a retention category: {', '.join(CATEGORIES)}")
    u.authorise(tenant_id, "retention:manage")
    u.tenant(tenant_id)
    hold = Hold(new_id(), text, scope, u.principal.account_id, utcnow(), None, None)
    u.execute(
        tenant_id,
        insert(t.legal_hold).values(
            tenant_id=tenant_id,
            hold_id=hold.hold_id,
            basis=hold.basis,
            scope=scope,
            set_by=hold.set_by,
            set_at=hold.set_at,
        ),
    )
    u.audit(tenant_id, "retention:hold", "hold", 1, refs=[hold.hold_id])
    return hold


def release_hold(u: Unit, tenant_id: str, hold_id: str) -> None:
    u.authorise(tenant_id, "retention:manage")
    h = t.legal_hold
    where = (h.c.tenant_id == tenant_id, h.c.hold_id == hold_id)
    row = u.execute(tenant_id, select(h).where(*where)).first()
    if row is None:
        raise NotFound("no such legal hold in this lab (see 'labvault retention list')")
    if row.released_at is not None:
        raise InvalidInput("this legal hold is already released")
    u.execute(tenant_id, update(h).where(*where).values(released_by=u.principal.account_id, released_at=utcnow()))
    u.audit(tenant_id, "retention:release", "hold", 1, refs=[hold_id])


def holds(u: Unit, tenant_id: str, *, action: str | None = "retention:read") -> list[Hold]:
    if action is not None:
        u.authorise(tenant_id, action)
        u.tenant(tenant_id)
    h = t.legal_hold
    rows = u.execute(tenant_id, select(h).where(h.c.tenant_id == tenant_id).order_by(h.c.set_at, h.c.hold_id)).all()
    return [Hold(x.hold_id, x.basis, x.scope, x.set_by, x.set_at, x.released_by, x.released_at) for x in rows]


# -- deletions ---------------------------------------------------------------------------------------
def purge_results(
    u: Unit,
    tenant_id: str,
    cutoffs: Mapping[str, datetime],
    *,
    request_cutoff: datetime | None,
    batch: int = BATCH,
) -> dict[str, int]:
    """Delete what is past its cutoff, in batches; the gateway does it (``Unit.purge_results`` says how)."""
    return u.purge_results(tenant_id, cutoffs, request_cutoff=request_cutoff, batch=batch)


def purge_quarantine(u: Unit, tenant_id: str, cutoff: datetime) -> int:
    """Delete the refused messages received before ``cutoff``, whatever became of them."""
    return u.purge_quarantine(tenant_id, cutoff)


def delete_lab_rows(u: Unit, tenant_id: str) -> dict[str, int]:
    """Delete every row of the lab in every personal table but its keys; counts per table."""
    return u.delete_lab_rows(tenant_id)


def store_signed_record(u: Unit, tenant_id: str, kind: str, body: dict) -> dict:
    """Sign ``body`` (no personal value in it) with the platform key and keep it for the lab."""
    signature, public = u.sign_as_platform(body)
    record = {"record_id": new_id(), "body": body, "signature": signature, "public_key": public.hex()}
    u.execute(
        tenant_id,
        insert(t.signed_record).values(
            tenant_id=tenant_id,
            record_id=record["record_id"],
            kind=kind,
            body=json.dumps(body, sort_keys=True),
            signature=record["signature"],
            signer_public_key=record["public_key"],
            created_at=utcnow(),
        ),
    )
    return record


def platform_public_keys(u: Unit) -> set[str]:
    """Hex of every platform signing public key, retired ones too (they verify older records)."""
    return u.platform_public_keys()
