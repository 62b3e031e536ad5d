"""``labvault feed``: the client certificates of a lab's feeds, pinned on its service accounts."""

from __future__ import annotations

from pathlib import Path

import typer

from labvault.access import Purpose
from labvault.accounts import feeds
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.errors import ConfigError

app = typer.Typer(help="Feed client certificates (MLLP over TLS): pin, unpin, list.", no_args_is_help=True)


@app.command("pin")
def pin(
    tenant: str = typer.Option(..., "--tenant", help="The lab."),
    email: str = typer.Option(..., "--email", help="The lab's service account the feed ingests as."),
    cert: Path = typer.Option(..., "--cert", help="The feed's client certificate (PEM or DER; public part only)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Pin a feed's client certificate (its SHA-256) on a service account: the lab's lab_admin only."""
    try:
        data = cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{cert}: cannot read the certificate ({exc.strerror})") from None
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        p = feeds.pin(u, tenant, email, data)
    console.print(
        f"pinned sha256:{p.fingerprint} on {p.email} (account {p.account_id}) of lab {tenant}", highlight=False
    )


@app.command("unpin")
def unpin(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    email: str = typer.Option(..., "--email", help="The feed's service account (its e-mail address)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Remove a feed's pinned certificate: the listener refuses it from its next connection."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        p = feeds.unpin(u, tenant, email)
    console.print(f"unpinned sha256:{p.fingerprint} from {p.email} of lab {tenant}", highlight=False)


@app.command("list")
def list_(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's service accounts with a pinned certificate."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        items = feeds.listing(u, tenant)
    for p in items:
        print(f"{p.email}\t{p.account_id}\tsha256:{p.fingerprint}")
