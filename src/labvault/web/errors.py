"""The pages' own refusals, answered by a redirection rather than an error page."""

from __future__ import annotations

from labvault.accounts.errors import AuthenticationFailed
from labvault.errors import AccessDenied


class LoginRequired(AuthenticationFailed):
    """No valid session on a page: the visitor is sent to the login page (303)."""

    def __init__(self, reason: str = "sign in first") -> None:
        super().__init__(reason)


class StepUpNeeded(AccessDenied):
    """An approval asked for without a recent TOTP step-up: the person is sent to enter a code."""

    def __init__(self, reason: str = "an approval needs a recent TOTP code") -> None:
        super().__init__(reason)
