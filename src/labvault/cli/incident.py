"""``labvault incident``: the incident register (GDPR Art. 33(5)), each lab's 72-hour clock, the
processor's notices, the Art. 33 drafts and the Art. 34 letters.

The vendor's security officer opens the processor's incident (``open --analysis``: one part per lab
of the leak analysis) and sends each lab its notice (``notice``); a lab's lab_admin or lab_dpo opens
its own (``open --tenant LAB``), drafts its notification to the authority (``draft``), decides
(``decide``), records the notification (``notified``: past the 72 hours a reason for the delay is
required); its lab_dpo writes the letters (``letters``) or the lab records the Art. 34(3) exemption
(``exempt``). ``remind`` runs the clock's pass as the platform's monitoring process. Output: JSON,
references and counts; facts and reasoning are read from files (they may quote personal data).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from labvault.access import Purpose
from labvault.access.incidents import Incident
from labvault.breach import incidents, severity
from labvault.cli.common import AS_OPTION_HELP, acting, as_utc, read_text_file, runtime
from labvault.errors import InvalidInput
from labvault.monitoring import dispatch

app = typer.Typer(help="Incidents: open, list, show, notices, drafts, decisions, letters.", no_args_is_help=True)

TEXT_HELP = "A file holding the text, or '-' for standard input (it may quote personal data)."
TENANT_HELP = "The lab whose part is meant (a lab account's own lab; default: the caller's)."


def _read(path: str | None) -> str | None:
    return None if path is None else read_text_file(path)


_when = as_utc


def _emit(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))


def _show(inc: Incident) -> None:
    out = inc.public()
    if inc.facts is not None:
        out["facts"] = inc.facts
    _emit(out)


@app.command("open")
def open_(
    title: str = typer.Option(..., "--title", help="A title without personal data."),
    aware_at: datetime = typer.Option(..., "--aware-at", help="When the owner became aware (ISO, UTC if no zone)."),
    analysis: str = typer.Option(None, "--analysis", help="The leak analysis: its labs and counts."),
    advisory: str = typer.Option(None, "--advisory", help="The outside report it came from."),
    tenant: str = typer.Option(None, "--tenant", help="A lab's own incident (default: the caller's tenant)."),
    lab: list[str] = typer.Option(None, "--lab", help="A lab concerned (the processor's incident); repeat."),
    kind: str = typer.Option("confidentiality", "--kind", help="confidentiality, integrity or availability."),
    facts_file: str = typer.Option(None, "--facts-file", help=TEXT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Register an incident (Art. 33(5)); its ENISA score is prefilled from the analysis."""
    facts = _read(facts_file)
    with acting(as_email, Purpose.BREACH) as u:
        inc = incidents.open_incident(
            u,
            title=title,
            aware_at=_when(aware_at) or aware_at,
            analysis_id=analysis,
            advisory_id=advisory,
            tenant=tenant,
            labs=lab or (),
            kind=kind,
            facts={"facts": facts} if facts else None,
        )
    _show(inc)


