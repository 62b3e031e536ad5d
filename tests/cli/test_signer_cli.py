"""``labvault signer``: keys made on the signer's side, listed by the vendor's operator."""

from __future__ import annotations

import stat

from labvault.crypto.signing import Signer
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)


def test_keygen_writes_a_private_key_only_its_owner_reads(home, capsys, tmp_path):
    key = tmp_path / "signer.key"
    code, out, _ = run(capsys, "signer", "keygen", "--out", str(key))
    assert code == 0
    public = out.strip().splitlines()[-1]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Signer(bytes.fromhex(key.read_text().strip())).public_key.hex() == public
    code, _, err = run(capsys, "signer", "keygen", "--out", str(key))
    assert code == 1 and "refusing to overwrite" in one_line_error(err)


def test_list_and_refusals(home, capsys):
    run(capsys, "init")
    run(
        capsys,
        "tenant",
        "add",
        "bio-lyon",
        "--name",
        "Bio Lyon",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
    )
    code, out, err = run(capsys, "signer", "list", "--tenant", "bio-lyon")
    assert code == 0 and out.strip() == "", err
    code, _, err = run(capsys, "signer", "list", "--tenant", "nope")
    assert code == 1 and "unknown lab" in one_line_error(err)
    code, _, err = run(
        capsys, "signer", "add", "--tenant", "bio-lyon", "--email", "x@y.invalid", "--public-key", "00" * 32
    )
    assert code == 3 and "not allowed" in one_line_error(err)
