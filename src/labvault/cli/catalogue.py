"""``labvault catalogue`` and ``labvault rules``: a lab's test catalogue and auto-validation rules."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from labvault.access import Purpose
from labvault.cli.common import AS_OPTION_HELP, acting, console
from labvault.errors import ConfigError, InvalidInput
from labvault.lab import service
from labvault.lab.catalogue import default_catalogue, parse_catalogue
from labvault.lab.rules import parse_rules

app = typer.Typer(help="A lab's test catalogue (TOML, versioned).", no_args_is_help=True)
rules_app = typer.Typer(
    help="A lab's auto-validation rules (TOML, versioned, activated by a biologist).", no_args_is_help=True
)


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name}: not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path.name}: {e.strerror or type(e).__name__}") from None


@app.command("check")
def check(file: Path = typer.Argument(..., metavar="FILE", help="A catalogue or rules TOML file.")) -> None:
    """Check a catalogue or an auto-validation rules file and print a summary (non-zero exit on a fault)."""
    text = _read(file)
    if "[[rule]]" in text and "[[test]]" not in text:
        rules = parse_rules(text, default_catalogue())
        print(json.dumps({"rules": rules.version, "digest": rules.digest, "rules_count": len(rules.rules)}))
        return
    cat = parse_catalogue(text)
    print(
        json.dumps(
            {
                "catalogue": cat.version,
                "digest": cat.digest,
                "tests": len(cat.tests),
                "panels": len(cat.panels),
                "reflexes": len(cat.reflexes),
                "calculated": sum(1 for t in cat.tests if t.calculation),
            },
            ensure_ascii=False,
        )
    )


@app.command("load")
def load(
    file: Path = typer.Argument(..., metavar="FILE", help="The catalogue TOML file."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Load a new version of the lab's catalogue (a lab_admin or biologist of the lab)."""
    text = _read(file)
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        loaded = service.load_catalogue(u, tenant, text)
    console.print(
        f"{tenant}: catalogue {loaded.catalogue.version} loaded as version {loaded.number} "
        f"({len(loaded.catalogue.tests)} tests, sha256 {loaded.catalogue.digest[:16]})"
    )


@app.command("show")
def show(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """The lab's current catalogue: one JSON object per test, then a summary line."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        loaded = service.current_catalogue(u, tenant)
    cat = loaded.catalogue
    for t in cat.tests:
        print(
            json.dumps(
                {
                    "code": t.code,
                    "loinc": t.loinc,
                    "label_fr": t.label_fr,
                    "specimen": t.specimen,
                    "container": t.container,
                    "unit": t.unit,
                },
                ensure_ascii=False,
            )
        )
    print(
        json.dumps(
            {
                "catalogue": cat.version,
                "number": loaded.number,
                "digest": cat.digest,
                "tests": len(cat.tests),
                "default": loaded.number == 0,
            }
        )
    )


@rules_app.command("write")
def rules_write(
    file: Path = typer.Argument(..., metavar="FILE", help="The rules TOML file."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Store a new version of the lab's auto-validation rules (not in force until activated)."""
    text = _read(file)
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        stored = service.write_rules(u, tenant, text)
    console.print(f"{tenant}: rules {stored.rules.version} stored as version {stored.number} (not yet in force)")


@rules_app.command("activate")
def rules_activate(
    number: int = typer.Argument(..., metavar="VERSION", help="The stored version ('rules show' lists them)."),
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Put a stored version of the rules in force (a biologist of the lab)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        stored = service.activate_rules(u, tenant, number)
    console.print(f"{tenant}: rules {stored.rules.version} (version {stored.number}) in force")


@rules_app.command("show")
def rules_show(
    tenant: str = typer.Option(..., "--tenant", help="The lab's id."),
    as_email: str = typer.Option(None, "--as", help=AS_OPTION_HELP),
) -> None:
    """Every stored version of the lab's rules, one JSON object per line ("in_force" marks the current one)."""
    with acting(as_email, Purpose.ADMINISTRATION) as u:
        stored = service.list_rules(u, tenant)
        current = service.current_rules(u, tenant)
    for s in stored:
        print(
            json.dumps(
                {
                    "number": s.number,
                    "rules": s.rules.version,
                    "digest": s.rules.digest,
                    "written_by": s.written_by,
                    "activated_by": s.activated_by,
                    "activated_at": s.activated_at.isoformat() if s.activated_at else None,
                    "in_force": current is not None and current.number == s.number,
                }
            )
        )
