"""``labvault alerts``: list, acknowledge, resolve, dispatch; ``labvault channel``: where a lab's
alerts and signed checkpoints go (its own channels, set by its lab_admin or lab_dpo with ``--as``),
or the platform's on-call levels (``--level N``). References only."""

from __future__ import annotations

import json
import time

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console, runtime
from labvault.crypto.keys import PLATFORM
from labvault.ids import utcnow
from labvault.monitoring import alerts, dispatch

app = typer.Typer(help="Alerts: list, acknowledge, resolve; send and escalate (dispatch).", no_args_is_help=True)
channel_app = typer.Typer(
    help="Where alerts go: a lab's own channels (--tenant, --as its lab_admin) or the platform's on-call levels.",
    no_args_is_help=True,
)


def _line(a: alerts.Alert) -> str:
    return (
        f"{a.alert_id}  {a.tenant_id}  {a.severity:<8}  {a.state:<12}  level {a.level}  "
        f"{a.rule_id}  x{a.event_count}  due {a.ack_due.isoformat(timespec='minutes')}  {a.title}"
    )


@app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant", help="One lab's alerts ('platform': the platform's)."),
    state: str = typer.Option(None, "--state", help="open, acknowledged or resolved."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
    limit: int = typer.Option(500, "--limit", help="At most this many, newest first."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Alerts this account may read, newest first."""
    with acting(as_email, Purpose.MONITORING) as u:
        found = alerts.list_alerts(u, tenant, state=state, limit=limit)
    for a in found:
        if as_json:
            print(json.dumps(a.public(), ensure_ascii=False))
        else:
            console.print(_line(a), highlight=False, markup=False)


@app.command("show")
def show(
    alert_id: str = typer.Argument(..., help="The alert's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """One alert with its deliveries."""
    with acting(as_email, Purpose.MONITORING) as u:
        h = alerts.history(u, alert_id)
    print(
        json.dumps({**h.alert.public(), "deliveries": [d.public() for d in h.deliveries]}, ensure_ascii=False, indent=2)
    )


@app.command("ack")
def ack(
    alert_id: str = typer.Argument(..., help="The alert's id."),
    reason: str = typer.Option(None, "--reason", help="Why (kept on the alert, never sent on a channel)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Acknowledge an open alert: you own it; escalation stops."""
    with acting(as_email, Purpose.MONITORING) as u:
        a = alerts.acknowledge(u, alert_id, reason=reason)
    console.print(_line(a), highlight=False, markup=False)


@app.command("resolve")
def resolve(
    alert_id: str = typer.Argument(..., help="The alert's id."),
    reason: str = typer.Option(..., "--reason", help="Why it is resolved (required)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Resolve an open or acknowledged alert, with a reason."""
    with acting(as_email, Purpose.MONITORING) as u:
        a = alerts.resolve(u, alert_id, reason=reason)
    console.print(_line(a), highlight=False, markup=False)


@app.command("dispatch")
def dispatch_(
    once: bool = typer.Option(False, "--once", help="One pass, then exit."),
    every: float = typer.Option(10.0, "--every", help="Seconds between passes (without --once)."),
) -> None:
    """Send due deliveries (retrying failed ones with backoff), escalate unacknowledged alerts and
    push each lab's new signed checkpoints to its channels, as the platform's monitoring process
    (not the operator's account)."""
    with runtime() as rt:
        while True:
            counts = dispatch.run_once(rt, utcnow())
            print(json.dumps(counts), flush=True)
            if once:
                return
            time.sleep(max(0.5, every))


@channel_app.command("add")
def channel_add(
    kind: str = typer.Option(..., "--kind", help="email, webhook or syslog."),
    target: str = typer.Option(
        ..., "--target", help="An e-mail address, an http(s) URL, or udp://host:port / tcp://host:port."
    ),
    tenant: str = typer.Option(PLATFORM, "--tenant", help="The lab (by its lab_admin, --as); default: the platform."),
    level: int = typer.Option(1, "--level", help="The on-call level (1 first; escalation goes to 2, 3 ...)."),
    min_severity: str = typer.Option("low", "--min-severity", help="low, medium, high or critical."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Add a channel; a webhook's signing key is printed once (keep it: it verifies each call)."""
    with acting(as_email, Purpose.MONITORING) as u:
        ch, secret = u.add_channel(
            tenant, kind=kind, target=target, level=level, min_severity=min_severity, at=utcnow()
        )
    print(json.dumps(ch.public(), ensure_ascii=False))
    if secret is not None:
        console.print(f"signing key (shown once): {secret}", highlight=False, markup=False)


@channel_app.command("list")
def channel_list(
    tenant: str = typer.Option(PLATFORM, "--tenant", help="The lab; default: the platform."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The active channels."""
    with acting(as_email, Purpose.MONITORING) as u:
        for ch in u.channels(tenant):
            print(json.dumps(ch.public(), ensure_ascii=False))


@channel_app.command("remove")
def channel_remove(
    channel_id: str = typer.Argument(..., help="The channel's id."),
    tenant: str = typer.Option(PLATFORM, "--tenant", help="The lab; default: the platform."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Stop a channel (its key is erased; nothing more is sent to it)."""
    with acting(as_email, Purpose.MONITORING) as u:
        ch = u.remove_channel(tenant, channel_id)
    print(json.dumps(ch.public(), ensure_ascii=False))
