"""The migration scenario: a lab instructs the migration of its 2019-2020 results without free-text
comments; the operator first asks for everything (refused, audited, alerted); two people approve;
the package opens with the real ``age`` CLI and holds exactly the instructed fields and counts;
after the receipt nothing of it remains readable and the closure certificate verifies.

The oracle is the generator: what the lab holds is computed from ``LabGenerator`` alone."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta

import pytest
from pyrage import x25519
from sqlalchemy import text as sql

from labvault.access import Purpose
from labvault.access.instructed import ScopeExceeded
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.domain.models import Sensitivity
from labvault.errors import AccessDenied, TenantKeyMissing
from labvault.instructions import document, signers
from labvault.migration import service
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab, need

NOW = datetime.now(UTC).replace(microsecond=0)
SEED, PATIENTS = 5, 40
FIELDS = {
    "identity": ["nir", "family_name", "given_names", "birth_date", "sex"],
    "request": ["requested_at"],
    "specimen": ["type", "collected_at"],
    "result": ["code", "code_system", "label", "value_num", "value_text", "unit", "flag", "status"],
}
LO, HI = date(2019, 1, 1), date(2020, 12, 31)


def z(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


def expected_results() -> dict[str, object]:
    """Result id -> result, for what the instruction selects (2019-2020, no sensitive category)."""
    out = {}
    for rec in LabGenerator("lab-a", SEED).patients(PATIENTS):
        spec = {s.specimen_id: s for s in rec.specimens}
        req = {r.request_id: r for r in rec.requests}
        for r in rec.results:
            when = spec[r.specimen_id].collected_at if r.specimen_id else req[r.request_id].requested_at
            if LO <= when.date() <= HI and r.sensitivity is Sensitivity.OTHER:
                out[r.result_id] = r
    return out


RECEIPT_PRIVATE, RECEIPT_PUBLIC = Signer.generate()  # the recipient's own Ed25519 key, for its receipts


def instruction(recipient: str, volume: int, **over) -> dict:
    rec = {
        "id": "MIG-2021",
        "tenant": "lab-a",
        "kind": "migration_out",
        "purpose": "Move 2019-2020 results to NewLIS",
        "fields": FIELDS,
        "selection": {"collected_from": LO.isoformat(), "collected_to": HI.isoformat()},
        "destination": {
            "name": "NewLIS SAS",
            "country": "FR",
            "recipient_age_key": recipient,
            "receipt_key": RECEIPT_PUBLIC.hex(),
        },
        "expected_volume": volume,
        "deletion_deadline": z(NOW + timedelta(days=30)),
        "valid_from": z(NOW - timedelta(hours=1)),
        "valid_until": z(NOW + timedelta(days=7)),
    }
    rec.update(over)
    return rec


def receive(gw, admin, record: dict, private: bytes, *, now: datetime = NOW) -> None:
    """The lab's signer signs ``record``; the platform receives it (verified against the lab's signers)."""
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.receive(u, "lab-a", document.sign(document.from_record(record), Signer(private)), now)


def admin_signer(gateway) -> tuple:
    """lab-a's lab admin, registered as a signer of its instructions; (admin, private key)."""
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email=f"{admin.account_id}@lab.invalid", public_key=public.hex())
    return admin, private


def packaged(w) -> service.Job:
    """The world's migration planned, approved and run: its package on disk."""
    job = service.run(w["gw"], w["operator"], "lab-a", approve_both(w, planned(w)).migration_id, w["store"])
    assert job.package is not None and job.package.exists()
    return job


@pytest.fixture
def world(gateway, tmp_path):
    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=PATIENTS, seed=SEED)
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    bio = lab_user(gateway, "lab-a", "biologist", name="Signer")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signer_id = signers.add_signer(
            u, "lab-a", email=f"{bio.account_id}@lab.invalid", public_key=public.hex()
        ).signer_id
    ident = x25519.Identity.generate()
    expected = expected_results()
    receive(gateway, admin, instruction(str(ident.to_public()), len(expected)), private)
    operator = lab_user(gateway, PLATFORM, "operator", name="Op")
    return {
        "gw": gateway,
        "operator": operator,
        "signer": Signer(private),
        "public": public.hex(),
        "identity": ident,
        "expected": expected,
        "store": tmp_path / "packages",
        "tmp": tmp_path,
        "admin": admin,
        "signer_id": signer_id,
    }


