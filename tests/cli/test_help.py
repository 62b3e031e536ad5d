"""Every ``labvault`` command and each of its options and arguments says what it is in ``--help``."""

from __future__ import annotations

import typer

from labvault.cli.app import app


def _walk(cmd, path: tuple[str, ...] = ("labvault",)):
    """Each command of the tree with its path (Typer's own click: groups have ``commands``)."""
    yield path, cmd
    if hasattr(cmd, "commands"):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, (*path, name))


def test_every_command_option_and_argument_has_help_text():
    root = typer.main.get_command(app)
    missing, seen = [], 0
    for path, cmd in _walk(root):
        seen += 1
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        for param in cmd.params:
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {param.opts[0] if param.opts else param.name}")
    assert seen > 60  # the walk reached the subcommands
    assert not missing, "no help text: " + ", ".join(missing)
