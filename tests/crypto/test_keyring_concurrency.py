"""The local keyring under concurrency, with real processes on one keyring file.

Each process keeps its ``LocalKeyring`` open for the whole test, as ``labvault serve`` and
``labvault mllp`` do: a change made by one must never be undone by another one's older copy.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import time
from pathlib import Path

import pytest

from labvault.crypto.keys import LocalKeyring
from labvault.errors import TenantKeyMissing

PW = "a long enough passphrase"
N = 2**14
CTX = mp.get_context("spawn")  # fresh interpreters: nothing inherited but the arguments
WAIT = 60


def _scopes(path: Path) -> set[str]:
    return set(json.loads(path.read_text())["scopes"])


# -- process bodies (top level: spawned processes import them) --------------------------------------


def _holder(path: str, ready, go, done, op: str, scope: str, out) -> None:
    """Open the keyring, say so, wait for ``go``, then make one change (or use a cached key)."""
    try:
        ring = LocalKeyring(Path(path), PW)
        if op == "unwrap":
            blob, ctx = scope.split("|")
            ring.unwrap("lab-x", bytes.fromhex(blob), ctx.encode())  # caches lab-x's KEK
        ready.set()
        if not go.wait(WAIT):
            raise TimeoutError("no go")
        if op == "create":
            ring.create_scope(scope)
            out.put(("ok", ring.wrap(scope, b"y" * 32, b"data:v1").hex()))
        elif op == "destroy":
            ring.destroy_scope(scope)
            out.put(("ok", ""))
        elif op == "unwrap":
            blob, ctx = scope.split("|")
            try:
                out.put(("opened", ring.unwrap("lab-x", bytes.fromhex(blob), ctx.encode()).hex()))
            except TenantKeyMissing as exc:
                out.put(("missing", str(exc)))
    except BaseException as exc:  # report, never hang the parent
        out.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        done.set()


def _start_holder(path: Path, op: str, scope: str):
    ready, go, done, out = CTX.Event(), CTX.Event(), CTX.Event(), CTX.Queue()
    proc = CTX.Process(target=_holder, args=(str(path), ready, go, done, op, scope, out))
    proc.start()
    assert ready.wait(WAIT), "the holding process did not open the keyring"
    return proc, go, out


def _finish(proc, go, out) -> tuple[str, str]:
    go.set()
    result = out.get(timeout=WAIT)
    proc.join(WAIT)
    assert proc.exitcode == 0
    return result


def _run(path: Path, op: str, scope: str) -> tuple[str, str]:
    """A whole process that opens the keyring and makes one change."""
    proc, go, out = _start_holder(path, op, scope)
    return _finish(proc, go, out)


# -- the two lost-update scenarios -----------------------------------------------------------------


def test_a_shred_is_not_undone_by_a_process_opened_before_it(tmp_path):
    """C1, C3: A opens; B destroys lab-x; A then creates lab-y: lab-x's KEK stays destroyed and a
    key wrapped under it (a backup's) opens no more."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    ring.create_scope("lab-x")
    backup_blob = ring.wrap("lab-x", b"x" * 32, b"data:v1")  # what a database backup holds
    a = _start_holder(path, "create", "lab-y")
    assert _run(path, "destroy", "lab-x")[0] == "ok"
    assert _finish(*a)[0] == "ok"
    assert "lab-x" not in _scopes(path) and "lab-y" in _scopes(path)
    with pytest.raises(TenantKeyMissing):
        LocalKeyring(path, PW).unwrap("lab-x", backup_blob, b"data:v1")


def test_a_lab_created_while_another_process_runs_keeps_its_key(tmp_path):
    """C1, C3: A opens; B creates lab-y and wraps its data key; A then creates lab-z: lab-y survives
    and its wrapped key still opens."""
    path = tmp_path / "keyring.json"
    LocalKeyring.create(path, PW, scrypt_n=N)
    a = _start_holder(path, "create", "lab-z")
    status, blob = _run(path, "create", "lab-y")
    assert status == "ok"
    assert _finish(*a)[0] == "ok"
    assert {"lab-y", "lab-z"} <= _scopes(path)
    assert LocalKeyring(path, PW).unwrap("lab-y", bytes.fromhex(blob), b"data:v1") == b"y" * 32


def test_a_process_that_cached_a_kek_notices_a_shred_by_another(tmp_path):
    """C3: a process that already unwrapped with lab-x's KEK (cached) cannot use it once another
    process destroyed it."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    ring.create_scope("lab-x")
    blob = ring.wrap("lab-x", b"x" * 32, b"data:v1")
    a = _start_holder(path, "unwrap", f"{blob.hex()}|data:v1")
    assert _run(path, "destroy", "lab-x")[0] == "ok"
    status, _ = _finish(*a)
    assert status == "missing"


def test_destroying_a_missing_scope_is_an_error(tmp_path):
    """C3: destroying a scope that is not there (never made, or destroyed by another process) is an
    error naming the scope, never a silent success; nothing is written."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    ring.create_scope("lab-x")
    other = LocalKeyring(path, PW)
    other.destroy_scope("lab-x")
    before = path.read_bytes()
    for scope in ("lab-x", "never-made"):
        with pytest.raises(TenantKeyMissing) as err:
            ring.destroy_scope(scope)
        assert scope in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_a_scope_made_by_another_process_is_usable_without_reopening(tmp_path):
    """C3: a read of a scope not in memory re-reads the file."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    assert not ring.has_scope("lab-y")
    status, blob = _run(path, "create", "lab-y")
    assert status == "ok"
    assert ring.has_scope("lab-y")
    assert ring.unwrap("lab-y", bytes.fromhex(blob), b"data:v1") == b"y" * 32


def test_files_beside_the_keyring_are_private(tmp_path):
    """C1: the keyring, its lock file and nothing else left behind, mode 0600."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    ring.create_scope("lab-x")
    ring.destroy_scope("lab-x")
    for f in tmp_path.iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
        assert not f.name.endswith(".tmp"), f


# -- the stress test ---------------------------------------------------------------------------------


def _worker(path: str, k: int, seed: int, steps: int, start, out) -> None:
    """Create and destroy scopes at random (seeded), keeping one keyring open all along."""
    try:
        rng = random.Random(seed)
        ring = LocalKeyring(Path(path), PW)
        alive: dict[str, tuple[str, str]] = {}
        destroyed: list[str] = []
        mine_base = [f"base-{k}", f"base-{k + 4}"]
        errors: list[str] = []
        if not start.wait(WAIT):
            raise TimeoutError("no start")
        for n in range(steps):
            roll = rng.random()
            if roll < 0.55 or not alive:
                scope = f"w{k}-{n}"
                ring.create_scope(scope)
                secret = rng.randbytes(32)
                alive[scope] = (ring.wrap(scope, secret, b"probe").hex(), secret.hex())
            elif roll < 0.85:
                scope = rng.choice(sorted(alive))
                ring.destroy_scope(scope)
                del alive[scope]
                destroyed.append(scope)
            elif mine_base:
                scope = mine_base.pop()
                ring.destroy_scope(scope)
                destroyed.append(scope)
            else:  # destroying again what is gone must fail
                try:
                    ring.destroy_scope(rng.choice(destroyed) if destroyed else "never-made")
                    errors.append("a second destroy succeeded")
                except TenantKeyMissing:
                    pass
            for scope, (blob, secret) in alive.items():  # own scopes keep their keys
                if ring.unwrap(scope, bytes.fromhex(blob), b"probe").hex() != secret:
                    errors.append(f"{scope} changed")
            time.sleep(rng.random() * 0.003)
        out.put(("ok", k, alive, destroyed, errors))
    except BaseException as exc:
        out.put(("error", k, f"{type(exc).__name__}: {exc}", [], []))


@pytest.mark.parametrize("seed", [7, 2026])
def test_stress_four_processes_create_and_destroy_scopes(tmp_path, seed):
    """C1, C3: 4 processes create and destroy scopes in random interleavings on one keyring file;
    the end state is exactly the expected scopes, each with its key unchanged."""
    path = tmp_path / "keyring.json"
    ring = LocalKeyring.create(path, PW, scrypt_n=N)
    base = {}
    for i in range(8):
        ring.create_scope(f"base-{i}")
        base[f"base-{i}"] = ring.wrap(f"base-{i}", bytes([i]) * 32, b"probe")
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_worker, args=(str(path), k, seed * 10 + k, 40, start, out)) for k in range(4)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # every worker has opened the keyring (scrypt) before the first change
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(WAIT)
    assert all(r[0] == "ok" for r in results), [r[2] for r in results if r[0] != "ok"]
    assert not [e for r in results for e in r[4]]
    expected_alive = {s: v for r in results for s, v in r[2].items()}
    destroyed = {s for r in results for s in r[3]}
    expected = expected_alive.keys() | (base.keys() - destroyed)
    assert _scopes(path) == expected
    fresh = LocalKeyring(path, PW)
    for scope, (blob, secret) in expected_alive.items():
        assert fresh.unwrap(scope, bytes.fromhex(blob), b"probe").hex() == secret
    for scope, blob in base.items():
        if scope in destroyed:
            with pytest.raises(TenantKeyMissing):
                fresh.unwrap(scope, blob, b"probe")
        else:
            assert fresh.unwrap(scope, blob, b"probe") == bytes([int(scope[5:])]) * 32
    for f in tmp_path.iterdir():
        assert not f.name.endswith(".tmp") and f.stat().st_mode & 0o777 == 0o600, f
