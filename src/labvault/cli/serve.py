"""``labvault serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import typer

from labvault.errors import ConfigError


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate (enables HTTPS and HSTS)."),
    tls_key: str = typer.Option(None, "--tls-key"),
) -> None:
    """Serve the JSON API (and its OpenAPI schema, to authenticated users) on HOST:PORT."""
    import uvicorn

    from labvault.api import create_app
    from labvault.cli.common import settings

    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    app = create_app(settings())
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level="warning",
                server_header=False, proxy_headers=False)
