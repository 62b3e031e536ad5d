"""Feed certificates: a lab's ``lab_admin`` pins the TLS client certificate of a feed on one of
the lab's service accounts; the MLLP listener ingests as the account whose pinned certificate a
client presents, and as nobody else (C2, E1).

The pin is the SHA-256 fingerprint of the certificate's DER encoding, unique across the platform
(one certificate, one account). The certificate itself is kept too (it is public): the listener
trusts exactly the lab's pinned certificates, so a self-signed feed certificate needs no CA.
Pinning and unpinning are audited; vendor roles are refused (``feed:manage`` is a lab_admin
action only).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from labvault.access.principal import Principal
from labvault.accounts.service import _account_by_email, principal_of
from labvault.crypto import certificates
from labvault.crypto.certificates import fingerprint
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.store import schema as t


@dataclass(frozen=True)
class Pinned:
    account_id: str
    email: str
    fingerprint: str


def read_certificate(data: bytes) -> tuple[str, str]:
    """(fingerprint, PEM) of a feed's certificate, refused when it is not one or not valid now."""
    return certificates.read_certificate(data, now=utcnow())


def _service_account(u, tenant_id: str, email: str):
    row = _account_by_email(u, email)
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(f"no account with this e-mail address in lab '{tenant_id}'")
    if row.kind != "service":
        raise InvalidInput("a feed certificate is pinned on a service account (user add --service), not a person's")
    if not row.active:
        raise InvalidInput("this service account is deactivated")
    return row


def pin(u, tenant_id: str, email: str, certificate: bytes) -> Pinned:
    """Pin ``certificate`` on the lab's service account ``email`` (replacing an earlier pin)."""
    u.tenant(tenant_id)
    u.authorise(tenant_id, "feed:manage")
    fp, pem = read_certificate(certificate)
    row = _service_account(u, tenant_id, email)
    other = u.execute("*", select(t.account.c.account_id).where(t.account.c.feed_cert_sha256 == fp)).first()
    if other is not None and other.account_id != row.account_id:
        raise InvalidInput("this certificate is already pinned on another service account: each feed has its own")
    u.execute(
        tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == tenant_id, t.account.c.account_id == row.account_id)
        .values(feed_cert_sha256=fp, feed_cert_pem=pem),
    )
    u.audit(tenant_id, "feed:pin", "account", 1, refs=[row.account_id, fp])
    return Pinned(row.account_id, row.email, fp)


def unpin(u, tenant_id: str, email: str) -> Pinned:
    """Remove the pinned certificate of a service account: its feed is refused from the next connection."""
    u.tenant(tenant_id)
    u.authorise(tenant_id, "feed:manage")
    row = _service_account(u, tenant_id, email)
    if row.feed_cert_sha256 is None:
        raise InvalidInput("no certificate is pinned on this service account")
    u.execute(
        tenant_id,
        update(t.account)
        .where(t.account.c.tenant_id == tenant_id, t.account.c.account_id == row.account_id)
        .values(feed_cert_sha256=None, feed_cert_pem=None),
    )
    u.audit(tenant_id, "feed:unpin", "account", 1, refs=[row.account_id, row.feed_cert_sha256])
    return Pinned(row.account_id, row.email, row.feed_cert_sha256)


def listing(u, tenant_id: str) -> list[Pinned]:
    """The lab's service accounts with a pinned certificate."""
    u.tenant(tenant_id)
    u.authorise(tenant_id, "feed:manage")
    rows = u.execute(
        tenant_id,
        select(t.account)
        .where(t.account.c.tenant_id == tenant_id, t.account.c.feed_cert_sha256.is_not(None))
        .order_by(t.account.c.email),
    ).all()
    return [Pinned(r.account_id, r.email, r.feed_cert_sha256) for r in rows]


def pinned_certificates(u, tenant_id: str) -> list[str]:
    """The PEM certificates pinned on the lab's active service accounts (for the listener's trust store)."""
    rows = u.execute(
        tenant_id,
        select(t.account.c.feed_cert_pem).where(
            t.account.c.tenant_id == tenant_id,
            t.account.c.kind == "service",
            t.account.c.active == 1,
            t.account.c.feed_cert_pem.is_not(None),
        ),
    ).scalars()
    return list(rows)


def principal_for_certificate(u, tenant_id: str, der: bytes, *, addr: str | None) -> Principal:
    """The lab's active service account whose pinned certificate this is, or AccessDenied (audited
    as a refused ``feed:connect`` in the lab's trail, with the fingerprint and the address)."""
    fp = fingerprint(der)
    row = u.execute("*", select(t.account).where(t.account.c.feed_cert_sha256 == fp)).first()
    if row is None or row.tenant_id != tenant_id or row.kind != "service" or not row.active:
        u.audit(tenant_id, "feed:connect", "feed", 0, outcome="denied", refs=[fp])
        raise AccessDenied("this client certificate is not pinned on an active service account of the lab")
    return principal_of(row, source_addr=addr, user_agent="mllp")
