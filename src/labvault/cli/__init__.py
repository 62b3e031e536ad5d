"""The ``labvault`` command line. Errors a person can cause print one line and exit non-zero.

Exit codes (``labvault.errors``; the README's table): 0 done; 1 a failure (any Labvault error that
is not a refusal, or a run that ended with refused messages or failed checks); 2 a usage error
(Typer's: unknown option, missing argument); 3 a refusal (not allowed, not authenticated, locked
out, outside the instruction); 70 an internal error (a bug; nothing of the failed step is
committed); 130 interrupted.
"""

from __future__ import annotations

import os
import sys

from labvault.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, LabvaultError


def error_line(exc: LabvaultError) -> str:
    """The one line the CLI prints for a Labvault error (on stderr; its exit code: ``exc.exit_code``)."""
    return f"labvault: error: {exc.diagnostics()}"


def main(argv: list[str] | None = None) -> int:
    from labvault.cli.app import app

    # C1: every file the CLI (and ``serve``, ``mllp`` under it) creates is private to its user:
    # database, -wal/-shm, keyring, locks, temp files, packages, certificates.
    umask = os.umask(0o077)
    try:
        # Typer handles usage errors itself (one message, exit 2) and raises SystemExit.
        app(args=argv, prog_name="labvault")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except LabvaultError as exc:
        print(error_line(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("labvault: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # never a traceback, never a message that may quote data
        if os.environ.get("LABVAULT_DEBUG"):
            raise
        print(
            f"labvault: internal error ({type(exc).__name__}); the failed step committed nothing. "
            "Set LABVAULT_DEBUG=1 to see the traceback.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        os.umask(umask)
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
