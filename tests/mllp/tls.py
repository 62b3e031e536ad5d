"""Certificates made in the test with the ``cryptography`` library, and TLS clients for MLLP."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def pem(self) -> bytes:
        return self.cert.read_bytes()


def self_signed(folder: Path, name: str, *, server: bool = False) -> Pair:
    """A self-signed certificate and its key (a server's for 'localhost', or a feed's client one)."""
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
        .not_valid_after(now + dt.timedelta(hours=2))
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pair


def client_context(server: Pair, client: Pair | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(server.cert))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def tls_connect(
    port: int, server: Pair, client: Pair | None, *, source: str | None = None, timeout: float = 20
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None)
    try:
        return client_context(server, client).wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def no_ack(s: socket.socket, message: bytes) -> bytes:
    """Send ``message`` and read until the server closes: what came back (no MSA expected)."""
    answer = b""
    try:
        s.sendall(message)
        while chunk := s.recv(4096):
            answer += chunk
    except (OSError, ssl.SSLError):
        pass
    finally:
        s.close()
    return answer
