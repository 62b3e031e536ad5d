"""Crypto-shredding a package on a real HSM (SoftHSM2): the package key is an AES key object of
its own on the token, and the purge destroys it there."""

from __future__ import annotations

import json

from pyrage import x25519

from labvault.access import Gateway, Purpose
from labvault.crypto.keys import PLATFORM
from labvault.migration import service
from labvault.store.engine import make_engine, migrate
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab
from tests.migration.test_migration import admin_signer, instruction, receive


def test_the_package_key_lives_and_dies_on_the_token(open_keyring, tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hsm.db'}")
    migrate(engine)
    keyring = open_keyring()
    gw = Gateway(engine, keyring)
    try:
        with gw.bootstrap(ADMIN) as u:
            u.ensure_account(
                PLATFORM, ADMIN.account_id, ADMIN.name, "admin@test.invalid", ADMIN.roles, commitment="test"
            )
            u.ensure_platform_keys()
        make_lab(gw, "lab-a")
        load_lab(gw, ADMIN, "lab-a", patients=8, seed=3)
        admin, private = admin_signer(gw)
        ident = x25519.Identity.generate()
        receive(gw, admin, instruction(str(ident.to_public()), 10_000, kind="export"), private)
        op = lab_user(gw, PLATFORM, "operator", name="Op")
        job = service.export(gw, op, "lab-a", "MIG-2021", tmp_path / "packages")
        scope = f"package-{job.migration_id}"
        assert keyring.has_scope(scope) and open_keyring().has_scope(scope)  # on the token, seen by any session
        manifest = json.loads((job.package.parent / service.MANIFEST).read_text())
        from tests.migration.test_migration import RECEIPT_PRIVATE

        receipt = service.acknowledge(job.package, manifest, str(ident), signing_key=RECEIPT_PRIVATE)
        with gw.unit(op, Purpose.EXPORT) as u:
            assert service.import_receipt(u, "lab-a", job.migration_id, receipt).state == "purged"
        assert not keyring.has_scope(scope) and not open_keyring().has_scope(scope)
        assert not job.package.exists()
    finally:
        gw.close()
        engine.dispose()