def audit(gw, outcome: str) -> list[str]:
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        return [
            r[0]
            for r in c.execute(
                sql("SELECT action FROM audit_event WHERE tenant_id = 'lab-a' AND outcome = :o ORDER BY seq"),
                {"o": outcome},
            )
        ]


def planned(w):
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        return service.plan(u, "lab-a", "MIG-2021")


def approve_both(w, job):
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_operator(u, "lab-a", job.migration_id)
    sig = w["signer"].sign(service.approval_record(job))
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        return service.approve_lab(u, "lab-a", job.migration_id, public_key=w["public"], signature=sig)


def test_the_migration_scenario(world):
    """B1, B2, B3, B4, A1, A2: the migration scenario."""
    w = world
    gw, op, expected = w["gw"], w["operator"], w["expected"]
    # 1. The operator first asks for everything, from 2015: refused, naming the excess; audited; alerted.
    everything = service.Ask(fields=service.ALL_FIELDS, collected_from=date(2015, 1, 1))
    with pytest.raises(ScopeExceeded) as caught, gw.unit(op, Purpose.EXPORT) as u:
        service.plan(u, "lab-a", "MIG-2021", ask=everything)
    assert "free_text.result.comment is not in the instruction" in str(caught.value)
    assert "period starts before the instruction's collected_from 2019-01-01" in str(caught.value)
    assert "instruction:excess" in audit(gw, "alert")
    # Reading the lab's data outside an instruction stays refused for the operator.
    with pytest.raises(AccessDenied), gw.unit(op, Purpose.EXPORT) as u:
        u.results_of("lab-a", next(iter(LabGenerator("lab-a", SEED).patients(1))).identity.patient_id)

    # 2. The plan: figures only, equal to the oracle's.
    job = planned(w)
    assert job.state == "planned" and job.plan["counts"]["results"] == len(expected)
    assert job.plan["fields"]["result"] == FIELDS["result"] and "comment" not in json.dumps(job.plan)

    # 3. Two people approve; running before is refused.
    with pytest.raises(service.StateError):
        service.run(gw, op, "lab-a", job.migration_id, w["store"])
    job = approve_both(w, job)
    assert job.state == "approved" and {a["side"] for a in job.approvals} == {"operator", "lab"}

    # 4. Run: an age package; the platform's reconciliation passes.
    job = service.run(gw, op, "lab-a", job.migration_id, w["store"])
    assert job.state == "packaged"
    pkg = service.package_dir(w["store"], job) / service.PACKAGE
    manifest = json.loads((pkg.parent / service.MANIFEST).read_text())
    with gw.unit(op, Purpose.EXPORT) as u:
        assert service.verify_package(u, "lab-a", job.migration_id).state == "verified"

    need(shutil.which("age") is not None, "the age CLI is missing: apt-get install age")
    # 5. The recipient decrypts with the age CLI: exactly the instructed fields and counts.
    idfile = w["tmp"] / "recipient.txt"
    idfile.write_text(str(w["identity"]) + "\n")
    out = subprocess.run(["age", "--decrypt", "-i", str(idfile), str(pkg)], capture_output=True, check=True).stdout
    recs = [json.loads(line) for line in out.splitlines()]
    assert recs[0]["record"] == "header"
    by_type: dict[str, list[dict]] = {}
    for r in recs[1:]:
        by_type.setdefault(r["record"], []).append(r)
    assert {k: len(v) for k, v in by_type.items()} == {
        k: v for k, v in manifest["manifest"]["counts"]["records"].items() if v
    }
    assert len(by_type["result"]) == len(expected)
    assert len({r["id"] for r in by_type["result"]}) == len(expected)  # no duplicate
    # Links to the record types the instruction names, and to no other (it names no prescriber).
    links = {
        "request": {"patient"},
        "specimen": {"request"},
        "result": {"request", "specimen", "patient"},
        "identity": set(),
    }
    assert set(by_type) == set(FIELDS)
    for rtype, rows in by_type.items():
        allowed = {"record", "id", *links[rtype], *FIELDS.get(rtype, ())}
        assert all(set(r) <= allowed for r in rows), rtype
    assert all("comment" not in r for r in by_type["result"])
    got = sorted((r["code"], r["value_num"]) for r in by_type["result"])
    assert got == sorted((r.code, r.value_num) for r in expected.values())
    internal = set(expected)
    assert not internal & {r["id"] for r in by_type["result"]}  # fingerprinted ids, never internal ones

    # 6. Receipt: made by the recipient from the package, imported; the package is purged at once.
    receipt = service.acknowledge(pkg, manifest, str(w["identity"]), signing_key=RECEIPT_PRIVATE)
    forged = {**receipt, "mac": "00" * 32}
    unsigned = service.acknowledge(pkg, manifest, str(w["identity"]))
    other_key = service.acknowledge(pkg, manifest, str(w["identity"]), signing_key=Signer.generate()[0])
    for bad, why in (
        (forged, "MAC does not verify"),
        (unsigned, "not signed with the recipient's receipt key"),
        (other_key, "not signed with the recipient's receipt key"),
    ):
        with pytest.raises(service.ReceiptInvalid, match=why), gw.unit(op, Purpose.EXPORT) as u:
            service.import_receipt(u, "lab-a", job.migration_id, bad)
    assert pkg.exists()
    with gw.unit(op, Purpose.EXPORT) as u:
        job = service.import_receipt(u, "lab-a", job.migration_id, receipt)
    assert job.state == "purged" and not pkg.exists()
    assert not gw.keys.has_scope(f"package-{job.migration_id}")
    with gw.unit(op, Purpose.EXPORT) as u:
        u._authorise("lab-a", "migration:read")
        row = service._row(u, "lab-a", job.migration_id)
        assert row.package_key_wrapped is None
        with pytest.raises(TenantKeyMissing):
            gw.keys.unwrap(row.package_scope, b"\0" * 40, b"package-key")

    # 7. Close: the certificate verifies, and says what was destroyed and who approved.
    with gw.unit(op, Purpose.EXPORT) as u:
        cert = service.close(u, "lab-a", job.migration_id)
        public = u._platform_signer()[1]
    body = service.check_certificate(cert, [public])
    assert body["extracted"]["counts"]["records"]["result"] == len(expected)
    assert {d["copy"] for d in body["destroyed"]} == {"package file package.ndjson.age", "package key"}
    assert {a["side"] for a in body["approvals"]} == {"operator", "lab"}
    tampered = json.loads(json.dumps(cert))
    tampered["body"]["destroyed"] = []
    with pytest.raises(Exception, match="signature"):
        service.check_certificate(tampered, [public])
    actions = audit(gw, "allowed")
    for step in (
        "migration:plan",
        "migration:approve",
        "migration:run",
        "migration:verify",
        "migration:receipt",
        "migration:purge",
        "migration:close",
    ):
        assert step in actions


