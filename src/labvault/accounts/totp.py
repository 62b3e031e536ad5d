"""TOTP (RFC 6238) second factor: enrolment URI, QR code (SVG or terminal), verification.

A code is accepted once: ``verify`` returns the time step it matched, and the account service
keeps the last step used per account (a code of that step or an earlier one is a replay).
"""

from __future__ import annotations

import io
import time

import pyotp
import segno

ISSUER = "Labvault"
STEP = 30  # seconds (the authenticator apps' default)

# The time source codes are checked against. Tests that log in many times per 30 seconds move it
# forward step by step; it is never read from the environment.
clock = time.time


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    buf = io.BytesIO()
    segno.make(uri, error="m").save(buf, kind="svg", scale=4, xmldecl=False)
    return buf.getvalue().decode()


def qr_terminal(uri: str) -> str:
    """The QR code drawn with Unicode half blocks, to scan from a terminal."""
    buf = io.StringIO()
    segno.make(uri, error="m").terminal(out=buf, compact=True)
    return buf.getvalue()


def match(secret: str, code: str) -> int | None:
    """The time step ``code`` belongs to (the current one, or one either side), or None."""
    code = code.strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    t = pyotp.TOTP(secret, interval=STEP)
    now = clock()
    step = int(now // STEP)
    for s in (step, step - 1, step + 1):
        if pyotp.utils.strings_equal(t.at(s * STEP), code):
            return s
    return None


def verify(secret: str, code: str) -> bool:
    """Whether the code is right now (without the single-use check: see the account service)."""
    return match(secret, code) is not None
