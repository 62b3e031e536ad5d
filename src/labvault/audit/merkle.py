"""Merkle trees as in RFC 6962 / RFC 9162 §2.1: roots, consistency proofs and their verification.

    leaf hash  = SHA-256(0x00 || leaf)
    node hash  = SHA-256(0x01 || left || right)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two below n

``CompactRange`` folds leaves one at a time keeping O(log n) subtree roots, so the root of a log
of any size is computed in one pass without holding its leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha256
from typing import Any

EMPTY_ROOT = sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH of already-hashed leaves (``leaf_hash`` values)."""
    cr = CompactRange()
    for h in leaves:
        cr.append(h)
    return cr.root()


class CompactRange:
    """The perfect subtrees covering leaves [0, n), largest first."""

    __slots__ = ("_hashes", "_sizes", "size")

    def __init__(self, sizes: list[int] | None = None, hashes: list[bytes] | None = None, size: int = 0) -> None:
        self._sizes: list[int] = sizes if sizes is not None else []
        self._hashes: list[bytes] = hashes if hashes is not None else []
        self.size = size

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash."""
        sizes, hashes = self._sizes, self._hashes
        size, h = 1, leaf
        while sizes and sizes[-1] == size:
            h = node_hash(hashes.pop(), h)
            size += sizes.pop()
        sizes.append(size)
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h

    def state(self) -> dict[str, Any]:
        return {"size": self.size, "sizes": list(self._sizes), "hashes": [x.hex() for x in self._hashes]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CompactRange:
        return cls(list(state["sizes"]), [bytes.fromhex(x) for x in state["hashes"]], int(state["size"]))


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    return root(leaves[lo:hi])


def consistency_proof(leaves: Sequence[bytes], m: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 §2.1.2, for leaf hashes D[0:n], 0 < m <= n."""
    n = len(leaves)
    if not 0 < m <= n:
        raise ValueError("consistency proofs need 0 < m <= n")

    def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [_mth(leaves, lo, hi)]
        k = _split(n)
        if m <= k:
            return [*sub(m, lo, lo + k, complete), _mth(leaves, lo + k, hi)]
        return [*sub(m - k, lo + k, hi, False), _mth(leaves, lo, lo + k)]

    return sub(m, 0, n, True)


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2: does the tree of size ``second`` extend the tree of size ``first``?"""
    if first < 1 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
