"""``labvault serve``: the HTTP API under uvicorn, with the purge and checkpoint schedulers and the
rules on the audit stream (``labvault.monitoring.consumer``, a poll every ``--monitor-every`` s).

It says where it listens (address, port, TLS or not), writes an access log and its errors to
stderr through ``labvault.logs`` (no personal value: G2), and never swallows a scheduler failure:
each one is logged with its traceback (frames and type names only), counted, and recorded in the
audit trail as an event of outcome ``error`` (G1).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter

import typer

from labvault.errors import CannotListen, ConfigError

log = logging.getLogger("labvault.serve")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="0: any free port (printed)."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate (enables HTTPS and HSTS)."),
    tls_key: str = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    checkpoint_every: int = typer.Option(
        3600, "--checkpoint-every", min=0, help="Seconds between signed audit checkpoints (0: none)."
    ),
    retention_every: int = typer.Option(
        3600,
        "--retention-every",
        min=0,
        help="Seconds between retention runs: data past each lab's periods, "
        "packages past their deadline (0: none; then run it from cron).",
    ),
    dispatch_every: float = typer.Option(
        5.0,
        "--dispatch-every",
        min=0,
        help="Seconds between alert rounds: deliveries sent (e-mail, webhooks, syslog), unacknowledged "
        "alerts and overdue outside reports escalated, labs' checkpoints pushed to their channels (0: none).",
    ),
    monitor_every: float = typer.Option(
        1.0,
        "--monitor-every",
        min=0,
        help="Seconds between polls of the audit stream by the monitoring rules (0: none; "
        "then run 'labvault monitor run').",
    ),
    monitor_rules: str = typer.Option(
        None, "--monitor-rules", help="The platform's rules file (default: <home>/monitor-rules.toml if present)."
    ),
    threads: int = typer.Option(
        2,
        "--threads",
        min=1,
        max=64,
        help="Requests whose blocking work (database, decryption, pages) runs at once; others wait their turn.",
    ),
) -> None:
    """Serve the JSON API (and its OpenAPI schema, to authenticated users) on HOST:PORT."""
    import socket

    import uvicorn

    from labvault import logs
    from labvault.cli.common import settings
    from labvault.web import create_app

    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    logs.configure()
    app = create_app(settings())
    app.state.threads = threads
    try:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise CannotListen.on(host, port, exc) from None
    # Accepted connections inherit TCP_NODELAY: a response written in two parts (head, body) must
    # not wait for the client's delayed ACK (40 ms a request otherwise).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bound = sock.getsockname()
    failures = app.state.scheduler_failures = Counter()
    stop = _checkpoints_every(app.state.runtime, checkpoint_every, failures=failures)
    stop_retention = retention_every_(app.state.runtime, retention_every, failures=failures)
    stop_monitor = monitor_every_(app.state.runtime, monitor_every, rules_file=monitor_rules, failures=failures)
    stop_dispatch = dispatch_every_(app.state.runtime, dispatch_every, failures=failures)
    config = uvicorn.Config(
        app,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level="warning",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    scheme = "https" if tls_cert else "http"
    where = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(
        f"listening on {scheme}://{where}:{bound[1]} ({'TLS' if tls_cert else 'plain HTTP, no TLS'}); "
        f"checkpoints every {checkpoint_every or '-'} s, retention every {retention_every or '-'} s, "
        f"monitoring every {monitor_every or '-'} s, alerts sent every {dispatch_every or '-'} s",
        flush=True,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        stop.set()
        stop_retention.set()
        stop_monitor.set()
        stop_dispatch.set()
        sock.close()


def scheduler_failed(
    rt, failures: Counter, which: str, lab: str | None, exc: BaseException | None, reason: str | None = None
) -> None:
    """A scheduler round that failed: logged (with the traceback, through the personal-data filter),
    counted, and recorded as an audit event ``scheduler:<which>`` of outcome ``error`` in the lab's
    trail (the platform's when no lab is named)."""
    from labvault.access import Purpose
    from labvault.crypto.keys import PLATFORM

    failures[which] += 1
    kind = type(exc).__name__ if exc is not None else "LabvaultError"
    log.error(
        "scheduler %s failed for %s: %s%s (%d failures of this scheduler since start)",
        which,
        lab or "every lab",
        kind,
        f" ({reason})" if reason else "",
        failures[which],
        exc_info=exc,
    )
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            u.audit(lab or PLATFORM, f"scheduler:{which}", "scheduler", 0, outcome="error", refs=[kind[:64]])
    except Exception as again:
        failures[f"{which}:audit"] += 1
        log.error("scheduler %s: its failure could not be recorded in the audit trail", which, exc_info=again)


def _checkpoints_every(rt, seconds: int, *, failures: Counter | None = None):
    """A daemon thread that signs a checkpoint of every lab's audit trail every ``seconds``."""
    from labvault.access import Purpose
    from labvault.audit import service as audit
    from labvault.crypto.keys import PLATFORM
    from labvault.errors import InvalidInput, LabvaultError

    stop = threading.Event()
    failures = Counter() if failures is None else failures

    def run() -> None:
        while not stop.wait(seconds):
            try:
                with rt.unit(Purpose.ADMINISTRATION) as u:
                    labs = [PLATFORM] + [t.id for t in u.list_tenants() if t.status == "active"]
            except Exception as exc:  # noqa: BLE001 - logged, counted, audited; the next round tries again
                scheduler_failed(rt, failures, "checkpoint", None, exc)
                continue
            for lab in labs:
                try:
                    with rt.unit(Purpose.ADMINISTRATION) as u:
                        audit.checkpoint(u, lab)
                except InvalidInput:
                    continue  # no audit event yet: nothing to sign
                except LabvaultError as exc:
                    scheduler_failed(rt, failures, "checkpoint", lab, None, exc.diagnostics())
                except Exception as exc:  # noqa: BLE001 - as above
                    scheduler_failed(rt, failures, "checkpoint", lab, exc)

    if seconds > 0:
        threading.Thread(target=run, name="labvault-checkpoints", daemon=True).start()
    return stop


def retention_every_(rt, seconds: int, *, first_after: float | None = None, failures: Counter | None = None):
    """A daemon thread running ``retention run`` for every lab every ``seconds`` (the first run
    after ``first_after`` seconds, by default ``seconds``); returns the event that stops it."""
    from labvault.ids import utcnow
    from labvault.retention import purge

    stop = threading.Event()
    failures = Counter() if failures is None else failures

    def loop() -> None:
        wait = seconds if first_after is None else first_after
        while not stop.wait(wait):
            wait = seconds
            try:
                _, failed = purge.run_all(rt.gateway, rt.operator, now=utcnow())
            except Exception as exc:  # noqa: BLE001 - logged, counted, audited; the next round tries again
                scheduler_failed(rt, failures, "retention", None, exc)
                continue
            for lab, reason in failed.items():
                scheduler_failed(rt, failures, "retention", lab, None, reason)

    if seconds > 0:
        threading.Thread(target=loop, name="labvault-retention", daemon=True).start()
    return stop


def monitor_every_(
    rt,
    seconds: float,
    *,
    rules_file: str | None = None,
    sweep_every: float = 60.0,
    failures: Counter | None = None,
    sink=None,
):
    """A daemon thread running the rules on the audit stream every ``seconds`` (sweeps every
    ``sweep_every``), as the platform's monitoring process (``rt.monitor``, never the operator's
    account); a failed round goes through ``scheduler_failed`` (``scheduler:monitor``) and the next
    round starts again from the committed cursors. While another consumer (``labvault monitor run``)
    holds the lease, this one waits and logs it once. Returns the event that stops it."""
    from pathlib import Path

    from labvault.monitoring import rules
    from labvault.monitoring.consumer import Consumer

    stop = threading.Event()
    failures = Counter() if failures is None else failures
    if seconds <= 0:
        return stop
    if sink is None:
        try:
            from labvault.monitoring import alerts  # the default sink
        except ImportError:
            log.warning("monitoring is off: the alerts module (labvault.monitoring.alerts) is not installed")
            return stop
        # A new alert's first deadline follows LABVAULT_ALERT_ACK_MINUTES too (not only the next ones).
        sink = functools.partial(alerts.raise_alert, deadlines=alerts.ack_deadlines(rt.settings.alert_ack_minutes))
    path = Path(rules_file) if rules_file else rules.default_path(rt.settings.home)
    loaded = rules.load(path)
    consumer = Consumer(rt.gateway, rt.monitor, loaded, sink=sink)

    def on_error(exc: BaseException) -> None:
        scheduler_failed(rt, failures, "monitor", None, exc)

    def loop() -> None:
        consumer.run(interval=seconds, sweep_every=sweep_every, stop=stop.is_set, on_error=on_error)

    threading.Thread(target=loop, name="labvault-monitor", daemon=True).start()
    return stop


def dispatch_every_(rt, seconds: float, *, failures: Counter | None = None):
    """A daemon thread running ``labvault.monitoring.dispatch.run_once`` every ``seconds`` (as the
    platform's monitoring process, ``rt.monitor``): alerts
    delivered, escalated when unanswered, outside reports escalated past their deadline, labs'
    checkpoints pushed. A failed round goes through ``scheduler_failed`` (``scheduler:dispatch``)."""
    from labvault.monitoring import dispatch

    stop = threading.Event()
    failures = Counter() if failures is None else failures

    def loop() -> None:
        while not stop.wait(seconds):
            try:
                dispatch.run_once(rt)
            except Exception as exc:  # noqa: BLE001 - logged, counted, audited; the next round tries again
                scheduler_failed(rt, failures, "dispatch", None, exc)

    if seconds > 0:
        threading.Thread(target=loop, name="labvault-dispatch", daemon=True).start()
    return stop
