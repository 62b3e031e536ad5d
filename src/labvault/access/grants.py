"""Break-glass access: vendor support reads one lab's personal data only under a grant that a
``lab_admin`` of that lab approved, with a ticket, a reason, a scope and an expiry of at most 8 h.

Every use of a grant is tied to it in the audit trail (``audit_event.grant_id``); an expired or
revoked grant stops working at the next operation, since grants are read from the store each time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from labvault.access import policy
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

MAX_HOURS = 8
FIELDS = tuple(policy.GRANT_FIELDS)


@dataclass(frozen=True)
class Grant:
    grant_id: str
    tenant_id: str
    account_id: str
    ticket: str
    reason: str
    patients: frozenset[str] | None
    fields: tuple[str, ...]
    hours: int
    state: str  # pending, active, expired, revoked
    expires_at: datetime | None
    approved_by: str | None

    @property
    def actions(self) -> frozenset[str]:
        return frozenset().union(*(policy.GRANT_FIELDS[f] for f in self.fields))


def _grant(row) -> Grant:
    now = utcnow()
    expires = stored_utc(row.expires_at)
    if row.revoked_at is not None:
        state = "revoked"
    elif row.approved_at is None:
        state = "pending"
    elif expires is not None and expires <= now:
        state = "expired"
    else:
        state = "active"
    return Grant(
        grant_id=row.grant_id,
        tenant_id=row.tenant_id,
        account_id=row.account_id,
        ticket=row.ticket,
        reason=row.reason,
        patients=None if row.scope_patients is None else frozenset(json.loads(row.scope_patients)),
        fields=tuple(json.loads(row.scope_fields)),
        hours=row.hours,
        state=state,
        expires_at=expires,
        approved_by=row.approved_by,
    )


def active_grant(u, tenant_id: str, account_id: str) -> Grant | None:
    """The account's active grant on this lab, if any (the newest one)."""
    rows = u.conn.execute(
        select(t.access_grant)
        .where(
            t.access_grant.c.tenant_id == tenant_id,
            t.access_grant.c.account_id == account_id,
            t.access_grant.c.approved_at.is_not(None),
            t.access_grant.c.revoked_at.is_(None),
        )
        .order_by(t.access_grant.c.approved_at.desc())
    ).all()
    for row in rows:
        g = _grant(row)
        if g.state == "active":
            return g
    return None


def request_grant(
    u, tenant_id: str, *, ticket: str, reason: str, hours: int, fields: list[str], patients: list[str] | None
) -> Grant:
    """A support account asks a lab for access; nothing is readable until the lab approves."""
    if "support" not in u.principal.roles or not u.principal.is_platform:
        raise AccessDenied("only vendor support accounts request access grants")
    u._authorise(tenant_id, "grant:request")
    u.tenant(tenant_id)
    if not ticket.strip() or not reason.strip():
        raise InvalidInput("a grant needs a ticket reference and a reason")
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidInput(f"a grant lasts from 1 to {MAX_HOURS} hours")
    bad = set(fields) - set(FIELDS)
    if not fields or bad:
        raise InvalidInput(f"grant fields are among: {', '.join(FIELDS)}")
    if patients is not None and not patients:
        raise InvalidInput("name at least one patient, or none for the whole lab")
    grant_id = new_id()
    u.conn.execute(
        insert(t.access_grant).values(
            tenant_id=tenant_id, grant_id=grant_id, account_id=u.principal.account_id, ticket=ticket.strip()[:100],
            reason=reason.strip()[:500], scope_patients=None if patients is None else json.dumps(sorted(set(patients))),
            scope_fields=json.dumps(sorted(set(fields))), requested_at=utcnow(), hours=hours,
        )
    )
    u._record(tenant_id, "grant:request", "grant", 1, refs=[grant_id])
    return get_grant(u, tenant_id, grant_id)


def get_grant(u, tenant_id: str, grant_id: str) -> Grant:
    row = u.conn.execute(
        select(t.access_grant).where(t.access_grant.c.tenant_id == tenant_id, t.access_grant.c.grant_id == grant_id)
    ).first()
    if row is None:
        raise NotFound("no such grant in this lab")
    return _grant(row)


def approve_grant(u, tenant_id: str, grant_id: str) -> Grant:
    """A lab_admin of that lab approves: the grant runs from now for its hours."""
    u._authorise(tenant_id, "grant:approve")
    if u.principal.is_platform:
        raise AccessDenied("only the lab approves access to its data")
    g = get_grant(u, tenant_id, grant_id)
    if g.state != "pending":
        raise InvalidInput(f"this grant is {g.state}, not pending")
    now = utcnow()
    u.conn.execute(
        update(t.access_grant)
        .where(t.access_grant.c.tenant_id == tenant_id, t.access_grant.c.grant_id == grant_id)
        .values(approved_by=u.principal.account_id, approved_at=now, expires_at=now + timedelta(hours=g.hours))
    )
    u._record(tenant_id, "grant:approve", "grant", 1, refs=[grant_id])
    return get_grant(u, tenant_id, grant_id)


def revoke_grant(u, tenant_id: str, grant_id: str) -> Grant:
    u._authorise(tenant_id, "grant:revoke")
    g = get_grant(u, tenant_id, grant_id)
    if g.state in ("revoked", "expired"):
        raise InvalidInput(f"this grant is already {g.state}")
    u.conn.execute(
        update(t.access_grant)
        .where(t.access_grant.c.tenant_id == tenant_id, t.access_grant.c.grant_id == grant_id)
        .values(revoked_at=utcnow(), revoked_by=u.principal.account_id)
    )
    u._record(tenant_id, "grant:revoke", "grant", 1, refs=[grant_id])
    return get_grant(u, tenant_id, grant_id)


def list_grants(u, tenant_id: str) -> list[Grant]:
    u._authorise(tenant_id, "grant:list")
    rows = u.conn.execute(
        select(t.access_grant).where(t.access_grant.c.tenant_id == tenant_id).order_by(t.access_grant.c.requested_at)
    ).all()
    grants = [_grant(r) for r in rows]
    if "support" in u.principal.roles and u.principal.is_platform:
        grants = [g for g in grants if g.account_id == u.principal.account_id]
    return grants
