"""The monitoring's errors: a delivery a channel did not take, a channel's target refused."""

from __future__ import annotations

from labvault.errors import LabvaultError


class DeliveryFailed(LabvaultError):
    """A channel did not take the message; the text names the channel's kind and the failure,
    never the message (502: an upstream service; it is retried with backoff)."""

    http_status = 502
    public_reason = "a notification channel did not take the message"


class TargetRefused(LabvaultError, ValueError):
    """A channel's target that may not be used; the text is one line naming the rule, never the target."""

    http_status = 400
