"""``labvault advisory``: reports from outside (H2, H4): add, list, show, assess, close, escalate.

The vendor's security officer registers a report (the national agency ANSSI/CERT-FR, a lab's IT, a
researcher, the press, the police, an employee through the internal channel) with its owner,
severity and deadline; assesses it (breach yes/no/possible with its reasoning, and the decision on
telling the labs); closes it only then. A lab's lab_admin or lab_dpo lists the ones decided for
their lab (``list --tenant``). Free text (the summary, the reasoning) is read from a file or from
standard input (``-``), never from the command line (it would stay in the shell's history and the
process list): it may quote the leaked lines. Output: references and decisions; ``show`` opens the
text for the security team.
"""

from __future__ import annotations

import json
from datetime import datetime

import typer

from labvault.access import Purpose
from labvault.access.advisories import Advisory
from labvault.cli.common import AS_OPTION_HELP, acting, as_utc, read_text_file
from labvault.monitoring import advisories

app = typer.Typer(help="Reports from outside: add, list, show, assess, close, escalate.", no_args_is_help=True)

TEXT_HELP = (
    "A file holding the text, or '-' for standard input (never on the command line: it may quote personal data)."
)


_read = read_text_file


_when = as_utc


def _print(a: Advisory, *, text: bool = False) -> None:
    out = a.public()
    out["reference"] = a.reference
    if text:
        out["summary"] = a.summary
        out["assessment"] = a.assessment
        out["assessed_by"] = a.assessed_by
        out["closed_by"] = a.closed_by
        out["created_by"] = a.created_by
    print(json.dumps(out, ensure_ascii=False, indent=2 if text else None))


@app.command("add")
def add(
    source: str = typer.Option(..., "--source", help="anssi, cert, lab-it, researcher, press, police, employee/other."),
    severity: str = typer.Option(..., "--severity", help="low, medium, high, critical (sets the default deadline)."),
    owner: str = typer.Option(..., "--owner", help="The vendor account answering it (id or e-mail)."),
    summary_file: str = typer.Option(..., "--summary-file", help=TEXT_HELP),
    reference: str = typer.Option(None, "--reference", help="The sender's own reference (e.g. CERTFR-2026-ALE-001)."),
    received: datetime = typer.Option(None, "--received", help="When it was received (UTC; default now)."),
    lab: list[str] = typer.Option(None, "--lab", help="A lab it concerns; repeat for more."),
    deadline: datetime = typer.Option(None, "--deadline", help="Instead of the default by severity (UTC)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Register a report from outside (the vendor's security officer)."""
    text = _read(summary_file)
    with acting(as_email, Purpose.MONITORING) as u:
        a = advisories.add(
            u,
            source=source,
            severity=severity,
            owner=owner,
            summary=text,
            reference=reference,
            received_at=_when(received),
            labs=lab or (),
            deadline=_when(deadline),
        )
    _print(a)


@app.command("list")
def list_(
    state: str = typer.Option(None, "--state", help="open, assessed or closed."),
    tenant: str = typer.Option(None, "--tenant", help="A lab's view: the advisories decided for it (lab accounts)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The register (security team), or with --tenant the advisories a lab was told of (one JSON line each)."""
    with acting(as_email, Purpose.MONITORING) as u:
        rows = advisories.for_lab(u, tenant) if tenant else advisories.listing(u, state)
    for a in rows:
        _print(a)


@app.command("show")
def show(
    advisory_id: str = typer.Argument(..., help="The advisory's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One advisory with its text opened (the security team; the reading is audited)."""
    with acting(as_email, Purpose.MONITORING) as u:
        a = advisories.show(u, advisory_id)
    _print(a, text=True)


@app.command("assess")
def assess(
    advisory_id: str = typer.Argument(..., help="The advisory's id."),
    breach: str = typer.Option(..., "--breach", help="yes, no or possible."),
    reasoning_file: str = typer.Option(..., "--reasoning-file", help=TEXT_HELP),
    notify_labs: bool = typer.Option(..., "--notify-labs/--no-notify-labs", help="The decision on telling the labs."),
    lab: list[str] = typer.Option(None, "--lab", help="The labs concerned (replaces those registered)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Record the breach assessment and the decision on telling the labs."""
    text = _read(reasoning_file)
    with acting(as_email, Purpose.MONITORING) as u:
        a = advisories.assess(u, advisory_id, breach=breach, reasoning=text, notify_labs=notify_labs, labs=lab or None)
    _print(a)


@app.command("close")
def close(
    advisory_id: str = typer.Argument(..., help="The advisory's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Close an assessed advisory (refused before its assessment and decision)."""
    with acting(as_email, Purpose.MONITORING) as u:
        a = advisories.close(u, advisory_id)
    _print(a)


@app.command("escalate")
def escalate(as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP)) -> None:
    """Escalate every advisory past its deadline (one level up, a new deadline, an alert)."""
    with acting(as_email, Purpose.MONITORING) as u:
        done = advisories.escalate_overdue(u)
    for e in done:
        print(
            json.dumps(
                {
                    "advisory_id": e.advisory_id,
                    "level": e.level,
                    "deadline": e.deadline.isoformat(),
                    "alert": e.alert_id,
                }
            )
        )
