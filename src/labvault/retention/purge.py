"""Retention runs (delete what each of a lab's rules says is due) and the end of a contract.

Contracts other modules rely on:

- ``run(u, tenant_id, *, now) -> Report``: deletes the lab's results collected more than their
  category's period before ``now`` (a sensitive category without its own rule follows
  ``results``), the requests left without a result (and their specimens), the identities left
  without a request, and refused messages older than the ``quarantine`` rule. A category under an
  active legal hold is skipped entirely (a hold on ``results`` holds every result; ``*`` holds
  everything, hooks included). One audit event per ruled category (``retention:purge`` with the
  count, or ``retention:purge:held``) and one per cascaded kind (``request``, ``specimen``,
  ``patient``); never a value. A lab without a ``results`` rule is an error.
- ``HOOKS``: functions ``hook(u, tenant_id, now) -> Mapping[str, int]`` called at the end of every
  run not under a ``*`` hold, in the same transaction; their counts are added to ``Report.hooks``
  (e.g. migration packages past their deletion deadline). A hook audits its own work.
- ``end_delete(u, tenant_id, *, instruction_id=None) -> dict``: the end of a contract by deletion,
  under the lab's signed deletion instruction (scope lab; re-checked now) unless the lab is
  synthetic: every personal row deleted, ``END_HOOKS`` called, keys crypto-shredded, and a
  platform-signed certificate (``signed_record`` of kind ``tenant-end``) naming the instruction (id,
  SHA-256, signer, signature) and listing each store and what was destroyed there.
- ``END_HOOKS``: functions ``hook(u, tenant_id, now) -> Mapping[str, object]`` (JSON values, no
  personal value) reporting what they destroyed in a store of their own (e.g. packages); called
  after the rows are deleted and before the keys are shredded, merged into the certificate's
  ``packages`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from labvault.crypto.signing import verify
from labvault.errors import InvalidInput, SignatureInvalid, TenantShredded
from labvault.ids import utcnow
from labvault.retention import records as store
from labvault.retention.records import CATEGORIES, EVERYTHING, QUARANTINE, RESULTS

if TYPE_CHECKING:
    from labvault.access.gateway import Gateway, Unit
    from labvault.access.principal import Principal

__all__ = [
    "END_HOOKS",
    "HOOKS",
    "EndHook",
    "Hook",
    "Report",
    "certificates",
    "end_delete",
    "run",
    "run_all",
    "verify_certificate",
]

Hook = Callable[["Unit", str, datetime], Mapping[str, int]]
EndHook = Callable[["Unit", str, datetime], Mapping[str, object]]
HOOKS: list[Hook] = []
END_HOOKS: list[EndHook] = []

_RESULT_CATEGORIES = tuple(c for c in CATEGORIES if c != QUARANTINE)


@dataclass
class Report:
    """What one run deleted in one lab (counts only)."""

    tenant_id: str
    now: datetime
    categories: dict[str, int] = field(default_factory=dict)  # results or messages, per ruled category
    held: list[str] = field(default_factory=list)  # ruled categories a legal hold kept whole
    requests: int = 0
    specimens: int = 0
    identities: int = 0
    hooks: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["now"] = self.now.isoformat()
        return out


def run(u: Unit, tenant_id: str, *, now: datetime) -> Report:
    """Delete what the lab's rules say is due at ``now`` (see the module docstring)."""
    if now.tzinfo is None:
        raise InvalidInput("a retention run needs a time with its time zone")
    u.authorise(tenant_id, "retention:run")
    u.tenant(tenant_id)
    rules = {r.category: r for r in store.rules(u, tenant_id, action=None)}
    if RESULTS not in rules:
        raise InvalidInput(
            f"lab '{tenant_id}' has no retention rule for results: the lab sets one with 'labvault retention set'"
        )
    scopes = {h.scope for h in store.holds(u, tenant_id, action=None) if h.active}
    report = Report(tenant_id, now)

    def is_held(category: str) -> bool:
        return EVERYTHING in scopes or category in scopes or (category != QUARANTINE and RESULTS in scopes)

    cutoffs = {c: now - timedelta(days=rules.get(c, rules[RESULTS]).days) for c in _RESULT_CATEGORIES if not is_held(c)}
    if cutoffs:
        counts = store.purge_results(u, tenant_id, cutoffs, request_cutoff=cutoffs.get(RESULTS))
        for c in _RESULT_CATEGORIES:  # results of a category without its own rule count under 'results'
            key = c if c in rules else RESULTS
            report.categories[key] = report.categories.get(key, 0) + counts[c]
        report.requests, report.specimens, report.identities = counts["request"], counts["specimen"], counts["patient"]
    if QUARANTINE in rules and not is_held(QUARANTINE):
        report.categories[QUARANTINE] = store.purge_quarantine(
            u, tenant_id, now - timedelta(days=rules[QUARANTINE].days)
        )
    for category in CATEGORIES:
        if category not in rules and category not in scopes:
            continue
        if is_held(category):
            report.held.append(category)
            u.audit(tenant_id, "retention:purge:held", category, 0)
        else:
            u.audit(tenant_id, "retention:purge", category, report.categories[category])
    if cutoffs:
        for kind, n in (("request", report.requests), ("specimen", report.specimens), ("patient", report.identities)):
            u.audit(tenant_id, "retention:purge", kind, n)
    if EVERYTHING not in scopes:
        for hook in HOOKS:
            for key, n in hook(u, tenant_id, now).items():
                report.hooks[key] = report.hooks.get(key, 0) + int(n)
    return report


