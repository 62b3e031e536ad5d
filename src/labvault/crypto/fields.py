"""Field encryption: one value, one AES-256-GCM ciphertext, bound to where it lives.

Byte layout of a sealed field (tink-style: documented here, checked at open)::

    0      1        5         17                  end
    | 0x01 | version | nonce12 | ciphertext || tag16 |
      fmt    u32 BE    random

Associated data (never stored, rebuilt from the row at open)::

    b"labvault/field/v1" 0x00 tenant 0x00 table 0x00 column 0x00 row_id 0x00 version(u32 BE)

so a ciphertext copied to another row, column, table or lab, or relabelled with another key
version, fails to open. Every failure is one ``DecryptionError``; no function takes a nonce.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from labvault.errors import DecryptionError

FORMAT = 1
_HEADER = struct.Struct(">BI")
_OVERHEAD = _HEADER.size + 12 + 16
_NONCE_BATCH = 4096


class _NoncePool:
    """Random 96-bit nonces drawn from the OS in batches: one syscall per 4,096 fields."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf = os.urandom(12 * _NONCE_BATCH)
            pos = 0
        self._pos = pos + 12
        return self._buf[pos : pos + 12]


class ColumnCipher:
    """Seals and opens the values of one (tenant, table, column) with the tenant's data keys."""

    __slots__ = ("_aead", "_current", "_header", "_nonces", "_prefix", "_suffix", "column", "table")

    def __init__(self, cipher: FieldCipher, table: str, column: str) -> None:
        self.table = table
        self.column = column
        self._aead = cipher._aead
        self._current = cipher.current_version
        self._header = _HEADER.pack(FORMAT, self._current)
        self._prefix = b"\x00".join(
            [b"labvault/field/v1", cipher.tenant.encode(), table.encode(), column.encode(), b""]
        )
        self._suffix = {v: b"\x00" + struct.pack(">I", v) for v in self._aead}
        self._nonces = cipher._nonces

    def seal(self, row_id: str, value: bytes) -> bytes:
        nonce = self._nonces.take()
        aad = self._prefix + row_id.encode() + self._suffix[self._current]
        return self._header + nonce + self._aead[self._current].encrypt(nonce, value, aad)

    def seal_many(self, row_ids: Sequence[str], values: Sequence[bytes]) -> list[bytes]:
        """``seal`` for many rows at once: one random draw for all nonces, no per-value calls."""
        if len(row_ids) != len(values):
            raise ValueError("one row id per value")
        buf = os.urandom(12 * len(values))
        nonces = [buf[k : k + 12] for k in range(0, len(buf), 12)]
        encrypt = self._aead[self._current].encrypt
        header, prefix, suffix = self._header, self._prefix, self._suffix[self._current]
        return [
            header + nonce + encrypt(nonce, value, prefix + rid.encode() + suffix)
            for nonce, rid, value in zip(nonces, row_ids, values, strict=True)
        ]

    def open(self, row_id: str, blob: bytes) -> bytes:
        if len(blob) < _OVERHEAD:
            raise DecryptionError(f"{self.table}.{self.column}: ciphertext too short")
        fmt, version = _HEADER.unpack_from(blob)
        aead = self._aead.get(version)
        if fmt != FORMAT or aead is None:
            raise DecryptionError(
                f"{self.table}.{self.column}: unknown format or key version {version} (destroyed or forged)"
            )
        aad = self._prefix + row_id.encode() + self._suffix[version]
        try:
            return aead.decrypt(blob[5:17], blob[17:], aad)
        except InvalidTag:
            raise DecryptionError(
                f"{self.table}.{self.column}: ciphertext does not open "
                "(tampered, or moved from another row, column or lab)"
            ) from None


class FieldCipher:
    """A lab's field cipher: its data keys by version, the newest one used to seal."""

    def __init__(self, tenant: str, keys: dict[int, bytes], current_version: int) -> None:
        if current_version not in keys:
            raise ValueError("the current key version must be among the keys")
        for v, k in keys.items():
            if len(k) != 32:
                raise ValueError(f"data key version {v} is not 256 bits")
        self.tenant = tenant
        self.current_version = current_version
        self._aead = {v: AESGCM(k) for v, k in keys.items()}
        self._nonces = _NoncePool()
        self._columns: dict[tuple[str, str], ColumnCipher] = {}

    def column(self, table: str, column: str) -> ColumnCipher:
        col = self._columns.get((table, column))
        if col is None:
            col = self._columns[(table, column)] = ColumnCipher(self, table, column)
        return col

    def seal(self, value: bytes, *, table: str, column: str, row_id: str) -> bytes:
        return self.column(table, column).seal(row_id, value)

    def open(self, blob: bytes, *, table: str, column: str, row_id: str) -> bytes:
        return self.column(table, column).open(row_id, blob)

    @staticmethod
    def version_of(blob: bytes) -> int:
        """The key version a sealed value names (not authenticated until it is opened)."""
        if len(blob) < _OVERHEAD:
            raise DecryptionError("ciphertext too short")
        version: int = _HEADER.unpack_from(blob)[1]
        return version

    def __reduce__(self) -> NoReturn:
        raise TypeError("a field cipher holds key material and cannot be pickled")
