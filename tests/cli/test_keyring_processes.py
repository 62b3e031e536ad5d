"""The keyring shared by real processes on one home: the CLI, long-running holders of the keyring
(as ``labvault serve`` and ``labvault mllp`` are), and ``labvault serve`` itself with its schedulers.

Every process here is a separate interpreter (``python -m labvault.cli`` or ``python -c``) on the
same LABVAULT_HOME; nothing is mocked. Labs are made, filled and shredded only through the helpers
``add_lab``, ``fill_lab`` and ``shred_lab``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyrage import x25519

from tests.cli import test_migrate_cli as mig
from tests.cli.helpers import load_as_lab
from tests.cli.test_instruction_cli import instruction, register
from tests.conftest import totp_real_code

PW = "keyring processes passphrase"
TIMEOUT = 300

# Run as ``python -c PROC MODE ...``: ``read LAB`` prints how many sealed values of LAB open (or
# ``refused <error class>``); ``fill LAB N`` stores N synthetic patients; ``hold`` opens the home,
# prints ``ready`` and then obeys ``read LAB`` / ``add LAB`` lines on stdin until ``quit``.
PROC = r"""
import sys
from sqlalchemy import select
from labvault.access import Purpose
from labvault.access.gateway import ENCRYPTED
from labvault.config import Settings
from labvault.errors import LabvaultError
from labvault.runtime import open_runtime
from labvault.store import schema as t

def read(rt, lab):
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            c = u._crypto(lab)
            n = 0
            for name, (pk, cols) in ENCRYPTED.items():
                tbl = t.metadata.tables[name]
                for row in u.conn.execute(select(tbl.c[pk], *[tbl.c[x] for x in cols]).where(tbl.c.tenant_id == lab)):
                    for col, blob in zip(cols, row[1:]):
                        if blob is not None:
                            c.cipher.open(blob, table=name, column=col, row_id=row[0])
                            n += 1
        return str(n)
    except LabvaultError as exc:
        return "refused " + type(exc).__name__

def add(rt, lab):
    try:
        with rt.unit(Purpose.ADMINISTRATION) as u:
            u.create_tenant(lab, "Lab " + lab, "690000123", retention={"results": (3650, "test rule")})
        return "ok"
    except LabvaultError as exc:
        return "error " + type(exc).__name__ + ": " + exc.diagnostics()

rt = open_runtime(Settings.from_env())
mode = sys.argv[1]
if mode == "read":
    for lab in sys.argv[2:]:
        print(read(rt, lab))
elif mode == "fill":
    from labvault.synth.load import load_lab
    load_lab(rt.gateway, rt.operator, sys.argv[2], patients=int(sys.argv[3]), seed=3)
    print("ok")
elif mode == "hold":
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, lab = line.strip().partition(" ")
        if cmd == "quit":
            break
        print(read(rt, lab) if cmd == "read" else add(rt, lab), flush=True)
rt.close()
"""


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LABVAULT_DATABASE_URL", "LABVAULT_KEY_PROVIDER", "LABVAULT_CONFIG")
    }
    e.update(LABVAULT_HOME=str(tmp_path / "home"), LABVAULT_PASSPHRASE=PW)
    lv(e, "init", "--admin-name", "Alice Martin", "--admin-email", "alice@vendor.invalid")
    return e


def _umask022() -> None:
    os.umask(0o022)  # the usual default, so that a file left to it would be world-readable


def lv(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """The CLI in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "labvault.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_umask022,
    )
    if ok:
        assert done.returncode == 0, (args, done.stderr)
    return done


