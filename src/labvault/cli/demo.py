"""``labvault demo``: the main job. A fresh home, three generated labs, and what a thief would see."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TypedDict

import typer

from labvault.access import Purpose
from labvault.accounts import service
from labvault.cli.common import console, progress, settings
from labvault.cli.patient import identity_table, result_lines, results_table
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, ConfigError
from labvault.runtime import init_home, open_runtime
from labvault.synth.load import SYNTHETIC_RETENTION, ensure_labs, load_lab

MARKER = ".labvault-demo-home"


DEMO_PASSWORD = "Labvault-demo-{k:02d}!"


class DemoAccount(TypedDict):
    tenant: str
    role: str
    email: str
    password: str
    totp: str | None  # the TOTP secret, for roles that require MFA


def make_demo_accounts(rt, lab_ids: list[str]) -> list[DemoAccount]:
    """A lab admin and a biologist per lab, an operator and a security officer: named, enrolled.

    As in production: the platform invites each lab's first lab_admin (nothing else of the lab's),
    who enrols and adds the lab's biologist; the platform adds its own staff."""
    from labvault.access.principal import Principal

    out: list[DemoAccount] = []
    k = 0

    def enrol(tenant: str, role: str, email: str, name: str, by) -> str:
        nonlocal k
        k += 1
        password = DEMO_PASSWORD.format(k=k)
        with rt.gateway.unit(by, Purpose.ADMINISTRATION) as u:
            acct = service.create_account(u, tenant_id=tenant, name=name, email=email, roles=[role])
        with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
            secret = service.enrol_directly(u, email, password)
        out.append({"tenant": tenant, "role": role, "email": email, "password": password, "totp": secret})
        return acct.account_id

    for lab in lab_ids:
        admin_name = f"Paul Lefebvre ({lab})"
        admin_id = enrol(lab, "lab_admin", f"lab-admin@{lab}.demo.invalid", admin_name, rt.operator)
        admin = Principal(admin_id, admin_name, lab, frozenset({"lab_admin"}))
        enrol(lab, "biologist", f"biologist@{lab}.demo.invalid", f"Dr Claire Moreau ({lab})", admin)
    enrol(PLATFORM, "operator", "operator@vendor.demo.invalid", "Sami Haddad", rt.operator)
    enrol(PLATFORM, "security_officer", "security@vendor.demo.invalid", "Ines Roussel", rt.operator)
    return out


def lab_admin_of(rt, tenant: str):
    """The lab's (first) lab_admin, acting in this demo process."""
    from labvault.access.principal import Principal

    with rt.unit(Purpose.ADMINISTRATION) as u:
        a = next(a for a in service.list_accounts(u, tenant) if a["active"] and "lab_admin" in a["roles"].split(","))
    return Principal(a["account_id"], a["name"], tenant, frozenset(a["roles"].split(",")))


REAL_FILES = (
    "hl7v2/nist/ORU_R01_2.5.1_SampleTestCase1.hl7",
    "hl7v2/ms-fhir-converter/LAB-ORU-1_bom.hl7",
    "hl7v2/elr-realm/realm-batch.hl7",
    "hl7v2/malformed/cdc-ti_msh-12_has_value_2_3.hl7",
    "hprim/libhprim",
    "fhir/r4-official/Bundle-lri-example.json",
    "fhir/r4-official/Observation-f001.json",
)


def _realdata() -> Path | None:
    root = Path(os.environ.get("LABVAULT_REALDATA", "../shared/realdata"))
    return root if root.is_dir() else None


