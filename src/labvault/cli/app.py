"""The root Typer app and ``labvault init``."""

from __future__ import annotations

import typer

from labvault.cli import (
    advisory,
    alerts,
    audit,
    bench,
    breach,
    canary,
    catalogue,
    demo,
    feed,
    generate,
    grant,
    identity,
    incident,
    ingest,
    instruction,
    keys,
    migrate,
    mllp,
    monitor,
    patient,
    retention,
    serve,
    signer,
    simulate,
    tenant,
    token,
    user,
    work,
)
from labvault.cli.common import console, settings
from labvault.runtime import init_home

app = typer.Typer(
    name="labvault",
    help="Medical biology lab data, encrypted per lab, reached through one access gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tenant.app, name="tenant")
app.add_typer(keys.app, name="keys")
app.add_typer(patient.app, name="patient")
app.add_typer(bench.app, name="bench")
app.add_typer(user.app, name="user")
app.add_typer(audit.app, name="audit")
app.add_typer(grant.app, name="grant")
app.add_typer(token.app, name="token")
app.add_typer(ingest.app, name="quarantine")
app.add_typer(signer.app, name="signer")
app.add_typer(retention.app, name="retention")
app.add_typer(instruction.app, name="instruction")
app.add_typer(migrate.app, name="migrate")
app.add_typer(feed.app, name="feed")
app.add_typer(identity.app, name="identity")
app.add_typer(catalogue.app, name="catalogue")
app.add_typer(catalogue.rules_app, name="rules")
app.add_typer(work.request_app, name="request")
app.add_typer(work.specimen_app, name="specimen")
app.add_typer(work.result_app, name="result")
app.add_typer(advisory.app, name="advisory")
app.add_typer(alerts.app, name="alerts")
app.add_typer(alerts.channel_app, name="channel")
app.add_typer(monitor.app, name="monitor")
app.add_typer(canary.app, name="canary")
app.add_typer(breach.app, name="breach")
app.add_typer(incident.app, name="incident")
app.command("export")(migrate.export)
app.command("ingest")(ingest.ingest)
app.command("mllp")(mllp.mllp)
app.command("serve")(serve.serve)
app.command("generate")(generate.generate)
app.command("demo")(demo.demo)
app.command("simulate")(simulate.simulate)


@app.command()
def init(
    admin_name: str = typer.Option(None, "--admin-name", help="Name of the person operating this CLI."),
    admin_email: str = typer.Option(None, "--admin-email", help="Their e-mail address."),
) -> None:
    """Create a home (keyring + database), or check an existing one. Running it twice does no harm."""
    info = init_home(settings(), admin_name, admin_email)
    console.print(f"home      {info['home']}")
    console.print(f"database  {info['database']}")
    console.print(f"keyring   {'created' if info['keyring_created'] else 'opened'}")
    state = "created" if info["admin_created"] else "already recorded"
    console.print(f"admin     {info['admin_name']} <{info['admin_email']}>, account {info['admin']} ({state})")
    console.print(f"signing   ed25519:{info['signing_key']}")
    console.print(f"pinned    {info['pin']}")
    console.print(f"platform key fingerprint (SHA-256; each lab pins it):\n  {info['fingerprint']}")