def run_all(
    gateway: Gateway, principal: Principal, *, now: datetime, tenant_id: str | None = None
) -> tuple[list[Report], dict[str, str]]:
    """``run`` for one lab or every lab not shredded, each in its own transaction (what ``labvault
    retention run`` and the scheduler of ``labvault serve`` do). Returns the reports and, for
    every lab that could not be purged, the reason (one lab's failure does not stop the others;
    with ``tenant_id``, it is raised)."""
    from labvault.access import Purpose
    from labvault.errors import LabvaultError

    if tenant_id is None:
        with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
            labs = [t.id for t in u.list_tenants() if t.status != "shredded"]
    else:
        labs = [tenant_id]
    reports: list[Report] = []
    failed: dict[str, str] = {}
    for lab in labs:
        try:
            with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
                reports.append(run(u, lab, now=now))
        except LabvaultError as exc:
            if tenant_id is not None:
                raise
            failed[lab] = exc.diagnostics()
    return reports, failed


def end_delete(u: Unit, tenant_id: str, *, instruction_id: str | None = None) -> dict:
    """End a contract by deletion; returns the signed certificate (record id, body, signature, key).

    A real lab only under its signed deletion instruction (``instruction_id``, kind ``deletion``,
    scope ``lab``), re-checked now; a synthetic lab without one. The certificate names the ground."""
    from labvault.access import instructed

    u.authorise(tenant_id, "tenant:end")
    tenant = u.tenant(tenant_id)
    if tenant.status == "shredded":
        raise TenantShredded(f"lab '{tenant_id}' was already crypto-shredded")
    deletion = instructed.authorise_deletion(u, tenant_id, instruction_id, action="tenant:end")
    active = [h.hold_id for h in store.holds(u, tenant_id, action=None) if h.active]
    if active:
        raise InvalidInput(
            f"lab '{tenant_id}' is under {len(active)} legal hold(s) ({', '.join(active)}): "
            "its data cannot be deleted until the lab releases them"
        )
    now = utcnow()
    rows = store.delete_lab_rows(u, tenant_id)
    packages: dict[str, object] = {}
    for hook in END_HOOKS:
        packages.update(hook(u, tenant_id, now))
    shred = u.shred_tenant(tenant_id, instruction_id=instruction_id)  # on the ground checked above
    body = {
        "kind": "tenant-end",
        "tenant": tenant_id,
        "finess": tenant.finess,
        "synthetic": deletion["synthetic"],
        "instruction": deletion["instruction"],
        "at": now.isoformat(),
        "actor": u.principal.account_id,
        "actor_name": u.principal.name,
        "stores": [
            {"store": "database", "engine": u.dialect, "rows_deleted": rows},
            {
                "store": "key provider",
                "provider": shred["body"]["key_provider"],
                "scope": tenant_id,
                "scope_destroyed": True,
                "keys_destroyed": shred["body"]["keys_destroyed"],
                "shred_record": shred["record_id"],
            },
            {"store": "packages", "hooks": len(END_HOOKS), "destroyed": packages},
        ],
    }
    record = store.store_signed_record(u, tenant_id, "tenant-end", body)
    for table, n in rows.items():
        u.audit(tenant_id, "tenant:end:delete", table, n)
    u.audit(tenant_id, "tenant:end", "tenant", 1, refs=[record["record_id"]])
    return record


def certificates(u: Unit, tenant_id: str) -> list[dict]:
    """The lab's end-of-contract certificates, as stored."""
    return u.signed_records(tenant_id, "tenant-end")


def verify_certificate(u: Unit, record: dict) -> None:
    """Raises ``SignatureInvalid`` unless a platform signing key signed this certificate."""
    if record["public_key"] not in store.platform_public_keys(u):
        raise SignatureInvalid("the certificate was not signed by this platform's key")
    verify(record["body"], record["signature"], bytes.fromhex(record["public_key"]))
