"""A throwaway PostgreSQL cluster in a temp directory, for tests and benchmarks.

``initdb`` refuses to run as root, so as root the cluster is made and run as the ``postgres``
system user. The server listens on a Unix socket in the cluster's directory only (no TCP port).

    python -m labvault.testing.pg -- CMD ...   runs CMD with {url} replaced by the cluster's URL
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def pg_bindir() -> Path | None:
    """The directory of PostgreSQL 15's server binaries, or None."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(cand, "initdb").exists() and Path(cand, "pg_ctl").exists():
            return Path(cand)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and Path(found).with_name("initdb").exists() else None


class PgCluster:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # tests run with fsync off; benchmarks keep the server's defaults
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql-15)")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="labvault-pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        self._app_role = False
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd="/")

    def start(self) -> str:
        out = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C.UTF-8",
        )
        if out.returncode:
            raise RuntimeError(f"initdb failed: {out.stderr.strip()[:300]}")
        opts = f"-c listen_addresses='' -c unix_socket_directories='{self.dir}' -c shared_buffers=256MB"
        if not self.durable:
            opts += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        out = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        if out.returncode:
            log = (self.dir / "log").read_text(errors="replace")[-500:] if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip()[:300]} {log}")
        for _ in range(50):
            if (
                self._run("psql", "-h", str(self.dir), "-U", self.user, "-d", "postgres", "-c", "select 1").returncode
                == 0
            ):
                break
            time.sleep(0.1)
        return self.url("postgres")

    APP_ROLE = "labvault"  # what the application connects as: no superuser, no BYPASSRLS

    def createdb(self, name: str) -> str:
        """A database owned by the application role; its URL uses that role."""
        if not self._app_role:
            out = self._run(
                "psql",
                "-h",
                str(self.dir),
                "-U",
                self.user,
                "-d",
                "postgres",
                "-c",
                f"CREATE ROLE {self.APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE",
            )
            if out.returncode and "already exists" not in out.stderr:
                raise RuntimeError(f"create role failed: {out.stderr.strip()[:300]}")
            self._app_role = True
        out = self._run("createdb", "-h", str(self.dir), "-U", self.user, "-O", self.APP_ROLE, name)
        if out.returncode:
            raise RuntimeError(f"createdb failed: {out.stderr.strip()[:300]}")
        return self.url(name, self.APP_ROLE)

    def url(self, db: str, user: str | None = None) -> str:
        return f"postgresql+psycopg://{user or self.user}@/{db}?host={self.dir}"

    def superuser_url(self, app_url: str) -> str:
        """The same database as a superuser (bypasses row-level security: for tampering tests)."""
        return app_url.replace(f"//{self.APP_ROLE}@", f"//{self.user}@", 1)

    def pg_dump(self, db: str) -> bytes:
        cmd = [str(self.bindir / "pg_dump"), "-h", str(self.dir), "-U", self.user, db]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, check=True, cwd="/").stdout

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m labvault.testing.pg -- CMD ... ({url} is replaced)", file=sys.stderr)
        return 2
    cluster = PgCluster(durable=True)
    try:
        cluster.start()
        url = cluster.createdb("labvault")
        return subprocess.call([a.replace("{url}", url) for a in argv[1:]])
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
