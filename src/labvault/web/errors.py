"""The pages' own refusals: those answered by a redirection rather than an error page, and the
recording of a refusal a page decides itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

from labvault.accounts.errors import AuthenticationFailed
from labvault.errors import AccessDenied, LabvaultError

if TYPE_CHECKING:
    from fastapi import Request

    from labvault.access import Principal


class LoginRequired(AuthenticationFailed):
    """No valid session on a page: the visitor is sent to the login page (303)."""

    def __init__(self, reason: str = "sign in first") -> None:
        super().__init__(reason)


class StepUpNeeded(AccessDenied):
    """An approval asked for without a recent TOTP step-up: the person is sent to enter a code."""

    def __init__(self, reason: str = "an approval needs a recent TOTP code") -> None:
        super().__init__(reason)


def refuse(request: Request, principal: Principal, action: str, reason: str) -> NoReturn:
    """A page's own refusal of a signed-in account (a vendor account on a lab's page, a role the
    page is not for), decided before any gateway call: recorded as the JSON API records the
    refusals its dependencies decide (``labvault.api.deps``), under the caller's own account in
    its own trail (a vendor account's: the platform's), ``denied``, with the action refused and
    nothing else (no value, no id from the URL); then ``AccessDenied(reason)``."""
    from labvault.access import Purpose
    from labvault.api.deps import gateway

    with gateway(request).unit(principal, Purpose.AUTHENTICATION) as u:
        u.refuse(principal.tenant_id, action, reason)
    raise AccessDenied(reason)  # not reached: refuse raises


class TooLarge(LabvaultError):
    """An upload larger than its limit (413): the leaked file of the breach page."""

    http_status = 413
    public_reason = "the leaked file is larger than the upload limit"
