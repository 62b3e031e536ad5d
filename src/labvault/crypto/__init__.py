"""The only code that sees key material. Exports the safe recipes only."""

from labvault.crypto.blind import BlindIndex
from labvault.crypto.fields import ColumnCipher, FieldCipher
from labvault.crypto.keys import PLATFORM, KeyProvider, LocalKeyring
from labvault.crypto.signing import Signer, verify
from labvault.errors import SignatureInvalid

__all__ = [
    "PLATFORM",
    "BlindIndex",
    "ColumnCipher",
    "FieldCipher",
    "KeyProvider",
    "LocalKeyring",
    "SignatureInvalid",
    "Signer",
    "verify",
]
