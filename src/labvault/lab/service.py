"""A lab's catalogue and auto-validation rules, stored per lab (tables ``lab_catalogue`` and
``autovalidation_rules``): every version kept, through the unit of work.

Actions (``labvault.access.policy``): ``catalogue:read`` (the lab's roles), ``catalogue:load``
(lab_admin, biologist), ``rules:write`` (biologist, lab_admin), ``rules:activate`` (a biologist
of the lab, whose account is recorded). No vendor role holds any of them. Audit events carry the
stored version number, never a body.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Table, func, insert, select, update

from labvault.errors import InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.lab.catalogue import Catalogue, default_catalogue, parse_catalogue
from labvault.lab.rules import RuleSet, parse_rules
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

__all__ = [
    "LoadedCatalogue",
    "StoredRules",
    "activate_rules",
    "current_catalogue",
    "current_rules",
    "list_rules",
    "load_catalogue",
    "write_rules",
]


@dataclass(frozen=True)
class LoadedCatalogue:
    number: int  # the stored version (1, 2, ...); 0: the default catalogue, the lab loaded none
    catalogue: Catalogue
    loaded_by: str | None
    loaded_at: datetime | None


@dataclass(frozen=True)
class StoredRules:
    number: int
    rules: RuleSet
    written_by: str
    written_at: datetime
    activated_by: str | None
    activated_at: datetime | None


def _next(u: Unit, tenant_id: str, table: Table) -> int:
    top = u.execute(tenant_id, select(func.max(table.c.version)).where(table.c.tenant_id == tenant_id)).scalar()
    return int(top or 0) + 1


def load_catalogue(u: Unit, tenant_id: str, text: str) -> LoadedCatalogue:
    """Store a new version of the lab's catalogue (checked whole first; its version string must be new)."""
    u.authorise(tenant_id, "catalogue:load")  # refused before the file is even read
    cat = parse_catalogue(text)
    u.tenant(tenant_id)
    # One writer of the lab's versions at a time (two loads at once would both take the same next
    # number): the lab's trail lock, held to the end of the unit, as an audit appender holds it.
    u.lock_trail(tenant_id)
    c = t.lab_catalogue
    for row in u.execute(tenant_id, select(c.c.body).where(c.c.tenant_id == tenant_id)).all():
        if parse_catalogue(row.body).version == cat.version:
            raise InvalidInput(f"this lab already loaded a catalogue of version {cat.version!r}: give a new version")
    number, at = _next(u, tenant_id, c), utcnow()
    who = u.principal.account_id
    u.execute(
        tenant_id,
        insert(c).values(
            tenant_id=tenant_id, version=number, digest=cat.digest, body=text, loaded_by=who, loaded_at=at
        ),
    )
    u.audit(tenant_id, "catalogue:load", "catalogue", 1, refs=[str(number), cat.digest])
    return LoadedCatalogue(number, cat, who, at)


def current_catalogue(u: Unit, tenant_id: str) -> LoadedCatalogue:
    """The lab's latest catalogue, or the default one (number 0) when it loaded none."""
    u.authorise(tenant_id, "catalogue:read")
    u.tenant(tenant_id)
    c = t.lab_catalogue
    row = u.execute(
        tenant_id, select(c).where(c.c.tenant_id == tenant_id).order_by(c.c.version.desc()).limit(1)
    ).first()
    if row is None:
        return LoadedCatalogue(0, default_catalogue(), None, None)
    return LoadedCatalogue(row.version, parse_catalogue(row.body), row.loaded_by, row.loaded_at)


def write_rules(u: Unit, tenant_id: str, text: str) -> StoredRules:
    """Store a new version of the lab's auto-validation rules, checked against its current
    catalogue; it is not in force until a biologist activates it."""
    u.authorise(tenant_id, "rules:write")
    cat = current_catalogue(u, tenant_id).catalogue
    rules = parse_rules(text, cat)
    u.lock_trail(tenant_id)  # one writer of the lab's versions at a time (see load_catalogue)
    r = t.autovalidation_rules
    for row in u.execute(tenant_id, select(r.c.body).where(r.c.tenant_id == tenant_id)).all():
        if parse_rules(row.body).version == rules.version:
            raise InvalidInput(f"this lab already wrote rules of version {rules.version!r}: give a new version")
    number, at, who = _next(u, tenant_id, r), utcnow(), u.principal.account_id
    u.execute(
        tenant_id,
        insert(r).values(
            tenant_id=tenant_id, version=number, digest=rules.digest, body=text, written_by=who, written_at=at
        ),
    )
    u.audit(tenant_id, "rules:write", "autovalidation_rules", 1, refs=[str(number), rules.digest])
    return StoredRules(number, rules, who, at, None, None)


def activate_rules(u: Unit, tenant_id: str, number: int) -> StoredRules:
    """Put a stored version of the rules in force (a biologist of the lab; the account is recorded)."""
    u.authorise(tenant_id, "rules:activate")
    u.tenant(tenant_id)
    r = t.autovalidation_rules
    where = (r.c.tenant_id == tenant_id, r.c.version == number)
    row = u.execute(tenant_id, select(r).where(*where)).first()
    if row is None:
        raise NotFound("no such version of this lab's auto-validation rules (see 'labvault rules show')")
    current = current_rules(u, tenant_id)
    if current is not None and current.number == number:
        raise InvalidInput("this version of the rules is already in force")
    who, at = u.principal.account_id, utcnow()
    u.execute(tenant_id, update(r).where(*where).values(activated_by=who, activated_at=at))
    u.audit(tenant_id, "rules:activate", "autovalidation_rules", 1, refs=[str(number), row.digest])
    return StoredRules(number, parse_rules(row.body), row.written_by, row.written_at, who, at)


def _stored(row: object) -> StoredRules:
    return StoredRules(
        row.version,  # type: ignore[attr-defined]
        parse_rules(row.body),  # type: ignore[attr-defined]
        row.written_by,  # type: ignore[attr-defined]
        row.written_at,  # type: ignore[attr-defined]
        row.activated_by,  # type: ignore[attr-defined]
        row.activated_at,  # type: ignore[attr-defined]
    )


def current_rules(u: Unit, tenant_id: str) -> StoredRules | None:
    """The rules in force: the version activated last; None when none was ever activated."""
    u.authorise(tenant_id, "catalogue:read")
    u.tenant(tenant_id)
    r = t.autovalidation_rules
    row = u.execute(
        tenant_id,
        select(r)
        .where(r.c.tenant_id == tenant_id, r.c.activated_at.is_not(None))
        .order_by(r.c.activated_at.desc(), r.c.version.desc())
        .limit(1),
    ).first()
    return _stored(row) if row is not None else None


def list_rules(u: Unit, tenant_id: str) -> list[StoredRules]:
    """Every stored version of the lab's rules, oldest first."""
    u.authorise(tenant_id, "catalogue:read")
    u.tenant(tenant_id)
    r = t.autovalidation_rules
    rows = u.execute(tenant_id, select(r).where(r.c.tenant_id == tenant_id).order_by(r.c.version)).all()
    return [_stored(x) for x in rows]
