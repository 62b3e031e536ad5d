"""The issue's must-show: files cut from a real package (``synth.leak``) in many shapes are traced to
exactly the package's patients and to the package itself; a leak spanning two labs gives each lab
only its own patients.

The truth is the package's own: each leaked row carries the export id its package gave the patient;
the export ids are turned back into the lab's patient ids here with the package's fingerprint key
(test code only: the analysis never sees the truth)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

import tests.migration.test_package_scope as scope
from labvault.access import Purpose
from labvault.breach.analyze import analyze
from labvault.breach.reader import open_bytes
from labvault.crypto.keys import PLATFORM
from labvault.crypto.packages import PackageKeys, SealedKeys
from labvault.monitoring import canaries as monitoring_canaries
from labvault.store import schema as t
from labvault.synth import leak as synth
from tests.breach.conftest import EVERY_FIELD
from tests.conftest import ADMIN, lab_user
from tests.migration.test_package_scope import _age_decrypt, _lab, _package


def _built(gateway, raw, tmp_path, lab: str, monkeypatch, *, canaries: int = 0) -> dict:
    """A generated lab (with ``canaries`` seeded by its admin first, if any), an export of every
    field, its records opened with ``age``, and the map from the package's patient export ids back
    to the lab's patient ids."""
    monkeypatch.setattr(scope, "LAB", lab)
    w = _lab(gateway)
    if canaries:
        with gateway.unit(w["admin"], Purpose.MONITORING) as u:
            monitoring_canaries.seed(u, lab, canaries)
    job, ident = _package(w, "export", EVERY_FIELD, tmp_path / f"packages-{lab}")
    records = _age_decrypt(ident, job.package)
    with raw.connect() as conn:
        pids = list(
            conn.execute(select(t.patient_identity.c.patient_id).where(t.patient_identity.c.tenant_id == lab)).scalars()
        )
        j = conn.execute(select(t.migration_job).where(t.migration_job.c.migration_id == job.migration_id)).one()
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        index = u._crypto(lab).index
    sealed = SealedKeys(j.package_scope, b"", b"", bytes(j.fingerprint_key_wrapped), j.fingerprint_key_id)
    derive = PackageKeys(gateway.keys, lab).ids(job.migration_id, sealed)
    back = {derive("patient", index.pseudonym(p)): p for p in pids}
    monkeypatch.setattr(scope, "LAB", "lab-a")
    return {
        "job": job,
        "records": records,
        "back": back,
        "admin": w["admin"],
        "dpo": lab_user(gateway, lab, "lab_dpo", name="Dpo"),
    }


def _affected(gateway, dpo, lab: str, analysis_id: str) -> set[str]:
    with gateway.unit(dpo, Purpose.BREACH) as u:
        return set(u.affected_patients(lab, analysis_id))


@pytest.fixture
def one_lab(gateway, raw_engine, tmp_path, monkeypatch) -> dict:
    built = _built(gateway, raw_engine, tmp_path, "lab-a", monkeypatch)
    built["so"] = lab_user(gateway, PLATFORM, "security_officer", name="Sec")
    return built


def test_files_cut_from_a_package_in_every_shape_give_exactly_its_patients_and_name_it(gateway, one_lab):
    """I1, H3 (must show): for each shape ``synth.leak`` cuts (delimiters, encodings, renamed,
    reordered and dropped columns, no header, junk rows, capitals, no accents, spaces, a full-name
    column, ragged rows, XLSX, the package's ndjson, SQL dumps, a 56-row sample), the security
    officer's analysis finds exactly the package's patients behind the file's rows (no more, no
    fewer), counts every result row of theirs, and names the package as the source."""
    gw, built = gateway, one_lab
    job, back = built["job"], built["back"]
    failures = []
    for shape in synth.SHAPES:
        data, name, rows = synth.cut(built["records"], shape, seed=3)
        truth = {back[r.patient] for r in rows if r.patient is not None}
        analysis, parts = analyze(gw, built["so"], [open_bytes(data, name, index=1)])
        part = next((p for p in parts if p.tenant_id == "lab-a"), None)
        got = _affected(gw, built["dpo"], "lab-a", analysis.analysis_id) if part else set()
        source = part.source.package_id if part and part.source else None
        records = part.records if part else 0
        if got != truth or source != job.migration_id or records != len(rows):
            failures.append(
                f"{shape}: {len(got & truth)}/{len(truth)} patients, {len(got - truth)} wrong, "
                f"records {records}/{len(rows)}, source {'ok' if source == job.migration_id else source}"
            )
    assert failures == []


