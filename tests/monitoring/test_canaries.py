"""Canaries: planted synthetic patients that no legitimate work reads (issue 16, part 3).

H1: a canary touched is recorded at once (``canary:touch``, references only) for the monitoring
rules to raise; searches, the worklists' whole-lab scan and exports leave canaries out. G2: the
events name markers, never a name, NIR or birth date. The standing rule: only the lab (its
lab_admin or lab_dpo) seeds and lists its canaries; vendor accounts and other labs cannot."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.crypto.keys import PLATFORM
from labvault.domain.identifiers import normalise_nir
from labvault.errors import AccessDenied, NotFound
from labvault.monitoring.canaries import seed
from labvault.store import schema as t
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

LAB = "lab-a"
PATIENTS = 6
SEED = 7


@pytest.fixture
def world(gateway):
    make_lab(gateway, LAB)
    load_lab(gateway, ADMIN, LAB, patients=PATIENTS, seed=SEED)
    admin = lab_user(gateway, LAB, "lab_admin", name="Admin")
    bio = lab_user(gateway, LAB, "biologist", name="Bio")
    with gateway.unit(admin, Purpose.MONITORING) as u:
        planted = seed(u, LAB, 2)
    with gateway.unit(bio, Purpose.CARE) as u:
        idents = {c.patient_id: u.get_patient(LAB, c.patient_id) for c in planted}  # touches (tested below)
    return {"gw": gateway, "admin": admin, "bio": bio, "planted": planted, "idents": idents}


def _events(gw, action: str) -> list:
    ev = t.audit_event
    with gw.engine.connect() as conn:
        return conn.execute(select(ev).where(ev.c.tenant_id == LAB, ev.c.action == action).order_by(ev.c.seq)).all()


def test_lab_admin_seeds_and_the_dpo_lists(world):
    """H1: the lab's admin plants canaries (generated, qualified identities with results); the
    lab's DPO lists them by marker and patient id; the seed event names the markers only."""
    gw, planted = world["gw"], world["planted"]
    assert len(planted) == 2 and len({c.marker for c in planted}) == 2
    for ident in world["idents"].values():
        assert ident.qualified and ident.nir and ident.family_name
    dpo = lab_user(gw, LAB, "lab_dpo", name="Dpo")
    with gw.unit(dpo, Purpose.MONITORING) as u:
        listed = u.canaries(LAB)
    assert {(c.marker, c.patient_id, c.package_id) for c in listed} == {(c.marker, c.patient_id, None) for c in planted}
    (seed,) = _events(gw, "canary:seed")
    assert seed.actor == world["admin"].account_id and seed.record_count == 2
    assert sorted(json.loads(seed.object_refs)) == sorted(c.marker for c in planted)
    # The table holds markers, not ids: no stored patient id or pseudonym appears in it.
    with gw.engine.connect() as conn:
        markers = {bytes(m).hex() for m in conn.execute(select(t.canary.c.marker)).scalars()}
        pseudonyms = set(conn.execute(select(t.request.c.pseudonym)).scalars())
    assert markers == {c.marker for c in planted}
    assert not markers & pseudonyms and not markers & set(world["idents"])


@pytest.mark.parametrize("role", ["operator", "support", "security_officer", "platform_admin"])
def test_vendor_accounts_cannot_seed_or_list(world, role):
    """The standing rule (F2): a vendor account neither plants canaries in a lab nor lists them."""
    gw = world["gw"]
    vendor = lab_user(gw, PLATFORM, role, name="Vendor")
    with pytest.raises((AccessDenied, NotFound)), gw.unit(vendor, Purpose.MONITORING) as u:
        seed(u, LAB, 1)
    with pytest.raises((AccessDenied, NotFound)), gw.unit(vendor, Purpose.MONITORING) as u:
        u.canaries(LAB)
    with pytest.raises((AccessDenied, NotFound)), gw.unit(vendor, Purpose.MONITORING) as u:
        u.canaries_among(LAB, [(None, "X", "Y", None)])
    with gw.unit(world["admin"], Purpose.MONITORING) as u:
        assert len(u.canaries(LAB)) == 2  # nothing planted by the refused attempts


def test_another_labs_admin_cannot_seed_or_list(world):
    """F1: lab B's admin reaches none of lab A's canaries."""
    gw = world["gw"]
    make_lab(gw, "lab-b", "440000018")
    other = lab_user(gw, "lab-b", "lab_admin", name="Other")
    with pytest.raises((AccessDenied, NotFound)), gw.unit(other, Purpose.MONITORING) as u:
        seed(u, LAB, 1)
    with pytest.raises((AccessDenied, NotFound)), gw.unit(other, Purpose.MONITORING) as u:
        u.canaries(LAB)
    with gw.unit(other, Purpose.MONITORING) as u:
        assert u.canaries("lab-b") == []


