"""X.509 certificates for TLS feeds: reading and fingerprinting a feed's client certificate (the pin
a lab records on its service account), and self-signed pairs for benchmarks and local tests."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from labvault.errors import InvalidInput


def fingerprint(der: bytes) -> str:
    """The pin of a certificate: SHA-256 of its DER encoding, lower-case hex."""
    return hashlib.sha256(der).hexdigest()


def read_certificate(data: bytes, *, now: dt.datetime) -> tuple[str, str]:
    """(fingerprint, PEM) of one X.509 certificate given as PEM or DER; refused when it is not one
    or is not valid at ``now``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidInput("not an X.509 certificate (PEM or DER)") from None
    if cert.not_valid_after_utc < now:
        raise InvalidInput(f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        raise InvalidInput(f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d}")
    return fingerprint(cert.public_bytes(Encoding.DER)), cert.public_bytes(Encoding.PEM).decode("ascii")


def self_signed(folder: Path, name: str, *, server: bool, days: int = 1) -> tuple[Path, Path]:
    """A self-signed P-256 certificate and its key (mode 0600) in ``folder``: a listener's for
    ``localhost`` (``server``), or a feed's client certificate. (certificate path, key path)"""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost" if server else name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName("localhost")])
        if server
        else x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
        critical=False,
    )
    cert = builder.sign(key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
