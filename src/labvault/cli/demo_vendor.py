"""The demo's step on the vendor's own administrator: what the 2021 vendor did, refused and audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labvault.access import Purpose
from labvault.accounts import service
from labvault.cli.common import console
from labvault.cli.demo import DemoAccount
from labvault.errors import LabvaultError
from labvault.synth.load import SYNTHETIC_RETENTION, check_synthetic

REAL_LAB = "bio-reelle"


def show_vendor_refused(rt, lab: str, accounts: list[DemoAccount]) -> str:
    """The CLI operator (the vendor's platform_admin) tries to act on a lab's people and data
    without the lab; each attempt is refused with its reason and recorded in the lab's audit
    trail. Returns the id of the real (not synthetic) lab it made to show the deletion rule."""
    bio = next(a for a in accounts if a["tenant"] == lab and a["role"] == "biologist")
    admin = next(a for a in accounts if a["tenant"] == lab and a["role"] == "lab_admin")
    op = rt.operator

    def attempt(what: str, action: Callable[[Any], object], *, own_unit: bool = False) -> None:
        try:
            if own_unit:  # the action opens its own unit of work
                action(None)
            else:
                with rt.gateway.unit(op, Purpose.ADMINISTRATION) as u:
                    action(u)
        except LabvaultError as exc:
            console.print(f"  {what}: [bold]refused[/bold] ({exc.diagnostics()})")
        else:  # the demo must not pretend: say so loudly if the platform let it through
            console.print(f"  {what}: [bold red]ALLOWED[/bold red]")

    attempt(
        f"add its own account to {lab} as a biologist",
        lambda u: service.create_account(
            u, tenant_id=lab, name="Vendor Admin", email="vendor-admin@vendor.demo.invalid", roles=["biologist"]
        ),
    )
    attempt(
        f"mint a token for {lab}'s biologist", lambda u: service.create_token(u, bio["email"], scopes=["read"], days=1)
    )
    attempt(f"demote {lab}'s lab admin", lambda u: service.set_roles(u, admin["email"], ["technician"]))

    with rt.gateway.unit(op, Purpose.ADMINISTRATION) as u:
        u.create_tenant(REAL_LAB, "Laboratoire réel (sans données)", "690000131", retention=SYNTHETIC_RETENTION)
    console.print(f"  a real lab, {REAL_LAB}, created without --synthetic (no data yet):")
    attempt(f"fill {REAL_LAB} with generated data", lambda _: check_synthetic(rt.gateway, op, REAL_LAB), own_unit=True)
    attempt(f"crypto-shred {REAL_LAB} without its signed deletion instruction", lambda u: u.shred_tenant(REAL_LAB))
    return REAL_LAB
