"""One error tree: every exception class Labvault defines is a ``LabvaultError``, defined in
``labvault.errors`` or in a domain's ``errors`` module, and carries its HTTP status and its exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import labvault
from labvault import errors
from labvault.errors import EXIT_FAILURE, EXIT_INTERNAL, EXIT_REFUSED, EXIT_USAGE, AccessDenied, LabvaultError


def _defined_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in a module of ``labvault`` (private ones aside: ``_Name``,
    control flow inside one module that never leaves it)."""
    found: dict[type, None] = {}
    for info in pkgutil.walk_packages(labvault.__path__, "labvault."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                found[obj] = None
    return list(found)


def test_every_error_is_a_labvault_error_defined_in_an_errors_module():
    classes = _defined_exceptions()
    assert len(classes) > 40  # the walk found them (a broken walk must not pass)
    strays = [f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, LabvaultError)]
    assert not strays, f"not LabvaultErrors: {strays}"
    elsewhere = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if c.__module__ != "labvault.errors" and not c.__module__.endswith(".errors")
    ]
    assert not elsewhere, f"defined outside an errors module: {elsewhere}"


def test_each_error_carries_an_http_status_and_an_exit_code():
    """Refusals (AccessDenied and kin, failed logins, lock-outs) exit EXIT_REFUSED; every other
    error EXIT_FAILURE; neither is Typer's usage code nor the internal-error code."""
    assert len({EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED, EXIT_INTERNAL, 0}) == 5
    from labvault.accounts.errors import AuthenticationFailed, LockedOut

    refusals = (AccessDenied, AuthenticationFailed, LockedOut)
    for c in _defined_exceptions():
        assert 400 <= c.http_status <= 599, c
        assert c.exit_code == (EXIT_REFUSED if issubclass(c, refusals) else EXIT_FAILURE), c
        if c.http_status >= 500:  # said instead of the message, which may name a server path
            assert c.public_reason and "{" not in c.public_reason, c


def test_the_statuses_the_review_found_wrong():
    """These reached clients as 400, bad input."""
    from labvault.migration.errors import ReconciliationFailed

    assert errors.TenantKeyMissing.http_status == 410  # the lab's key is destroyed: gone, like a shredded lab
    assert errors.SchemaOutdated.http_status == 503  # the server is not ready for this version
    assert errors.NotInitialised.http_status == 503
    assert ReconciliationFailed.http_status == 409  # the package conflicts with its manifest or plan
    assert errors.PackageError.http_status == 500  # the platform failed to write or read its package
    assert errors.DecryptionError.http_status == 500


def test_cannot_listen_says_what_to_do_in_one_line():
    import errno

    line = errors.CannotListen.on(
        "127.0.0.1", 8000, OSError(errno.EADDRINUSE, "x (while attempting ...)")
    ).diagnostics()
    assert line == (
        "cannot listen on 127.0.0.1:8000: the port is already in use (another process listens there: "
        "choose another --port)"
    )
    assert "[::1]:80: permission denied" in errors.CannotListen.on("::1", 80, OSError(errno.EACCES, "x")).diagnostics()
