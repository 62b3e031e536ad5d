"""Shared pieces of the CLI: settings, the runtime, progress bars, output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labvault.access.principal import Purpose
from labvault.config import Settings
from labvault.runtime import Runtime, open_runtime

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def settings() -> Settings:
    return Settings.from_env()


@contextmanager
def runtime(*, durable: bool = False) -> Iterator[Runtime]:
    rt = open_runtime(settings(), durable=durable)
    try:
        yield rt
    finally:
        rt.close()


def progress() -> Progress:
    """A rich progress bar (drawn on stderr, so stdout stays parseable)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


AS_OPTION_HELP = "Act as this account (its password from LABVAULT_AS_PASSWORD or a prompt; TOTP from LABVAULT_AS_TOTP)."


def actor(rt: Runtime, as_email: str | None):
    """The principal a command acts for: the CLI operator, or the named account after it logs in."""
    import getpass
    import os
    import sys

    from labvault.accounts import service

    email = as_email or os.environ.get("LABVAULT_AS")
    if not email:
        return rt.operator
    password = os.environ.get("LABVAULT_AS_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            from labvault.errors import ConfigError

            raise ConfigError("acting as an account needs its password: set LABVAULT_AS_PASSWORD")
        password = getpass.getpass(f"Password for {email}: ")
    with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
        login = service.login(u, email, password, addr="cli", user_agent="labvault-cli")
    if not login.mfa_pending:
        return login.principal
    code = os.environ.get("LABVAULT_AS_TOTP")
    if code is None:
        if not sys.stdin.isatty():
            from labvault.errors import ConfigError

            raise ConfigError("this account needs a TOTP code: set LABVAULT_AS_TOTP")
        code = input("TOTP code: ")
    with rt.gateway.auth_unit(source_addr="cli", user_agent="labvault-cli") as u:
        return service.verify_mfa(u, login.session, code, addr="cli", user_agent="labvault-cli").principal


@contextmanager
def acting(as_email: str | None, purpose: Purpose) -> Iterator[Unit]:
    """One unit of work in a fresh runtime, as the account the command acts for (``actor``: the CLI
    operator, or ``as_email`` after it logs in) and for ``purpose``."""
    with runtime() as rt, rt.gateway.unit(actor(rt, as_email), purpose) as u:
        yield u


def read_text_file(path: str) -> str:
    """A text a person gives in a file, or ``-`` for standard input (never on the command line,
    where it would stay in the shell's history: it may quote personal data)."""
    import sys
    from pathlib import Path

    from labvault.errors import InvalidInput

    if path == "-":
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise InvalidInput("the text file does not exist")
    return p.read_text(encoding="utf-8")


def as_utc(value: datetime | None) -> datetime | None:
    """A date and time from an option, read as UTC when it names no zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