def test_one_person_cannot_give_both_approvals(world, gateway):
    """B1, B5: one person cannot give both approvals."""
    w = world
    job = planned(w)
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_operator(u, "lab-a", job.migration_id)
    with pytest.raises(service.StateError), w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_operator(u, "lab-a", job.migration_id)
    # The operator also holds a lab account (another address, same person) registered as a signer.
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            "lab-a", "twin-lab-a", w["operator"].name, "twin@lab.invalid", ("biologist",), commitment="test"
        )
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, "lab-a", email="twin@lab.invalid", public_key=public.hex())
    sig = Signer(private).sign(service.approval_record(job))
    with pytest.raises(AccessDenied, match="two different people"), w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_lab(u, "lab-a", job.migration_id, public_key=public.hex(), signature=sig)
    # A signature of another plan, or by a key that is not a signer, is refused.
    other = Signer(Signer.generate()[0])
    with pytest.raises(document.UnknownSigner), w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_lab(
            u,
            "lab-a",
            job.migration_id,
            public_key=other.public_key.hex(),
            signature=other.sign(service.approval_record(job)),
        )
    bad = w["signer"].sign({**service.approval_record(job), "plan_sha256": "0" * 64})
    with pytest.raises(document.InstructionSignatureInvalid), w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        service.approve_lab(u, "lab-a", job.migration_id, public_key=w["public"], signature=bad)
    assert "migration:approve" in audit(w["gw"], "denied")


