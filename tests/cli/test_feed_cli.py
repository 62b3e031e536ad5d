"""``labvault feed pin|unpin|list``: only the lab's own lab_admin pins a feed's client certificate on
one of the lab's service accounts; every vendor role is refused, audited, and nothing changes (C2, E1, G1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from labvault.access import Principal, Purpose
from labvault.accounts import service
from labvault.config import Settings
from labvault.crypto.keys import PLATFORM
from labvault.runtime import open_runtime
from tests.cli.helpers import PASSWORD
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import first_lab_admin, totp_code
from tests.mllp.tls import self_signed

VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")


def make_lab(capsys, tenant: str, finess: str) -> None:
    """A lab, created as the operator does (the one place these tests create labs)."""
    code, _, err = run(
        capsys,
        "tenant",
        "add",
        tenant,
        "--name",
        f"Lab {tenant}",
        "--finess",
        finess,
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    assert code == 0, err


def account(tenant: str, email: str, role: str, *, by: str | None = None) -> str | None:
    """An enrolled account (its TOTP secret), or with ``role='service'`` the lab's service account
    created by its lab_admin ``by`` (the one place these tests create accounts)."""
    rt = open_runtime(Settings.from_env())
    try:
        if role == "service":
            with rt.gateway.engine.connect() as c:
                admin_id = c.exec_driver_sql(f"SELECT account_id FROM account WHERE email = '{by}'").scalar_one()
            admin = Principal(admin_id, "Lab admin", tenant, frozenset({"lab_admin"}))
            with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
                service.create_account(
                    u,
                    tenant_id=tenant,
                    name="Analyser feed",
                    email=email,
                    roles=["service"],
                    kind="service",
                    purpose="ingest",
                )
            return None
        if tenant == PLATFORM:  # the vendor's own accounts: the platform adds them
            with rt.unit(Purpose.ADMINISTRATION) as u:
                service.create_account(u, tenant_id=tenant, name="Camille Durand", email=email, roles=[role])
        elif role == "lab_admin":  # the platform invites the lab's first lab_admin
            first_lab_admin(rt.gateway, rt.operator, tenant, email=email, name="Camille Durand")
        else:  # the lab's other accounts: added by the lab's own lab_admin
            admin = first_lab_admin(rt.gateway, rt.operator, tenant)
            with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
                service.create_account(u, tenant_id=tenant, name="Camille Durand", email=email, roles=[role])
        with rt.gateway.auth_unit(source_addr="test", user_agent="test") as u:
            return service.enrol_directly(u, email, PASSWORD)
    finally:
        rt.close()


def as_(monkeypatch, secret: str | None) -> None:
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    if secret:
        monkeypatch.setenv("LABVAULT_AS_TOTP", totp_code(secret))
    else:
        monkeypatch.delenv("LABVAULT_AS_TOTP", raising=False)


def _query(sql: str) -> list[tuple]:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.engine.connect() as c:
            return [tuple(r) for r in c.exec_driver_sql(sql).all()]
    finally:
        rt.close()


def pins() -> dict[str, str | None]:
    return dict(_query("SELECT email, feed_cert_sha256 FROM account WHERE kind = 'service'"))


@pytest.fixture
def labs(home, capsys, monkeypatch, tmp_path):
    assert run(capsys, "init")[0] == 0
    make_lab(capsys, "bio-lyon", "690000123")
    make_lab(capsys, "bio-nice", "060000123")
    secrets = {
        "admin@lyon.invalid": account("bio-lyon", "admin@lyon.invalid", "lab_admin"),
        "admin@nice.invalid": account("bio-nice", "admin@nice.invalid", "lab_admin"),
    }
    account("bio-lyon", "feed@lyon.invalid", "service", by="admin@lyon.invalid")
    account("bio-lyon", "bio@lyon.invalid", "biologist")
    for role in VENDOR_ROLES:
        secrets[f"{role}@vendor.invalid"] = account(PLATFORM, f"{role}@vendor.invalid", role)
    return secrets, self_signed(tmp_path / "pki", "feed")


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_a_vendor_role_cannot_pin_a_feed_certificate(labs, capsys, monkeypatch, role):
    """C2, E1, G1: refused with the reason, audited as denied in the lab's trail, nothing changed."""
    secrets, cert = labs
    email = f"{role}@vendor.invalid"
    as_(monkeypatch, secrets[email])
    code, _, err = run(
        capsys,
        "feed",
        "pin",
        "--tenant",
        "bio-lyon",
        "--email",
        "feed@lyon.invalid",
        "--cert",
        str(cert.cert),
        "--as",
        email,
    )
    assert code == 3 and "'feed:manage' is not allowed" in one_line_error(err)
    assert pins() == {"feed@lyon.invalid": None}
    events = _query(
        f"SELECT e.outcome FROM audit_event e JOIN account a ON a.account_id = e.actor "
        f"WHERE e.tenant_id = 'bio-lyon' AND e.action = 'feed:manage' AND a.email = '{email}'"
    )
    assert events == [("denied",)]


