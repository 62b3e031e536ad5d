"""Small records sealed under a scope's KEK (key provider), so that whoever can only write to the
database cannot make one that opens: a lab's instruction signer registrations, for instance.

A sealed record is a JSON object of strings, wrapped by the key provider with the context
``<purpose>:v<version>`` (one version per record). ``open`` returns the record, or None when the
blob does not open under that scope and context (forged, moved, or its scope destroyed): the
caller then treats it as absent.
"""

from __future__ import annotations

import json

from labvault.crypto.keys import KeyProvider
from labvault.errors import LabvaultError


class RecordSeal:
    """Seals and opens records of one ``purpose`` with a key provider's KEK of a scope."""

    def __init__(self, provider: KeyProvider, purpose: str) -> None:
        self._keys = provider
        self._purpose = purpose

    def _context(self, version: int) -> bytes:
        return f"{self._purpose}:v{version}".encode()

    def seal(self, scope: str, version: int, record: dict[str, str]) -> bytes:
        """The record wrapped under ``scope``'s KEK (opaque bytes, to store as they are)."""
        text = json.dumps(record, sort_keys=True)
        return self._keys.wrap(scope, text.encode(), self._context(version))

    def open(self, scope: str, version: int, blob: bytes) -> dict[str, object] | None:
        """The record sealed in ``blob``, or None when it does not open as one."""
        try:
            body = json.loads(self._keys.unwrap(scope, blob, self._context(version)))
        except (LabvaultError, ValueError):
            return None
        return body if isinstance(body, dict) else None
