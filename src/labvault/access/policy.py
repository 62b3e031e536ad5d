"""The one policy table: which role may do which action. Enforced in the gateway, not in routes.

Deny by default: an action not listed for any of a principal's roles is refused. Lab roles act
on their own lab only; vendor roles never read personal data (``patient:*:read``/``search``)
except ``support`` through an approved, unexpired grant of that lab (see ``grants``).
"""

from __future__ import annotations

import enum

from labvault.domain.models import Sensitivity


class Role(enum.StrEnum):
    # lab side (one tenant)
    BIOLOGIST = "biologist"
    TECHNICIAN = "technician"
    LAB_ADMIN = "lab_admin"
    LAB_DPO = "lab_dpo"
    SERVICE = "service"  # machine feeds: token-only, one tenant, one purpose
    # vendor side (platform)
    OPERATOR = "operator"
    SUPPORT = "support"
    SECURITY_OFFICER = "security_officer"
    PLATFORM_ADMIN = "platform_admin"
    # the platform's own processes (never an account's role)
    MONITOR = "monitor"  # the audit stream's consumer and the alerts' dispatcher (system:monitor)


LAB_ROLES = frozenset({Role.BIOLOGIST, Role.TECHNICIAN, Role.LAB_ADMIN, Role.LAB_DPO, Role.SERVICE})
VENDOR_ROLES = frozenset({Role.OPERATOR, Role.SUPPORT, Role.SECURITY_OFFICER, Role.PLATFORM_ADMIN})
# lab_dpo opens patients' identities (the Art. 34 letters' names and addresses, who saw a patient):
# like lab_admin, a second factor.
MFA_REQUIRED = VENDOR_ROLES | {Role.LAB_ADMIN, Role.LAB_DPO}
# Roles held by the platform's own processes, each by one system principal (``SYSTEM_PRINCIPALS``):
# never given to an account (``valid_role`` refuses them), never read from an account's row.
SYSTEM_ROLES = frozenset({Role.MONITOR})
# Actions only a system principal performs, whatever role an account would hold.
SYSTEM_ACTIONS = frozenset({"monitor:run"})

READ_PERSONAL = frozenset(
    {
        "patient:identity:search",
        "patient:identity:read",
        "patient:request:read",
        "patient:result:read",
        "quarantine:read",  # refused messages hold whole identities and results, encrypted
    }
)
WRITE_PERSONAL = frozenset(
    {
        "patient:identity:create",
        "patient:request:create",
        "patient:specimen:create",
        "patient:result:create",
        "prescriber:create",
    }
)
# Whole-lab reads a vendor operator may do while working under a lab's signed instruction
# (an export or a migration), and never otherwise.
INSTRUCTED_READS = frozenset({"patient:identity:read", "patient:request:read", "patient:result:read"})
# Replaying or dropping a refused message: lab staff only, never a feed's service account.
MANAGE_PERSONAL = frozenset({"quarantine:manage"})
# Identity vigilance (labvault.identity): reading the queue of messages whose identity conflicts,
# resolving them (attach, create, reject: resolving stores the message's records), merging and
# unmerging identities, changing an identity's status. The lab's staff who write its records
# (biologists, technicians); the lab_admin reads the queue, as it reads the quarantine, but stores
# no medical record; a feed merges only as its HIS says (HL7 ADT^A40: ``identity:merge:hl7``).
IDENTITY_VIGILANCE = frozenset(
    {"identity:queue:read", "identity:resolve", "identity:merge", "identity:status", "identity:merge:hl7"}
)

# The migration procedure (labvault.migration): the vendor's operator plans, approves (one of the
# two approvals; the other is a lab signer's signature), runs and closes; the lab reads its state.
MIGRATION_WORK = frozenset(
    {
        "migration:plan",
        "migration:approve",
        "migration:run",
        "migration:verify",
        "migration:receipt",
        "migration:purge",
        "migration:close",
        "migration:read",
    }
)

# The lab's test catalogue and auto-validation rules (labvault.lab): every lab role reads them; the
# lab_admin and biologists load a catalogue and write rules; only a biologist puts rules in force.
# No vendor role holds any of them: the vendor never sets how a lab judges its results.
CATALOGUE_READ = frozenset({"catalogue:read"})
CATALOGUE_WRITE = frozenset({"catalogue:load", "rules:write"})

