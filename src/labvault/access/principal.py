"""Who acts (a named principal) and why (a purpose): the gateway needs both for every access."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from labvault.crypto.keys import PLATFORM


class Purpose(enum.StrEnum):
    CARE = "care"  # a lab reading or writing its patients' results
    INGEST = "ingest"  # feeds from analysers, middleware, other systems
    GENERATE = "generate"  # synthetic data
    ADMINISTRATION = "administration"  # tenants, keys, accounts
    BENCHMARK = "benchmark"
    DEMO = "demo"
    SUPPORT = "support"  # vendor support under a lab-approved grant
    EXPORT = "export"  # an export, migration or return under a lab's signed instruction
    AUTHENTICATION = "authentication"
    MONITORING = "monitoring"  # the audit stream's rules, alerts, canaries, outside reports
    BREACH = "breach"  # a leaked file's analysis, an incident, its notices, drafts and letters


@dataclass(frozen=True, slots=True)
class Principal:
    """A named account acting: ``tenant_id`` is its lab, or ``'platform'`` for vendor staff."""

    account_id: str
    name: str
    tenant_id: str = PLATFORM
    roles: frozenset[str] = field(default_factory=frozenset)
    kind: str = "person"  # or "service", or "system" (the platform's own process: policy.SYSTEM_PRINCIPALS)
    source_addr: str | None = None  # where the request came from (audit)
    user_agent: str | None = None

    @property
    def is_platform(self) -> bool:
        return self.tenant_id == PLATFORM


# The platform's own monitoring process: the audit stream's consumer and the alerts' dispatcher
# (``labvault serve``'s threads, ``labvault monitor run``, ``labvault alerts dispatch``). No account
# stands behind it and no one logs in as it: the gateway gives it the roles of
# ``policy.SYSTEM_PRINCIPALS`` (``monitor``: ``monitor:run``), for ``Purpose.MONITORING`` only.
MONITOR = Principal("system:monitor", "Monitoring", PLATFORM, frozenset({"monitor"}), "system")