def test_volume_far_above_the_expected_stops_before_writing(gateway, tmp_path):
    """A5: volume far above the expected stops before writing."""
    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=PATIENTS, seed=SEED)
    admin, private = admin_signer(gateway)
    n = len(expected_results())
    receive(gateway, admin, instruction(str(x25519.Identity.generate().to_public()), n // 2, tolerance=0.1), private)
    op = lab_user(gateway, PLATFORM, "operator", name="Op")
    with (
        pytest.raises(service.VolumeExceeded, match=f"{n} results selected, above the expected volume {n // 2}"),
        gateway.unit(op, Purpose.EXPORT) as u,
    ):
        service.plan(u, "lab-a", "MIG-2021")
    assert "instruction:volume" in audit(gateway, "alert")
    assert not (tmp_path / "packages").exists()


def test_deadline_purges_an_unreceived_package(world):
    """B3: deadline purges an unreceived package."""
    w = world
    job = approve_both(w, planned(w))
    job = service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"])
    pkg = service.package_dir(w["store"], job) / service.PACKAGE
    assert pkg.exists()
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        assert service.enforce_deadlines(u, "lab-a", NOW + timedelta(days=29)) == {"packages_purged": 0}
    assert pkg.exists()
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        assert service.enforce_deadlines(u, "lab-a", NOW + timedelta(days=31)) == {"packages_purged": 1}
    assert not pkg.exists() and not w["gw"].keys.has_scope(f"package-{job.migration_id}")
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        assert service.get(u, "lab-a", job.migration_id).state == "purged"
    idfile = w["tmp"] / "recipient.txt"
    idfile.write_text(str(w["identity"]) + "\n")
    assert shutil.which("age")


def test_a_second_run_replaces_the_first_without_duplicates(world):
    w = world
    job = approve_both(w, planned(w))
    first = service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"])
    # As after a crash: the state is put back to running; running again starts a new attempt.
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        u._authorise("lab-a", "migration:run")
        service._set(u, "lab-a", job.migration_id, state="running")
    second = service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"])
    assert second.attempts == 2
    assert second.manifest["manifest"]["files"][0]["sha256"] != first.manifest["manifest"]["files"][0]["sha256"]
    files = sorted(p.name for p in service.package_dir(w["store"], job).iterdir())
    assert files == [service.MANIFEST, service.PACKAGE]
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        assert service.verify_package(u, "lab-a", job.migration_id).state == "verified"


def test_a_job_whose_rows_contradict_its_state_is_refused_with_a_state_error(world):
    """A state check is raised, not asserted, so that it holds under ``python -O`` too: a job marked
    packaged without its manifest (as an edit of the database would leave it) is not verified."""
    w = world
    job = approve_both(w, planned(w))
    with w["gw"].unit(w["operator"], Purpose.EXPORT) as u:
        u.authorise("lab-a", "migration:run")
        service._set(u, "lab-a", job.migration_id, state="packaged")
    with (
        pytest.raises(service.StateError, match="packaged but holds no manifest"),
        w["gw"].unit(w["operator"], Purpose.EXPORT) as u,
    ):
        service.verify_package(u, "lab-a", job.migration_id)


def test_a_retention_run_purges_packages_past_their_deadline(world):
    """B3: a retention run purges packages past their deadline."""
    from labvault.retention import purge as retention

    w = world
    job = packaged(w)
    reports, failed = retention.run_all(w["gw"], ADMIN, now=NOW + timedelta(days=29))
    assert failed == {} and reports[0].hooks == {"packages_purged": 0} and job.package.exists()
    reports, failed = retention.run_all(w["gw"], ADMIN, now=NOW + timedelta(days=31))
    assert failed == {} and reports[0].hooks == {"packages_purged": 1}
    assert not job.package.exists() and not w["gw"].keys.has_scope(f"package-{job.migration_id}")
    assert "migration:purge" in audit(w["gw"], "allowed")


def test_the_scheduler_of_serve_purges_at_the_deadline(gateway, tmp_path):
    """B3: A deadline a few seconds ahead, the scheduler's first round after it: the package is gone."""
    import time

    from labvault.cli.serve import retention_every_

    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=5, seed=SEED)
    admin, private = admin_signer(gateway)
    now = datetime.now(UTC).replace(microsecond=0)
    deadline = now + timedelta(seconds=4)
    rec = instruction(
        str(x25519.Identity.generate().to_public()), 10_000, id="EXP-SOON", kind="export", deletion_deadline=z(deadline)
    )
    receive(gateway, admin, rec, private, now=now)
    op = lab_user(gateway, PLATFORM, "operator", name="Op")
    job = service.export(gateway, op, "lab-a", "EXP-SOON", tmp_path / "packages")
    assert job.package is not None and job.package.exists()

    class Rt:  # what the scheduler uses of a runtime
        def __init__(self) -> None:
            self.gateway, self.operator = gateway, ADMIN

    time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.2)
    stop = retention_every_(Rt(), 3600, first_after=0.0)

    def state() -> str:
        with gateway.unit(op, Purpose.EXPORT) as u:
            return service.get(u, "lab-a", job.migration_id).state

    try:  # the round deletes the file, then commits the state: wait for the commit, not the file
        for _ in range(300):
            if state() == "purged":
                break
            time.sleep(0.1)
    finally:
        stop.set()
    assert not job.package.exists()
    assert state() == "purged"