def show_feeds(rt, tenant: str, seed: int) -> None:
    """A service account's feed: generated messages accepted, real-world files read as they are
    (accepted, or refused with a precise reason and kept in the encrypted quarantine), a resend
    that creates nothing."""
    from labvault.access.principal import Principal
    from labvault.cli.ingest import _table
    from labvault.ingest import service as ingest
    from labvault.synth.hl7 import messages

    with rt.gateway.unit(lab_admin_of(rt, tenant), Purpose.ADMINISTRATION) as u:  # the lab adds its feed
        acct = service.create_account(
            u,
            tenant_id=tenant,
            name="Analyser middleware feed",
            email=f"feed@{tenant}.demo.invalid",
            roles=["service"],
            kind="service",
            purpose="ingest",
        )
    feed = Principal(acct.account_id, "Analyser middleware feed", tenant, frozenset({"service"}), "service")
    ing = ingest.Ingestor(rt.gateway, feed, tenant, feed="file", group=50, test_mode=rt.settings.test_mode)
    generated = b"".join(messages(tenant, seed + 1, 200))
    summaries = []
    s = ingest.Summary("analyser-feed.hl7", "hl7v2")
    ing.ingest_pieces(ingest.read(generated, file="analyser-feed.hl7"), s)
    summaries.append(s)
    root = _realdata()
    if root is None:
        console.print("  (../shared/realdata is absent: real-world files skipped; set LABVAULT_REALDATA)")
    else:
        paths = []
        for rel in REAL_FILES:
            p = root / rel
            paths += sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p] if p.is_file() else []
        for got in ing.ingest_files(paths):
            got.file = Path(got.file).name
            summaries.append(got)
    again = ingest.Summary("analyser-feed.hl7 again", "hl7v2")
    ing.ingest_pieces(ingest.read(generated, file="analyser-feed.hl7"), again)
    summaries.append(again)
    console.print(_table(summaries))
    shown = 0
    for s in summaries:
        for reason in s.reasons[:1]:
            if shown < 6:
                console.print(
                    f"  refused: {reason.replace(str(root) + '/', '') if root else reason}",
                    highlight=False,
                    markup=False,
                )
                shown += 1
    held = sum(s.rejected for s in summaries)
    console.print(
        f"  {held} refused message(s) kept encrypted in the lab's quarantine "
        f"(labvault quarantine list --tenant {tenant}); the resend stored nothing new "
        f"({again.duplicates} duplicates skipped)"
    )
    console.print("  the real files carry no INS (they are US or test messages): Labvault refuses to guess an identity")


