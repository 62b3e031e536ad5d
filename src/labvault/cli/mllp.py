"""``labvault mllp``: the MLLP listener for a lab's HL7 v2 feed."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path

import typer

from labvault.cli.common import AS_OPTION_HELP, console, runtime
from labvault.cli.ingest import TOKEN_HELP, feed_actor
from labvault.errors import ConfigError
from labvault.interop.ingest import Ingestor
from labvault.interop.mllp import MAX_FRAME, MAX_GROUP, Server, server_ssl_context


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mllp(
    tenant: str = typer.Option(..., "--tenant", help="The lab whose feed this is."),
    port: int = typer.Option(2575, "--port", min=0, max=65535, help="0: any free port (printed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback by default."),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate: serve MLLP over TLS."),
    tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    allow_plaintext: bool = typer.Option(False, "--allow-plaintext",
                                         help="Accept a non-loopback --host without TLS (a private network)."),
    max_frame: int = typer.Option(MAX_FRAME, "--max-frame", min=1024, help="Largest message accepted, in bytes."),
    group: int = typer.Option(MAX_GROUP, "--group", min=1, max=10000, help="Most messages stored per commit."),
    parsers: int = typer.Option(1, "--parsers", min=0, max=16,
                                help="Processes parsing while the store writes (0: parse in the committer)."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
    token_file: Path = typer.Option(None, "--token-file", help=TOKEN_HELP),
) -> None:
    """Listen for HL7 v2 messages (MLLP); ACK each once it is durably stored, or refused and quarantined."""
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_cert is None and not _loopback(host) and not allow_plaintext:
        raise ConfigError(f"listening on {host} without TLS: give --tls-cert/--tls-key, or --allow-plaintext")
    ctx = server_ssl_context(str(tls_cert), str(tls_key)) if tls_cert else None
    with runtime(durable=True) as rt:
        principal = feed_actor(rt, as_email, token_file)
        ing = Ingestor(rt.gateway, principal, tenant, feed="mllp", group=group, test_mode=rt.settings.test_mode)
        ing.preflight()
        server = Server(ing, host=host, port=port, ssl_context=ctx, max_frame=max_frame, max_group=group,
                        parsers=parsers)
        asyncio.run(_run(server, tenant))
        s = server.stats
    console.print(f"stopped: {s.frames} frames, {s.accepted} stored, {s.duplicates} duplicates, {s.rejected} refused")


async def _run(server: Server, tenant: str) -> None:
    bound_host, bound_port = await server.start()
    print(f"listening on {bound_host}:{bound_port} for lab {tenant}{' (TLS)' if server.ssl else ''}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    serving.cancel()
    await server.close()
