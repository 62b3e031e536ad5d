"""Pkcs11Keyring against a throwaway SoftHSM2 token (fixtures in conftest.py)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.crypto.keys import KeyProvider
from labvault.crypto.pkcs11 import LABEL_PREFIX, Pkcs11Keyring
from labvault.errors import DecryptionError, KeyringError, TenantKeyMissing, WrongPassphrase

DEK = bytes(range(32))
CTX = b"dek/v1/lab-a"


@contextmanager
def raw_session(token, *, login: bool = True):
    """A plain python-pkcs11 session on the test token, bypassing Pkcs11Keyring.

    The PKCS#11 login is per process and token, so no keyring may be open on the token meanwhile.
    """
    import pkcs11

    tok = pkcs11.lib(token.module).get_token(token_label=token.label)
    session = tok.open(rw=True, user_pin=token.pin if login else None)
    try:
        yield session
    finally:
        session.close()


def kek_objects(session, scope: str) -> list:
    from pkcs11 import Attribute

    return list(session.get_objects({Attribute.LABEL: LABEL_PREFIX + scope}))


@pytest.mark.hsm
def test_round_trip(open_keyring):
    kr = open_keyring()
    assert isinstance(kr, KeyProvider)
    assert kr.name == "pkcs11"
    kr.create_scope("lab-a")
    assert kr.has_scope("lab-a")
    blob = kr.wrap("lab-a", DEK, CTX)
    assert len(blob) == 12 + len(DEK) + 16  # iv || ciphertext || tag
    assert DEK not in blob
    assert kr.wrap("lab-a", DEK, CTX) != blob  # a fresh IV each time
    assert kr.unwrap("lab-a", blob, CTX) == DEK
    assert kr.unwrap("lab-a", kr.wrap("lab-a", b"", CTX), CTX) == b""


@pytest.mark.hsm
def test_blob_is_bound_to_context_and_scope(open_keyring):
    kr = open_keyring()
    kr.create_scope("lab-a")
    kr.create_scope("lab-b")
    blob = kr.wrap("lab-a", DEK, CTX)
    with pytest.raises(DecryptionError):
        kr.unwrap("lab-a", blob, b"dek/v2/lab-a")
    with pytest.raises(DecryptionError):
        kr.unwrap("lab-b", blob, CTX)
    assert kr.unwrap("lab-a", blob, CTX) == DEK  # a failed unwrap leaves the session usable


@pytest.mark.hsm
def test_tampered_blob_fails(open_keyring):
    kr = open_keyring()
    kr.create_scope("lab-a")
    blob = kr.wrap("lab-a", DEK, CTX)
    for index in (0, 11, 12, len(blob) - 17, len(blob) - 1):  # iv, ciphertext, tag
        bad = bytearray(blob)
        bad[index] ^= 0x01
        with pytest.raises(DecryptionError) as caught:
            kr.unwrap("lab-a", bytes(bad), CTX)
        assert DEK.hex() not in str(caught.value)
    for bad in (blob[:-1], blob + b"\x00", blob[:27], b""):
        with pytest.raises(DecryptionError):
            kr.unwrap("lab-a", bad, CTX)
    assert kr.unwrap("lab-a", blob, CTX) == DEK


@pytest.mark.hsm
def test_destroy_scope_shreds_only_that_scope(open_keyring):
    """C3: destroy scope shreds only that scope."""
    kr = open_keyring()
    kr.create_scope("lab-a")
    kr.create_scope("lab-b")
    blob_a = kr.wrap("lab-a", DEK, CTX)
    blob_b = kr.wrap("lab-b", DEK, CTX)
    kr.destroy_scope("lab-a")
    assert not kr.has_scope("lab-a")
    with pytest.raises(TenantKeyMissing):
        kr.unwrap("lab-a", blob_a, CTX)
    with pytest.raises(TenantKeyMissing):
        kr.wrap("lab-a", DEK, CTX)
    assert kr.has_scope("lab-b")
    assert kr.unwrap("lab-b", blob_b, CTX) == DEK
    with pytest.raises(TenantKeyMissing, match="lab-a"):  # C3: destroying twice is an error, not a no-op
        kr.destroy_scope("lab-a")
    with pytest.raises(TenantKeyMissing, match="never-made"):
        kr.destroy_scope("never-made")
    kr.create_scope("lab-a")  # a new key: the old blobs stay unopenable
    with pytest.raises(DecryptionError):
        kr.unwrap("lab-a", blob_a, CTX)


@pytest.mark.hsm
def test_missing_scope(open_keyring):
    kr = open_keyring()
    assert not kr.has_scope("never")
    with pytest.raises(TenantKeyMissing):
        kr.wrap("never", DEK, CTX)
    with pytest.raises(TenantKeyMissing):
        kr.unwrap("never", b"\x00" * 48, CTX)


@pytest.mark.hsm
def test_wrong_pin(open_keyring, softhsm_token):
    with pytest.raises(WrongPassphrase) as caught:
        open_keyring(pin="not-the-pin")
    assert str(caught.value) == f"wrong PKCS#11 PIN for token '{softhsm_token.label}'"
    kr = open_keyring()  # the right PIN still works after a failure
    kr.create_scope("lab-a")
    # with the token already logged in by this process the PIN is checked in memory
    with pytest.raises(WrongPassphrase) as caught:
        open_keyring(pin="not-the-pin")
    assert "not-the-pin" not in str(caught.value)
    assert kr.has_scope("lab-a")


@pytest.mark.hsm
def test_kek_is_not_extractable(open_keyring, softhsm_token):
    """C1: kek is not extractable."""
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag

    kr = open_keyring()
    kr.create_scope("lab-a")
    kr.close()  # the raw session below logs in itself

    with raw_session(softhsm_token, login=False) as public:
        assert kek_objects(public, "lab-a") == []  # CKA_PRIVATE: invisible without the PIN

    with raw_session(softhsm_token) as session:
        (kek,) = kek_objects(session, "lab-a")
        assert kek[Attribute.TOKEN] is True
        assert kek[Attribute.PRIVATE] is True
        assert kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.NEVER_EXTRACTABLE] is True
        assert kek[Attribute.VALUE_LEN] == 32
        assert kek[Attribute.ENCRYPT] is True and kek[Attribute.DECRYPT] is True
        assert kek[Attribute.WRAP] is False and kek[Attribute.DERIVE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            kek[Attribute.VALUE]
        wrapper = session.generate_key(
            KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP
        )
        with pytest.raises(pkcs11.exceptions.KeyUnextractable):
            wrapper.wrap_key(kek)


@pytest.mark.hsm
def test_keys_persist_across_instances(open_keyring):
    first = open_keyring()
    first.create_scope("lab-a")
    blob = first.wrap("lab-a", DEK, CTX)
    first.close()
    first.close()  # closing twice is harmless
    with pytest.raises(KeyringError):
        first.wrap("lab-a", DEK, CTX)

    second = open_keyring()
    assert second.has_scope("lab-a")
    assert second.unwrap("lab-a", blob, CTX) == DEK


@pytest.mark.hsm
def test_two_open_instances_share_the_login(open_keyring):
    one = open_keyring()
    two = open_keyring()
    one.create_scope("lab-a")
    one.create_scope("lab-b")
    blob = one.wrap("lab-a", DEK, CTX)
    assert two.unwrap("lab-a", blob, CTX) == DEK
    one.close()  # must not log `two` out (the PKCS#11 login is per process and token)
    assert two.unwrap("lab-a", blob, CTX) == DEK
    three = open_keyring()
    blob_b = three.wrap("lab-b", DEK, CTX)
    three.destroy_scope("lab-b")
    with pytest.raises(TenantKeyMissing):  # `two` never cached lab-b; `three` destroyed it
        two.unwrap("lab-b", blob_b, CTX)
    three.destroy_scope("lab-a")
    with pytest.raises(TenantKeyMissing):  # `two` had the handle cached
        two.unwrap("lab-a", blob, CTX)


@pytest.mark.hsm
def test_destroy_in_another_process_is_seen(open_keyring, softhsm_token):
    kr = open_keyring()
    kr.create_scope("lab-a")
    blob = kr.wrap("lab-a", DEK, CTX)
    assert kr.unwrap("lab-a", blob, CTX) == DEK  # the key handle is now cached
    code = textwrap.dedent(
        f"""
        from labvault.crypto.pkcs11 import Pkcs11Keyring
        kr = Pkcs11Keyring({softhsm_token.module!r}, {softhsm_token.label!r}, {softhsm_token.pin!r})
        kr.destroy_scope("lab-a")
        kr.close()
        """
    )
    env = {**os.environ, "SOFTHSM2_CONF": str(softhsm_token.conf)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    with pytest.raises(TenantKeyMissing):
        kr.unwrap("lab-a", blob, CTX)
    assert not kr.has_scope("lab-a")
    with pytest.raises(TenantKeyMissing):  # C3: destroyed by another process, so this destroy fails
        kr.destroy_scope("lab-a")


@pytest.mark.hsm
def test_create_scope_twice_is_harmless(open_keyring, softhsm_token):
    kr = open_keyring()
    kr.create_scope("lab-a")
    blob = kr.wrap("lab-a", DEK, CTX)
    kr.create_scope("lab-a")
    assert kr.unwrap("lab-a", blob, CTX) == DEK
    kr.close()
    with raw_session(softhsm_token) as session:
        assert len(kek_objects(session, "lab-a")) == 1


@pytest.mark.hsm
def test_unknown_token(open_keyring, softhsm_token):
    with pytest.raises(KeyringError) as caught:
        open_keyring(label="no-such-token")
    assert str(caught.value) == f"no PKCS#11 token labelled 'no-such-token' in {softhsm_token.module}"


def test_unloadable_module(tmp_path):
    missing = tmp_path / "no-such-module.so"
    with pytest.raises(KeyringError) as caught:
        Pkcs11Keyring(str(missing), "labvault", "1234")
    message = str(caught.value)
    assert message.startswith(f"cannot load the PKCS#11 module {missing}")
    assert "\n" not in message and "1234" not in message

    not_a_module = tmp_path / "not-a-module.so"
    not_a_module.write_bytes(b"not an ELF file")
    with pytest.raises(KeyringError) as caught:
        Pkcs11Keyring(str(not_a_module), "labvault", "1234")
    assert "\n" not in str(caught.value)


@pytest.mark.hsm
def test_keyring_cannot_be_pickled(open_keyring):
    kr = open_keyring()
    with pytest.raises(TypeError):
        pickle.dumps(kr)
    assert "1234" not in repr(kr)


@pytest.fixture
def hsm_keyring(open_keyring):
    kr = open_keyring()
    kr.create_scope("lab-p")
    return kr


@pytest.mark.hsm
# the function-scoped fixture runs once for the whole test: every example uses the same keyring
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=st.binary(max_size=512), context=st.binary(max_size=64))
def test_round_trip_property(hsm_keyring, secret, context):
    blob = hsm_keyring.wrap("lab-p", secret, context)
    assert len(blob) == 12 + len(secret) + 16
    assert hsm_keyring.unwrap("lab-p", blob, context) == secret
    with pytest.raises(DecryptionError):
        hsm_keyring.unwrap("lab-p", blob, context + b"\x00")
