"""Labs (tenants): creation with their keys and retention rules, the synthetic mark, listing, the
lab's unwrapped keys, crypto-shredding, signed records; the platform's signing key; accounts
recorded by ``init`` and the benchmarks; a lab's row counts and key versions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, insert, select, update

from labvault.access import policy
from labvault.access.records import ENCRYPTED
from labvault.access.state import UnitState
from labvault.crypto import tokens
from labvault.crypto.blind import BlindIndex
from labvault.crypto.fields import FieldCipher
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.domain.identifiers import TENANT_ID_RE, check_timezone, validate_finess
from labvault.domain.models import Tenant
from labvault.domain.retention import check_rules
from labvault.errors import (
    AccessDenied,
    InvalidInput,
    NotFound,
    TenantExists,
    TenantKeyMissing,
    TenantShredded,
    UnknownTenant,
)
from labvault.ids import new_id, utcnow
from labvault.store import schema as t

if TYPE_CHECKING:
    from sqlalchemy import Row

    from labvault.access.gateway import Unit


@dataclass(frozen=True)
class TenantCrypto:
    """A lab's unwrapped keys, held in memory only."""

    cipher: FieldCipher
    index: BlindIndex
    # (purpose, version, state) of the lab's wrapped keys these were unwrapped from: a cached copy
    # is used only while the database still says the same (another process may have rotated).
    versions: tuple[tuple[str, int, str], ...] = ()


# A synthetic lab's mark: a tenant_key row of this purpose, sealed under the lab's KEK at creation.
SYNTHETIC_MARK = "synthetic"


def _synthetic_secret(tenant_id: str) -> bytes:
    return f"labvault synthetic lab {tenant_id}".encode()


