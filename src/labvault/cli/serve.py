"""``labvault serve``: the HTTP API under uvicorn."""

from __future__ import annotations

import typer

from labvault.errors import ConfigError


def serve(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate (enables HTTPS and HSTS)."),
    tls_key: str = typer.Option(None, "--tls-key"),
    checkpoint_every: int = typer.Option(3600, "--checkpoint-every", min=0,
                                         help="Seconds between signed audit checkpoints (0: none)."),
    retention_every: int = typer.Option(3600, "--retention-every", min=0,
                                        help="Seconds between retention runs: data past each lab's periods, "
                                             "packages past their deadline (0: none; then run it from cron)."),
) -> None:
    """Serve the JSON API (and its OpenAPI schema, to authenticated users) on HOST:PORT."""
    import uvicorn

    from labvault.api import create_app
    from labvault.cli.common import settings

    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    app = create_app(settings())
    stop = _checkpoints_every(app.state.runtime, checkpoint_every)
    stop_retention = retention_every_(app.state.runtime, retention_every)
    try:
        uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level="warning",
                    server_header=False, proxy_headers=False)
    finally:
        stop.set()
        stop_retention.set()


def _checkpoints_every(rt, seconds: int):
    """A daemon thread that signs a checkpoint of every lab's audit trail every ``seconds``."""
    import threading

    from labvault.access import Purpose
    from labvault.audit import service as audit
    from labvault.crypto.keys import PLATFORM
    from labvault.errors import LabvaultError

    stop = threading.Event()

    def run() -> None:
        while not stop.wait(seconds):
            try:
                with rt.unit(Purpose.ADMINISTRATION) as u:
                    labs = [PLATFORM] + [t.id for t in u.list_tenants() if t.status == "active"]
                for lab in labs:
                    try:
                        with rt.unit(Purpose.ADMINISTRATION) as u:
                            audit.checkpoint(u, lab)
                    except LabvaultError:
                        continue
            except Exception:  # keep serving; the next round tries again
                continue

    if seconds > 0:
        threading.Thread(target=run, name="labvault-checkpoints", daemon=True).start()
    return stop


def retention_every_(rt, seconds: int, *, first_after: float | None = None):
    """A daemon thread running ``retention run`` for every lab every ``seconds`` (the first run
    after ``first_after`` seconds, by default ``seconds``); returns the event that stops it."""
    import threading

    from labvault.ids import utcnow
    from labvault.retention import purge

    stop = threading.Event()

    def loop() -> None:
        wait = seconds if first_after is None else first_after
        while not stop.wait(wait):
            wait = seconds
            try:
                purge.run_all(rt.gateway, rt.operator, now=utcnow())
            except Exception:  # keep serving; each lab's run is audited, the next round tries again
                continue

    if seconds > 0:
        threading.Thread(target=loop, name="labvault-retention", daemon=True).start()
    return stop
