"""Key rotation: a lab's data re-encrypted under a new data key version, in resumable batches, each
batch a unit of work of its own (``Gateway.rotate_keys`` drives the ``Rotation`` steps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import and_, func, insert, select, update

from labvault.access.principal import Principal, Purpose
from labvault.access.records import ENCRYPTED
from labvault.access.state import UnitState
from labvault.crypto import tokens
from labvault.errors import InvalidInput
from labvault.ids import utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from labvault.access.gateway import Gateway


def rotate_keys(
    gateway: Gateway,
    principal: Principal,
    tenant_id: str,
    *,
    batch_size: int = 2000,
    max_batches: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Re-encrypt a lab's data under a new data key version, in resumable batches.

    Starts a new version unless a rotation is already under way (a version in state
    ``retiring``), in which case it resumes. Each batch commits on its own, so an
    interruption loses at most one batch of work and leaves every row readable.
    """
    if batch_size < 1:
        raise InvalidInput("the batch size must be at least 1")
    with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
        new_version, resumed = u._start_rotation(tenant_id)
    gateway.forget_keys(tenant_id)
    with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
        total = u._rows_below(tenant_id, new_version)
    done = batches = 0
    finished = False
    while max_batches is None or batches < max_batches:
        with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
            n = u._reencrypt_batch(tenant_id, new_version, batch_size)
        if n == 0:
            finished = True
            break
        done += n
        batches += 1
        if progress:
            progress(done, total)
    if finished:
        with gateway.unit(principal, Purpose.ADMINISTRATION) as u:
            u._finish_rotation(tenant_id)
    return {"version": new_version, "resumed": int(resumed), "rows": done, "finished": int(finished)}


class Rotation(UnitState):
    """The steps of one rotation, each in the unit of work that runs it: mixed into ``Unit``."""

    def _start_rotation(self, tenant_id: str) -> tuple[int, bool]:
        self._authorise(tenant_id, "keys:rotate")
        self._crypto(tenant_id)  # refuses shredded or unknown labs
        tk = t.tenant_key
        rows = self.conn.execute(
            select(tk.c.version, tk.c.state).where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data")
        ).all()
        if any(r.state == "retiring" for r in rows):
            current = max(r.version for r in rows if r.state == "active")
            self._record(tenant_id, "keys:rotate:resume", "key", 1)
            return current, True
        new = max(r.version for r in rows) + 1
        self.conn.execute(
            update(tk)
            .where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data", tk.c.state == "active")
            .values(state="retiring")
        )
        self.conn.execute(
            insert(tk).values(
                tenant_id=tenant_id,
                purpose="data",
                version=new,
                wrapped=self._gw.keys.wrap(tenant_id, tokens.new_key(), f"data:v{new}".encode()),
                state="active",
                created_at=utcnow(),
            )
        )
        self._unit_crypto.pop(tenant_id, None)  # the versions changed: reloaded if read again
        self._record(tenant_id, "keys:rotate:start", "key", 1)
        return new, False

    def _rows_below(self, tenant_id: str, version: int) -> int:
        self._authorise(tenant_id, "keys:rotate")
        total = 0
        for name in ENCRYPTED:
            tbl = t.metadata.tables[name]
            total += self.conn.execute(
                select(func.count()).select_from(tbl).where(self._tf(tbl, tenant_id), tbl.c.key_version < version)
            ).scalar_one()
        return total

    def _reencrypt_batch(self, tenant_id: str, version: int, batch_size: int) -> int:
        """Re-encrypt up to ``batch_size`` rows still sealed under an older version; 0 when none is left."""
        from sqlalchemy import bindparam

        self._authorise(tenant_id, "keys:rotate")
        c = self._crypto(tenant_id)
        if c.cipher.current_version != version:
            raise InvalidInput("another rotation changed the lab's key version meanwhile; run it again")
        left = batch_size
        for name, (pk, enc_cols) in ENCRYPTED.items():
            tbl = t.metadata.tables[name]
            rows = self.conn.execute(
                select(tbl.c[pk], *[tbl.c[col] for col in enc_cols])
                .where(self._tf(tbl, tenant_id), tbl.c.key_version < version)
                .limit(left)
            ).all()
            if not rows:
                continue
            ciphers = [c.cipher.column(name, col) for col in enc_cols]
            params = []
            for row in rows:
                rid = row[0]
                p = {"_id": rid, "key_version": version}
                for cipher, col, blob in zip(ciphers, enc_cols, row[1:], strict=True):
                    p[col] = None if blob is None else cipher.seal(rid, cipher.open(rid, blob))
                params.append(p)
            stmt = (
                update(tbl)
                .where(and_(self._tf(tbl, tenant_id), tbl.c[pk] == bindparam("_id")))
                .values({col: bindparam(col) for col in (*enc_cols, "key_version")})
            )
            self.conn.execute(stmt, params)
            self._record(tenant_id, "keys:rotate:batch", name, len(rows))
            left -= len(rows)
            if left == 0:
                break
        return batch_size - left

    def _finish_rotation(self, tenant_id: str) -> None:
        self._authorise(tenant_id, "keys:rotate")
        tk = t.tenant_key
        self.conn.execute(
            update(tk)
            .where(tk.c.tenant_id == tenant_id, tk.c.purpose == "data", tk.c.state == "retiring")
            .values(state="retired")
        )
        self._unit_crypto.pop(tenant_id, None)
        self._record(tenant_id, "keys:rotate:done", "key", 1)
