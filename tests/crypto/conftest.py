"""SoftHSM2 fixtures: a throwaway PKCS#11 token per test.

How SoftHSM2 and python-pkcs11 constrain this:

* SoftHSM2 reads ``SOFTHSM2_CONF`` (and scans its token directory) only in ``C_Initialize``,
  and python-pkcs11 initialises a module once per process (``pkcs11.lib(path)`` is cached by
  path). So the configuration is session-wide: one temp dir, ``SOFTHSM2_CONF`` set before the
  module is first loaded, and a fresh token label per test.
* A token made by ``softhsm2-util`` after ``C_Initialize`` stays invisible to this process
  until the module is re-initialised; ``softhsm_token`` does that after creating its token.
  Re-initialising invalidates every open session, so keyrings must be closed at the end of the
  test that opened them: open them with ``open_keyring``, which does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "1234"
SO_PIN = "5678"
MISSING = "SoftHSM2 not installed: apt-get install softhsm2"


@dataclass(frozen=True)
class SoftHsmToken:
    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path


def _softhsm_util() -> str:
    util = shutil.which("softhsm2-util")
    if util is None or not os.path.exists(SOFTHSM_MODULE):
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    return util


@pytest.fixture(scope="session")
def softhsm_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private SoftHSM2 configuration, exported as SOFTHSM2_CONF for the whole session."""
    _softhsm_util()
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        yield conf


def _reinitialise_module() -> None:
    """Make the module re-read SOFTHSM2_CONF and rescan the token directory."""
    import pkcs11

    pkcs11.lib(SOFTHSM_MODULE).reinitialize()  # loads it first if this process had not yet


@pytest.fixture
def softhsm_token(softhsm_conf: Path) -> SoftHsmToken:
    """A fresh, initialised token (user PIN 1234, SO PIN 5678) visible to this process."""
    util = _softhsm_util()
    label = f"lv-{uuid.uuid4().hex[:16]}"
    done = subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
        capture_output=True,
        text=True,
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm_conf)},
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"softhsm2-util --init-token failed: {done.stderr.strip() or done.stdout.strip()}")
    _reinitialise_module()
    return SoftHsmToken(SOFTHSM_MODULE, label, USER_PIN, SO_PIN, softhsm_conf)


@pytest.fixture
def open_keyring(softhsm_token: SoftHsmToken) -> Iterator[Callable[..., object]]:
    """Open ``Pkcs11Keyring``s on this test's token; all of them are closed at teardown."""
    from labvault.crypto.pkcs11 import Pkcs11Keyring

    opened: list[Pkcs11Keyring] = []

    def _open(pin: str | None = None, label: str | None = None) -> Pkcs11Keyring:
        keyring = Pkcs11Keyring(
            softhsm_token.module,
            softhsm_token.label if label is None else label,
            softhsm_token.pin if pin is None else pin,
        )
        opened.append(keyring)
        return keyring

    yield _open
    for keyring in reversed(opened):
        keyring.close()
