"""Break-glass access: vendor support reads one lab's personal data only under a grant that a
``lab_admin`` of that lab approved, with a ticket, a reason, a scope and an expiry of at most 8 h.

The scope is always named: patients, or a period (requests dated in it, their results and their
patients' identities), or both, and the fields; never the whole lab. The lab's admin sees who asks
(name and e-mail), the ticket, the reason, that scope and the duration before approving.

Every use of a grant is tied to it in the audit trail (``audit_event.grant_id``); an expired or
revoked grant stops working at the next operation, since grants are read from the store each time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from labvault.access import policy
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import new_id, stored_utc, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit
    from labvault.access.state import UnitState

MAX_PATIENTS = 1000  # a grant is for one ticket: a few patients, not a cohort
MAX_HOURS = 8
MAX_PERIOD_DAYS = 366  # a ticket's period, not the lab's history
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
    period_from: date | None = None  # requests dated in [period_from, period_to] (inclusive)
    period_to: date | None = None
    requested_at: datetime | None = None
    requester_name: str | None = None  # who asks, as the lab's admin sees it
    requester_email: str | None = None

    @property
    def has_period(self) -> bool:
        return self.period_from is not None or self.period_to is not None

    def in_period(self, day: date) -> bool:
        return (self.period_from is None or day >= self.period_from) and (
            self.period_to is None or day <= self.period_to
        )

    def scope_text(self) -> str:
        """The exact scope in words (ids and dates, never a personal value)."""
        parts = []
        if self.patients is not None:
            parts.append(f"{len(self.patients)} named patient(s)")
        if self.has_period:
            parts.append(f"requests dated {self.period_from or '…'} to {self.period_to or '…'}")
        return "; ".join(parts) + f"; fields {', '.join(self.fields)}; no sensitive category"

    @property
    def actions(self) -> frozenset[str]:
        return frozenset().union(*(policy.GRANT_FIELDS[f] for f in self.fields))


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _grant(row: Any, who: dict[str, tuple[str, str]] | None = None) -> Grant:
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
        period_from=_day(row.scope_from),
        period_to=_day(row.scope_to),
        requested_at=stored_utc(row.requested_at),
        requester_name=(who or {}).get(row.account_id, (None, None))[0],
        requester_email=(who or {}).get(row.account_id, (None, None))[1],
    )


def _requesters(u: Unit, account_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Name and e-mail of the vendor accounts that asked (platform rows, read under the platform's scope)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    previous = u._scoped
    u._scope(PLATFORM)
    try:
        rows = u.conn.execute(
            select(t.account.c.account_id, t.account.c.name, t.account.c.email).where(
                t.account.c.tenant_id == PLATFORM, t.account.c.account_id.in_(ids)
            )
        ).all()
    finally:
        if previous is not None:
            u._scope(previous)
    return {r.account_id: (r.name, r.email) for r in rows}


def active_grant(u: UnitState, tenant_id: str, account_id: str) -> Grant | None:
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
    u: Unit,
    tenant_id: str,
    *,
    ticket: str,
    reason: str,
    hours: int,
    fields: list[str],
    patients: list[str] | None,
    period_from: date | None = None,
    period_to: date | None = None,
) -> Grant:
    """A support account asks a lab for access; nothing is readable until the lab approves. The
    scope names patients, or a period, or both, and the fields: a request for the whole lab is
    refused with the reason."""
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
        raise InvalidInput("a grant names at least one patient (or a period)")
    if patients is None and period_from is None and period_to is None:
        raise InvalidInput(
            "a grant's scope is named: the patients (--patient) or a period (--from/--to) "
            "of the ticket, never the whole lab"
        )
    if (period_from is None) != (period_to is None):
        raise InvalidInput("a grant's period has both ends (--from and --to)")
    if period_from is not None and period_to is not None:
        if period_from > period_to:
            raise InvalidInput("a grant's period starts after it ends")
        if (period_to - period_from).days > MAX_PERIOD_DAYS:
            raise InvalidInput(f"a grant's period is at most {MAX_PERIOD_DAYS} days: name the patients instead")
    if patients:
        _check_patients(u, tenant_id, patients)
    grant_id = new_id()
    u.conn.execute(
        insert(t.access_grant).values(
            tenant_id=tenant_id,
            grant_id=grant_id,
            account_id=u.principal.account_id,
            ticket=ticket.strip()[:100],
            reason=reason.strip()[:500],
            scope_patients=None if patients is None else json.dumps(sorted(set(patients))),
            scope_fields=json.dumps(sorted(set(fields))),
            requested_at=utcnow(),
            hours=hours,
            scope_from=None if period_from is None else period_from.isoformat(),
            scope_to=None if period_to is None else period_to.isoformat(),
        )
    )
    u._record(tenant_id, "grant:request", "grant", 1, refs=[grant_id])
    return get_grant(u, tenant_id, grant_id)


def _check_patients(u: Unit, tenant_id: str, patients: list[str]) -> None:
    """A grant names patients by their Labvault id, never by an identity: anything else (a NIR
    typed in by mistake, a name) is refused before it is stored, without being repeated."""
    wanted = set(patients)
    if len(wanted) > MAX_PATIENTS:
        raise InvalidInput(f"a grant names at most {MAX_PATIENTS} patients: name a period instead")
    pi = t.patient_identity
    found = set(
        u.conn.execute(
            select(pi.c.patient_id).where(u._tf(pi, tenant_id), pi.c.patient_id.in_(sorted(wanted)))
        ).scalars()
    )
    missing = len(wanted - found)
    if missing:
        raise InvalidInput(
            f"a grant names patients by their Labvault id: {missing} of the {len(wanted)} given "
            "are not patients of this lab"
        )


def get_grant(u: Unit, tenant_id: str, grant_id: str) -> Grant:
    row = u.conn.execute(
        select(t.access_grant).where(t.access_grant.c.tenant_id == tenant_id, t.access_grant.c.grant_id == grant_id)
    ).first()
    if row is None:
        raise NotFound("no such grant in this lab")
    return _grant(row, _requesters(u, [row.account_id]))


def show_grant(u: Unit, tenant_id: str, grant_id: str) -> Grant:
    """One grant as the lab's admin reviews it (who asks, ticket, reason, scope, duration)."""
    u._authorise(tenant_id, "grant:list")
    g = get_grant(u, tenant_id, grant_id)
    if "support" in u.principal.roles and u.principal.is_platform and g.account_id != u.principal.account_id:
        raise NotFound("no such grant in this lab")
    return g


def approve_grant(u: Unit, tenant_id: str, grant_id: str) -> Grant:
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


def revoke_grant(u: Unit, tenant_id: str, grant_id: str) -> Grant:
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


def list_grants(u: Unit, tenant_id: str) -> list[Grant]:
    u._authorise(tenant_id, "grant:list")
    rows = u.conn.execute(
        select(t.access_grant).where(t.access_grant.c.tenant_id == tenant_id).order_by(t.access_grant.c.requested_at)
    ).all()
    who = _requesters(u, [r.account_id for r in rows])
    grants = [_grant(r, who) for r in rows]
    if "support" in u.principal.roles and u.principal.is_platform:
        grants = [g for g in grants if g.account_id == u.principal.account_id]
    return grants
