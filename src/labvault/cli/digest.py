"""``labvault monitor digest``: the daily digest of a lab's accesses (G5, H1), explained or not.

``digest_command`` is a plain Typer command; ``labvault.cli.monitor`` mounts it on its app:
``app.command("digest")(digest_command)``. The lab's lab_admin or lab_dpo acts (``--as``): a vendor
account is refused (``access:review``). Output: a readable summary, or ``--json``; references only.
"""

from __future__ import annotations

import json
from datetime import datetime

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.monitoring import explained


def digest_command(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    day: datetime = typer.Option(
        None, "--day", formats=["%Y-%m-%d"], help="The lab's day (its own time zone); default yesterday."
    ),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="The digest as one JSON document."),
) -> None:
    """The lab's accesses to personal data on a day: counts explained / to review per account, and
    each unexplained access (seq, time, account, action, references)."""
    with acting(as_email, Purpose.MONITORING) as u:
        d = explained.digest(u, tenant, day.date() if day else None)
    if as_json:
        print(json.dumps(d.as_json(), ensure_ascii=False))
        return
    subject, body = explained.digest_text(d)
    console.print(subject, markup=False, highlight=False)
    console.print(body, markup=False, highlight=False, end="")