def test_searches_leave_canaries_out(world):
    """H1: NIR, name and prefix searches (and the DPO's NIR lookup) never return a canary, while
    they find an ordinary patient the same way."""
    gw, bio = world["gw"], world["bio"]
    ordinary = LabGenerator(LAB, SEED).patient(0).identity
    with gw.unit(bio, Purpose.CARE) as u:
        for ident in world["idents"].values():
            assert u.find_patients_by_nir(LAB, ident.nir) == []
            assert u.find_patients_by_name(LAB, ident.family_name, ident.given_names, ident.birth_date) == []
            found = u.find_patients_by_prefix(LAB, ident.family_name[:2], None, ident.birth_date)
            assert ident.patient_id not in {p.patient_id for p in found}
        assert [p.patient_id for p in u.find_patients_by_nir(LAB, ordinary.nir)] == [ordinary.patient_id]
        prefix = u.find_patients_by_prefix(LAB, ordinary.family_name[:2], None, ordinary.birth_date)
        assert ordinary.patient_id in {p.patient_id for p in prefix}
    dpo = lab_user(gw, LAB, "lab_dpo", name="Dpo")
    with gw.unit(dpo, Purpose.MONITORING) as u:
        for ident in world["idents"].values():
            assert u.patient_id_for_nir(LAB, ident.nir) is None
        assert u.patient_id_for_nir(LAB, ordinary.nir) == ordinary.patient_id


def test_worklist_scan_leaves_canaries_out(world):
    """H1: the whole-lab result scan the worklists read holds every generated result and none of
    a canary's."""
    gw, bio = world["gw"], world["bio"]
    expected = {r.result_id for rec in LabGenerator(LAB, SEED).patients(PATIENTS) for r in rec.results}
    with gw.unit(bio, Purpose.CARE) as u:
        canary_results = {r.result_id for pid in world["idents"] for r in u.results_of(LAB, pid)}
    assert canary_results and not canary_results & expected
    touched = len(_events(gw, "canary:touch"))
    with gw.unit(bio, Purpose.CARE) as u:
        scanned = {r.result_id for r in u.iter_results(LAB)}
    assert scanned == expected
    assert len(_events(gw, "canary:touch")) == touched  # the scan touched nothing


def test_touching_a_canary_is_recorded_with_references_only(world):
    """H1, G2: reading a canary's identity, requests or results (by patient, by request, by result,
    through the daily work) writes ``canary:touch`` in the same unit, naming its marker only; an
    ordinary patient's read writes none."""
    gw, bio = world["gw"], world["bio"]
    c = world["planted"][0]
    ident = world["idents"][c.patient_id]
    before = len(_events(gw, "canary:touch"))
    with gw.unit(bio, Purpose.CARE) as u:
        ordinary = LabGenerator(LAB, SEED).patient(1).identity.patient_id
        u.get_patient(LAB, ordinary)
        u.results_of(LAB, ordinary)
    assert len(_events(gw, "canary:touch")) == before
    reads = [
        lambda u: u.get_patient(LAB, c.patient_id),
        lambda u: u.requests_of(LAB, c.patient_id),
        lambda u: u.results_of(LAB, c.patient_id),
    ]
    with gw.unit(bio, Purpose.CARE) as u:
        requests = u.requests_of(LAB, c.patient_id)
        results = u.results_of(LAB, c.patient_id)
    reads += [
        lambda u: u.results_of_request(LAB, requests[0].request_id),
        lambda u: u.result_history(LAB, results[0].result_id),
        lambda u: u.patient_of_result(LAB, results[0].result_id),
        lambda u: u.work_result(LAB, results[0].result_id),
    ]
    for read in reads:
        n = len(_events(gw, "canary:touch"))
        with gw.unit(bio, Purpose.CARE) as u:
            read(u)
        touches = _events(gw, "canary:touch")
        assert len(touches) == n + 1
        ev = touches[-1]
        assert (ev.actor, ev.outcome, ev.object_type, ev.record_count) == (bio.account_id, "allowed", "canary", 1)
        assert json.loads(ev.object_refs) == [c.marker]
        text = json.dumps([str(v) for v in ev._mapping.values()])
        for value in (ident.nir, normalise_nir(ident.nir), ident.family_name, ident.birth_date.isoformat()):
            assert value not in text
