"""Deterministic digests of public material: the readers' domain ids, content fingerprints, seeds.

Nothing here is secret and no key is used: an id derived here can be recomputed by anyone who
knows its material, and a material from a small space (an accession number) can be found again
from the id by trying them all.

Domain ids (``Scope``, ``Order``, ``Orders``): 32 hex digits, the first 128 bits of SHA-256 over the parts
of the material, one text encoding for every reader: each part as ``<length>:<text>,`` (so that no
two lists of parts give the same text), the whole encoded as UTF-8 with lone surrogates kept as they
are (``surrogatepass``: JSON can carry them).

Which material (the same rule in every reader):

- an order is scoped by its message and its place there (``message_scope(format, facility,
  control id).scope(place)``): its request is ``request``, its k-th specimen ``specimen``/k, the
  m-th of its results with a given code ``result``/code/m;
- patients and prescribers: the message's scope and their place (they are matched by INS and RPPS
  when stored, whatever their id).

An order's number (accession, filler number) is deliberately not the scope: with ids derived from
it alone, any message carrying the number of another patient's order took that order's ids first
and the patient's own results were then refused; and an unkeyed digest of a number from a small
space gives the number back. The same order received in several formats will share its ids once
they are derived at store time with a key of the lab's (with the identity matching still to
come), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b, sha256

ID_CHARS = 32


def _material(parts: Iterable[str]) -> str:
    return "".join([f"{len(p)}:{p}," for p in parts])


def _digest(material: str) -> str:
    return sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:ID_CHARS]


class Scope:
    """The material shared by the ids of one order or one message; ``id(*parts)`` derives one."""

    __slots__ = ("_prefix",)

    def __init__(self, *parts: str) -> None:
        self._prefix = _material(parts)

    def id(self, *parts: str) -> str:
        if len(parts) == 1:  # the common case, written out
            part = parts[0]
            return _digest(f"{self._prefix}{len(part)}:{part},")
        return _digest(self._prefix + _material(parts))

    def scope(self, *parts: str) -> Scope:
        """A narrower scope: this one's material followed by ``parts``."""
        inner = Scope()
        inner._prefix = self._prefix + _material(parts)
        return inner


def _scope(prefix: str) -> Scope:
    scope = Scope()
    scope._prefix = prefix
    return scope


def message_scope(fmt: str, facility: str, control_id: str, *more: str) -> Scope:
    """The ids of what a message holds that has no number of its own (patients, prescribers, and
    orders without one), from the message's format, sending facility and control id;
    ``Scope("message", fmt, facility, control_id, *more)``, written out."""
    return _scope(
        f"7:message,{len(fmt)}:{fmt},{len(facility)}:{facility},{len(control_id)}:{control_id},"
        + (_material(more) if more else "")
    )


_RANKS = [_material((str(m),)) for m in range(64)]  # a rank (1st, 2nd... of its kind) as material
_REQUEST, _SPECIMEN, _RESULT = (_material((tag,)) for tag in ("request", "specimen", "result"))
_CODES: dict[str, str] = {}  # a result code as material: codes recur in every message (bounded)


def _rank(m: int) -> str:
    return _RANKS[m] if m < 64 else _material((str(m),))


class Order:
    """The ids of one order's records: its request, its specimens in turn, its results by code.
    Each is ``scope.id(...)`` of the parts named below, its material written out: these are the ids
    derived for every record of every message read."""

    __slots__ = ("_prefix", "codes", "scope", "specimens")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.specimens = 0
        self.codes: dict[str, int] = {}
        self._prefix = scope._prefix

    def request_id(self) -> str:
        """``scope.id("request")``."""
        return _digest(self._prefix + _REQUEST)

    def specimen_id(self) -> str:
        """The id of the order's next specimen, ``scope.id("specimen", str(k))``."""
        self.specimens += 1
        return _digest(self._prefix + _SPECIMEN + _rank(self.specimens))

    def result_id(self, code: str) -> str:
        """The id of the order's next result with this code, ``scope.id("result", code, str(m))``."""
        codes = self.codes
        m = codes[code] = codes.get(code, 0) + 1
        piece = _CODES.get(code)
        if piece is None:
            if len(_CODES) >= 4096:
                _CODES.clear()
            piece = _CODES[code] = f"{len(code)}:{code},"
        return sha256(
            (self._prefix + _RESULT + piece + (_RANKS[m] if m < 64 else _rank(m))).encode("utf-8", "surrogatepass")
        ).hexdigest()[:ID_CHARS]


class Orders:
    """The ``Order`` of each order of one message, by its place there (an order's own number is
    not part of its ids: see the module's docstring)."""

    __slots__ = ("message",)

    def __init__(self, message: Scope) -> None:
        self.message = message

    def order(self, place: str) -> Order:
        return Order(self.message.scope(place))


def fingerprint(chunks: Iterable[bytes]) -> str:
    """32 hex digits of SHA-256 over the concatenated chunks: a content key (a FHIR document or
    export without an id of its own), not a secret."""
    h = sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:ID_CHARS]


def text_digest(text: str) -> str:
    """32 hex digits of SHA-256 over ``text`` (UTF-8, lone surrogates kept): a content key."""
    return _digest(text)


def seed(text: str, size: int = 16) -> int:
    """A number of ``size`` bytes from a text (BLAKE2b), for seeding synthetic data and naming it:
    deterministic, spread, and no secret."""
    return int.from_bytes(blake2b(text.encode("utf-8"), digest_size=size).digest(), "big")
