"""Shared pieces of the CLI: settings, the runtime, progress bars, output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from labvault.config import Settings
from labvault.runtime import Runtime, open_runtime

console = Console(soft_wrap=True)
err_console = Console(stderr=True)


def settings() -> Settings:
    return Settings.from_env()


@contextmanager
def runtime() -> Iterator[Runtime]:
    rt = open_runtime(settings())
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
