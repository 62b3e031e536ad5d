"""``labvault mllp``: the MLLP listener for a lab's HL7 v2 feeds.

Over TLS (the default; C2) every connection presents a client certificate pinned on one of the
lab's service accounts (``labvault feed pin``, by the lab's lab_admin) and ingests as that account
(E1); nothing else is accepted. Plain TCP only with ``--insecure-plaintext`` on a loopback address
(a local test, or a TLS terminator on the same host), ingesting as the account named by
``--token-file`` (or ``--as``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path

import typer

from labvault.cli.common import AS_OPTION_HELP, console, runtime
from labvault.cli.ingest import TOKEN_HELP, feed_actor
from labvault.errors import ConfigError
from labvault.ingest.service import Ingestor
from labvault.mllp.listener import MAX_FRAME, MAX_GROUP, Limits, PinnedFeeds, Server, server_ssl_context

_D = Limits()


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mllp(
    tenant: str = typer.Option(..., "--tenant", help="The lab whose feeds these are."),
    port: int = typer.Option(2575, "--port", min=0, max=65535, help="0: any free port (printed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback by default."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate of the listener."),
    tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    client_ca: Path = typer.Option(
        None,
        "--client-ca",
        help="PEM CA certificates that may also issue feed certificates (each feed's "
        "certificate must still be pinned; self-signed pinned ones need no CA).",
    ),
    insecure_plaintext: bool = typer.Option(
        False,
        "--insecure-plaintext",
        help="Plain TCP without client certificates: loopback --host only; ingests as --token-file (or --as).",
    ),
    max_frame: int = typer.Option(MAX_FRAME, "--max-frame", min=1024, help="Largest message accepted, in bytes."),
    group: int = typer.Option(MAX_GROUP, "--group", min=1, max=10000, help="Most messages stored per commit."),
    parsers: int = typer.Option(
        1, "--parsers", min=0, max=16, help="Processes parsing while the store writes (0: parse in the committer)."
    ),
    max_connections: int = typer.Option(
        _D.max_connections, "--max-connections", min=1, max=10000, help="Authenticated connections in all."
    ),
    max_per_address: int = typer.Option(
        _D.max_per_address,
        "--max-per-address",
        min=1,
        max=10000,
        help="Connections from one address (authenticated or not).",
    ),
    max_pending: int = typer.Option(
        _D.max_pending,
        "--max-pending",
        min=1,
        max=10000,
        help="Connections not yet authenticated, in all (their own pool).",
    ),
    handshake_timeout: float = typer.Option(
        _D.handshake_timeout,
        "--handshake-timeout",
        min=0.1,
        max=120,
        help="Seconds to complete TLS with a pinned certificate.",
    ),
    frame_timeout: float = typer.Option(
        _D.frame_timeout, "--frame-timeout", min=0.1, max=600, help="Seconds for a begun frame to be complete."
    ),
    idle_timeout: float = typer.Option(
        _D.idle_timeout, "--idle-timeout", min=1, max=86400, help="Seconds an authenticated connection may stay silent."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP + " With --insecure-plaintext only."),
    token_file: Path = typer.Option(None, "--token-file", help=TOKEN_HELP + " With --insecure-plaintext only."),
) -> None:
    """Listen for HL7 v2 messages (MLLP over TLS with pinned client certificates); ACK each once it
    is durably stored, or refused and quarantined."""
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if insecure_plaintext:
        if tls_cert is not None or client_ca is not None:
            raise ConfigError("--insecure-plaintext and --tls-cert/--client-ca exclude each other")
        if not _loopback(host):
            raise ConfigError(f"--insecure-plaintext listens on a loopback address only, not {host}")
    else:
        if tls_cert is None:
            raise ConfigError(
                "the listener needs TLS with client certificates: give --tls-cert and --tls-key "
                "(or --insecure-plaintext, loopback only)"
            )
        if as_email or token_file:
            raise ConfigError(
                "over TLS each feed is the service account its pinned certificate names: "
                "--as and --token-file go with --insecure-plaintext only"
            )
    ctx = (
        server_ssl_context(str(tls_cert), str(tls_key), client_ca=str(client_ca) if client_ca else None)
        if tls_cert
        else None
    )
    limits = Limits(
        max_connections=max_connections,
        max_per_address=max_per_address,
        max_pending=max_pending,
        handshake_timeout=handshake_timeout,
        frame_timeout=frame_timeout,
        idle_timeout=idle_timeout,
    )
    from labvault import logs

    logs.configure()
    with runtime(durable=True) as rt:
        if ctx is None:
            principal = feed_actor(rt, as_email, token_file)
            ing = Ingestor(rt.gateway, principal, tenant, feed="mllp", group=group, test_mode=rt.settings.test_mode)
            ing.preflight()
            server = Server(
                ing, host=host, port=port, max_frame=max_frame, max_group=group, parsers=parsers, limits=limits
            )
        else:
            _check_lab(rt, tenant)
            feeds = PinnedFeeds(rt.gateway, tenant, group=group, test_mode=rt.settings.test_mode)
            server = Server(
                None,
                host=host,
                port=port,
                ssl_context=ctx,
                feeds=feeds,
                max_frame=max_frame,
                max_group=group,
                parsers=parsers,
                limits=limits,
            )
        asyncio.run(_run(server, tenant))
        s = server.stats
    console.print(f"stopped: {s.frames} frames, {s.accepted} stored, {s.duplicates} duplicates, {s.rejected} refused")


def _check_lab(rt, tenant: str) -> None:
    from labvault.access import Purpose
    from labvault.errors import TenantShredded

    with rt.unit(Purpose.ADMINISTRATION) as u:
        lab = u.tenant(tenant)
    if lab.status == "shredded":
        raise TenantShredded(f"lab '{tenant}' was crypto-shredded")


async def _run(server: Server, tenant: str) -> None:
    bound_host, bound_port = await server.start()
    if server.ssl is not None and server.feeds is not None:  # the server requires feeds over TLS
        mode = f"TLS, client certificates pinned on the lab's service accounts: {server.feeds.trusted} pinned"
    else:
        mode = "plain TCP, no TLS (--insecure-plaintext)"
    print(f"listening on {bound_host}:{bound_port} for lab {tenant} ({mode})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    serving.cancel()
    await server.close()