def py(env: dict[str, str], *args: str) -> list[str]:
    """``PROC`` in a process of its own; its output lines."""
    done = subprocess.run(
        [sys.executable, "-c", PROC, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=_umask022,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


_SYNTHETIC: list[str] = []


def _lab_flags(env: dict[str, str]) -> list[str]:
    """``--synthetic`` where ``tenant add`` has it: such labs may be shredded without a signed
    deletion instruction."""
    if not _SYNTHETIC:
        _SYNTHETIC.append("--synthetic" if "--synthetic" in lv(env, "tenant", "add", "--help").stdout else "")
    return [f for f in _SYNTHETIC if f]


def add_lab(env: dict[str, str], lab: str, *, wait: bool = True):
    """The one place labs are created (a process of its own; ``wait=False`` returns it running)."""
    args = [
        "tenant",
        "add",
        lab,
        "--name",
        f"Lab {lab}",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "test rule",
        *_lab_flags(env),
    ]
    if wait:
        return lv(env, *args)
    return subprocess.Popen(
        [sys.executable, "-m", "labvault.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_umask022,
    )


def shred_lab(env: dict[str, str], lab: str, *, wait: bool = True):
    """The one place labs are shredded."""
    args = ["tenant", "shred", lab, "--yes"]
    if wait:
        return lv(env, *args)
    return subprocess.Popen(
        [sys.executable, "-m", "labvault.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_umask022,
    )


def fill_lab(env: dict[str, str], lab: str, patients: int = 12) -> None:
    assert py(env, "fill", lab, str(patients))[-1] == "ok"


def readable(env: dict[str, str], lab: str) -> str:
    """In a fresh process: the number of the lab's sealed values that open, or ``refused ...``."""
    return py(env, "read", lab)[-1]


def readable_all(env: dict[str, str], labs: list[str]) -> dict[str, str]:
    """``readable`` for many labs, in one fresh process."""
    return dict(zip(labs, py(env, "read", *labs), strict=True))


class Holder:
    """A process that opened the home (keyring included) and keeps it open, as a server does."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PROC, "hold"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=_umask022,
        )
        assert self.proc.stdout.readline().strip() == "ready", self.proc.stderr.read()

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer, self.proc.stderr.read()
        return answer

    def close(self) -> None:
        _, err = self.proc.communicate("quit\n" if self.proc.poll() is None else None, timeout=TIMEOUT)
        assert self.proc.returncode == 0, err


def backup(env: dict[str, str], to: Path) -> str:
    """A consistent copy of the database (SQLite online backup), as a nightly backup is."""
    src = sqlite3.connect(Path(env["LABVAULT_HOME"]) / "labvault.db")
    dst = sqlite3.connect(to)
    src.backup(dst)
    dst.close()
    src.close()
    return f"sqlite:///{to}"


def test_a_shred_is_not_undone_by_a_process_opened_before_it(env, tmp_path):
    """C1, C3: process A holds the keyring; B shreds lab X; A then adds lab Y (a keyring change).
    X's KEK stays destroyed: a database backup taken before the shred decrypts nothing of X, neither
    in a new process nor in one that had X's keys in memory; the other labs are untouched."""
    add_lab(env, "lab-x")
    fill_lab(env, "lab-x")
    add_lab(env, "lab-w")
    fill_lab(env, "lab-w")
    on_backup = {**env, "LABVAULT_DATABASE_URL": backup(env, tmp_path / "before-shred.db")}
    a = Holder(env)
    a_backup = Holder(on_backup)  # serves the backup; has X's keys in memory before the shred
    try:
        assert int(a.ask("read lab-x")) > 0
        assert int(a_backup.ask("read lab-x")) > 0
        shred_lab(env, "lab-x")
        assert a.ask("add lab-y") == "ok"
        assert a.ask("read lab-x") == "refused TenantShredded"
        assert a_backup.ask("read lab-x").startswith("refused ")
        assert int(a_backup.ask("read lab-w")) > 0
    finally:
        a.close()
        a_backup.close()
    assert readable(on_backup, "lab-x") == "refused TenantKeyMissing"
    assert readable(env, "lab-x") == "refused TenantShredded"
    assert int(readable(on_backup, "lab-w")) > 0
    assert readable(env, "lab-y") == "0"  # Y's keys open (no data yet)


def test_a_lab_created_while_another_process_runs_keeps_its_key(env):
    """C1, C3: process A holds the keyring; B creates lab Y and stores data in it; A then adds lab Z.
    Y's KEK survives and every one of its sealed values still opens."""
    a = Holder(env)
    try:
        add_lab(env, "lab-y")
        fill_lab(env, "lab-y")
        assert a.ask("add lab-z") == "ok"
        assert int(a.ask("read lab-y")) > 0
    finally:
        a.close()
    assert int(readable(env, "lab-y")) > 0
    assert readable(env, "lab-z") == "0"


def test_a_process_with_a_labs_keys_in_memory_follows_a_rotation_by_another(env):
    """C3: process A has lab R's data keys in memory; B rotates R's keys (``keys rotate``), so every
    row is sealed under a version A never saw: A reloads R's keys and still opens every value."""
    add_lab(env, "lab-r")
    fill_lab(env, "lab-r")
    a = Holder(env)
    try:
        before = int(a.ask("read lab-r"))
        assert before > 0
        lv(env, "keys", "rotate", "--tenant", "lab-r")
        assert a.ask("read lab-r") == str(before)
    finally:
        a.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(env: dict[str, str]) -> subprocess.Popen:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labvault.cli",
            "serve",
            "--port",
            str(port),
            "--checkpoint-every",
            "1",
            "--retention-every",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_umask022,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("labvault serve did not listen")


def test_serve_running_while_the_cli_adds_shreds_and_rotates_labs(env):
    """C1, C3: ``labvault serve`` runs (checkpoints and retention every second) while CLI processes,
    two at a time, add labs, fill them, shred labs and rotate keys. At the end every live lab's
    sealed values all open, every shredded lab's open nowhere, and the keyring holds exactly the
    live labs' keys."""
    rng = random.Random(11)
    live: dict[str, int] = {}
    shredded: set[str] = set()
    filled: set[str] = set()
    for k in range(3):
        add_lab(env, f"lab-{k}")
        fill_lab(env, f"lab-{k}", 8)
        live[f"lab-{k}"] = 0
        filled.add(f"lab-{k}")
    server = _serve(env)
    try:
        made = 3
        for _ in range(3):
            new = [f"lab-{made}", f"lab-{made + 1}"]
            made += 2
            victim = rng.choice(sorted(live))
            procs = [
                add_lab(env, new[0], wait=False),
                add_lab(env, new[1], wait=False),
                shred_lab(env, victim, wait=False),
            ]
            for p in procs:
                _, err = p.communicate(timeout=TIMEOUT)
                assert p.returncode == 0, err
            del live[victim]
            filled.discard(victim)
            shredded.add(victim)
            for lab in new:
                live[lab] = 0
            fill_lab(env, new[0], 4)
            filled.add(new[0])
            lv(env, "keys", "rotate", "--tenant", rng.choice(sorted(live)))
            assert server.poll() is None, server.stderr.read()
    finally:
        server.terminate()
        _, err = server.communicate(timeout=60)
    assert "Traceback" not in err, err
    state = readable_all(env, sorted(live) + sorted(shredded))
    assert all(state[lab].isdigit() for lab in live), state
    assert all(int(state[lab]) > 0 for lab in filled), state
    assert all(state[lab] == "refused TenantShredded" for lab in shredded), state

    scopes = set(json.loads((Path(env["LABVAULT_HOME"]) / "keyring.json").read_text())["scopes"])
    assert scopes == set(live) | {"platform"}


def _scopes(env: dict[str, str]) -> set[str]:
    return set(json.loads((Path(env["LABVAULT_HOME"]) / "keyring.json").read_text())["scopes"])


def _instructed_lab(env: dict[str, str], tmp_path: Path, monkeypatch) -> tuple[Path, str, str]:
    """bio-lyon, a lab filled by its own account, with a signer it registered and its signed
    ``migration_out`` instruction MIG-2026-01 received (the recipient's age identity in
    ``tmp_path/newlis.key``); a named vendor operator with MFA. Returns the signer's key file,
    the operator's e-mail and TOTP secret. The helpers of ``test_migrate_cli`` that open the home
    in this process are pointed at ``env``'s home."""
    for k in ("LABVAULT_DATABASE_URL", "LABVAULT_KEY_PROVIDER", "LABVAULT_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LABVAULT_HOME", env["LABVAULT_HOME"])
    monkeypatch.setenv("LABVAULT_PASSPHRASE", env["LABVAULT_PASSPHRASE"])
    add_lab(env, "bio-lyon")
    load_as_lab("bio-lyon", patients=40, seed=11)
    key = tmp_path / "signer.key"
    register(lv(env, "signer", "keygen", "--out", str(key)).stdout.strip().splitlines()[-1])
    ident = x25519.Identity.generate()
    (tmp_path / "newlis.key").write_text(f"# recipient\n{ident}\n")
    draft = tmp_path / "mig.json"
    draft.write_text(
        json.dumps(
            instruction(
                kind="migration_out",
                fields=mig.FIELDS,
                expected_volume=100_000,
                destination={"name": "NewLIS SAS", "country": "FR", "recipient_age_key": str(ident.to_public())},
            )
        )
    )
    lv(env, "instruction", "sign", str(draft), "--key", str(key))
    lv(env, "instruction", "receive", str(tmp_path / "mig.signed.json"), "--tenant", "bio-lyon")
    op = mig.operator(monkeypatch)
    return key, op, mig.TOTP


def _as_operator(env: dict[str, str], secret: str) -> dict[str, str]:
    """``env`` with the operator's password and a TOTP code for a process of its own (the current
    step); this process's test clock moves past it, so its own later codes are not replays."""
    return {**env, "LABVAULT_AS_PASSWORD": mig.PASSWORD, "LABVAULT_AS_TOTP": totp_real_code(secret)}


def test_serve_running_while_the_cli_migrates_a_lab_shreds_another_and_rotates_keys(env, tmp_path, capsys, monkeypatch):
    """C3, B3: ``labvault serve`` runs (checkpoints and retention every second) while the CLI
    runs a complete instructed migration of bio-lyon (plan, two approvals, run, verify, the
    recipient's receipt). While ``migrate run`` runs, other CLI processes shred a lab, add two and
    rotate a lab's keys, and a process that keeps the keyring open (as ``mllp`` does) adds labs for
    as long as the run lasts. The run's package key (key scope ``package-<id>``) is in the keyring
    from the run until the receipt; the package opens with the ``age`` CLI; the receipt destroys
    the package file and its key scope. At the end bio-lyon and every live lab decrypt, the
    shredded lab does not, and the keyring holds exactly the live labs' scopes and ``platform``."""
    key, op, secret = _instructed_lab(env, tmp_path, monkeypatch)
    live = {"bio-lyon"}
    for k in range(3):
        add_lab(env, f"lab-{k}")
        fill_lab(env, f"lab-{k}", 6)
        live.add(f"lab-{k}")
    filled = set(live)
    assert int(readable(env, "bio-lyon")) > 0
    home = Path(env["LABVAULT_HOME"])
    server = _serve(env)
    holder = Holder(env)
    try:
        # Plan and the operator's approval (this process, the CLI's own entry point), the lab's
        # approval with its signer key.
        mid = mig._plan(capsys, op)["migration"]
        assert mig.lv(capsys, "migrate", "approve", mid, "--tenant", "bio-lyon", "--as", op)[0] == 0
        code, out, err = mig.run(capsys, "migrate", "approve", mid, "--tenant", "bio-lyon", "--signer-key", str(key))
        assert code == 0 and "state approved" in out, err

        # The run (it makes the package key's scope) while a lab is shredded, two are added, a
        # lab's keys rotate and the holder adds labs until the run ends. The run makes its scope
        # outside any database write, so only the keyring's lock orders it against the others'
        # changes (made inside their write transactions): the holder keeps such changes coming.
        runner = subprocess.Popen(
            [sys.executable, "-m", "labvault.cli", "migrate", "run", mid, "--tenant", "bio-lyon", "--as", op],
            env=_as_operator(env, secret),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_umask022,
        )
        procs = [
            shred_lab(env, "lab-0", wait=False),
            add_lab(env, "lab-3", wait=False),
            add_lab(env, "lab-4", wait=False),
            subprocess.Popen(
                [sys.executable, "-m", "labvault.cli", "keys", "rotate", "--tenant", "lab-1"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_umask022,
            ),
        ]
        added = []
        while runner.poll() is None or len(added) < 5:
            lab = f"lab-h{len(added)}"
            assert holder.ask(f"add {lab}") == "ok", lab
            added.append(lab)
            time.sleep(0.003)  # leaves the database's write lock to the others now and then
        out, err = runner.communicate(timeout=TIMEOUT)
        errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
        assert runner.returncode == 0 and "packaged" in out, err
        assert [p.returncode for p in procs] == [0] * len(procs), errs
        live |= {"lab-3", "lab-4", *added}
        live.discard("lab-0")
        filled.discard("lab-0")
        assert f"package-{mid}" in _scopes(env)  # the package key lives until the purge

        # Verify and receipt in this process (the CLI's own entry point, as plan and approvals): the
        # operator's codes come from this process's clock, past the step the run's code used.
        code, out, err = mig.lv(capsys, "migrate", "verify", mid, "--tenant", "bio-lyon", "--as", op)
        assert code == 0 and "verified" in out, err
        package = home / "packages" / "bio-lyon" / mid / "package.ndjson.age"
        manifest = json.loads((package.parent / "manifest.json").read_text())["manifest"]
        results = [r for r in mig._decrypt(tmp_path, package) if r["record"] == "result"]
        assert 0 < len(results) == manifest["counts"]["records"]["result"]
        fill_lab(env, "lab-3", 4)  # a lab added during the run takes data
        filled.add("lab-3")

        # The recipient acknowledges; its receipt purges the package and destroys its key.
        receipt = tmp_path / "receipt.json"
        lv(
            env,
            "migrate",
            "acknowledge",
            str(package),
            "--identity",
            str(tmp_path / "newlis.key"),
            "--out",
            str(receipt),
        )
        code, out, err = mig.lv(capsys, "migrate", "receipt", mid, str(receipt), "--tenant", "bio-lyon", "--as", op)
        assert code == 0 and "state purged" in out, err
        assert not package.exists()
        assert server.poll() is None, server.stderr.read()
    finally:
        holder.close()
        server.terminate()
        _, serr = server.communicate(timeout=60)
    assert "Traceback" not in serr, serr
    state = readable_all(env, [*sorted(live), "lab-0"])
    assert all(state[lab].isdigit() for lab in live), state
    assert all(int(state[lab]) > 0 for lab in filled), state
    assert int(state["bio-lyon"]) > 0  # the migrated lab (less its results past retention, purged by serve)
    assert state["lab-0"] == "refused TenantShredded", state
    assert _scopes(env) == live | {"platform"}  # no package key left, the shredded lab's gone
    assert f"package-{mid}" not in _scopes(env)


def test_every_file_of_the_home_is_private(env, tmp_path):
    """C1: database, its -wal and -shm, keyring, lock and every other file the home holds are mode
    0600 and its directories 0700, though each process ran with umask 022."""
    add_lab(env, "lab-a")
    fill_lab(env, "lab-a")
    home = Path(env["LABVAULT_HOME"])
    holder = Holder(env)  # keeps the database open: its -wal and -shm files exist
    try:
        assert int(holder.ask("read lab-a")) > 0
        lv(env, "audit", "checkpoint")
        names = {p.name for p in home.rglob("*")}
        assert {"labvault.db", "labvault.db-wal", "labvault.db-shm", "keyring.json"} <= names, names
        for p in [home, *home.rglob("*")]:
            mode = stat.S_IMODE(p.stat().st_mode)
            assert mode == (0o700 if p.is_dir() else 0o600), (p, oct(mode))
    finally:
        holder.close()
