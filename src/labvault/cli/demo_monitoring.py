"""The demo's monitoring step (scenario rows 4, 5, 6; H1, H2, H3): what nobody watched in 2020.

The lab plants a canary and sets its opening hours (chosen so that now is outside them: the demo
runs "at night" for the lab without faking a clock). A vendor support account, under a grant the
lab approved, reads hundreds of the lab's patients, asks for an export beyond any instruction, and
opens the canary. The rules on the audit stream run once (the consumer ``labvault serve`` runs
every second) and the alerts are shown: rule, severity, on-call level, references only. Then an
outside report about 56 leaked lines is registered; it cannot close before its breach assessment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.cli.common import console
from labvault.cli.demo import DEMO_PASSWORD, DemoAccount, lab_admin_of
from labvault.crypto.keys import PLATFORM
from labvault.errors import LabvaultError
from labvault.synth import LabGenerator

READS = 320  # above the shipped bulk-read threshold (300 distinct records per account in an hour)
SUPPORT_EMAIL = "support@vendor.demo.invalid"


def _say(text: str) -> None:
    console.print(f"  {text}", highlight=False, markup=False)


def hours_excluding_now(zone: str, now: datetime | None = None) -> str:
    """Opening hours (every day, one hour, 11 to 12 hours away) that exclude the current time in ``zone``."""
    local = (now or datetime.now(UTC)).astimezone(ZoneInfo(zone))
    start = min((local.hour + 12) % 24, 22)
    return f"mon-sun {start:02d}:00-{start + 1:02d}:00"


def _support(rt, accounts: list[DemoAccount]) -> Principal:
    """The vendor's support account: added by the platform, enrolled (password and TOTP), logged in."""
    from labvault.cli.demo_migration import _login

    password = DEMO_PASSWORD.format(k=len(accounts) + 1)
    with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=PLATFORM, name="Marc Perrin", email=SUPPORT_EMAIL, roles=["support"])
    with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
        secret = service.enrol_directly(u, SUPPORT_EMAIL, password)
    a: DemoAccount = {
        "tenant": PLATFORM,
        "role": "support",
        "email": SUPPORT_EMAIL,
        "password": password,
        "totp": secret,
    }
    accounts.append(a)
    return _login(rt, a)


def show_monitoring(rt, tenant: str, accounts: list[DemoAccount], seed: int, loaded: int) -> None:
    """The step; ``loaded``: how many generated patients the lab holds (the support reads up to ``READS``)."""
    from labvault.access import grants
    from labvault.cli.demo_migration import _login
    from labvault.migration import service as migration
    from labvault.monitoring import advisories, alerts, canaries, rules
    from labvault.monitoring.consumer import Consumer

    admin = lab_admin_of(rt, tenant)
    with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        zone = u.tenant(tenant).timezone
        hours = hours_excluding_now(zone)
        u.set_lab_details(tenant, working_hours=hours)
    with rt.gateway.unit(admin, Purpose.MONITORING) as u:
        canary = canaries.seed(u, tenant, 1)[0]
    _say(f"le laboratoire / the lab: horaires '{hours}' ({zone}): il est maintenant hors horaires / now is off-hours")
    _say(f"le laboratoire plante un leurre / the lab plants a canary: marker {canary.marker[:16]}…")

    support = _support(rt, accounts)
    patients = [r.identity.patient_id for r in LabGenerator(tenant, seed).patients(min(READS, loaded))]
    named = [*patients, canary.patient_id] if canary.patient_id else patients
    with rt.gateway.unit(support, Purpose.SUPPORT) as u:
        g = grants.request_grant(
            u,
            tenant,
            ticket="SUP-0300",
            reason="results shown with a wrong unit",
            hours=2,
            fields=["identity"],
            patients=named,
        )
    with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        grants.approve_grant(u, tenant, g.grant_id)
    _say(f"{SUPPORT_EMAIL}: grant {g.grant_id} (ticket SUP-0300, {len(named)} named patients) approved by the lab")
    with rt.gateway.unit(support, Purpose.SUPPORT) as u:
        for pid in patients:
            u.get_patient(tenant, pid)
    _say(f"le support lit {len(patients)} dossiers, la nuit / support reads {len(patients)} patients off-hours")
    try:
        with rt.gateway.unit(support, Purpose.EXPORT) as u:
            migration.plan(u, tenant, "MIG-2021-NEWLIS", ask=migration.Ask(fields=migration.ALL_FIELDS))
    except LabvaultError as exc:
        _say(f"le support demande un export complet / asks for a full export: REFUSED ({exc.diagnostics()})")
    if canary.patient_id:
        with rt.gateway.unit(support, Purpose.SUPPORT) as u:
            u.get_patient(tenant, canary.patient_id)
        _say("le support ouvre le dossier leurre / support opens the canary (recorded as canary:touch)")

    consumer = Consumer(rt.gateway, rt.monitor, rules.load(rules.default_path(rt.settings.home)))
    found = consumer.drain()
    officer = _login(rt, next(a for a in accounts if a["role"] == "security_officer"))
    with rt.gateway.unit(officer, Purpose.MONITORING) as u:  # the vendor's security officer reads them
        listed = alerts.list_alerts(u, tenant, state="open")
    mine = f"actor={support.account_id}"
    raised = [a for a in listed if a.dedup_key.endswith(mine) or a.rule_id == "canary-touched"]
    _say(f"les règles sur le journal d'audit / the rules on the audit stream ({len(found)} findings in one pass):")
    order = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    for a in sorted(raised, key=lambda a: (order.get(a.severity, 9), a.rule_id)):
        _say(
            f"  ALERTE {a.severity.upper():<8} {a.rule_id:<17} niveau/level {a.level}  {a.event_count:>4} events  "
            f"refs: {len(a.refs)} ids ({a.refs[0][:12]}…), à acquitter avant / ack due {a.ack_due:%H:%M} UTC"
        )
    _say("(références seulement / references only: ids, never a name or NIR; under labvault serve they are e-mailed")
    _say(" within seconds and escalate to the next on-call level until someone acknowledges them)")

    with rt.gateway.unit(officer, Purpose.MONITORING) as u:
        adv = advisories.add(
            u,
            source="anssi",
            severity="critical",
            owner=officer.account_id,
            summary="ANSSI: a file of 56 lines of the lab's patients found online",
            reference="ANSSI-2020-56",
            labs=[tenant],
        )
    _say(
        f"signalement externe / outside report {adv.advisory_id}: ANSSI, 56 lignes divulguées / 56 leaked lines, "
        f"critical, owner {officer.name}, deadline {adv.deadline:%Y-%m-%d %H:%M} UTC"
    )
    try:
        with rt.gateway.unit(officer, Purpose.MONITORING) as u:
            advisories.close(u, adv.advisory_id)
    except LabvaultError as exc:
        _say(f"clore sans évaluation / close without assessment: REFUSED ({exc.diagnostics()})")
    with rt.gateway.unit(officer, Purpose.MONITORING) as u:
        advisories.assess(
            u, adv.advisory_id, breach="yes", reasoning="The 56 lines match patients of the lab.", notify_labs=True
        )
    with rt.gateway.unit(officer, Purpose.MONITORING) as u:
        closed = advisories.close(u, adv.advisory_id)
    _say(f"évalué (violation : oui, labs informés) puis clos / assessed (breach: yes, labs told), then: {closed.state}")
