"""``labvault monitor``: the rules on the audit stream, alone (``run``) or listed (``rules``).

``labvault serve`` runs the same consumer in a thread (``--monitor-every``); ``monitor run`` is for
a platform that serves no HTTP, or to catch up once (``--once``). It runs as the platform's
monitoring process (the system principal ``system:monitor``, not the operator's account), purpose
``monitoring``. One consumer evaluates at a time (a lease): started beside ``serve``'s, it waits
and says so once. The rules in force: the shipped ones, with the platform's rules file on top
(``--rules FILE``, by default ``<home>/monitor-rules.toml`` when it exists; see
docs/design/monitoring-rules.md).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

app = typer.Typer(help="Rules on the audit stream: run the consumer, list the rules.", no_args_is_help=True)

RULES_HELP = "The platform's rules file (default: <home>/monitor-rules.toml when it exists)."


def rules_in_force(path: Path | None):
    from labvault.cli.common import settings
    from labvault.monitoring import rules

    return rules.load(path if path is not None else rules.default_path(settings().home))


@app.command("run")
def run(
    once: bool = typer.Option(False, "--once", help="Read what is new, sweep once, and stop."),
    interval: float = typer.Option(1.0, "--interval", min=0.1, max=3600, help="Seconds between polls."),
    sweep_every: float = typer.Option(60.0, "--sweep-every", min=1, help="Seconds between state sweeps."),
    rules_file: Path = typer.Option(None, "--rules", help=RULES_HELP),
) -> None:
    """Watch the audit stream of every lab and raise alerts (until interrupted, or --once)."""
    from labvault.cli.common import runtime
    from labvault.monitoring import alerts
    from labvault.monitoring.consumer import Consumer

    rules = rules_in_force(rules_file)
    with runtime() as rt:
        deadlines = alerts.ack_deadlines(rt.settings.alert_ack_minutes)
        consumer = Consumer(
            rt.gateway,
            rt.monitor,
            rules,
            sink=functools.partial(alerts.raise_alert, deadlines=deadlines),
            notice=lambda m: print(m, flush=True),
        )
        if once:
            findings = consumer.drain()
            if consumer.waiting:
                print(json.dumps({"findings": 0, "events": 0, "waiting": True}))
                return
            findings += consumer.sweep()
            consumer.release()
            for f in findings:
                print(
                    json.dumps(
                        {
                            "rule": f.rule_id,
                            "lab": f.tenant_id,
                            "severity": f.severity.value,
                            "group": f.group,
                            "events": f.event_count,
                        }
                    )
                )
            print(json.dumps({"findings": len(findings), "events": consumer.engine.events_seen}))
            return
        print(f"watching the audit stream: {len(rules)} rules, a poll every {interval:g} s", flush=True)
        try:
            consumer.run(interval=interval, sweep_every=sweep_every)
        except KeyboardInterrupt:
            print(json.dumps({"findings": consumer.raised, "events": consumer.engine.events_seen}))


@app.command("rules")
def rules_(
    rules_file: Path = typer.Option(None, "--rules", help=RULES_HELP),
    tenant: str = typer.Option(None, "--tenant", help="Show this lab's thresholds."),
) -> None:
    """The rules in force, one JSON object per line (a lab's own thresholds with --tenant), then
    the rule set's SHA-256 (the one ``monitor:start`` records)."""
    from labvault.monitoring.consumer import sweep_ids
    from labvault.monitoring.rules import digest

    in_force = rules_in_force(rules_file)
    for base in in_force:
        r = base.for_lab(tenant) if tenant else base
        print(
            json.dumps(
                {
                    "id": r.id,
                    "severity": r.severity.value,
                    "enabled": r.enabled,
                    "protected": r.protected,
                    "type": r.kind if r.gte > 1 or r.kind == "value_count" else "every match",
                    "field": r.field,
                    "group_by": list(r.group_by),
                    "timespan_s": r.timespan_s,
                    "gte": r.gte,
                    "max_alerts_per_hour": r.max_alerts_per_hour,
                    "labs_with_own_settings": sorted(base.per_lab),
                    "title": r.title,
                },
                ensure_ascii=False,
            )
        )
    for sid in sweep_ids():
        print(json.dumps({"id": sid, "type": "sweep"}))
    print(json.dumps({"rules_sha256": digest(in_force), "rules": len(in_force)}))


def _mount_digest() -> None:
    from labvault.cli.digest import digest_command

    app.command("digest")(digest_command)


_mount_digest()