# The lab's daily work (labvault.access.work, labvault.lab.work): requests entered by hand, the
# specimens' life, results entered by hand, technical and biological validation, critical values'
# call-back tasks. Lab roles only: no vendor role holds any of these, under a grant or not.
LAB_WORK = frozenset(
    {
        "request:enter",
        "specimen:event",
        "result:enter",
        "result:validate:technical",
        "result:validate:biological",
        "callback:manage",
        "callback:read",
    }
)
BIOLOGIST_WORK = LAB_WORK
TECHNICIAN_WORK = LAB_WORK - {"result:validate:biological"}
LAB_ADMIN_WORK = frozenset({"request:enter", "callback:read"})

# The lab's reports (labvault.lab.reports): a biologist issues a request's report (partial, final,
# corrected); biologists and technicians read the issued ones again. Sending results to the
# prescriber is the lab's own care: no vendor role holds either, under a grant or not.
REPORT_WORK = frozenset({"report:issue", "report:read"})
BIOLOGIST_REPORTS = REPORT_WORK
TECHNICIAN_REPORTS = REPORT_WORK - {"report:issue"}

# Monitoring (labvault.monitoring): alerts hold references only, never a personal value. A lab's
# admin and DPO see, acknowledge and resolve their lab's alerts, set the lab's own channels (where
# its alerts and signed checkpoints go), plant canaries and review the accesses its relations do
# not explain; the vendor's security officer reads a lab's alerts (references), answers the
# platform's alerts and outside reports. ``monitor:run`` (the consumer, the dispatcher: cursors,
# deliveries, channels' keys) is no person's: the system principal ``system:monitor`` alone holds it.
ALERT_WORK = frozenset({"alert:read", "alert:ack", "alert:resolve"})
LAB_MONITORING = ALERT_WORK | {"channel:manage", "canary:seed", "canary:list", "access:review", "advisory:notice"}
ADVISORY_WORK = frozenset({"advisory:read", "advisory:manage"})

# Breach response (labvault.breach): the vendor's security officer analyses a leaked file against
# every lab's blind indexes (``breach:analyze``: counts per lab, nothing decrypted; the affected
# patients' ids are sealed with each lab's key and every lab's trail records the analysis), opens
# the processor's incident and sends each lab its notice (``incident:manage``); each lab reads its
# own part (``incident:read``); its DPO and admin decide on notifying the authority and the patients
# (``incident:decide``); only the lab's DPO opens the affected list and addresses the letters
# (``incident:letters``: decrypted under the incident's purpose, audited). No vendor role holds
# ``incident:decide`` or ``incident:letters``.
INCIDENT_LAB = frozenset({"incident:read", "incident:decide", "incident:manage"})
INCIDENT_VENDOR = frozenset({"breach:analyze", "incident:read", "incident:manage"})

