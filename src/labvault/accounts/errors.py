"""The accounts' errors: a refused login, a locked account or address, a step-up needed.

Each is a refusal: the CLI exits ``EXIT_REFUSED``; the API answers 401 (with a
``WWW-Authenticate`` challenge), 429 (with ``Retry-After``) or 403.
"""

from __future__ import annotations

from labvault.errors import EXIT_REFUSED, AccessDenied, LabvaultError


class AuthenticationFailed(LabvaultError):
    """Wrong credentials (the message never says which part was wrong)."""

    http_status = 401
    exit_code = EXIT_REFUSED

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="labvault"'}


class LockedOut(LabvaultError):
    """Too many failures in a row for this account or this address: try again after ``retry_after`` s."""

    http_status = 429
    exit_code = EXIT_REFUSED

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StepUpRequired(AccessDenied):
    """An approval asked for without a TOTP code checked within ``STEP_UP_WINDOW`` on this session."""
