"""The ``labvault`` command line. Errors a person can cause print one line and exit non-zero."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from labvault.cli.app import app
    from labvault.errors import LabvaultError

    # C1: every file the CLI (and ``serve``, ``mllp`` under it) creates is private to its user:
    # database, -wal/-shm, keyring, locks, temp files, packages, certificates.
    umask = os.umask(0o077)
    try:
        # Typer handles usage errors itself (one message, exit 2) and raises SystemExit.
        app(args=argv, prog_name="labvault")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except LabvaultError as exc:
        print(f"labvault: error: {exc.diagnostics()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labvault: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback, never a message that may quote data
        if os.environ.get("LABVAULT_DEBUG"):
            raise
        print(
            f"labvault: internal error ({type(exc).__name__}); the failed step committed nothing. "
            "Set LABVAULT_DEBUG=1 to see the traceback.",
            file=sys.stderr,
        )
        return 70
    finally:
        os.umask(umask)
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
