import json
import os

import pytest

from labvault.crypto.keys import LocalKeyring
from labvault.errors import (
    DecryptionError,
    KeyringCorrupt,
    KeyringError,
    KeyringMissing,
    TenantKeyMissing,
    WrongPassphrase,
)

PW = "a long enough passphrase"


def test_create_reopen_wrap_unwrap(tmp_path):
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=2**14)
    ring.create_scope("lab-a")
    blob = ring.wrap("lab-a", b"k" * 32, b"data:v1")
    again = LocalKeyring(path, PW)
    assert again.unwrap("lab-a", blob, b"data:v1") == b"k" * 32
    with pytest.raises(DecryptionError):
        again.unwrap("lab-a", blob, b"data:v2")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # no temp file left behind; the lock file changes take is private too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring.json", "keyring.json.lock"]
    assert oct((tmp_path / "keyring.json.lock").stat().st_mode & 0o777) == "0o600"
    assert b"k" * 32 not in path.read_bytes()


def test_wrong_passphrase(tmp_path):
    LocalKeyring.create(tmp_path / "k.json", PW, scrypt_n=2**14)
    with pytest.raises(WrongPassphrase):
        LocalKeyring(tmp_path / "k.json", PW + "!")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(KeyringMissing):
        LocalKeyring(tmp_path / "nope.json", PW)
    bad = tmp_path / "bad.json"
    for content in (b"not json", b"{}", json.dumps({"format": "labvault-keyring/1"}).encode(), b"\xff\xfe"):
        bad.write_bytes(content)
        with pytest.raises(KeyringCorrupt):
            LocalKeyring(bad, PW)


def test_flipped_master_is_not_a_wrong_passphrase_silently(tmp_path):
    path = tmp_path / "k.json"
    LocalKeyring.create(path, PW, scrypt_n=2**14)
    doc = json.loads(path.read_text())
    doc["master"] = doc["master"][:-4] + ("AAAA" if doc["master"][-4:] != "AAAA" else "BBBB")
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError):
        LocalKeyring(path, PW)


def test_destroy_scope_is_final_and_scoped(tmp_path):
    """C3: destroy scope is final and scoped."""
    path = tmp_path / "k.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=2**14)
    ring.create_scope("lab-a")
    ring.create_scope("lab-b")
    a = ring.wrap("lab-a", b"secret-a", b"c")
    b = ring.wrap("lab-b", b"secret-b", b"c")
    ring.destroy_scope("lab-a")
    reopened = LocalKeyring(path, PW)
    assert not reopened.has_scope("lab-a")
    with pytest.raises(TenantKeyMissing):
        reopened.unwrap("lab-a", a, b"c")
    assert reopened.unwrap("lab-b", b, b"c") == b"secret-b"


def test_short_passphrase_refused(tmp_path):
    with pytest.raises(KeyringError):
        LocalKeyring.create(tmp_path / "k.json", "short")
    assert not os.path.exists(tmp_path / "k.json")
