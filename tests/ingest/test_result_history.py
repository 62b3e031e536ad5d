"""A result's history as formats send it again, as the lab reads it, and as retention, the end of a
contract and key rotation treat it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text as sql

from labvault.access import Principal, Purpose
from labvault.crypto.keys import PLATFORM
from labvault.errors import AccessDenied, NotFound
from labvault.ingest import service as ingest
from labvault.ingest.service import Ingestor, Summary
from labvault.retention import purge
from tests.conftest import ADMIN, lab_user, make_lab
from tests.ingest.test_result_life import CORRECTION, LAB, REPORT, T0, K, envelope, nir_for, store
from tests.interop.test_csv_in import row, table
from tests.interop.test_hprim import hpr

_n = iter(range(500, 10_000))
INS = "185077512345608~INS-NIR"


def _ingest(gw, who, data: bytes, name: str) -> Summary:
    summary = Summary(name, "")
    Ingestor(gw, who, LAB, group=1).ingest_pieces(ingest.read(data, file=name), summary)
    return summary


@pytest.fixture
def lab(gateway):
    make_lab(gateway, LAB)
    return gateway, lab_user(gateway, LAB, "technician"), lab_user(gateway, LAB, "biologist")


def _corrected(gw, who) -> tuple[str, str]:
    """A patient whose potassium was corrected: (its NIR, the result id)."""
    nir = nir_for(next(_n))
    store(gw, who, [envelope(REPORT, nir)])
    store(gw, who, [envelope(CORRECTION, nir)])
    with gw.unit(who, Purpose.CARE) as u:
        (p,) = u.find_patients_by_nir(LAB, nir)
        (rid,) = [r.result_id for r in u.results_of(LAB, p.patient_id) if r.code == K]
    return nir, rid


def _values(gw, who, nir: str) -> dict[str, list[tuple[float | None, str]]]:
    with gw.unit(who, Purpose.CARE) as u:
        (p,) = u.find_patients_by_nir(LAB, nir)
        return {
            r.code: [(v.value_num, str(v.status)) for v in u.result_history(LAB, r.result_id)]
            for r in u.results_of(LAB, p.patient_id)
        }


def test_a_csv_resent_with_another_value_is_an_update(lab):
    """A CSV request sent again with a changed value is stored (its key holds a digest of the
    content) and updates the request: the earlier value becomes version 1. The same bytes again
    are a duplicate."""
    gw, tech, bio = lab
    nir = "185077512345608"
    first = table([row("A1", value="4.2")])
    s = _ingest(gw, tech, first, "a.csv")
    assert (s.accepted, s.duplicates) == (1, 0)
    s = _ingest(gw, tech, first, "a.csv")
    assert (s.accepted, s.duplicates) == (0, 1)
    s = _ingest(gw, tech, table([row("A1", value="4.6")]), "a.csv")
    assert (s.accepted, s.duplicates, s.rejected) == (1, 0, 0), s.reasons
    with gw.unit(bio, Purpose.CARE) as u:
        (p,) = u.find_patients_by_nir(LAB, nir)
        assert len(u.requests_of(LAB, p.patient_id)) == 1
    assert _values(gw, bio, nir) == {"2823-3": [(4.2, "final"), (4.6, "final")]}


def test_an_hprim_file_resent_with_another_value_is_an_update(lab):
    """The same HPRIM file (same name, same sender) with another value updates its request."""
    gw, tech, bio = lab
    obx = "OBX|1|NM|2823-3~Potassium~LN||{v}|mmol/L|3.5 - 5.1|N|||F|||202401011030|BIOCH"
    s = _ingest(gw, tech, hpr(ins=INS, obx=[obx.format(v="4.2")]), "res.hpr")
    assert s.accepted == 1, s
    assert _ingest(gw, tech, hpr(ins=INS, obx=[obx.format(v="4.2")]), "res.hpr").duplicates == 1
    s = _ingest(gw, tech, hpr(ins=INS, obx=[obx.format(v="4.9")]), "res.hpr")
    assert (s.accepted, s.rejected) == (1, 0), s.reasons
    with gw.unit(bio, Purpose.CARE) as u:
        ids = [
            r.result_id
            for q in u.find_patients_by_name(LAB, "DUPONT", "Jean", T0.date().replace(1985, 7, 4))
            for r in u.results_of(LAB, q.patient_id)
        ]
        assert len(ids) == 1
        history = u.result_history(LAB, ids[0])
    assert [(v.value_num, v.version) for v in history] == [(4.2, 1), (4.9, 2)]


def test_history_is_read_audited_and_refused_to_vendors(lab, raw_engine):
    """F2, G1: a lab account reads a result's history (audited with the result's id, no value); a
    vendor account without a grant is refused; an unknown id is not found."""
    gw, tech, bio = lab
    _, rid = _corrected(gw, tech)
    with gw.unit(bio, Purpose.CARE) as u:
        versions = u.result_history(LAB, rid)
    assert [(v.version, v.value_num, str(v.status)) for v in versions] == [(1, 4.2, "final"), (2, 4.5, "corrected")]
    for role in ("support", "operator", "platform_admin", "security_officer"):
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            u.ensure_account(PLATFORM, f"v-{role}", role, f"v-{role}@vendor.invalid", [role], commitment="t")
        vendor = Principal(f"v-{role}", f"Vendor {role}", PLATFORM, frozenset({role}))
        with pytest.raises(AccessDenied), gw.unit(vendor, Purpose.SUPPORT) as u:
            u.result_history(LAB, rid)
    with pytest.raises(NotFound), gw.unit(bio, Purpose.CARE) as u:
        u.result_history(LAB, "no-such-result")
    with raw_engine.connect() as conn:
        refs = conn.execute(
            sql(
                "SELECT object_refs, record_count FROM audit_event WHERE action = 'patient:result:read' AND actor = :a"
            ),
            {"a": bio.account_id},
        ).all()
    assert (f'["{rid}"]', 2) in [(r[0], r[1]) for r in refs]


def test_retention_purges_the_versions_of_purged_results(lab, raw_engine):
    """D1: a purge deletes the earlier versions of the results it deletes."""
    gw, tech, _ = lab
    _corrected(gw, tech)
    count = "SELECT count(*) FROM result_version WHERE tenant_id = :t"
    with raw_engine.connect() as conn:
        assert conn.execute(sql(count), {"t": LAB}).scalar_one() == 1
    operator = Principal("v-operator", "Vendor operator", PLATFORM, frozenset({"operator"}))
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(PLATFORM, "v-operator", "Vendor operator", "v-op@vendor.invalid", ["operator"], commitment="t")
    with gw.unit(operator, Purpose.ADMINISTRATION) as u:
        report = purge.run(u, LAB, now=T0 + timedelta(days=20 * 365))
    assert report.categories["results"] == 2
    with raw_engine.connect() as conn:
        assert conn.execute(sql(count), {"t": LAB}).scalar_one() == 0
        assert conn.execute(sql("SELECT count(*) FROM result WHERE tenant_id = :t"), {"t": LAB}).scalar_one() == 0


def test_the_end_of_a_contract_deletes_the_versions(lab, raw_engine):
    """D2: deleting a lab's rows at the end of its contract covers result_version."""
    gw, tech, _ = lab
    _corrected(gw, tech)
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        purge.end_delete(u, LAB, instruction_id=None)
    with raw_engine.connect() as conn:
        left = conn.execute(sql("SELECT count(*) FROM result_version WHERE tenant_id = :t"), {"t": LAB}).scalar_one()
    assert left == 0


def test_key_rotation_leaves_the_history_readable(lab, raw_engine):
    """C3: rotation seals the earlier versions again under the new key; the history reads the same."""
    gw, tech, bio = lab
    _, rid = _corrected(gw, tech)
    with gw.unit(bio, Purpose.CARE) as u:
        before = [(v.version, v.value_num, str(v.status), v.message_at) for v in u.result_history(LAB, rid)]
    out = gw.rotate_keys(ADMIN, LAB)
    assert out["finished"] == 1
    with raw_engine.connect() as conn:
        versions = conn.execute(
            sql("SELECT DISTINCT key_version FROM result_version WHERE tenant_id = :t"), {"t": LAB}
        ).scalars()
        assert list(versions) == [out["version"]]
    with gw.unit(bio, Purpose.CARE) as u:
        after = [(v.version, v.value_num, str(v.status), v.message_at) for v in u.result_history(LAB, rid)]
    assert after == before and len(after) == 2
