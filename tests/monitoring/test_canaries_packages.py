"""Canaries in exports and migrations: a package leaves the lab's canaries out unless its
instruction names them, and carries one of its own, planted for it alone, so that a leaked copy's
rows lead back to the package (H3, the leaked-sample matcher; H1: naming a canary is a touch).

Packages are made and opened as in tests/migration/test_package_scope.py: the lab signs an
instruction, the vendor's operator plans, approves, runs and verifies, and the package is read
back with the real ``age`` CLI, as its recipient would."""

from __future__ import annotations

import json

import pytest
from pyrage import x25519
from sqlalchemy import select

from labvault.access import Purpose
from labvault.domain.identifiers import normalise_nir
from labvault.instructions import document, signers
from labvault.migration import service
from labvault.monitoring.canaries import find_in_leak, seed
from labvault.store import schema as t
from labvault.synth import LabGenerator
from tests.conftest import lab_user
from tests.migration.test_package_scope import (
    LAB,
    NO_PRESCRIBER,
    NOW,
    _check,
    _instruction,
    _lab,
    _package,
)

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

GENERATED = 6  # patients _lab loads (seed 7)


def _nirs() -> set[str]:
    return {normalise_nir(r.identity.nir) for r in LabGenerator(LAB, 7).patients(GENERATED)}


def _seeded(w: dict, n: int = 2) -> dict:
    """``n`` canaries seeded by the lab's admin, with their identities (read by a biologist)."""
    with w["gw"].unit(w["admin"], Purpose.MONITORING) as u:
        planted = seed(u, LAB, n)
    reader = lab_user(w["gw"], LAB, "biologist", name="Reader")
    with w["gw"].unit(reader, Purpose.CARE) as u:
        return {c.patient_id: (c, u.get_patient(LAB, c.patient_id)) for c in planted}


def _identities(records: list[dict]) -> list[dict]:
    return [r for r in records if r["record"] == "identity"]


def _touches(gw) -> list:
    ev = t.audit_event
    with gw.engine.connect() as conn:
        return conn.execute(select(ev).where(ev.c.action == "canary:touch").order_by(ev.c.seq)).all()


def test_each_package_carries_its_own_canary_and_a_leak_is_traced_to_it(gateway, tmp_path):
    """H3: a migration and an export of a lab with seeded canaries: neither holds a seeded canary;
    each holds exactly one patient beyond the lab's own, its own canary (in the manifest's counts,
    reconciled); the identity rows read from each package lead, through the lab's blind indexes,
    to that package's id and no other. Writing a package's own canary is no touch (H1)."""
    w = _lab(gateway)
    seeded = _seeded(w)
    seeded_nirs = {normalise_nir(ident.nir) for _, ident in seeded.values()}
    touched = len(_touches(gateway))
    store = tmp_path / "packages"
    jobs = [_package(w, "migration_out", NO_PRESCRIBER, store), _package(w, "export", NO_PRESCRIBER, store)]
    rows = {}
    for job, ident in jobs:
        records = _check(job, ident, NO_PRESCRIBER)  # counts, links and manifest agree, canary included
        people = _identities(records)
        nirs = {normalise_nir(p["nir"]) for p in people}
        assert not nirs & seeded_nirs
        assert nirs > _nirs() and len(nirs - _nirs()) == 1 and len(people) == GENERATED + 1
        (own,) = [p for p in people if normalise_nir(p["nir"]) not in _nirs()]
        assert own["family_name"] and own["birth_date"]
        results = [r for r in records if r["record"] == "result"]
        assert any(r["patient"] == own["id"] for r in results)  # with results, as a patient's
        rows[job.migration_id] = people
    assert len(_touches(gateway)) == touched
    dpo = lab_user(gateway, LAB, "lab_dpo", name="Dpo")
    with gateway.unit(dpo, Purpose.MONITORING) as u:
        for package_id, people in rows.items():
            (trace,) = find_in_leak(u, LAB, people)
            assert trace.package_id == package_id
            assert normalise_nir(people[trace.row]["nir"]) not in _nirs()
        # Rows of both leaks mixed, as a paste would hold them, each with its package.
        mixed = [*rows[jobs[0][0].migration_id], *rows[jobs[1][0].migration_id]]
        assert sorted(x.package_id for x in find_in_leak(u, LAB, mixed)) == sorted(rows)
        listed = u.canaries(LAB)
    assert sorted(c.package_id or "" for c in listed) == sorted(["", "", *rows])
    # A row by name and birth date (French column names) finds a seeded canary too.
    (_, (c, ident)) = next(iter(seeded.items()))
    with gateway.unit(dpo, Purpose.MONITORING) as u:
        (trace,) = find_in_leak(
            u,
            LAB,
            [
                {"nom": "Martin", "prenom": "Jean", "date_naissance": "01/01/1970"},
                {
                    "nom": ident.family_name,
                    "prenom": ident.given_names,
                    "date_naissance": ident.birth_date.strftime("%d/%m/%Y"),
                },
            ],
        )
    assert (trace.row, trace.marker, trace.package_id) == (1, c.marker, None)
    (ev,) = [
        e for e in _events(gateway, "canary:trace") if e.record_count == 1 and e.object_refs == json.dumps([c.marker])
    ]
    assert ev.actor == dpo.account_id


def _events(gw, action: str) -> list:
    ev = t.audit_event
    with gw.engine.connect() as conn:
        return conn.execute(select(ev).where(ev.c.action == action).order_by(ev.c.seq)).all()


def test_an_instruction_naming_a_canary_exports_it_and_touches_it(gateway, tmp_path):
    """H1: an export whose instruction names a canary (and an ordinary patient) lets both out, with
    the package's own canary; the named canary's export is recorded as a touch by the operator,
    naming its marker only."""
    w = _lab(gateway)
    seeded = _seeded(w, 1)
    (cid, (c, cident)) = next(iter(seeded.items()))
    ordinary = LabGenerator(LAB, 7).patient(0).identity
    recipient = x25519.Identity.generate()
    record = _instruction("export", NO_PRESCRIBER, str(recipient.to_public()))
    record["selection"]["patients"] = [cid, ordinary.patient_id]
    with gateway.unit(w["admin"], Purpose.ADMINISTRATION) as u:
        signers.receive(u, LAB, document.sign(document.from_record(record), w["signer"]), NOW)
    touched = len(_touches(gateway))
    job = service.export(gateway, w["operator"], LAB, record["id"], tmp_path / "packages", kinds=("export",))
    records = _check(job, recipient, NO_PRESCRIBER)
    nirs = {normalise_nir(p["nir"]) for p in _identities(records)}
    assert normalise_nir(cident.nir) in nirs and normalise_nir(ordinary.nir) in nirs
    assert len(nirs) == 3  # the named canary, the named patient, the package's own canary
    new = _touches(gateway)[touched:]
    assert [(e.actor, e.object_type, json.loads(e.object_refs)) for e in new] == [
        (w["operator"].account_id, "canary", [c.marker])
    ]


def test_a_lab_without_canaries_gets_packages_without_one(gateway, tmp_path):
    """The vendor plants nothing in a lab that has not seeded canaries itself: its package holds
    the lab's own patients only, and the canary table stays empty."""
    w = _lab(gateway)
    job, ident = _package(w, "export", NO_PRESCRIBER, tmp_path / "packages")
    records = _check(job, ident, NO_PRESCRIBER)
    assert {normalise_nir(p["nir"]) for p in _identities(records)} == _nirs()
    with gateway.engine.connect() as conn:
        assert conn.execute(select(t.canary)).all() == []
