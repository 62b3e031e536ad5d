"""The incident register (GDPR Art. 33(5), I1..I5): open an incident (the processor's, over the labs
of a leak analysis, or a lab's own), its ENISA score prefilled, each lab's 72-hour clock and its
reminders at 24, 48 and 66 hours, the processor's notice to each lab, each lab's Art. 33(3) draft,
its decisions, and the Art. 34 letters or the recorded exemption.

Every read and write goes through the gateway (``labvault.access.incidents``), which authorises,
seals and audits; this module composes the documents (``notices``, ``letters``, ``severity``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labvault.access.incidents import REMINDERS, Incident, LabPart, Scope, Version
from labvault.breach import letters as letter_docs
from labvault.breach import notices, severity
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.lab.render import fr_date

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

# Raises an alert on a lab (the monitoring's ``raise_alert``, given by ``labvault.monitoring.dispatch``):
# (unit, tenant, rule id, severity, title, group, references) -> the alert's id.
AlertSink = Callable[["Unit", str, str, str, str, str, tuple[str, ...]], "str | None"]

REMINDER_SEVERITY = {24: "medium", 48: "high", 66: "critical"}
DEFAULT_MEASURES = (
    "accès au stockage en cause révoqués et secrets renouvelés",
    "demande de retrait du fichier adressée à l'hébergeur",
    "analyse du fichier pour déterminer les personnes et les données concernées",
)


def open_incident(
    u: Unit,
    *,
    title: str,
    aware_at: datetime,
    analysis_id: str | None = None,
    advisory_id: str | None = None,
    tenant: str | None = None,
    labs: Sequence[str] = (),
    kind: str = "confidentiality",
    circumstances: Sequence[str] = ("public", "malicious"),
    occurred_at: datetime | None = None,
    facts: Mapping[str, str] | None = None,
) -> Incident:
    """I1: register an incident, its ENISA score prefilled from the analysis (each lab's own, and the
    whole incident's). ``tenant``: a lab for its own incident (default: the caller's)."""
    owner = tenant or u.principal.tenant_id
    scopes = _scopes(u, analysis_id, owner) if analysis_id else {}
    lab_severity = {lab: severity.score(sc.categories, sc.fields, circumstances) for lab, sc in scopes.items()}
    all_cats: dict[str, int] = {}
    all_fields: set[str] = set()
    for sc in scopes.values():
        all_fields.update(sc.fields)
        for c, n in sc.categories.items():
            all_cats[c] = all_cats.get(c, 0) + n
    overall = severity.score(all_cats, sorted(all_fields) or ("nir", "value"), circumstances)
    return u.incident_open(
        title=title,
        aware_at=aware_at,
        owner=owner,
        kind=kind,
        labs=labs,
        scopes=scopes,
        severity=overall,
        lab_severity=lab_severity,
        analysis_id=analysis_id,
        advisory_id=advisory_id,
        occurred_at=occurred_at,
        facts=facts,
    )


def _scope(u: Unit, lab: str, analysis_id: str) -> Scope | None:
    """One lab's counts of a leak analysis (``Unit.leak_match``), None when it found nothing there."""
    try:
        m = u.leak_match(lab, analysis_id)
    except NotFound:
        return None
    return Scope(lab, m.patients, m.records, m.ambiguous, dict(m.categories), tuple(m.fields))


def _scopes(u: Unit, analysis_id: str, owner: str) -> dict[str, Scope]:
    """Each lab's counts: every lab of the processor's analysis, or the lab's own part."""
    labs = u.leak_analysis(analysis_id).labs if owner == PLATFORM else (owner,)
    found = {lab: _scope(u, lab, analysis_id) for lab in labs}
    return {lab: sc for lab, sc in found.items() if sc is not None}


def _fields_of(u: Unit, inc: Incident, lab: str) -> list[str]:
    if not inc.analysis_id:
        return []
    sc = _scope(u, lab, inc.analysis_id)
    return list(sc.fields) if sc else []


def send_notices(u: Unit, incident_id: str, *, measures: Sequence[str] = ()) -> list[Version]:
    """I2, I5: the processor's notice to each lab of its incident (a new version each time: the
    first initial, then complementary); each holds that lab's scope only."""
    inc = u.incident(incident_id, PLATFORM)
    name, email = u.incident_contact()
    bodies: dict[str, dict[str, Any]] = {}
    for part in inc.parts:
        t = u.tenant(part.tenant_id)
        bodies[part.tenant_id] = notices.notice_body(
            incident={
                "incident_id": inc.incident_id,
                "title": inc.title,
                "kind": inc.kind,
                "aware_at": inc.aware_at.isoformat(),
                "occurred_at": None if inc.occurred_at is None else inc.occurred_at.isoformat(),
            },
            lab={"id": t.id, "name": t.name, "finess": t.finess},
            part=part.public(),
            fields=_fields_of(u, inc, part.tenant_id),
            contact={"name": name, "email": email},
            measures=list(measures) or list(DEFAULT_MEASURES),
        )
    return u.incident_notice(inc.incident_id, bodies)


