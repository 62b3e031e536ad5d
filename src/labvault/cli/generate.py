"""``labvault generate``: deterministic French-shaped synthetic labs, stored through the gateway."""

from __future__ import annotations

import functools

import typer

from labvault.cli.common import console, progress, runtime
from labvault.synth.load import SYNTHETIC_RETENTION, check_synthetic, ensure_labs, load_lab


def generate(
    labs: int = typer.Option(3, "--labs", min=1, max=500, help="How many labs (created synthetic)."),
    tenant: str = typer.Option(
        None,
        "--tenant",
        metavar="ID",
        help="Fill this existing synthetic lab ('tenant add --synthetic') instead; refused on a real lab.",
    ),
    patients: int = typer.Option(2000, "--patients", min=1, help="Patients per lab."),
    seed: int = typer.Option(2021, "--seed", help="Same seed, same data."),
) -> None:
    """Generate synthetic labs (or fill one, --tenant): patients, prescribers, requests, specimens and
    results, encrypted on the way in. Generated data goes only into labs created synthetic."""
    with runtime() as rt:
        if tenant is not None:
            check_synthetic(rt.gateway, rt.operator, tenant)
            ids = [tenant]
        else:
            ids = ensure_labs(rt.gateway, rt.operator, labs, retention=SYNTHETIC_RETENTION)
        totals = {"patients": 0, "requests": 0, "specimens": 0, "results": 0}
        with progress() as bar:
            for tid in ids:
                task = bar.add_task(f"{tid}", total=patients)
                counts = load_lab(
                    rt.gateway,
                    rt.operator,
                    tid,
                    patients=patients,
                    seed=seed,
                    on_batch=functools.partial(bar.advance, task),
                )
                for k in totals:
                    totals[k] += getattr(counts, k)
    console.print(
        f"generated {len(ids)} synthetic lab{'s' if len(ids) != 1 else ''} ({', '.join(ids)}): "
        f"{totals['patients']:,} patients, {totals['requests']:,} requests, "
        f"{totals['specimens']:,} specimens, {totals['results']:,} results (seed {seed})"
    )
