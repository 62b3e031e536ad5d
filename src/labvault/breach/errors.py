"""The breach response's errors: a leaked file that cannot be read, an incident step refused."""

from __future__ import annotations

from labvault.errors import LabvaultError


class LeakUnreadable(LabvaultError, ValueError):
    """A leaked file that cannot be read as rows; the text names the file's layout and the failure,
    never a value of the file."""

    http_status = 400
    public_reason = "the leaked file cannot be read"