def demo(
    labs: int = typer.Option(3, "--labs", min=1, max=8, help="How many labs to generate."),
    patients: int = typer.Option(2000, "--patients", min=1, help="Patients per lab."),
    seed: int = typer.Option(2021, "--seed", help="Same seed, same data."),
) -> None:
    """Initialise a fresh demo home, generate labs, and show that the stored data is encrypted."""
    s = settings()
    if s.home.exists() and any(s.home.iterdir()):
        if not (s.home / MARKER).exists():
            raise ConfigError(f"{s.home} is not a demo home; set LABVAULT_HOME to an empty or demo directory")
        shutil.rmtree(s.home)
    s.home.mkdir(parents=True)
    (s.home / MARKER).write_text("made by 'labvault demo'; deleted and rebuilt by the next one\n")
    if not s.is_sqlite:
        raise ConfigError("the demo runs on the embedded SQLite store: unset LABVAULT_DATABASE_URL")

    console.rule("[bold]1. One platform, many labs: a fresh home")
    info = init_home(s, "Demo Operator", "operator@labvault.invalid")
    console.print(f"home {info['home']}, keyring created, named operator account '{info['admin']}'")

    rt = open_runtime(s)
    try:
        console.rule("[bold]2. Synthetic labs, written through the access gateway")
        ids = ensure_labs(rt.gateway, rt.operator, labs, retention=SYNTHETIC_RETENTION)
        t0 = time.perf_counter()
        totals = {"patients": 0, "requests": 0, "results": 0}
        with progress() as bar:
            for tid in ids:
                task = bar.add_task(tid, total=patients)
                c = load_lab(
                    rt.gateway,
                    rt.operator,
                    tid,
                    patients=patients,
                    seed=seed,
                    on_batch=functools.partial(bar.advance, task),
                )
                totals["patients"] += c.patients
                totals["requests"] += c.requests
                totals["results"] += c.results
        elapsed = time.perf_counter() - t0

        console.rule("[bold]3. Summary")
        with rt.unit(Purpose.DEMO) as u:
            tenants = u.list_tenants()
            per_lab = {t.id: u.counts(t.id) for t in tenants}
        for t in tenants:
            n = per_lab[t.id]
            console.print(
                f"  {t.id:<12} {t.name:<34} FINESS {t.finess}  {'synthetic' if t.synthetic else 'REAL':<9} "
                f"{n['patient_identity']:>6,} patients {n['result']:>8,} results"
            )
        db = s.home / "labvault.db"
        console.print(
            f"  total: {len(tenants)} labs, {totals['patients']:,} patients, {totals['requests']:,} requests, "
            f"{totals['results']:,} results in {elapsed:.1f} s"
        )
        console.print(
            f"  {sum(t.synthetic for t in tenants)} of {len(tenants)} labs synthetic (generated data only: "
            "never a real lab's; deleted without a deletion instruction)"
        )
        console.print(
            f"  data: {db} ({db.stat().st_size / 1e6:.1f} MB, SQLite WAL); keys: {s.keyring_path} "
            "(passphrase-wrapped, one key per lab)"
        )

        console.rule("[bold]4. What a stolen copy of the database shows")
        from labvault.synth import LabGenerator

        sample = LabGenerator(ids[0], seed).patient(0)  # regenerated in memory, never read from a file
        # No SQLite connection of this process stays open while the file is read as a thief would:
        # closing any other handle on the file drops the process's locks on it, and 'sqlite3 .dump'
        # would then take itself for the last connection and delete the WAL under the open ones.
        rt.gateway.engine.dispose()
        raw = db.read_bytes()
        wal = db.with_name(db.name + "-wal")
        if wal.exists():
            raw += wal.read_bytes()
        probes = {
            "NIR": sample.identity.nir or "",
            "family name": sample.identity.family_name,
            "birth date": sample.identity.birth_date.isoformat(),
        }
        for label, value in probes.items():
            hit = value.encode() in raw
            console.print(f"  sample patient's {label} in the raw database file: {'FOUND' if hit else 'not found'}")
        if shutil.which("sqlite3"):
            dump = subprocess.run(["sqlite3", str(db), ".dump"], capture_output=True, check=False).stdout
            leaked = [k for k, v in probes.items() if v.encode() in dump]
            console.print(f"  in 'sqlite3 .dump': {'FOUND ' + ', '.join(leaked) if leaked else 'nothing in clear'}")
        with rt.unit(Purpose.DEMO) as u:
            stored = u.raw_identity_row(ids[0], sample.identity.patient_id)
        console.print(
            f"  stored family name: {stored['family_name_enc'][:48]}… (AES-256-GCM, bound to lab, "
            f"table, column, row, key v{stored['key_version']})"
        )
        console.print(f"  stored NIR index:   {stored['nir_bidx']} (HMAC-SHA256, per-lab key)")

        console.rule("[bold]5. Named accounts, no shared ones; vendor staff without standing access")
        accounts = make_demo_accounts(rt, ids)
        for a in accounts:
            mfa = f"  TOTP secret {a['totp']}" if a["totp"] else ""
            console.print(f"  {a['email']:<32} {a['role']:<17} {a['tenant']:<12} password {a['password']}{mfa}")
        console.print("  (demo credentials, printed because this is a demo; real accounts enrol with a one-time link)")
        try:
            with rt.unit(Purpose.DEMO) as u:
                u.find_patients_by_nir(ids[0], sample.identity.nir)
        except AccessDenied as exc:
            console.print(f"  the vendor's operator asks for a patient of {ids[0]}: refused ({exc})")

        console.rule("[bold]5b. The vendor's own administrator tries what the 2021 vendor could do: refused, audited")
        from labvault.cli.demo_vendor import show_vendor_refused

        real_lab = show_vendor_refused(rt, ids[0], accounts)

        console.rule("[bold]6. Results arrive from the lab's feeds: HL7 v2, HPRIM Santé, FHIR")
        show_feeds(rt, ids[0], seed)

        console.rule("[bold]7. The lab's biologist logs in and looks the patient up by NIR, through the blind index")
        bio = next(a for a in accounts if a["tenant"] == ids[0] and a["role"] == "biologist")
        with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
            biologist = service.login(
                u, bio["email"], bio["password"], addr="demo", user_agent="labvault-demo"
            ).principal
        with rt.gateway.unit(biologist, Purpose.CARE) as u:
            found = u.find_patients_by_nir(ids[0], sample.identity.nir or "")
            results = (
                result_lines(u.results_of(ids[0], found[0].patient_id), u.requests_of(ids[0], found[0].patient_id))
                if found
                else []
            )
        for p in found:
            console.print(identity_table(p))
        console.print(f"{len(results)} results (8 newest shown)")
        console.print(results_table(results, 8))
        console.rule("[bold]8. The migration the lab asked for: exactly its instruction, then nothing left")
        from labvault.cli.demo_migration import show_migration

        received, migration_id = show_migration(rt, ids[0], accounts)

        console.rule("[bold]9. La journée du laboratoire / The lab's day, from the request to the report")
        from labvault.cli.demo_lab import show_lab_day

        show_lab_day(rt, ids[0], accounts, seed)

        console.rule("[bold]9b. Surveillance / Monitoring: a night read by vendor support, a canary, an outside report")
        from labvault.cli.demo_monitoring import show_monitoring

        show_monitoring(rt, ids[0], accounts, seed, patients)

        console.rule("[bold]9c. La fuite / The leak, February 2021 replayed: traced, counted, told, within the hour")
        from labvault.cli.demo_breach import show_breach

        show_breach(rt, ids, accounts, seed, received, migration_id)

        console.rule("[bold]10. The audit trail: every access above, chained, checkpointed, verified")
        from labvault.audit import service as audit

        for lab in [PLATFORM, *ids, real_lab]:
            with rt.unit(Purpose.ADMINISTRATION) as u:
                last = audit.checkpoint(u, lab)
        reports = []
        for lab in [PLATFORM, *ids, real_lab]:
            with rt.unit(Purpose.ADMINISTRATION) as u:
                reports.append(audit.verify_log(u, lab))
        for r in reports:
            state = "OK" if r.ok else f"TAMPERED at {r.first_bad_seq}: {r.problem}"
            console.print(f"  labvault audit verify --tenant {r.tenant}: {state} ({r.events} events)")
        console.print("  last signed checkpoint:")
        console.print_json(json.dumps(last))

        console.rule("[bold]done")
        console.print("Every personal and health value above was stored encrypted with its lab's own key, and read")
        console.print("back through the access gateway, which recorded who asked and why.")
        console.print("To use the API on this home (nothing was left running):")
        console.print(
            f"  make serve-demo        (or: LABVAULT_HOME={s.home} LABVAULT_PASSPHRASE=… labvault serve --port 8000)"
        )
        console.print(
            f'  curl -c jar -H \'content-type: application/json\' -d \'{{"email": "{bio["email"]}", '
            f'"password": "{bio["password"]}"}}\' http://127.0.0.1:8000/api/v1/auth/login'
        )
        console.print(
            f"  curl -b jar 'http://127.0.0.1:8000/api/v1/tenants/{ids[0]}/patients?nir={sample.identity.nir}'"
        )
        console.print('  accounts with a TOTP secret answer POST /api/v1/auth/mfa {"code": …} after the login step')
        admin = next(a for a in accounts if a["tenant"] == ids[0] and a["role"] == "lab_admin")
        console.print("To open the web interface on this home:")
        console.print("  make serve-demo, then open http://127.0.0.1:8000/ in a browser (French; English at the top)")
        console.print(f"  biologist (password only):  {bio['email']}  /  {bio['password']}")
        console.print(f"  lab admin (password + TOTP): {admin['email']}  /  {admin['password']}")
        console.print(
            "  its current TOTP code (as an authenticator app would show it): "
            f".venv/bin/python -c 'import pyotp; print(pyotp.TOTP(\"{admin['totp']}\").now())'"
        )
    finally:
        rt.close()
