"""The demo's migration: what the vendor of 2021 did, and what Labvault lets happen instead.

The lab signs an instruction (its 2019-2020 results, no free-text comments, to NewLIS SAS); the
vendor's operator first asks for everything, as the old software could only dump everything:
refused, audited, alerted. Then the plan, two approvals, the age package opened by the real
``age`` CLI on the recipient's side, the receipt, the purge and the signed certificate.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from labvault.access import Principal, Purpose
from labvault.accounts import service as accounts
from labvault.cli.common import console
from labvault.cli.demo import DemoAccount
from labvault.crypto import packages
from labvault.crypto.keys import atomic_write
from labvault.crypto.signing import Signer
from labvault.errors import LabvaultError
from labvault.instructions import document, signers
from labvault.migration import service


def _login(rt, a: DemoAccount) -> Principal:
    import pyotp

    from labvault.accounts import totp

    with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
        login = accounts.login(u, a["email"], a["password"], addr="demo", user_agent="labvault-demo")
    if not login.mfa_pending:
        return login.principal
    # A code is accepted once: the enrolment, a moment ago, used this step's code; the demo's
    # authenticator gives the next step's (still within the window of one step either side).
    if a["totp"] is None:
        raise LabvaultError(f"the demo's {a['role']} account asks for a TOTP code but has no secret")
    code = pyotp.TOTP(a["totp"]).at(totp.clock() + totp.STEP)
    with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
        return accounts.verify_mfa(u, login.session, code, addr="demo", user_agent="labvault-demo").principal


def show_migration(rt, tenant: str, demo_accounts: list[DemoAccount]) -> tuple[list[dict] | None, str]:
    """The step; returns the records NewLIS decrypted (None without the age CLI) and the migration's id."""
    home: Path = rt.settings.home
    store = home / "packages"
    who = {a["role"]: a for a in demo_accounts if a["tenant"] in (tenant, "platform")}
    lab_admin, biologist = _login(rt, who["lab_admin"]), _login(rt, who["biologist"])
    operator = _login(rt, who["operator"])

    # The lab's side: its admin registers the biologist as a signer; the signer's key stays with her.
    private, public = Signer.generate()
    atomic_write(home / "lab-side" / "signer.key", private.hex().encode() + b"\n")
    with rt.gateway.unit(lab_admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, tenant, email=who["biologist"]["email"], public_key=public.hex())
    # The recipient's side: NewLIS makes its age key pair and gives the lab its public key.
    identity, recipient = packages.new_identity()
    atomic_write(home / "newlis" / "newlis.key", f"# NewLIS SAS\n{identity}\n".encode())
    receipt_private, receipt_public = Signer.generate()  # and the Ed25519 key that signs its receipts
    now = datetime.now(UTC).replace(microsecond=0)
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    fields = {
        "identity": ["nir", "family_name", "given_names", "birth_date", "sex"],
        "prescriber": ["rpps", "family_name", "given_name"],
        "request": ["requested_at", "reported_at"],
        "specimen": ["type", "collected_at"],
        "result": [
            "code",
            "code_system",
            "label",
            "value_num",
            "value_text",
            "unit",
            "ref_low",
            "ref_high",
            "flag",
            "status",
        ],
    }
    record = {
        "id": "MIG-2021-NEWLIS",
        "tenant": tenant,
        "kind": "migration_out",
        "purpose": "Migrate the 2019-2020 results to the lab's new LIS (NewLIS)",
        "fields": fields,
        "selection": {"collected_from": "2019-01-01", "collected_to": "2020-12-31"},
        "destination": {
            "name": "NewLIS SAS",
            "country": "FR",
            "recipient_age_key": recipient,
            "receipt_key": receipt_public.hex(),
        },
        "expected_volume": _volume(rt, tenant, biologist),
        "tolerance": 0.05,
        "deletion_deadline": z(now + timedelta(days=30)),
        "valid_from": z(now - timedelta(minutes=5)),
        "valid_until": z(now + timedelta(days=7)),
    }
    with rt.gateway.unit(lab_admin, Purpose.ADMINISTRATION) as u:
        signers.receive(u, tenant, document.sign(document.from_record(record), Signer(private)), now)
    console.print(
        f"  {who['biologist']['email']} signed instruction MIG-2021-NEWLIS (Ed25519): {tenant}'s 2019-2020 "
        f"results, {sum(map(len, fields.values()))} named fields, no free text, to NewLIS SAS (FR), "
        f"about {record['expected_volume']:,} results, copies deleted within 30 days"
    )

    # The vendor's operator asks for everything, as in 2021: refused.
    everything = service.Ask(fields=service.ALL_FIELDS, collected_from=date(2015, 1, 1))
    try:
        with rt.gateway.unit(operator, Purpose.EXPORT) as u:
            service.plan(u, tenant, "MIG-2021-NEWLIS", ask=everything)
    except LabvaultError as exc:
        first = str(exc).split("; ")
        console.print(
            f"  the operator asks for every field since 2015: REFUSED ({first[0]}; ... "
            f"{len(first)} excesses named); audited, and a security alert raised",
            highlight=False,
        )
    with rt.gateway.unit(operator, Purpose.EXPORT) as u:
        job = service.plan(u, tenant, "MIG-2021-NEWLIS")
    c = job.plan["counts"]
    console.print(
        f"  plan {job.migration_id}: {c['results']:,} results, {c['requests']:,} requests, "
        f"{c['patients']:,} patients; fields per record: "
        + "; ".join(f"{k} {len(v)}" for k, v in job.plan["fields"].items())
    )
    with rt.gateway.unit(operator, Purpose.EXPORT) as u:
        service.approve_operator(u, tenant, job.migration_id)
        job = service.approve_lab(
            u,
            tenant,
            job.migration_id,
            public_key=public.hex(),
            signature=Signer(private).sign(service.approval_record(job)),
        )
    console.print("  approved by " + " and ".join(f"{a['name']} ({a['side']})" for a in job.approvals))
    job = service.run(rt.gateway, operator, tenant, job.migration_id, store)
    with rt.gateway.unit(operator, Purpose.EXPORT) as u:
        job = service.verify_package(u, tenant, job.migration_id)
    d = service.package_dir(store, job)
    m = job.manifest["manifest"] if job.manifest else {}
    console.print(
        f"  package {d / service.PACKAGE} ({m['files'][0]['bytes']:,} bytes, age to NewLIS and to a "
        f"package key); manifest signed by the platform; reconciled: {m['counts']['records']}",
        highlight=False,
    )
    raw = (d / service.PACKAGE).read_bytes()

    # The recipient's side, with the age command-line tool.
    received: list[dict] | None = None
    if shutil.which("age"):
        out = subprocess.run(
            ["age", "--decrypt", "-i", str(home / "newlis" / "newlis.key"), str(d / service.PACKAGE)],
            capture_output=True,
            check=True,
        ).stdout
        received = [json.loads(line) for line in out.splitlines()]
        per = Counter(r["record"] for r in received)
        per.pop("header", None)
        keys = {k for line in out.splitlines()[1:] for k in json.loads(line)}
        same = dict(per) == {k: v for k, v in m["counts"]["records"].items() if v}
        # a qualified identity's (only a qualified INS goes out with the data)
        nir = next(
            (r["nir"] for r in map(json.loads, out.splitlines()) if r["record"] == "identity" and r.get("nir")), ""
        )
        console.print(
            f"  a migrated patient's NIR in the package file's bytes: "
            f"{'FOUND' if nir and nir.encode() in raw else 'not found'} (only ciphertext is ever on disk)"
        )
        console.print(
            f"  NewLIS: age --decrypt -i newlis.key {service.PACKAGE}: {dict(per)} "
            f"({'= the manifest' if same else 'DIFFERS from the manifest'}); "
            f"free-text comments in it: {'yes' if 'comment' in keys else 'none'}",
            highlight=False,
        )
    else:
        console.print("  (the age CLI is not installed: the recipient's decryption is skipped)")
    receipt = service.acknowledge(
        d / service.PACKAGE, json.loads((d / service.MANIFEST).read_text()), identity, signing_key=receipt_private
    )
    with rt.gateway.unit(operator, Purpose.EXPORT) as u:
        job = service.import_receipt(u, tenant, job.migration_id, receipt)
        cert = service.close(u, tenant, job.migration_id)
        public_platform = u.platform_public_key()
    console.print(
        "  NewLIS's receipt (MAC with the key inside the package, Ed25519 signature with the receipt key "
        "the instruction names) imported:"
    )
    for x in job.destroyed:
        console.print(f"  receipt imported: destroyed {x['copy']} ({x['where']}) at {x['destroyed_at']}")
    console.print(
        f"  package still on disk: {'yes' if (d / service.PACKAGE).exists() else 'no'}; package key in "
        f"the key provider: {'yes' if rt.gateway.keys.has_scope(f'package-{job.migration_id}') else 'no'}"
    )
    service.check_certificate(cert, [public_platform])
    console.print(
        f"  closure certificate {d / service.CERTIFICATE}: signature verifies (labvault migrate check-certificate)"
    )
    return received, job.migration_id


def _volume(rt, tenant: str, biologist: Principal) -> int:
    """The lab's own estimate of the volume: its results of 2019-2020 (the lab reads its data)."""
    from labvault.access import scan

    n = 0
    with rt.gateway.unit(biologist, Purpose.CARE) as u:
        in_period = {
            s.specimen_id
            for s in scan.specimens(u, tenant)
            if date(2019, 1, 1) <= s.collected_at.date() <= date(2020, 12, 31)
        }
        for _, r in scan.results(u, tenant):
            n += r.specimen_id in in_period and r.sensitivity.value == "other"
    return n