class Tenants(UnitState):
    """Labs, their keys and the platform key: mixed into ``Unit``."""

    def create_tenant(
        self,
        tenant_id: str,
        name: str,
        finess: str,
        *,
        retention: Mapping[str, tuple[int, str]],
        synthetic: bool = False,
        timezone: str = "Europe/Paris",
    ) -> Tenant:
        """A lab with its own keys and its retention rules (category -> (days, legal reference),
        ``results`` at least), all in this transaction: no lab exists without its rules.

        ``synthetic``: a lab for generated data only (the demo, ``generate``, the benchmarks). Only
        such a lab may be generated into by vendor accounts, or deleted without the lab's signed
        deletion instruction; the mark is set here, once, and never changed afterwards."""
        if self._check and not policy.allowed(self.principal.roles, "tenant:create"):
            raise AccessDenied("creating labs is not allowed for this account")
        if not TENANT_ID_RE.match(tenant_id) or tenant_id == PLATFORM:
            raise InvalidInput(
                "a lab id is 2-63 characters: lower-case letters, digits and '-', starting with a letter or digit"
            )
        if not name.strip():
            raise InvalidInput("a lab needs a name")
        finess = validate_finess(finess)
        timezone = check_timezone(timezone)
        rules = check_rules(retention)
        self._scope(tenant_id)
        if self.conn.execute(select(t.tenant.c.tenant_id).where(self._tf(t.tenant, tenant_id))).first():
            raise TenantExists(f"lab '{tenant_id}' already exists")
        now = utcnow()
        self.conn.execute(
            insert(t.tenant).values(
                tenant_id=tenant_id,
                name=name.strip(),
                finess=finess,
                status="active",
                created_at=now,
                synthetic=int(bool(synthetic)),
                timezone=timezone,
            )
        )
        keys = self._gw.keys
        keys.create_scope(tenant_id)
        for purpose in ("data", "index"):
            secret = tokens.new_key()
            self.conn.execute(
                insert(t.tenant_key).values(
                    tenant_id=tenant_id,
                    purpose=purpose,
                    version=1,
                    wrapped=keys.wrap(tenant_id, secret, f"{purpose}:v1".encode()),
                    state="active",
                    created_at=now,
                )
            )
        if synthetic:  # the mark sealed under the lab's own KEK: an UPDATE of tenant.synthetic cannot make one
            self.conn.execute(
                insert(t.tenant_key).values(
                    tenant_id=tenant_id,
                    purpose=SYNTHETIC_MARK,
                    version=1,
                    state="active",
                    created_at=now,
                    wrapped=keys.wrap(tenant_id, _synthetic_secret(tenant_id), f"{SYNTHETIC_MARK}:v1".encode()),
                )
            )
        self._record(tenant_id, "tenant:create", "synthetic-tenant" if synthetic else "tenant", 1)
        self._write_rules(tenant_id, rules)
        return Tenant(tenant_id, name.strip(), finess, "active", now, bool(synthetic), timezone)

    def write_retention_rules(self, tenant_id: str, rules: Mapping[str, tuple[int, str]]) -> None:
        """Insert or replace a lab's retention rules (checked by ``labvault.domain.retention``)."""
        self._authorise(tenant_id, "retention:manage")
        self._write_rules(tenant_id, rules)

    def _write_rules(self, tenant_id: str, rules: Mapping[str, tuple[int, str]]) -> None:
        r = t.retention_rule
        now = utcnow()
        for category, (days, ref) in rules.items():
            values = {"days": days, "legal_reference": ref, "set_by": self.principal.account_id, "set_at": now}
            where = (self._tf(r, tenant_id), r.c.category == category)
            self._scope(tenant_id)
            if self.conn.execute(select(r.c.category).where(*where)).first() is None:
                self.conn.execute(insert(r).values(tenant_id=tenant_id, category=category, **values))
            else:
                self.conn.execute(update(r).where(*where).values(**values))
            self._record(tenant_id, "retention:set", category, 1)

    def is_synthetic(self, tenant_id: str) -> bool:
        """Whether ``tenant_id`` was created synthetic, as the decisions it unlocks need it proved:
        ``tenant.synthetic`` set AND the mark ``create_tenant`` sealed under the lab's own KEK opens.
        Someone who sets the column on a real lab (an UPDATE in the database) has no such mark and
        cannot make one without the lab's KEK. ``Tenant.synthetic`` is the column, for display."""
        from labvault.errors import LabvaultError

        if tenant_id in self._gw._synthetic:
            return True
        self._scope(tenant_id)
        flagged = self.conn.execute(select(t.tenant.c.synthetic).where(self._tf(t.tenant, tenant_id))).scalar()
        row = self.conn.execute(
            select(t.tenant_key.c.wrapped).where(
                self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose == SYNTHETIC_MARK, t.tenant_key.c.version == 1
            )
        ).first()
        if not flagged or row is None:
            return False
        try:
            sealed = self._gw.keys.unwrap(tenant_id, row.wrapped, f"{SYNTHETIC_MARK}:v1".encode())
        except LabvaultError:
            return False
        if sealed != _synthetic_secret(tenant_id):
            return False
        self._gw._synthetic.add(tenant_id)
        return True

    def list_tenants(self) -> list[Tenant]:
        if not self.principal.is_platform:
            self._authorise(self.principal.tenant_id, "tenant:read")
            rows = self.conn.execute(select(t.tenant).where(t.tenant.c.tenant_id == self.principal.tenant_id)).all()
        else:
            if self._check and not policy.allowed(self.principal.roles, "tenant:list"):
                raise AccessDenied("listing labs is not allowed for this account")
            self._scope("*")
            rows = self.conn.execute(select(t.tenant).order_by(t.tenant.c.tenant_id)).all()
        return [_tenant_of(r) for r in rows]

    def tenant(self, tenant_id: str) -> Tenant:
        self._scope(tenant_id)
        row = self.conn.execute(select(t.tenant).where(self._tf(t.tenant, tenant_id))).first()
        if row is None:
            raise UnknownTenant(f"unknown lab '{tenant_id}' (see 'labvault tenant list')")
        return _tenant_of(row)

    def set_lab_details(
        self, tenant_id: str, *, address: str | None = None, working_hours: str | None = None
    ) -> Tenant:
        """The lab's own details, set by its lab_admin (``tenant:settings``): the postal address
        printed on its reports, its opening hours (read by the off-hours monitoring rule). None
        leaves a detail as it is. Neither is personal data; the change is audited."""
        from labvault.domain.hours import parse_hours

        self._authorise(tenant_id, "tenant:settings")
        self.tenant(tenant_id)
        values: dict[str, str | None] = {}
        if address is not None:
            address = " ".join(address.split())
            if len(address) > 300:
                raise InvalidInput("the address is longer than 300 characters")
            values["address"] = address or None
        if working_hours is not None:
            parse_hours(working_hours)  # refused with its reason when malformed
            values["working_hours"] = working_hours.strip() or None
        if values:
            self.conn.execute(update(t.tenant).where(self._tf(t.tenant, tenant_id)).values(**values))
            self._record(tenant_id, "tenant:settings", "tenant", 1, refs=sorted(values))
        return self.tenant(tenant_id)

    def _crypto(self, tenant_id: str) -> TenantCrypto:
        """The lab's keys. Loaded and checked (status, key versions) once per unit, the KEK's
        presence at every use: a lab shredded by another process meanwhile is read no more; this
        unit's own shred or rotation drops them (``_forget_unit_keys``)."""
        mine = self._unit_crypto.get(tenant_id)
        if mine is not None:
            # C3: another process may have shredded the lab since this unit opened its keys (the
            # KEK is destroyed before that shred commits): without it, nothing more is read.
            if not self._gw.keys.has_scope(tenant_id):
                self._forget_unit_keys(tenant_id)
                raise TenantKeyMissing(f"no key for '{tenant_id}' in the key provider (destroyed)")
            self._scope(tenant_id)
            return mine
        crypto = self._load_crypto(tenant_id)
        self._unit_crypto[tenant_id] = crypto
        return crypto

    def _forget_unit_keys(self, tenant_id: str) -> None:
        self._unit_crypto.pop(tenant_id, None)
        self._gw.forget_keys(tenant_id)

    def _load_crypto(self, tenant_id: str) -> TenantCrypto:
        tenant = self.tenant(tenant_id)
        if tenant.status == "shredded":
            raise TenantShredded(f"lab '{tenant_id}' was crypto-shredded: its data can no longer be read")
        tk = t.tenant_key
        versions = tuple(
            tuple(r)
            for r in self.conn.execute(
                select(tk.c.purpose, tk.c.version, tk.c.state)
                .where(self._tf(tk, tenant_id), tk.c.purpose.in_(["data", "index"]))
                .order_by(tk.c.purpose, tk.c.version)
            )
        )
        cached = self._gw._crypto.get(tenant_id)
        if cached is not None and cached.versions == versions:  # else another process rotated: reload
            # C3: another process may have shredded the lab since these keys were unwrapped (and
            # this database may be a copy taken before): the KEK must still be there to use them.
            if self._gw.keys.has_scope(tenant_id):
                return cached
            self._forget_unit_keys(tenant_id)
            raise TenantKeyMissing(f"no key for '{tenant_id}' in the key provider (destroyed)")
        rows = self.conn.execute(
            select(t.tenant_key).where(self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose.in_(["data", "index"]))
        ).all()
        keys = self._gw.keys
        data: dict[int, bytes] = {}
        current = 0
        index_key = None
        for r in rows:
            secret = keys.unwrap(tenant_id, r.wrapped, f"{r.purpose}:v{r.version}".encode())
            if r.purpose == "data":
                data[r.version] = secret
                if r.state == "active":
                    current = r.version
            else:
                index_key = secret
        if not data or index_key is None or current == 0:
            raise TenantShredded(f"lab '{tenant_id}' has no usable keys")
        crypto = TenantCrypto(FieldCipher(tenant_id, data, current), BlindIndex(tenant_id, index_key), versions)
        self._gw._crypto[tenant_id] = crypto
        return crypto

    def shred_tenant(self, tenant_id: str, *, instruction_id: str | None = None) -> dict[str, Any]:
        """Destroy a lab's keys: all its data, in every backup, becomes unreadable. Signed record.

        A real lab only under its signed deletion instruction (``instruction_id``), re-checked now;
        a synthetic lab without one (see ``labvault.access.instructed.authorise_deletion``). Inside
        the end of a contract, the ground that unit checked before deleting the rows is used."""
        from labvault.access import instructed

        self._authorise(tenant_id, "tenant:shred")
        # The lab's row locked first (PostgreSQL; SQLite has one writer): a concurrent shred of the
        # same lab waits here, then finds it shredded.
        self.conn.execute(select(t.tenant.c.status).where(self._tf(t.tenant, tenant_id)).with_for_update()).first()
        tenant = self.tenant(tenant_id)
        if tenant.status == "shredded":
            raise TenantShredded(f"lab '{tenant_id}' was already crypto-shredded")
        deletion = self._deletion_ground.get(tenant_id)
        if deletion is None or (deletion["instruction"] or {}).get("id") != instruction_id:
            unit = cast("Unit", self)  # this part is mixed into a Unit, which the instruction checks take
            deletion = instructed.authorise_deletion(unit, tenant_id, instruction_id, action="tenant:shred")
        # An earlier attempt may have destroyed the KEK and then failed to commit: this one marks the
        # lab (and says so in the record) instead of failing on a key that is gone (C3).
        kek_present = self._gw.keys.has_scope(tenant_id)
        rows = self.conn.execute(select(t.tenant_key).where(self._tf(t.tenant_key, tenant_id))).all()
        now = utcnow()
        body = {
            "kind": "tenant-shred",
            "tenant": tenant_id,
            "finess": tenant.finess,
            "at": now.isoformat(),
            "actor": self.principal.account_id,
            "actor_name": self.principal.name,
            "key_provider": self._gw.keys.name,
            "synthetic": deletion["synthetic"],
            "instruction": deletion["instruction"],
            "keys_destroyed": [
                {"purpose": r.purpose, "version": r.version, "wrapped_sha256": tokens.sha256_hex(r.wrapped)}
                for r in rows
                if r.purpose not in (SYNTHETIC_MARK, "signer")  # seals, not keys (gone with the rows and the KEK)
            ],
        }
        if not kek_present:
            body["kek_destroyed_earlier"] = True
        signer, public = self._platform_signer()
        record = {"record_id": new_id(), "body": body, "signature": signer.sign(body), "public_key": public.hex()}
        self.conn.execute(t.tenant_key.delete().where(self._tf(t.tenant_key, tenant_id)))
        self.conn.execute(
            update(t.tenant).where(self._tf(t.tenant, tenant_id)).values(status="shredded", shredded_at=now)
        )
        self.conn.execute(
            insert(t.signed_record).values(
                tenant_id=tenant_id,
                record_id=record["record_id"],
                kind="tenant-shred",
                body=json.dumps(body, sort_keys=True),
                signature=record["signature"],
                signer_public_key=record["public_key"],
                created_at=now,
            )
        )
        self._record(
            tenant_id,
            "tenant:shred",
            "tenant",
            1,
            refs=[deletion["instruction"]["id"]] if deletion["instruction"] else None,
        )
        # Last, once the database changes are in this transaction: destroy the KEK itself.
        # Should the commit then fail, the lab is unreadable but not marked: a retry marks it.
        self._forget_unit_keys(tenant_id)
        if kek_present:
            self._gw.keys.destroy_scope(tenant_id)  # TenantKeyMissing if another process did meanwhile
        return record

    def signed_records(self, tenant_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        self._authorise(tenant_id, "tenant:read")
        q = select(t.signed_record).where(self._tf(t.signed_record, tenant_id))
        if kind:
            q = q.where(t.signed_record.c.kind == kind)
        return [
            {
                "record_id": r.record_id,
                "body": json.loads(r.body),
                "signature": r.signature,
                "public_key": r.signer_public_key,
            }
            for r in self.conn.execute(q.order_by(t.signed_record.c.created_at)).all()
        ]

    def counts(self, tenant_id: str) -> dict[str, int]:
        """How many rows a lab has per table (no personal value)."""
        self._authorise(tenant_id, "tenant:read")
        self.tenant(tenant_id)
        out = {}
        for tbl in (t.patient_identity, t.prescriber, t.request, t.specimen, t.result):
            out[tbl.name] = self.conn.execute(
                select(func.count()).select_from(tbl).where(self._tf(tbl, tenant_id))
            ).scalar_one()
        self._record(tenant_id, "tenant:counts", "tenant", 1)
        return out

    def key_versions(self, tenant_id: str) -> dict[str, object]:
        """Data key versions with their states, and how many rows each version still seals."""
        self._authorise(tenant_id, "keys:rotate")
        self.tenant(tenant_id)
        keys = self.conn.execute(
            select(t.tenant_key.c.version, t.tenant_key.c.state)
            .where(self._tf(t.tenant_key, tenant_id), t.tenant_key.c.purpose == "data")
            .order_by(t.tenant_key.c.version)
        ).all()
        rows: dict[int, int] = {}
        for name in ENCRYPTED:
            tbl = t.metadata.tables[name]
            for version, n in self.conn.execute(
                select(tbl.c.key_version, func.count()).where(self._tf(tbl, tenant_id)).group_by(tbl.c.key_version)
            ).all():
                rows[version] = rows.get(version, 0) + n
        return {"keys": [{"version": k.version, "state": k.state} for k in keys], "rows_by_version": rows}

    # -- platform signing key ---------------------------------------------------------------------

    def ensure_platform_keys(self) -> bytes:
        """Create the platform's Ed25519 signing key if absent, and pin it (G4); return its public key.

        The public key pinned is the one derived from the private key the KEK opens, never the
        ``public`` column of the row."""
        keys = self._gw.keys
        keys.create_scope(PLATFORM)
        self._scope(PLATFORM)
        row = self.conn.execute(
            select(t.tenant_key)
            .where(t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing")
            .order_by(t.tenant_key.c.version)
        ).first()
        if row is not None:
            pub = Signer(keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode())).public_key
        else:
            priv, pub = Signer.generate()
            self.conn.execute(
                insert(t.tenant_key).values(
                    tenant_id=PLATFORM,
                    purpose="signing",
                    version=1,
                    wrapped=keys.wrap(PLATFORM, priv, b"signing:v1"),
                    public=pub,
                    state="active",
                    created_at=utcnow(),
                )
            )
        pin = self._gw.pin
        if pin is not None and not pin.exists():
            self.on_commit(lambda: pin.create(pub))
        return pub

    def _platform_signer(self) -> tuple[Signer, bytes]:
        previous = self._scoped
        self._scope(PLATFORM)
        row = self.conn.execute(
            select(t.tenant_key)
            .where(
                t.tenant_key.c.tenant_id == PLATFORM,
                t.tenant_key.c.purpose == "signing",
                t.tenant_key.c.state == "active",
            )
            .order_by(t.tenant_key.c.version.desc())
        ).first()
        if previous is not None:
            self._scope(previous)
        if row is None:
            raise NotFound("no platform signing key: run 'labvault init'")
        signer = Signer(self._gw.keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode()))
        return signer, signer.public_key  # derived from the private key, not read from the row

    def sign_as_platform(self, body: dict[str, Any]) -> tuple[str, bytes]:
        """Sign ``body`` (a record without personal value) with the platform's active signing key:
        the signature and the public key it verifies with."""
        signer, public = self._platform_signer()
        return signer.sign(body), public

    def platform_public_key(self) -> bytes:
        """The platform's active signing public key (derived from the private key the KEK opens)."""
        return self._platform_signer()[1]

    def platform_public_keys(self) -> set[str]:
        """Hex of every platform signing public key, retired ones too (they verify older records)."""
        previous = self._scoped
        self._scope(PLATFORM)
        tk = t.tenant_key
        rows = self.conn.execute(select(tk.c.public).where(tk.c.tenant_id == PLATFORM, tk.c.purpose == "signing")).all()
        if previous is not None:
            self._scope(previous)
        return {bytes(x.public).hex() for x in rows if x.public}

    def platform_keys(self) -> list[bytes]:
        """G4: the platform's signing keys a checkpoint may be verified with, oldest first.

        The first is the key pinned at ``init`` (the sealed pin file; without one, the first key the
        KEK opens); each later one only through a rotation record signed by the key before it
        (``rotate_platform_key``). Nothing here is taken from a checkpoint's row."""
        from labvault.audit.pin import fingerprint
        from labvault.crypto.signing import verify
        from labvault.errors import SignatureInvalid  # what ``verify`` raises (defined in the error tree)

        previous = self._scoped
        self._scope(PLATFORM)
        if self._gw.pin is not None:
            trusted = [bytes.fromhex(k["public"]) for k in self._gw.pin.read()["keys"]]
        else:
            row = self.conn.execute(
                select(t.tenant_key)
                .where(t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing")
                .order_by(t.tenant_key.c.version)
            ).first()
            if row is None:
                raise NotFound("no platform signing key: run 'labvault init'")
            trusted = [
                Signer(self._gw.keys.unwrap(PLATFORM, row.wrapped, f"signing:v{row.version}".encode())).public_key
            ]
        records = self._platform_key_rows()
        if previous is not None:
            self._scope(previous)
        for r in records:  # a rotation counts only when the key before it signed it
            body = json.loads(r.body)
            try:
                new = bytes.fromhex(body["public"])
                prev = next(k for k in trusted if fingerprint(k) == body["previous"])
                verify(body, r.signature, prev)
            except (StopIteration, KeyError, ValueError, TypeError, SignatureInvalid):
                continue
            if new not in trusted:
                trusted.append(new)
        return trusted

    def platform_key_records(self) -> list[dict[str, Any]]:
        """The platform's key rotation records (each signed by the key before it), for a lab's file."""
        previous = self._scoped
        self._scope(PLATFORM)
        rows = self._platform_key_rows()
        if previous is not None:
            self._scope(previous)
        return [{"type": "platform-key", "body": json.loads(r.body), "signature": r.signature} for r in rows]

    def _platform_key_rows(self) -> Sequence[Row[Any]]:
        """The platform key's rotation records, oldest first (the caller has scoped to the platform)."""
        return self.conn.execute(
            select(t.signed_record)
            .where(t.signed_record.c.tenant_id == PLATFORM, t.signed_record.c.kind == "platform-key")
            .order_by(t.signed_record.c.created_at)
        ).all()

    def rotate_platform_key(self) -> dict[str, Any]:
        """A new platform signing key; the rotation record is signed by the key it replaces (G4)."""
        from labvault.audit.pin import fingerprint

        self._authorise(PLATFORM, "keys:rotate")
        old_signer, old_public = self._platform_signer()
        self._scope(PLATFORM)
        version = (
            self.conn.execute(
                select(func.max(t.tenant_key.c.version)).where(
                    t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing"
                )
            ).scalar()
            or 0
        ) + 1
        priv, pub = Signer.generate()
        now = utcnow()
        body = {
            "kind": "platform-key",
            "version": version,
            "public": pub.hex(),
            "fingerprint": fingerprint(pub),
            "previous": fingerprint(old_public),
            "at": now.isoformat(),
        }
        signature = old_signer.sign(body)
        self.conn.execute(
            update(t.tenant_key)
            .where(t.tenant_key.c.tenant_id == PLATFORM, t.tenant_key.c.purpose == "signing")
            .values(state="retired")
        )
        self.conn.execute(
            insert(t.tenant_key).values(
                tenant_id=PLATFORM,
                purpose="signing",
                version=version,
                wrapped=self._gw.keys.wrap(PLATFORM, priv, f"signing:v{version}".encode()),
                public=pub,
                state="active",
                created_at=now,
            )
        )
        self.conn.execute(
            insert(t.signed_record).values(
                tenant_id=PLATFORM,
                record_id=new_id(),
                kind="platform-key",
                body=json.dumps(body, sort_keys=True),
                signature=signature,
                signer_public_key=old_public.hex(),
                created_at=now,
            )
        )
        self._record(PLATFORM, "keys:platform:rotate", "key", 1)
        pin = self._gw.pin
        if pin is not None:
            self.on_commit(lambda: pin.add_key(version, pub))
        return {
            "version": version,
            "fingerprint": fingerprint(pub),
            "previous": fingerprint(old_public),
            "record": {"body": body, "signature": signature},
        }

    # -- account secrets sealed under the platform's KEK (TOTP seeds) ------------------------------
    def seal_totp_secret(self, account_id: str, secret: str) -> bytes:
        """An account's TOTP secret sealed under the platform's KEK, bound to the account."""
        return self._gw.keys.wrap(PLATFORM, secret.encode(), f"totp:{account_id}".encode())

    def open_totp_secret(self, account_id: str, sealed: bytes) -> str:
        """The TOTP secret ``seal_totp_secret`` sealed for this account."""
        return self._gw.keys.unwrap(PLATFORM, sealed, f"totp:{account_id}".encode()).decode()

    # -- accounts (named actors; the access-control issue adds authentication and roles) -------

    def ensure_account(
        self,
        tenant_id: str,
        account_id: str,
        name: str,
        email: str,
        roles: Iterable[str],
        *,
        commitment: str | None = None,
    ) -> bool:
        """Record a named account; returns False when it already existed."""
        self._scope(tenant_id)
        exists = self.conn.execute(
            select(t.account.c.account_id).where(self._tf(t.account, tenant_id), t.account.c.account_id == account_id)
        ).first()
        if exists:
            return False
        self.conn.execute(
            insert(t.account).values(
                tenant_id=tenant_id,
                account_id=account_id,
                name=name,
                email=email,
                kind="person",
                roles=",".join(sorted(roles)),
                active=1,
                created_at=utcnow(),
                commitment_at=utcnow() if commitment else None,
                commitment_ref=commitment,
            )
        )
        return True


def _tenant_of(r: Any) -> Tenant:
    return Tenant(
        r.tenant_id,
        r.name,
        r.finess,
        r.status,
        r.created_at,
        bool(r.synthetic),
        r.timezone,
        r.address or "",
        r.working_hours or "",
    )
