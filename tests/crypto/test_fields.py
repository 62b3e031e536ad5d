import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labvault.crypto.fields import FieldCipher
from labvault.errors import DecryptionError

K1, K2 = b"\x01" * 32, b"\x02" * 32
ids = st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)


def cipher(tenant="lab-a", keys=None, current=1):
    return FieldCipher(tenant, keys or {1: K1}, current)


@given(value=st.binary(max_size=2000), row=ids)
def test_round_trip(value, row):
    c = cipher()
    blob = c.seal(value, table="result", column="value_enc", row_id=row)
    assert value == c.open(blob, table="result", column="value_enc", row_id=row)
    if len(value) >= 8:
        assert value not in blob


@given(value=st.binary(min_size=1, max_size=200), pos=st.integers(min_value=0), bit=st.integers(0, 7))
@settings(max_examples=200)
def test_any_flipped_bit_fails(value, pos, bit):
    c = cipher()
    blob = bytearray(c.seal(value, table="t", column="c", row_id="r1"))
    pos %= len(blob)
    blob[pos] ^= 1 << bit
    with pytest.raises(DecryptionError):
        c.open(bytes(blob), table="t", column="c", row_id="r1")


def test_tampered_nonce_ciphertext_and_version_fail():
    c = cipher(keys={1: K1, 2: K2}, current=2)
    blob = c.seal(b"1.5 g/L", table="result", column="value_enc", row_id="r1")
    nonce_flip = blob[:5] + bytes([blob[5] ^ 1]) + blob[6:]
    ct_flip = blob[:-1] + bytes([blob[-1] ^ 1])
    relabel = blob[:1] + struct.pack(">I", 1) + blob[5:]  # claims the other, existing version
    unknown = blob[:1] + struct.pack(">I", 9) + blob[5:]
    for bad in (nonce_flip, ct_flip, relabel, unknown, blob[:10], b""):
        with pytest.raises(DecryptionError):
            c.open(bad, table="result", column="value_enc", row_id="r1")


@pytest.mark.parametrize(
    "where",
    [
        {"table": "result", "column": "value_enc", "row_id": "r2"},  # another row
        {"table": "result", "column": "comment_enc", "row_id": "r1"},  # another column
        {"table": "request", "column": "value_enc", "row_id": "r1"},  # another table
    ],
)
def test_moved_ciphertext_fails(where):
    """C1: moved ciphertext fails."""
    c = cipher()
    blob = c.seal(b"HIV positive", table="result", column="value_enc", row_id="r1")
    with pytest.raises(DecryptionError):
        c.open(blob, **where)


def test_ciphertext_moved_to_another_tenant_fails_even_with_same_key():
    """C1, F1: ciphertext moved to another tenant fails even with same key."""
    a, b = cipher("lab-a"), cipher("lab-b")  # same key bytes: only the associated data differs
    blob = a.seal(b"x", table="t", column="c", row_id="r")
    with pytest.raises(DecryptionError):
        b.open(blob, table="t", column="c", row_id="r")


def test_old_versions_open_new_seals_use_current():
    """C3: old versions open new seals use current."""
    old = cipher(keys={1: K1}, current=1)
    blob = old.seal(b"v", table="t", column="c", row_id="r")
    new = cipher(keys={1: K1, 2: K2}, current=2)
    assert new.open(blob, table="t", column="c", row_id="r") == b"v"
    assert FieldCipher.version_of(new.seal(b"v", table="t", column="c", row_id="r")) == 2


def test_nonces_are_fresh():
    c = cipher()
    blobs = {c.seal(b"same", table="t", column="c", row_id="r")[5:17] for _ in range(10_000)}
    assert len(blobs) == 10_000


def test_key_material_cannot_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(cipher())


def test_bad_keys_refused_at_construction():
    with pytest.raises(ValueError):
        FieldCipher("t", {1: b"short"}, 1)
    with pytest.raises(ValueError):
        FieldCipher("t", {1: K1}, 2)