def test_the_end_of_a_contract_destroys_the_packages_still_held(world):
    """D2, B3: the end of a contract destroys the packages still held."""
    from labvault.retention import purge as retention

    w = world
    job = packaged(w)
    with w["gw"].unit(ADMIN, Purpose.ADMINISTRATION) as u:
        record = retention.end_delete(u, "lab-a")
    assert not job.package.exists() and not w["gw"].keys.has_scope(f"package-{job.migration_id}")
    stores = {s["store"]: s for s in record["body"]["stores"]}
    destroyed = stores["packages"]["destroyed"]
    assert destroyed["packages_destroyed"] == 1
    assert {c["copy"] for c in destroyed["copies"]} == {"package file package.ndjson.age", "package key"}
    assert all(c["migration"] == job.migration_id for c in destroyed["copies"])
    assert [c["sha256"] for c in destroyed["copies"] if "sha256" in c] == [
        job.manifest["manifest"]["files"][0]["sha256"]
    ]


def test_data_grown_since_the_plan_stops_the_run_before_any_package_exists(world):
    """A5: data grown since the plan stops the run before any package exists."""
    w = world
    job = approve_both(w, planned(w))
    load_lab(w["gw"], ADMIN, "lab-a", patients=30, seed=SEED + 1)  # new results in the period since the plan
    with pytest.raises(service.VolumeExceeded, match=r"at least .* results selected, above the expected volume"):
        service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"])
    d = service.package_dir(w["store"], job)
    assert not d.exists() or list(d.iterdir()) == []
    assert audit(w["gw"], "alert").count("instruction:volume") == 1
    assert "migration:run" in audit(w["gw"], "denied")


def test_the_read_plan_selects_listed_patients_codes_and_sensitive_categories(gateway, tmp_path):
    """A1, A2: Patients (by their Labvault id), codes and an Art. 9 category listed: exactly their results."""
    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=PATIENTS, seed=SEED)
    records = list(LabGenerator("lab-a", SEED).patients(PATIENTS))
    chosen = [r.identity.patient_id for r in records[:12]]
    in_period = [
        (rec, r)
        for rec in records
        if rec.identity.patient_id in chosen
        for r in rec.results
        if LO <= {s.specimen_id: s for s in rec.specimens}[r.specimen_id].collected_at.date() <= HI
    ]
    codes = sorted({(r.code_system, r.code) for _, r in in_period})[:6]
    sensitive = sorted({r.sensitivity.value for _, r in in_period} - {"other"})[:1]
    want = {
        r.result_id
        for _, r in in_period
        if (r.code_system, r.code) in codes and (r.sensitivity is Sensitivity.OTHER or r.sensitivity.value in sensitive)
    }
    assert want
    admin, private = admin_signer(gateway)
    ident = x25519.Identity.generate()
    sel = {
        "collected_from": LO.isoformat(),
        "collected_to": HI.isoformat(),
        "patients": chosen,
        "codes": [f"{s}|{c}" for s, c in codes],
        "sensitive": sensitive,
    }
    receive(gateway, admin, instruction(str(ident.to_public()), len(want), selection=sel, kind="export"), private)
    op = lab_user(gateway, PLATFORM, "operator", name="Op")
    job = service.export(gateway, op, "lab-a", "MIG-2021", tmp_path / "packages")
    assert job.plan["counts"]["results"] == len(want)
    lines: list[bytes] = []
    from labvault.crypto import packages

    packages.read(job.package, str(ident), lines.append)
    recs = [json.loads(x) for x in b"".join(lines).splitlines()[1:]]
    got = sorted((r["code_system"], r["code"]) for r in recs if r["record"] == "result")
    assert got == sorted((r.code_system, r.code) for _, r in in_period if r.result_id in want)
    assert sum(r["record"] == "identity" for r in recs) == len(
        {p.identity.patient_id for p, r in in_period if r.result_id in want}
    )
    # Asking for a patient or a test the instruction does not name: refused, naming the excess.
    other = records[20].identity.patient_id
    with pytest.raises(ScopeExceeded, match="1 patient\\(s\\) not named in the instruction"):
        service.export(gateway, op, "lab-a", "MIG-2021", tmp_path / "packages", ask=service.Ask(patients=(other,)))
    with pytest.raises(ScopeExceeded, match="1 code\\(s\\) not named in the instruction"):
        service.export(
            gateway,
            op,
            "lab-a",
            "MIG-2021",
            tmp_path / "packages",
            ask=service.Ask(codes=(("http://loinc.org", "0000-0"),)),
        )


