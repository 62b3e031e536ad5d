"""A process killed between the data write and the event write leaves neither."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import func, select

from labvault.store import schema as t
from labvault.store.engine import make_engine

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from labvault.access import Gateway, Principal, Purpose
    from labvault.access.gateway import Unit
    from labvault.crypto.keys import LocalKeyring
    from labvault.store.engine import make_engine, migrate
    from labvault.synth import LabGenerator

    home = Path(sys.argv[1])
    engine = make_engine(f"sqlite:///{home / 'db.sqlite'}")
    migrate(engine)
    gw = Gateway(engine, LocalKeyring.create(home / "keyring.json", "crash test passphrase", scrypt_n=2**14))
    admin = Principal("admin", "Admin", "platform", frozenset({"platform_admin"}))
    with gw.bootstrap(admin) as u:
        u.ensure_account("platform", "admin", "Admin", "a@x.invalid", admin.roles, commitment="test")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        u.create_tenant("lab-a", "Lab A", "690000017", retention={"results": (3650, "test rule")})
    bio = Principal("bio", "Bio", "lab-a", frozenset({"biologist"}))
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        u.ensure_account("lab-a", "bio", "Bio", "b@x.invalid", bio.roles, commitment="test")
    recs = list(LabGenerator("lab-a", 1).patients(5))

    def die(self, tenant_id, **event):  # the data rows are written; the event is next: crash here
        print("rows written, dying", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    Unit._write_event = die
    with gw.unit(bio, Purpose.INGEST) as u:
        u.add_patients("lab-a", [r.identity for r in recs])
    print("not reached", flush=True)
    """
)


def test_kill_between_data_and_event(tmp_path):
    """G1, G4: kill between data and event."""
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr[-2000:]
    assert "rows written, dying" in out.stdout and "not reached" not in out.stdout
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as conn:
        patients = conn.execute(select(func.count()).select_from(t.patient_identity)).scalar_one()
        events = conn.execute(
            select(func.count()).select_from(t.audit_event).where(t.audit_event.c.action == "patient:identity:create")
        ).scalar_one()
        tenant_created = conn.execute(
            select(func.count()).select_from(t.audit_event).where(t.audit_event.c.action == "tenant:create")
        ).scalar_one()
    engine.dispose()
    assert tenant_created == 1  # the earlier, committed unit is there...
    assert patients == 0 and events == 0  # ...the killed one left neither its rows nor its event
