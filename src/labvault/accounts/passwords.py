"""Password policy and hashing (argon2id)."""

from __future__ import annotations

import functools
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from labvault.errors import InvalidInput

MIN_LENGTH = 12
_HASHER = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults
# A real hash of a random password: verifying against it costs as much as a real check, so a
# login for an unknown e-mail takes as long as one for a known account.
_DUMMY = _HASHER.hash("labvault-dummy-password-for-timing")


@functools.cache
def common_passwords() -> frozenset[str]:
    text = resources.files("labvault.accounts").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def check_policy(password: str, *, email: str = "", name: str = "") -> None:
    """Raise ``InvalidInput`` (never quoting the password) unless the password is acceptable."""
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_LENGTH} characters")
    low = password.lower()
    if low in common_passwords():
        raise InvalidInput("this password is among the most common ones: choose another")
    local = email.split("@")[0].lower()
    if (local and len(local) >= 4 and local in low) or any(len(p) >= 4 and p.lower() in low for p in name.split()):
        raise InvalidInput("a password must not contain your name or e-mail address")
    if len(set(password)) < 5:
        raise InvalidInput("a password needs more different characters")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        try:
            _HASHER.verify(_DUMMY, password)
        except VerificationError:
            pass
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