POLICY: dict[Role, frozenset[str]] = {
    Role.BIOLOGIST: READ_PERSONAL
    | WRITE_PERSONAL
    | MANAGE_PERSONAL
    | IDENTITY_VIGILANCE
    | CATALOGUE_READ
    | CATALOGUE_WRITE
    | BIOLOGIST_WORK
    | BIOLOGIST_REPORTS
    | {"tenant:read", "rules:activate"},
    Role.TECHNICIAN: READ_PERSONAL
    | WRITE_PERSONAL
    | MANAGE_PERSONAL
    | IDENTITY_VIGILANCE
    | CATALOGUE_READ
    | TECHNICIAN_WORK
    | TECHNICIAN_REPORTS
    | {"tenant:read"},
    Role.LAB_ADMIN: READ_PERSONAL
    | MANAGE_PERSONAL
    | CATALOGUE_READ
    | CATALOGUE_WRITE
    | LAB_ADMIN_WORK
    | LAB_MONITORING
    | {
        "identity:queue:read",
        "tenant:read",
        "tenant:settings",
        "account:manage",
        "account:list",
        "grant:approve",
        "grant:revoke",
        "grant:list",
        "token:manage",
        "audit:read",
        "audit:verify",
        "audit:retention",
        "audit:pull",
        "audit:identity",
        "signer:manage",
        "signer:list",
        "instruction:receive",
        "instruction:read",
        "migration:read",
        "retention:manage",
        "retention:read",
        "feed:manage",  # pin a feed's client certificate on a service account of the lab
    }
    | INCIDENT_LAB,
    Role.LAB_DPO: CATALOGUE_READ
    | LAB_MONITORING
    | frozenset(
        {
            "tenant:read",
            "account:list",
            "grant:list",
            "grant:revoke",
            "audit:read",
            "audit:verify",
            "audit:pull",
            "audit:identity",
            "audit:retention",
            "signer:list",
            "instruction:read",
            "migration:read",
            "retention:read",
        }
    )
    | INCIDENT_LAB
    | {"incident:letters", "breach:analyze"},
    Role.SERVICE: WRITE_PERSONAL | CATALOGUE_READ | {"tenant:read", "identity:merge:hl7"},
    Role.OPERATOR: frozenset(
        {
            "tenant:create",
            "tenant:list",
            "tenant:read",
            "keys:rotate",
            "account:list",
            "account:invite-admin",
            "generate",
            "audit:checkpoint",
            "audit:verify",
            "audit:purge",
            "signer:list",
            "instruction:receive",
            "instruction:read",
            "retention:read",
            "retention:run",
        }
    )
    | MIGRATION_WORK,
    # support reads personal data only under a grant: those actions are added per grant, not here
    Role.SUPPORT: frozenset({"tenant:list", "tenant:read", "grant:request", "grant:list"}),
    Role.SECURITY_OFFICER: frozenset(
        {
            "tenant:list",
            "tenant:read",
            "account:list",
            "grant:list",
            "grant:revoke",
            "account:suspend",
            "audit:read",
            "audit:verify",
            "audit:checkpoint",
            "signer:list",
            "instruction:read",
            "migration:read",
            "channel:manage",
        }
    )
    | ALERT_WORK
    | ADVISORY_WORK
    | INCIDENT_VENDOR,
    Role.PLATFORM_ADMIN: frozenset(
        {
            "tenant:create",
            "tenant:list",
            "tenant:read",
            "tenant:shred",
            "tenant:drop",
            "keys:rotate",
            "account:manage",
            "account:list",
            "account:suspend",
            "account:invite-admin",
            "token:manage",
            "generate",
            "grant:list",
            "audit:checkpoint",
            "audit:verify",
            "audit:purge",
            "signer:list",
            "instruction:receive",
            "instruction:read",
            "migration:read",
            "migration:purge",
            "retention:read",
            "retention:run",
            "tenant:end",
            "channel:manage",
            "alert:read",
            "advisory:read",
            "incident:read",
        }
    ),
    # The lab's daily access review (references only) is computed by it for the lab's own e-mail channels.
    Role.MONITOR: frozenset({"monitor:run", "tenant:list", "tenant:read", "access:review", "incident:remind"}),
}

# The platform's own processes that act in units of work (``Principal.kind == "system"``): their
# roles come from here, never from the principal handed to the gateway.
SYSTEM_PRINCIPALS: dict[str, frozenset[str]] = {"system:monitor": frozenset({Role.MONITOR.value})}

# A lab's people are the lab's: on a lab, these are its own lab_admin's alone, whatever a vendor
# role holds them for (``account:manage`` and ``token:manage`` name the vendor's own accounts when
# the platform admin holds them). The vendor invites a lab's first lab_admin (``account:invite-admin``)
# and may suspend an account for security (``account:suspend``); nothing else.
LAB_PEOPLE = frozenset({"account:manage", "token:manage"})

# Actions a support grant adds, by the fields it names.
GRANT_FIELDS: dict[str, frozenset[str]] = {
    "identity": frozenset({"patient:identity:search", "patient:identity:read"}),
    "requests": frozenset({"patient:request:read"}),
    "results": frozenset({"patient:result:read"}),
}

# Who may read each sensitive category unless the lab decides otherwise (tenant.sensitive_access).
DEFAULT_SENSITIVE_ACCESS: dict[str, list[str]] = {
    Sensitivity.HIV: ["biologist"],
    Sensitivity.VIRAL_HEPATITIS: ["biologist", "technician"],
    Sensitivity.GENETICS: ["biologist"],
    Sensitivity.PREGNANCY: ["biologist", "technician"],
    Sensitivity.ONCOLOGY: ["biologist", "technician"],
}


def allowed(roles: frozenset[str], action: str) -> bool:
    return any(action in POLICY.get(Role(r), frozenset()) for r in roles if r in Role.__members__.values())


def valid_role(role: str) -> Role:
    """A role an account may hold: a system role (``SYSTEM_ROLES``) is refused like an unknown one."""
    from labvault.errors import InvalidInput

    try:
        found = Role(role)
    except ValueError:
        found = None
    if found is not None and found in SYSTEM_ROLES:
        raise InvalidInput(f"role '{role}' belongs to the platform's own processes, never to an account")
    if found is None:
        names = ", ".join(r.value for r in Role if r not in SYSTEM_ROLES)
        raise InvalidInput(f"unknown role '{role}': one of {names}")
    return found