def draft(
    u: Unit,
    incident_id: str,
    tenant: str,
    *,
    measures_taken: Sequence[str] = (),
    measures_proposed: Sequence[str] = (),
) -> Version:
    """I3: a new version of the lab's Art. 33(3) draft (its own lab_admin or lab_dpo)."""
    inc = u.incident(incident_id, tenant)
    part = inc.part(tenant)
    kept = u.incident_versions(incident_id, tenant, "notice")
    notice = kept[-1].body if kept else None
    reasons = u.incident_reasons(incident_id, tenant)
    t = u.tenant(tenant)
    body = notices.art33_body(
        incident={
            "incident_id": inc.incident_id,
            "title": inc.title,
            "kind": inc.kind,
            "occurred_at": None if inc.occurred_at is None else inc.occurred_at.isoformat(),
        },
        lab={"id": t.id, "name": t.name, "finess": t.finess, "address": t.address},
        part={**part.public(), "owner": part.owner},
        notice=notice,
        dpo=u.incident_dpo(tenant),
        measures_taken=measures_taken,
        measures_proposed=measures_proposed,
        delay_reason=reasons.get("delay"),
    )
    return u.incident_draft(incident_id, tenant, body)


def render(version: Version, fmt: str) -> bytes:
    """A kept version as JSON, HTML or PDF."""
    import json

    if fmt == "json":
        return json.dumps(version.body, ensure_ascii=False, indent=2, sort_keys=True).encode()
    if fmt == "html":
        return notices.render_html(version.body).encode()
    if fmt == "pdf":
        return notices.render_pdf(version.body)
    raise InvalidInput("the format is one of json, html, pdf")


def letters(u: Unit, incident_id: str, tenant: str, *, patients: Sequence[str] | None = None) -> list[bytes]:
    """Art. 34: one PDF letter per affected patient of the lab (its DPO), in memory; the count recorded."""
    inc = u.incident(incident_id, tenant)
    part = inc.part(tenant)
    people = u.incident_addressees(incident_id, tenant, patients)
    t = u.tenant(tenant)
    kept = u.incident_versions(incident_id, tenant, "notice")
    fields = list(kept[-1].body.get("fields") or []) if kept else _fields_of(u, inc, tenant)
    pdfs = letter_docs.render_letters(
        people,
        lab={"id": t.id, "name": t.name, "address": t.address},
        fields=fields,
        categories=part.categories,
        dpo=u.incident_dpo(tenant),
        when=fr_date(utcnow()),
        authority="notified" if part.notified_at is not None else "notifying",
    )
    u.incident_letters_written(incident_id, tenant, len(pdfs))
    return pdfs


def write_letters(
    u: Unit, incident_id: str, tenant: str, out_dir: Path, *, patients: Sequence[str] | None = None
) -> list[Path]:
    """The letters written to ``out_dir`` (created), named by rank only (``lettre-00001.pdf``)."""
    pdfs = letters(u, incident_id, tenant, patients=patients)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, pdf in enumerate(pdfs, 1):
        path = out_dir / f"lettre-{n:05d}.pdf"
        path.write_bytes(pdf)
        paths.append(path)
    return paths


# -- the clock: reminders by the monitoring process ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reminder:
    tenant_id: str
    incident_id: str
    kind: str  # notice, reminder-24h, reminder-48h, reminder-66h
    alert_id: str | None


def due_hour(part: LabPart, now: datetime) -> int | None:
    """The latest reminder hour passed and not yet sent (a missed pass sends only the latest)."""
    elapsed = now - part.aware_at
    passed = [h for h in REMINDERS if elapsed >= timedelta(hours=h)]
    if not passed or len(passed) <= part.reminders:
        return None
    return passed[-1]


def remind(u: Unit, *, now: datetime | None = None, alert: AlertSink) -> list[Reminder]:
    """I3: one pass of ``system:monitor``: each notice not yet delivered, and each lab clock past 24,
    48 or 66 hours, raised as an alert on the lab (its channels get it); references only."""
    at = now or utcnow()
    out: list[Reminder] = []
    for lab, incident_id, version in u.incident_pending_notices():
        alert_id = alert(
            u, lab, "incident-notice", "high", "Breach notice from the processor: the 72-hour clock runs",
            incident_id, (incident_id, f"v{version}"),
        )  # fmt: skip
        u.incident_notice_sent(lab, incident_id, version, alert_id)
        out.append(Reminder(lab, incident_id, "notice", alert_id))
    for part in u.incident_clocks():
        hour = due_hour(part, at)
        if hour is None or not u.incident_claim_reminder(part.tenant_id, part.incident_id, hour):
            continue  # nothing due, or another pass sent it
        left = max(0, 72 - hour)
        alert_id = alert(
            u, part.tenant_id, f"incident-clock-{hour}h", REMINDER_SEVERITY[hour],
            f"Incident: {left} hours left to notify the authority (GDPR Art. 33)", part.incident_id,
            (part.incident_id, f"{hour}h"),
        )  # fmt: skip
        u.incident_reminded(part.tenant_id, part.incident_id, hour, alert_id)
        out.append(Reminder(part.tenant_id, part.incident_id, f"reminder-{hour}h", alert_id))
    return out