def test_the_labs_admin_pins_and_unpins_a_feed_certificate(labs, capsys, monkeypatch, tmp_path):
    """C2, E1, G1: the lab's lab_admin pins (audited, with the account and the fingerprint); another
    lab's admin and the lab's biologist are refused; a person's account, a file that is not a
    certificate and an expired certificate are refused in one line."""
    secrets, cert = labs
    fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.pem.decode())).hexdigest()
    as_(monkeypatch, secrets["admin@nice.invalid"])
    code, _, err = run(
        capsys,
        "feed",
        "pin",
        "--tenant",
        "bio-lyon",
        "--email",
        "feed@lyon.invalid",
        "--cert",
        str(cert.cert),
        "--as",
        "admin@nice.invalid",
    )
    assert code == 3 and one_line_error(err) and pins() == {"feed@lyon.invalid": None}
    as_(monkeypatch, None)
    code, _, err = run(
        capsys,
        "feed",
        "pin",
        "--tenant",
        "bio-lyon",
        "--email",
        "feed@lyon.invalid",
        "--cert",
        str(cert.cert),
        "--as",
        "bio@lyon.invalid",
    )
    assert code == 3 and "'feed:manage' is not allowed" in one_line_error(err)
    assert pins() == {"feed@lyon.invalid": None}

    as_(monkeypatch, secrets["admin@lyon.invalid"])
    code, out, err = run(
        capsys,
        "feed",
        "pin",
        "--tenant",
        "bio-lyon",
        "--email",
        "feed@lyon.invalid",
        "--cert",
        str(cert.cert),
        "--as",
        "admin@lyon.invalid",
    )
    assert code == 0 and f"sha256:{fp}" in out, err
    assert pins() == {"feed@lyon.invalid": fp}
    (feed_id,) = _query("SELECT account_id FROM account WHERE email = 'feed@lyon.invalid'")[0]
    events = _query("SELECT outcome, object_refs FROM audit_event WHERE tenant_id = 'bio-lyon' AND action = 'feed:pin'")
    assert [(o, json.loads(r)) for o, r in events] == [("allowed", [feed_id, fp])]

    # The rest in-process, as the lab's admin (a TOTP code is good for one login).
    from labvault.accounts import feeds
    from labvault.errors import InvalidInput, NotFound

    rt = open_runtime(Settings.from_env())
    try:
        (admin_id,) = _query("SELECT account_id FROM account WHERE email = 'admin@lyon.invalid'")[0]
        admin = Principal(admin_id, "Lab admin", "bio-lyon", frozenset({"lab_admin"}))
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            assert [p.fingerprint for p in feeds.listing(u, "bio-lyon")] == [fp]
        for email, data, expect in (
            ("bio@lyon.invalid", cert.pem, "service account"),
            (
                "feed@lyon.invalid",
                b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n",
                "not an X.509 certificate",
            ),
            ("feed@lyon.invalid", _expired(), "expired on"),
            ("nobody@lyon.invalid", cert.pem, "no account"),
        ):
            with (
                pytest.raises((InvalidInput, NotFound), match=expect),
                rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u,
            ):
                feeds.pin(u, "bio-lyon", email, data)
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            feeds.unpin(u, "bio-lyon", "feed@lyon.invalid")
    finally:
        rt.close()
    assert pins() == {"feed@lyon.invalid": None}
    assert _query("SELECT outcome FROM audit_event WHERE tenant_id = 'bio-lyon' AND action = 'feed:unpin'") == [
        ("allowed",)
    ]


def _expired() -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old feed")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)
