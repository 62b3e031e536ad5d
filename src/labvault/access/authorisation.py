"""The unit of work's authorisation: the row-level-security scope, the principal checked against the
store, allow or refuse (the policy table, lab isolation, vendor grants, instructions), the scope of
a support grant and the sensitive categories a principal may read."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import func, select, true

from labvault.access import policy
from labvault.access.principal import Purpose
from labvault.access.state import UnitState
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied
from labvault.store import schema as t

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, Table

    from labvault.access.grants import Grant


class Authorisation(UnitState):
    """Scope, principal check, authorise and refuse: mixed into ``Unit``."""

    def _tf(self, table: Table, tenant_id: str) -> ColumnElement[bool]:
        """The application's tenant filter on ``table`` (row-level security is the second wall)."""
        return table.c.tenant_id == tenant_id if self._gw.tenant_filter else true()

    def _scope(self, tenant_id: str) -> None:
        """Name the lab this transaction works on for PostgreSQL's row-level security policies."""
        if self._scoped == tenant_id or self.conn.dialect.name != "postgresql":
            self._scoped = tenant_id
            return
        self.conn.execute(select(func.set_config("labvault.tenant", tenant_id, True)))
        self._scoped = tenant_id

    def _check_principal(self) -> None:
        """The account must exist and be active; its roles are read from the store, not trusted. A
        system principal (the platform's own process, ``policy.SYSTEM_PRINCIPALS``) has no account:
        its roles are the policy's, for the monitoring purpose only; an account never holds a
        system role, whatever its row says."""
        p = self.principal
        if p.kind == "system":
            fixed = policy.SYSTEM_PRINCIPALS.get(p.account_id)
            if fixed is None or p.tenant_id != PLATFORM or self.purpose != Purpose.MONITORING:
                raise AccessDenied("no such system principal for this purpose")
            self.principal = dataclasses.replace(p, roles=fixed)
            self._committed = True
            self._service_purpose = None
            return
        self._scope(p.tenant_id)
        row = self.conn.execute(
            select(t.account).where(t.account.c.tenant_id == p.tenant_id, t.account.c.account_id == p.account_id)
        ).first()
        if row is None or not row.active:
            raise AccessDenied("no active account for this principal")
        roles = frozenset(filter(None, row.roles.split(","))) - policy.SYSTEM_ROLES
        self.principal = dataclasses.replace(p, roles=roles)
        self._committed = row.commitment_at is not None
        self._service_purpose = row.service_purpose

    def _deny(self, tenant_id: str, action: str, reason: str) -> NoReturn:
        self._record(tenant_id, action, action.split(":")[0], 0, outcome="denied")
        raise AccessDenied(reason)

    def _authorise(self, tenant_id: str, action: str, vendor_refusal: str | None = None) -> None:
        """Deny by default: the policy table, lab isolation, grants for vendor support.
        ``vendor_refusal``: the words of the refusal when a lab's people are kept from a vendor account."""
        self._scope(tenant_id)
        self._grant = None  # a grant covers the operation that found it, not the ones after
        if not self._check:
            return
        p = self.principal
        known = None
        if p.is_platform and tenant_id != PLATFORM:
            known = self.tenant(tenant_id)  # vendor staff may list labs anyway: an unknown one is a 404
        personal = (
            action in policy.READ_PERSONAL
            or action in policy.WRITE_PERSONAL
            or action in policy.MANAGE_PERSONAL
            or action in policy.IDENTITY_VIGILANCE
        )
        if personal and not self._committed and p.kind == "person":
            self._deny(tenant_id, action, "this account has not recorded its confidentiality commitment")
        if action in policy.SYSTEM_ACTIONS and p.kind != "system":
            self._deny(tenant_id, action, f"'{action}' is the platform's own process's, never an account's")
        if p.is_platform:
            if action in policy.READ_PERSONAL:
                instr = self._instruction
                if (
                    instr is not None
                    and instr.tenant == tenant_id
                    and action in policy.INSTRUCTED_READS
                    and policy.Role.OPERATOR in p.roles
                ):
                    return
                grant = self._active_grant(tenant_id) if "support" in p.roles else None
                if grant is None or action not in grant.actions:
                    self._deny(
                        tenant_id, action, "vendor accounts reach lab data only through a grant the lab approved"
                    )
                self._grant = grant
                return
            if action in policy.LAB_PEOPLE and tenant_id != PLATFORM:
                self._deny(
                    tenant_id,
                    action,
                    vendor_refusal or "only the lab's own lab_admin manages its accounts, roles and tokens",
                )
            if action in policy.WRITE_PERSONAL:
                # Generated data, into a lab created synthetic only: the purpose the caller names
                # never unlocks anything on a real lab.
                if self.purpose in (Purpose.GENERATE, Purpose.BENCHMARK) and policy.allowed(p.roles, "generate"):
                    if known is not None and known.synthetic and self.is_synthetic(tenant_id):
                        return
                    self._deny(
                        tenant_id,
                        action,
                        f"lab '{tenant_id}' is not a synthetic lab: "
                        "vendor accounts do not write generated data into a real lab",
                    )
                self._deny(tenant_id, action, "vendor accounts do not write lab data")
            if not policy.allowed(p.roles, action):
                self._deny(
                    tenant_id, action, f"'{action}' is not allowed for roles {', '.join(sorted(p.roles)) or 'none'}"
                )
            return
        if p.tenant_id != tenant_id:
            # In the named lab's trail when it exists; else in the caller's own (what the caller
            # wrote in a path, a NIR say, never opens an audit chain of its own).
            known_lab = self.conn.execute(select(t.tenant.c.tenant_id).where(self._tf(t.tenant, tenant_id))).first()
            self._deny(
                tenant_id if known_lab is not None else p.tenant_id,
                action,
                f"account of lab '{p.tenant_id}' cannot act on lab '{tenant_id}'",
            )
        if self._service_purpose and self._service_purpose != str(self.purpose):
            self._deny(tenant_id, action, f"this service account acts for '{self._service_purpose}' only")
        if not policy.allowed(p.roles, action):
            self._deny(tenant_id, action, f"'{action}' is not allowed for roles {', '.join(sorted(p.roles)) or 'none'}")

    def _active_grant(self, tenant_id: str) -> Grant | None:
        from labvault.access.grants import active_grant

        return active_grant(self, tenant_id, self.principal.account_id)

    def _in_grant_scope(self, patient_id: str, tenant_id: str) -> bool:
        """Whether a support grant (if one is in use) covers this patient: named in it, and, for a
        grant bounded to a period, with a request dated in that period."""
        g = self._grant
        if g is None:
            return True
        if g.patients is not None and patient_id not in g.patients:
            return False
        if g.has_period:
            c = self._crypto(tenant_id)
            q = t.request
            ids = [
                r.request_id
                for r in self.conn.execute(
                    select(q.c.request_id).where(self._tf(q, tenant_id), q.c.pseudonym == c.index.pseudonym(patient_id))
                ).all()
            ]
            return bool(self._requests_collected_between(c, tenant_id, ids, g.period_from, g.period_to))
        return True

    def _readable_categories(self, tenant_id: str) -> frozenset[str] | None:
        """Sensitive categories this principal may read in this lab (None: all)."""
        if not self._check:
            return None
        if self._grant is not None:
            return frozenset()  # support under a grant never sees sensitive categories
        if self._instruction is not None and self.principal.is_platform:
            return frozenset(self._instruction.sensitive)  # only what the lab listed
        row = self.conn.execute(select(t.tenant.c.sensitive_access).where(t.tenant.c.tenant_id == tenant_id)).first()
        access = json.loads(row.sensitive_access) if row and row.sensitive_access else policy.DEFAULT_SENSITIVE_ACCESS
        return frozenset(cat for cat, roles in access.items() if self.principal.roles & set(roles))

    def _authorise_identity_search(self, tenant_id: str) -> None:
        """G5, G6: searching the audit trail by a patient's identity (NIR, INS) is for the lab's own
        ``lab_admin`` and ``lab_dpo``; a vendor account only under a grant the lab approved that
        names identity search. Decided before the identity is even read, so that a refusal says
        the same thing whether or not the person is a patient of the lab (no oracle)."""
        p = self.principal
        if self._check and p.is_platform:
            self._authorise(tenant_id, "audit:read")
            grant = self._active_grant(tenant_id)
            if grant is None or "patient:identity:search" not in grant.actions:
                self._deny(
                    tenant_id,
                    "audit:identity",
                    "vendor accounts search the audit trail by pseudonymous "
                    "reference (--ref), by identity only under a grant the lab "
                    "approved",
                )
            self._grant = grant  # the patients it names bound the answer
            return
        self._authorise(tenant_id, "audit:identity")
