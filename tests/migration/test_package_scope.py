"""A package holds exactly what its instruction names: no field, no record type and no link to a
record type outside it; the manifest counts links, and reconciliation checks them.

The oracle is the instruction alone: a record's keys are ``record``, ``id``, the fields the
instruction names for its type, and links to records of the types the instruction names (a
request's prescriber only when prescriber fields are named, a result's patient only when identity
fields are named, ...). Every package is opened with the real ``age`` CLI, as its recipient would."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrage import x25519

from labvault.access import Purpose
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.instructions import document, signers
from labvault.migration import service
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab, need

NOW = datetime.now(UTC).replace(microsecond=0)
LAB = "lab-a"
# Which record type each link names: a link may be written only when its target type is named.
TARGET = {"patient": "identity", "prescriber": "prescriber", "request": "request", "specimen": "specimen"}
# The instruction's categories of record fields (free text is a result's comment).
CATEGORIES = tuple(c for c in document.FIELDS if c != document.FREE_TEXT)
NO_PRESCRIBER = {
    "identity": ["nir", "family_name", "birth_date"],
    "request": ["requested_at", "accession"],
    "specimen": ["type", "collected_at"],
    "result": ["code", "code_system", "value_num", "unit", "status"],
}


def z(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


_ids = itertools.count(1)


def _instruction(kind: str, fields: dict[str, list[str]], recipient: str) -> dict:
    return {
        "id": f"SCOPE-{next(_ids)}",
        "tenant": LAB,
        "kind": kind,
        "purpose": "Move results to NewLIS",
        "fields": fields,
        "selection": {
            "collected_from": "2000-01-01",
            "collected_to": "2039-12-31",
            "sensitive": list(document.SENSITIVE),
        },
        "destination": {"name": "NewLIS SAS", "country": "FR", "recipient_age_key": recipient},
        "expected_volume": 100_000,
        "deletion_deadline": z(NOW + timedelta(days=30)),
        "valid_from": z(NOW - timedelta(hours=1)),
        "valid_until": z(NOW + timedelta(days=7)),
    }


def _lab(gateway) -> dict:
    """A lab of generated patients (with prescribers on most requests), its signer and an operator.
    Lab accounts are made here only (one place to adapt when account creation changes)."""
    make_lab(gateway, LAB)
    load_lab(gateway, ADMIN, LAB, patients=6, seed=7)
    admin = lab_user(gateway, LAB, "lab_admin", name="Admin")
    bio = lab_user(gateway, LAB, "biologist", name="Signer")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, LAB, email=f"{bio.account_id}@lab.invalid", public_key=public.hex())
    return {
        "gw": gateway,
        "admin": admin,
        "signer": Signer(private),
        "public": public.hex(),
        "operator": lab_user(gateway, PLATFORM, "operator", name="Op"),
    }


def _package(w: dict, kind: str, fields: dict[str, list[str]], store: Path) -> tuple[service.Job, x25519.Identity]:
    """The lab signs an instruction of ``kind`` naming ``fields``; the operator runs it to a
    verified package: plan, two approvals, run, verify (a migration), or ``export`` in one go."""
    gw, op = w["gw"], w["operator"]
    ident = x25519.Identity.generate()
    record = _instruction(kind, fields, str(ident.to_public()))
    with gw.unit(w["admin"], Purpose.ADMINISTRATION) as u:
        signers.receive(u, LAB, document.sign(document.from_record(record), w["signer"]), NOW)
    if kind != "migration_out":
        return service.export(gw, op, LAB, record["id"], store, kinds=(kind,)), ident
    with gw.unit(op, Purpose.EXPORT) as u:
        job = service.plan(u, LAB, record["id"])
        service.approve_operator(u, LAB, job.migration_id)
        service.approve_lab(
            u, LAB, job.migration_id, public_key=w["public"], signature=w["signer"].sign(service.approval_record(job))
        )
    job = service.run(gw, op, LAB, job.migration_id, store)
    with gw.unit(op, Purpose.EXPORT) as u:
        return service.verify_package(u, LAB, job.migration_id), ident


def _age_decrypt(ident: x25519.Identity, package: Path) -> list[dict]:
    need(shutil.which("age") is not None, "the age CLI is missing: apt-get install age")
    key = package.parent.parent / f"{package.parent.name}.key"
    key.write_text(f"{ident}\n")
    out = subprocess.run(["age", "--decrypt", "-i", str(key), str(package)], capture_output=True, check=True).stdout
    key.unlink()
    return [json.loads(line) for line in out.splitlines()]


def _named(fields: dict[str, list[str]]) -> dict[str, set[str]]:
    """Record type -> the keys the instruction names for it (a result's comment as ``comment``)."""
    named = {t: set(f) for t, f in fields.items() if t in CATEGORIES and f}
    if "result.comment" in fields.get(document.FREE_TEXT, ()):
        named.setdefault("result", set()).add("comment")
    return named


def _outside(records: list[dict], fields: dict[str, list[str]]) -> list[str]:
    """Every key, link and record type of the package outside the instruction, one line each."""
    named = _named(fields)
    out = []
    for rec in records:
        rtype = rec.get("record")
        if rtype not in named:
            out.append(f"a {rtype} record")
            continue
        for key in set(rec) - {"record", "id"} - named[rtype]:
            if key not in TARGET:
                out.append(f"{rtype}.{key}: a field the instruction does not name")
            elif TARGET[key] not in named:
                out.append(f"{rtype}.{key}: a link to {TARGET[key]} records, which the instruction leaves out")
    return sorted(set(out))


def _links(records: list[dict]) -> dict[str, dict[str, int]]:
    """Links present in the package, per record type and kind (the oracle for the manifest)."""
    per: dict[str, Counter] = {}
    for rec in records:
        for key in TARGET:
            if rec.get(key) is not None:
                per.setdefault(rec["record"], Counter())[key] += 1
    return {t: dict(c) for t, c in per.items()}


def _check(job: service.Job, ident: x25519.Identity, fields: dict[str, list[str]]) -> list[dict]:
    """The package, opened with the age CLI: nothing outside the instruction, links resolved,
    and the manifest's counts of records and links equal to what is in it."""
    assert job.state == "verified" and job.package is not None
    header, *records = _age_decrypt(ident, job.package)
    assert header["record"] == "header"
    assert _outside(records, fields) == []
    manifest = json.loads((job.package.parent / service.MANIFEST).read_text())["manifest"]
    counts = manifest["counts"]
    assert {t: n for t, n in counts["records"].items() if n} == dict(Counter(r["record"] for r in records))
    got = _links(records)
    assert {t: {k: n for k, n in c.items() if n} for t, c in counts["links"].items() if any(c.values())} == got
    ids = {t: {r["id"] for r in records if r["record"] == t} for t in TARGET.values()}
    for rec in records:  # every link resolves to a record in the package
        for key, target in TARGET.items():
            if rec.get(key) is not None:
                assert rec[key] in ids[target], f"{rec['record']}.{key} names no {target} record of the package"
    return records


def test_a_package_under_an_instruction_naming_no_prescriber_holds_no_prescriber(gateway, tmp_path):
    """A2, A4, B4: the migration of a lab whose requests have prescribers, under an instruction
    naming no prescriber field: opened with the age CLI, no request holds a prescriber link, no
    prescriber record is there; the manifest counts the links (request->patient, result->request,
    ...) and ``verify`` reconciles them."""
    w = _lab(gateway)
    job, ident = _package(w, "migration_out", NO_PRESCRIBER, tmp_path / "packages")
    records = _check(job, ident, NO_PRESCRIBER)
    requests = [r for r in records if r["record"] == "request"]
    assert requests and all("prescriber" not in r for r in requests)
    assert not any(r["record"] == "prescriber" for r in records)
    assert all("comment" not in r for r in records)  # free text not named: left out (A4)
    links = json.loads((job.package.parent / service.MANIFEST).read_text())["manifest"]["counts"]["links"]
    assert links["request"] == {"patient": len(requests)}
    assert links["result"]["request"] == sum(r["record"] == "result" for r in records)


def test_an_export_naming_only_result_fields_holds_results_and_nothing_else(gateway, tmp_path):
    """A2, B4: an export naming result fields only: result records with those fields, no link to a
    request, specimen or patient (none of them is named), and the manifest says so."""
    w = _lab(gateway)
    fields = {"result": ["code", "value_num"]}
    job, ident = _package(w, "export", fields, tmp_path / "packages")
    records = _check(job, ident, fields)
    assert records and all(set(r) == {"record", "id", "code", "value_num"} for r in records)
    manifest = json.loads((job.package.parent / service.MANIFEST).read_text())["manifest"]
    assert manifest["links"] == {"result": []} and manifest["fields"] == {"result": ["code", "value_num"]}


def test_verify_refuses_a_manifest_whose_links_differ_from_the_plan(gateway, tmp_path):
    """B4: the platform's reconciliation compares the manifest's links (and fields) with the
    approved plan: a manifest re-signed with a link the plan leaves out is refused."""
    w = _lab(gateway)
    job, _ = _package(w, "migration_out", NO_PRESCRIBER, tmp_path / "packages")
    gw, op = w["gw"], w["operator"]
    with gw.unit(op, Purpose.EXPORT) as u:
        u._authorise(LAB, "migration:read")
        body = dict(job.manifest["manifest"])
        body["links"] = {**body["links"], "request": [*body["links"]["request"], "prescriber"]}
        signer, public = u._platform_signer()
        forged = {"manifest": body, "signature": signer.sign(body), "public_key": public.hex()}
        service._set(u, LAB, job.migration_id, state="packaged", manifest=json.dumps(forged, sort_keys=True))
    with gw.unit(op, Purpose.EXPORT) as u:
        assert service.get(u, LAB, job.migration_id).manifest == forged
    with pytest.raises(service.ReconciliationFailed, match="links"), gw.unit(op, Purpose.EXPORT) as u:
        service.verify_package(u, LAB, job.migration_id)


@pytest.fixture
def lab(gateway) -> dict:
    """One lab for every example of a property test (examples differ by their instruction)."""
    return _lab(gateway)


_field_sets = st.fixed_dictionaries(
    {c: st.lists(st.sampled_from(document.FIELDS[c]), unique=True) for c in CATEGORIES}
).map(lambda d: {c: sorted(v, key=document.FIELDS[c].index) for c, v in d.items() if v})


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(fields=_field_sets, comment=st.booleans(), kind=st.sampled_from(("migration_out", "export", "return")))
def test_the_output_schema_is_the_allow_list(lab, tmp_path, fields, comment, kind):
    """A2, A4, B4: for any subset of allowed fields (with or without the free-text comment), in a
    migration, an export or a return: the package, opened with the age CLI, holds no field, record
    type or link outside the instruction; every link resolves; the manifest counts what is there."""
    if comment:
        fields = {**fields, document.FREE_TEXT: ["result.comment"]}
    if not fields:
        return  # an instruction names at least one field (refused otherwise)
    job, ident = _package(lab, kind, fields, tmp_path / "packages" / str(next(_ids)))
    _check(job, ident, fields)


def test_reconciliation_checks_links_and_their_counts(gateway, tmp_path):
    """B4: the recipient's reconciliation (``acknowledge``) against a manifest that differs from
    the package in its links: a link the manifest does not list, a link to a record type it does
    not list, or a link count changed: each refused, naming the mismatch."""
    w = _lab(gateway)
    job, ident = _package(w, "migration_out", NO_PRESCRIBER, tmp_path / "packages")
    manifest = json.loads((job.package.parent / service.MANIFEST).read_text())
    assert service.acknowledge(job.package, manifest, str(ident))["receipt"]["records"]["request"] > 0

    def changed(edit) -> dict:
        m = json.loads(json.dumps(manifest))
        edit(m["manifest"])
        return m

    def no_patient_link(m: dict) -> None:
        m["links"]["request"] = []
        del m["counts"]["links"]["request"]["patient"]

    cases = [
        (no_patient_link, "request records hold fields outside the manifest: patient"),
        (
            lambda m: m["links"].__setitem__("request", ["patient", "prescriber"]),
            "links of request records name record types it does not list: prescriber",
        ),
        (
            lambda m: m["counts"]["links"]["result"].__setitem__("patient", 1),
            "counts differ from the manifest: result links",
        ),
        (lambda m: m.pop("links"), "does not name the links"),
    ]
    for edit, why in cases:
        with pytest.raises(service.ReconciliationFailed, match=why):
            service.acknowledge(job.package, changed(edit), str(ident))


def test_reconciliation_refuses_a_link_naming_no_record_of_the_package(gateway, tmp_path):
    """B4: a package re-made with one link pointing elsewhere (a result's specimen, a request's
    patient, a specimen's request), its manifest's hash updated: reconciliation refuses it."""
    import hashlib

    import pyrage

    w = _lab(gateway)
    job, ident = _package(w, "migration_out", NO_PRESCRIBER, tmp_path / "packages")
    manifest = json.loads((job.package.parent / service.MANIFEST).read_text())
    lines = _age_decrypt(ident, job.package)

    def remade(rtype: str, link: str, why: str) -> None:
        recs = json.loads(json.dumps(lines))
        target = next(r for r in recs if r["record"] == rtype and r.get(link) is not None)
        target[link] = "0" * len(target[link])
        data = pyrage.encrypt(b"".join(json.dumps(r).encode() + b"\n" for r in recs), [ident.to_public()])
        forged = tmp_path / "forged.age"
        forged.write_bytes(data)
        m = json.loads(json.dumps(manifest))
        m["manifest"]["files"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
        with pytest.raises(service.ReconciliationFailed, match=why):
            service.acknowledge(forged, m, str(ident))

    remade("result", "specimen", "specimen link names no specimen")
    remade("result", "request", "request link names no request")
    remade("specimen", "request", "request link names no request")
    remade("request", "patient", "identity id\\(s\\) linked to are not records of the package")
