import pyotp
import pytest

from labvault.accounts import passwords, totp
from labvault.errors import InvalidInput


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 12"),
        ("password1234", "most common"),
        ("Motdepasse123", "most common"),
        ("claire.moreau-2024!", "name or e-mail"),
        ("aaaaaaaaaaaaaaab", "more different"),
    ],
)
def test_policy_refuses(password, why):
    """E3: policy refuses."""
    with pytest.raises(InvalidInput) as err:
        passwords.check_policy(password, email="claire.moreau@lab.example", name="Claire Moreau")
    assert why in str(err.value)
    assert password not in str(err.value)


def test_hash_is_argon2id_and_verifies():
    """E3: hash is argon2id and verifies."""
    h = passwords.hash_password("a perfectly fine passphrase")
    assert h.startswith("$argon2id$")
    assert passwords.verify_password(h, "a perfectly fine passphrase")
    assert not passwords.verify_password(h, "a perfectly fine passphrasE")
    assert not passwords.verify_password(None, "anything at all")
    assert not passwords.verify_password("not a hash", "anything at all")


def test_common_list_is_shipped():
    assert len(passwords.common_passwords()) > 1000


def test_totp_round_trip_and_qr():
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret, "a@b.example")
    assert uri.startswith("otpauth://totp/Labvault:a%40b.example?") and "issuer=Labvault" in uri
    now = pyotp.TOTP(secret).at(totp.clock())
    assert totp.verify(secret, now)
    assert not totp.verify(secret, "000000" if now != "000000" else "111111")
    assert not totp.verify(secret, "12ab56")
    svg = totp.qr_svg(uri)
    assert svg.lstrip().startswith("<svg") and "</svg>" in svg