def test_an_ask_within_the_instruction_narrows_the_plan_and_the_run_keeps_to_it(world):
    w = world
    gw, op = w["gw"], w["operator"]
    # Two patients with results in the instruction's period (the first two have none).
    records = [
        rec
        for rec in LabGenerator("lab-a", SEED).patients(PATIENTS)
        if any(r.result_id in w["expected"] for r in rec.results)
    ][:2]
    two = tuple(r.identity.patient_id for r in records)
    ask = service.Ask(fields={"result": ("code", "value_num")}, patients=two)
    with gw.unit(op, Purpose.EXPORT) as u:
        job = service.plan(u, "lab-a", "MIG-2021", ask=ask)
    want = [r for rid, r in w["expected"].items() if any(rid in {x.result_id for x in rec.results} for rec in records)]
    assert job.plan["counts"]["results"] == len(want) and job.plan["fields"]["result"] == ["code", "value_num"]
    assert "identity" not in job.plan["fields"]
    job = approve_both(w, job)
    job = service.run(gw, op, "lab-a", job.migration_id, w["store"])
    lines: list[bytes] = []
    from labvault.crypto import packages

    packages.read(job.package, str(w["identity"]), lines.append)
    recs = [json.loads(x) for x in b"".join(lines).splitlines()[1:]]
    results = [r for r in recs if r["record"] == "result"]
    assert sorted((r["code"], r["value_num"]) for r in results) == sorted((r.code, r.value_num) for r in want)
    # Only result fields asked: no request, specimen or patient record, and no link to one (A2).
    assert results and all(set(r) == {"record", "id", "code", "value_num"} for r in results)
    assert {r["record"] for r in recs} == {"result"}
    # A patient the instruction does not name (it names none: all are covered), a code outside a
    # narrower instruction's: see the excess test; here, asking a field it does not name is refused.
    with (
        pytest.raises(ScopeExceeded, match=r"field identity.phone is not in the instruction"),
        gw.unit(op, Purpose.EXPORT) as u,
    ):
        service.plan(u, "lab-a", "MIG-2021", ask=service.Ask(fields={"identity": ("phone",)}, patients=two))


def test_an_instruction_no_longer_in_force_stops_the_run(world):
    """A1: Its signer revoked after the approvals, or its validity past: the run stops with the reason."""
    from labvault.instructions.document import Expired, UnknownSigner

    w = world
    job = approve_both(w, planned(w))
    with pytest.raises(Expired):
        service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"], now=NOW + timedelta(days=8))
    with w["gw"].unit(w["admin"], Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, "lab-a", w["signer_id"])
    with pytest.raises(UnknownSigner, match="not a current signer"):
        service.run(w["gw"], w["operator"], "lab-a", job.migration_id, w["store"])
    d = service.package_dir(w["store"], job)
    assert not d.exists() or list(d.iterdir()) == []
