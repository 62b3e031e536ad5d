"""The access gateway's errors (the kernel's refusals, ``AccessDenied`` and kin, are in
``labvault.errors``)."""

from __future__ import annotations

from labvault.errors import AccessDenied


class ScopeExceeded(AccessDenied):
    """A demand beyond the instruction; the message names the excess, never a value."""
