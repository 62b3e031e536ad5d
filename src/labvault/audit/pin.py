"""The platform key pinned at ``init``, and the last checkpoint of every lab, outside the database.

G4: the file ``platform-pin.json`` in the home holds, sealed under the platform's KEK (the keyring
or the HSM: AES-GCM through ``KeyProvider.wrap``, so nobody without the keyring passphrase or the
token can write one that opens):

    {"keys": [{"version": 1, "public": hex, "fingerprint": hex}, ...],   the pinned key, then rotations
     "labs": {"<lab>": {"index": n, "size": s, "root": hex, "head": hex}}} each lab's last checkpoint

Checkpoints are verified against these keys, never against a key read from the checkpoint's row;
a lab whose database holds fewer checkpoints, or a shorter log, than its pinned last checkpoint
was tampered with. Every change re-reads the file under an exclusive lock (``fcntl.flock`` on a
lock file beside it) and writes it atomically, so processes signing checkpoints at the same time
(``serve``'s scheduler, the CLI) keep each other's entries. A lab's entry only moves forward.

What the pin does not prove: someone holding both the keyring passphrase and the file system can
write a new pin, or put back an older copy of this file. The checkpoints each lab pulls and keeps
(``audit checkpoints``) are what catch that.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from hashlib import sha256
from pathlib import Path
from typing import Any

from labvault.audit.errors import PinInvalid
from labvault.crypto.keys import PLATFORM, KeyProvider, atomic_write
from labvault.errors import DecryptionError, KeyringError

FORMAT = "labvault-audit-pin/1"
CONTEXT = b"audit-pin:v1"
FILE_NAME = "platform-pin.json"


def fingerprint(public: bytes) -> str:
    """The fingerprint of an Ed25519 public key a lab pins: SHA-256 of its 32 raw bytes, hex."""
    return sha256(public).hexdigest()


def show(fp: str) -> str:
    """A fingerprint as printed for people: groups of four hex digits."""
    return " ".join(fp[i : i + 4] for i in range(0, len(fp), 4))


class PinStore:
    def __init__(self, path: Path, keys: KeyProvider) -> None:
        self.path = Path(path)
        self._keys = keys

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any]:
        """The unsealed pin; ``PinInvalid`` when absent, altered, or sealed under another KEK."""
        try:
            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            raise PinInvalid(
                f"no pinned platform key at {self.path}: deleted, or a home made before keys were "
                "pinned ('labvault init' pins it there)"
            ) from None
        except (OSError, ValueError):
            raise PinInvalid(f"the pinned platform key at {self.path} is unreadable") from None
        try:
            if doc.get("format") != FORMAT:
                raise ValueError("format")
            blob = base64.b64decode(doc["sealed"], validate=True)
            pin: dict[str, Any] = json.loads(self._keys.unwrap(PLATFORM, blob, CONTEXT))
            if not isinstance(pin.get("keys"), list) or not pin["keys"] or not isinstance(pin.get("labs"), dict):
                raise ValueError("shape")
        except (DecryptionError, KeyringError, ValueError, KeyError, TypeError, AttributeError):
            raise PinInvalid(
                f"the pinned platform key at {self.path} does not open under the platform's key: "
                "it was replaced or altered"
            ) from None
        return pin

    def _write(self, pin: dict[str, Any]) -> None:
        sealed = self._keys.wrap(PLATFORM, json.dumps(pin, sort_keys=True).encode(), CONTEXT)
        doc = {
            "format": FORMAT,
            "fingerprint": pin["keys"][0]["fingerprint"],
            "note": "sealed under the platform key-encryption key; the fingerprint here is for reading only",
            "sealed": base64.b64encode(sealed).decode(),
        }
        atomic_write(self.path, json.dumps(doc, indent=1).encode())

    def create(self, public: bytes) -> None:
        """Pin ``public`` (the platform key ``init`` made); no-op when a pin exists."""
        with self._locked():
            if self.path.exists():
                return
            self._write(
                {"keys": [{"version": 1, "public": public.hex(), "fingerprint": fingerprint(public)}], "labs": {}}
            )

    def _change(self, change: Callable[[dict[str, Any]], bool]) -> None:
        with self._locked():
            pin = self.read()
            if change(pin):
                self._write(pin)

    def add_key(self, version: int, public: bytes) -> None:
        def change(pin: dict[str, Any]) -> bool:
            if any(k["public"] == public.hex() for k in pin["keys"]):
                return False
            pin["keys"].append({"version": version, "public": public.hex(), "fingerprint": fingerprint(public)})
            return True

        self._change(change)

    def record_checkpoint(self, tenant_id: str, index: int, size: int, root: str, head: str) -> None:
        def change(pin: dict[str, Any]) -> bool:
            old = pin["labs"].get(tenant_id)
            if old is not None and int(old["index"]) >= index:
                return False
            pin["labs"][tenant_id] = {"index": index, "size": size, "root": root, "head": head}
            return True

        self._change(change)
