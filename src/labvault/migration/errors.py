"""The errors of exports, migrations and returns."""

from __future__ import annotations

from labvault.access.errors import ScopeExceeded
from labvault.errors import InvalidInput, LabvaultError


class StateError(InvalidInput):
    """A step asked in the wrong state (the message says the state and the next step)."""


class VolumeExceeded(ScopeExceeded):
    """The selection is far above the instruction's expected volume: stopped before writing."""


class ReceiptInvalid(InvalidInput):
    """The recipient's receipt is malformed, for another migration, or does not verify."""


class ReconciliationFailed(LabvaultError):
    """The package does not match its manifest or its plan (counts and names only): 409, the
    package conflicts with what was approved; nothing of it is handed over."""

    http_status = 409