def test_a_leak_spanning_two_labs_gives_each_lab_only_its_own(gateway, raw_engine, tmp_path, monkeypatch):
    """I1, I5 (must show): one file holding rows cut from a package of lab-a and from a package of
    lab-b: lab-a's part is exactly lab-a's patients and names lab-a's package, lab-b's part lab-b's;
    neither lab's DPO opens the other's list."""
    a = _built(gateway, raw_engine, tmp_path, "lab-a", monkeypatch)
    b = _built(gateway, raw_engine, tmp_path, "lab-b", monkeypatch)
    so = lab_user(gateway, PLATFORM, "security_officer", name="Sec")
    data_a, _, rows_a = synth.cut(a["records"], "csv", seed=1)
    data_b, _, rows_b = synth.cut(b["records"], "csv", seed=2)
    body_b = data_b.split(b"\n", 1)[1]  # the same columns: lab-b's rows after lab-a's
    analysis, parts = analyze(gateway, so, [open_bytes(data_a + body_b, "leak.csv", index=1)])
    by_lab = {p.tenant_id: p for p in parts}
    assert set(by_lab) == {"lab-a", "lab-b"}
    assert _affected(gateway, a["dpo"], "lab-a", analysis.analysis_id) == {a["back"][r.patient] for r in rows_a}
    assert _affected(gateway, b["dpo"], "lab-b", analysis.analysis_id) == {b["back"][r.patient] for r in rows_b}
    assert by_lab["lab-a"].records == len(rows_a) and by_lab["lab-b"].records == len(rows_b)
    assert by_lab["lab-a"].source.package_id == a["job"].migration_id
    assert by_lab["lab-b"].source.package_id == b["job"].migration_id
    assert analysis.rows_unmatched == 0 and analysis.rows_total == len(rows_a) + len(rows_b)
    from labvault.errors import AccessDenied

    with pytest.raises(AccessDenied):
        _affected(gateway, a["dpo"], "lab-b", analysis.analysis_id)


def test_a_packages_own_canary_names_it_and_is_nobody(gateway, raw_engine, tmp_path, monkeypatch):
    """H3, I1: in a lab that seeded canaries, the package carries its own canary; a flat file cut
    from it (no export id) is traced to the package by that canary (method ``canary``), and the
    canary is counted apart: it is not among the affected patients, its rows not among the records."""
    built = _built(gateway, raw_engine, tmp_path, "lab-a", monkeypatch, canaries=2)
    job = built["job"]
    with gateway.unit(built["admin"], Purpose.MONITORING) as u:
        own = [c.patient_id for c in u.canaries("lab-a") if c.package_id == job.migration_id]
    assert len(own) == 1
    so = lab_user(gateway, PLATFORM, "security_officer", name="Sec")
    data, name, rows = synth.cut(built["records"], "semicolon", seed=5)
    truth = {built["back"][r.patient] for r in rows}
    assert own[0] in truth  # the canary's rows are in the leaked file
    analysis, parts = analyze(gateway, so, [open_bytes(data, name, index=1)])
    (part,) = parts
    assert part.source is not None and (part.source.package_id, part.source.method) == (job.migration_id, "canary")
    assert part.canaries == 1
    assert _affected(gateway, built["dpo"], "lab-a", analysis.analysis_id) == truth - set(own)
    assert part.records == sum(1 for r in rows if built["back"][r.patient] != own[0])
