"""Blind indexes: exact-match search over encrypted identifiers, and patient pseudonyms.

A tenant's index root key (random, stored wrapped like a DEK but never rotated with them) is
split by HKDF-SHA256 into one key per use, so the NIR index, the name index, the birth date index
and the pseudonym link never share a key with each other or with the data keys. Each blind value is
HMAC-SHA256(use key, normalised value) truncated to 16 bytes.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Iterable
from datetime import date
from hashlib import sha256
from typing import NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from labvault.domain.identifiers import normalise_nir

_NOT_LETTER = re.compile(r"[^A-Z]+")


def normalise_name(name: str) -> str:
    """Accents and punctuation dropped, upper case, letters only: 'Lefèvre-d'Orgeval' -> 'LEFEVREDORGEVAL'."""
    decomposed = unicodedata.normalize("NFKD", name)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_LETTER.sub("", stripped.upper())


def first_given_name(given_names: str) -> str:
    parts = given_names.replace(",", " ").split()
    return parts[0] if parts else ""


def name_text(family_name: str, first_given: str, birth_date: date) -> str:
    """What ``BlindIndex.name`` hashes, from a family name and a first given name already
    normalised (``normalise_name``): a caller hashing many keys normalises each distinct name once."""
    return f"{family_name}|{first_given}|{birth_date.isoformat()}"


def traits_text(birth_name: str, first_given: str, birth_date: date, sex: str) -> str:
    """What ``BlindIndex.traits`` hashes, from normalised names and a sex already stripped and upper case."""
    return f"{birth_name}|{first_given}|{birth_date.isoformat()}|{sex}"


class BlindIndex:
    """Per-tenant keyed hashes of identifiers."""

    def __init__(self, tenant: str, root_key: bytes) -> None:
        if len(root_key) != 32:
            raise ValueError("the index root key must be 256 bits")
        self.tenant = tenant
        self._keys = {
            use: HKDF(
                algorithm=hashes.SHA256(),
                length=32,
                salt=None,
                info=b"labvault/blind/v1\x00" + tenant.encode() + b"\x00" + use.encode(),
            ).derive(root_key)
            for use in ("nir", "name", "link", "rpps", "traits", "local", "order", "born", "canary")
        }

    def _mac(self, use: str, text: str) -> bytes:
        return hmac.new(self._keys[use], text.encode(), sha256).digest()[:16]

    def many(self, use: str, texts: Iterable[str]) -> list[bytes]:
        """The blind values of many texts already normalised (``normalise_nir``, ``name_text``,
        ``traits_text``), for ``use`` in ``nir``, ``name``, ``traits``: one C call per value."""
        if use not in ("nir", "name", "traits"):
            raise ValueError(f"no bulk blind index for '{use}'")
        # HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once: each value then
        # costs two hash copies, half of what a fresh HMAC context does. The same bytes as ``_mac``.
        block = self._keys[use].ljust(64, b"\0")
        inner = sha256(bytes(b ^ 0x36 for b in block))
        outer = sha256(bytes(b ^ 0x5C for b in block))
        out = []
        for text in texts:
            h = inner.copy()
            h.update(text.encode())
            o = outer.copy()
            o.update(h.digest())
            out.append(o.digest()[:16])
        return out

    def nir(self, nir: str) -> bytes:
        return self._mac("nir", normalise_nir(nir))

    def rpps(self, rpps: str) -> bytes:
        return self._mac("rpps", rpps.strip())

    def name(self, family_name: str, given_names: str, birth_date: date) -> bytes:
        return self._mac(
            "name", name_text(normalise_name(family_name), normalise_name(first_given_name(given_names)), birth_date)
        )

    def born(self, birth_date: date) -> bytes:
        """The birth date alone: coarse by design, it splits a lab's patients by birth date only
        (a name search by prefix reads the few sharing a date, then compares their names)."""
        return self._mac("born", birth_date.isoformat())

    def traits(self, birth_name: str, first_given: str, birth_date: date, sex: str) -> bytes:
        """The strict traits of the RNIV that every message carries: birth name, first given name,
        birth date and sex, normalised."""
        return self._mac(
            "traits",
            traits_text(normalise_name(birth_name), normalise_name(first_given), birth_date, sex.strip().upper()),
        )

    def local_id(self, system: str, value: str) -> bytes:
        """An identifier a sending system gave a patient (IPP), with the system."""
        return self._mac("local", f"{len(system)}:{system}|{value.strip()}")

    def order(self, patient_id: str, sender: str, kind: str, number: str) -> bytes:
        """An order of one patient by its number (``kind``: ``placer`` or ``filler``) and sender:
        the same order received again finds its request; another patient's number finds nothing."""
        return self._mac("order", f"{len(patient_id)}:{patient_id}|{len(sender)}:{sender}|{kind}|{number.strip()}")

    def canary(self, pseudonym: str) -> bytes:
        """A planted patient's marker (``labvault.access.canaries``), from its pseudonym: rows that
        carry only the pseudonym (requests, results) are checked as cheaply as identities, and
        without this key a marker cannot be matched with a pseudonym or a patient id."""
        return self._mac("canary", pseudonym)

    def pseudonym(self, patient_id: str) -> str:
        """The patient's pseudonym on medical rows; only the lab's identity key re-links it."""
        return self._mac("link", patient_id).hex()

    def __reduce__(self) -> NoReturn:
        raise TypeError("a blind index holds key material and cannot be pickled")
