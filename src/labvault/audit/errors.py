"""The audit trail's errors."""

from __future__ import annotations

from labvault.errors import LabvaultError


class PinInvalid(LabvaultError):
    """The pin file is missing where it must be, or does not open under the platform's KEK: the
    platform's own record of its key failed its check (500; the message names the file)."""

    public_reason = "the platform's pinned key failed its check: see the server's log"