@app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant", help=TENANT_HELP),
    state: str = typer.Option(None, "--state", help="open, contained or closed."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The register (one JSON line per incident; a lab sees its own part only)."""
    with acting(as_email, Purpose.BREACH) as u:
        rows = u.incidents(tenant, state=state)
    for inc in rows:
        _emit(inc.public())


@app.command("show")
def show(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(None, "--tenant", help=TENANT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One incident, with its timeline (the owner's people see its facts)."""
    with acting(as_email, Purpose.BREACH) as u:
        inc = u.incident(incident_id, tenant)
        steps = u.incident_timeline(incident_id, tenant)
    out = inc.public()
    out["facts"] = inc.facts
    out["timeline"] = [s.public() for s in steps]
    _emit(out)


@app.command("update")
def update(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    facts_file: str = typer.Option(None, "--facts-file", help=TEXT_HELP),
    effects_file: str = typer.Option(None, "--effects-file", help=TEXT_HELP),
    remedial_file: str = typer.Option(None, "--remedial-file", help=TEXT_HELP),
    state: str = typer.Option(None, "--state", help="open or contained."),
    dpc: float = typer.Option(None, "--dpc", help="ENISA data processing context (1..4)."),
    ei: float = typer.Option(None, "--ei", help="ENISA ease of identification (0.25..1)."),
    cb: float = typer.Option(None, "--cb", help="ENISA circumstances of the breach (0..2)."),
    reason_file: str = typer.Option(None, "--severity-reason-file", help=TEXT_HELP),
    tenant: str = typer.Option(None, "--tenant", help="The owner: a lab for its own incident."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Update the facts, effects, remedial action, state or severity (a reason required)."""
    facts = {k: v for k, v in (("facts", _read(facts_file)), ("effects", _read(effects_file)),
                               ("remedial", _read(remedial_file))) if v}  # fmt: skip
    with acting(as_email, Purpose.BREACH) as u:
        score = None
        if dpc is not None or ei is not None or cb is not None:
            base = u.incident(incident_id, tenant).severity or severity.score({}, ())
            score = severity.edited(base, dpc=dpc, ei=ei, cb=cb)
        inc = u.incident_update(
            incident_id, tenant_id=tenant, facts=facts, severity=score, severity_reason=_read(reason_file), state=state
        )
    _show(inc)


@app.command("close")
def close(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(None, "--tenant", help="The owner: a lab for its own incident."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Close an incident (a lab's own: once it decided)."""
    with acting(as_email, Purpose.BREACH) as u:
        _show(u.incident_close(incident_id, tenant))


@app.command("notice")
def notice(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    measure: list[str] = typer.Option(None, "--measure", help="A measure taken or proposed; repeat."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The processor's notice to each lab (SCC 2021/915 clause 9.2; initial, then complementary),
    then delivered to each lab's channels by the monitoring process."""
    with acting(as_email, Purpose.BREACH) as u:
        done = incidents.send_notices(u, incident_id, measures=measure or ())
    with runtime() as rt, rt.gateway.unit(rt.monitor, Purpose.MONITORING) as u:
        sent = dispatch.remind_incidents(u)
    alerts = {(r.tenant_id, r.incident_id): r.alert_id for r in sent if r.kind == "notice"}
    for v in done:
        _emit({"tenant": v.tenant_id, "version": v.version, "phase": v.phase, "sha256": v.sha256,
               "alert": alerts.get((v.tenant_id, v.incident_id))})  # fmt: skip


@app.command("draft")
def draft(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab whose draft it is."),
    fmt: str = typer.Option("json", "--format", help="json, html or pdf."),
    output: Path = typer.Option(..., "--output", help="The file to write."),
    new: bool = typer.Option(False, "--new", help="Write a new (complementary) version first."),
    version: int = typer.Option(None, "--version", help="A kept version (default: the latest)."),
    measure_taken: list[str] = typer.Option(None, "--measure-taken", help="A measure taken; repeat."),
    measure_proposed: list[str] = typer.Option(None, "--measure-proposed", help="A measure proposed; repeat."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's Art. 33(3) draft (French), as JSON (CNIL form fields), HTML or PDF; versions kept."""
    if fmt not in ("json", "html", "pdf"):
        raise InvalidInput("the format is one of json, html, pdf")
    with acting(as_email, Purpose.BREACH) as u:
        kept = u.incident_versions(incident_id, tenant, "art33")
        if new or not kept:
            kept.append(
                incidents.draft(
                    u, incident_id, tenant, measures_taken=measure_taken or (), measures_proposed=measure_proposed or ()
                )
            )
    chosen = kept[-1] if version is None else next((v for v in kept if v.version == version), None)
    if chosen is None:
        raise InvalidInput("no such version of the draft")
    output.write_bytes(incidents.render(chosen, fmt))
    _emit({"tenant": tenant, "version": chosen.version, "phase": chosen.phase, "output": str(output)})


@app.command("decide")
def decide(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab whose part it is."),
    decision: str = typer.Option(..., "--decision", help="notify or no-risk."),
    reasoning_file: str = typer.Option(..., "--reasoning-file", help=TEXT_HELP),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's decision on notifying the authority, with its reasoning (lab_admin, lab_dpo)."""
    text = _read(reasoning_file) or ""
    with acting(as_email, Purpose.BREACH) as u:
        _emit(u.incident_decide(incident_id, tenant, decision=decision, reasoning=text).public())


@app.command("notified")
def notified(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab whose part it is."),
    at: datetime = typer.Option(..., "--at", help="When the authority was notified (ISO, UTC if no zone)."),
    ref: str = typer.Option(..., "--ref", help="The authority's reference."),
    delay_reason: str = typer.Option(None, "--delay-reason", help="Required past the 72-hour deadline."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Record the authority's notification (Art. 33)."""
    with acting(as_email, Purpose.BREACH) as u:
        part = u.incident_notified(incident_id, tenant, at=_when(at) or at, reference=ref, delay_reason=delay_reason)
    _emit(part.public())


@app.command("letters")
def letters(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab whose part it is."),
    output: Path = typer.Option(..., "--output", help="The directory the letters are written to."),
    patient: list[str] = typer.Option(None, "--patient", help="An affected patient's id (without an analysis)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Art. 34: one PDF letter per affected patient (the lab's DPO)."""
    with acting(as_email, Purpose.BREACH) as u:
        paths = incidents.write_letters(u, incident_id, tenant, output, patients=patient or None)
    _emit({"tenant": tenant, "letters": len(paths), "output": str(output)})


@app.command("exempt")
def exempt(
    incident_id: str = typer.Argument(..., help="The incident's id (labvault incident list)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab whose part it is."),
    ground: str = typer.Option(..., "--ground", help="encrypted, measures or disproportionate (Art. 34(3))."),
    reason: str = typer.Option(..., "--reason", help="Why the ground holds."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Record the Art. 34(3) exemption from writing to the patients, its ground and reason."""
    with acting(as_email, Purpose.BREACH) as u:
        _emit(u.incident_exempt(incident_id, tenant, ground=ground, reason=reason).public())


@app.command("remind")
def remind() -> None:
    """The clock's pass as the platform's monitoring process: notices delivered, reminders at 24, 48
    and 66 hours raised as alerts on the labs (``serve --dispatch-every`` runs it too)."""
    with runtime() as rt, rt.gateway.unit(rt.monitor, Purpose.MONITORING) as u:
        done = dispatch.remind_incidents(u)
    for r in done:
        _emit({"tenant": r.tenant_id, "incident_id": r.incident_id, "kind": r.kind, "alert": r.alert_id})
