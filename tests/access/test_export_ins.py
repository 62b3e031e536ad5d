"""B1, B3: the INS leaves the store only with a qualified identity. A lab's export records (what
migration packages are made of) and its FHIR Bulk Data export carry the NIR of the qualified
identity and never that of a provisional one, whose local identifier and status go instead."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime

import orjson
import pytest

from labvault.access import Purpose, scan
from labvault.domain.models import Identity, IdentityStatus, Request, Result, Specimen
from labvault.interop.fhir_out import NdjsonWriter
from labvault.migration.export import RESOURCE_TYPES, export_fhir
from tests.conftest import lab_user, make_lab

LAB = "lab-ins"
QUALIFIED_NIR, PROVISIONAL_NIR = "185077512345608", "290036912345678"
AT = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def _nir(body: str) -> str:
    return body + f"{97 - int(body) % 97:02d}"


def _load(gateway) -> None:
    tech = lab_user(gateway, LAB, "technician")
    people = [
        Identity("pq", QUALIFIED_NIR, IdentityStatus.QUALIFIED, "MARTIN", "Anne", date(1970, 1, 2), "F"),
        Identity(
            "pp",
            _nir(PROVISIONAL_NIR[:13]),
            IdentityStatus.PROVISIONAL,
            "DURAND",
            "Luc",
            date(1990, 3, 6),
            "M",
            local_ids=[("urn:oid:1.2.250.1.999.1", "IPP-77")],
        ),
    ]
    with gateway.unit(tech, Purpose.CARE) as u:
        u.add_patients(LAB, people)
        for p in people:
            q = f"q-{p.patient_id}"
            u.add_requests(LAB, [Request(q, p.patient_id, None, AT, accession=f"A-{p.patient_id}")])
            u.add_specimens(LAB, [Specimen(f"s-{q}", q, "SER", AT)])
            u.add_results(
                LAB, [Result(f"r-{q}", q, "2823-3", "Potassium", specimen_id=f"s-{q}", value_num=4.2, unit="mmol/L")]
            )


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_export_records_and_bulk_fhir_carry_only_the_qualified_ins(gateway):
    make_lab(gateway, LAB)
    _load(gateway)
    provisional = _nir(PROVISIONAL_NIR[:13])
    bio = lab_user(gateway, LAB, "biologist")
    plan = scan.ExportPlan(
        tenant=LAB,
        collected_from=date(2024, 1, 1),
        collected_to=date(2024, 12, 31),
        fields={
            "identity": ("nir", "ins_oid", "identity_status", "local_ids", "family_name"),
            "result": ("code", "value_num"),
        },
    )
    with gateway.unit(bio, Purpose.CARE) as u:
        records = list(scan.export(u, plan, lambda kind, i: f"{kind}-{i}"))
    package = b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records)
    assert QUALIFIED_NIR.encode() in package
    assert provisional.encode() not in package and provisional[:13].encode() not in package
    idents = {r["family_name"]: r for r in records if r["record"] == "identity"}
    assert idents["MARTIN"]["nir"] == QUALIFIED_NIR and idents["MARTIN"]["ins_oid"] == "1.2.250.1.213.1.4.8"
    assert idents["DURAND"]["nir"] is None and idents["DURAND"]["ins_oid"] is None
    assert idents["DURAND"]["identity_status"] == "provisional"
    assert [list(x) for x in idents["DURAND"]["local_ids"]] == [["urn:oid:1.2.250.1.999.1", "IPP-77"]]

    streams = {t: io.BytesIO() for t in RESOURCE_TYPES}
    with gateway.unit(bio, Purpose.CARE) as u, NdjsonWriter(streams=streams) as w:
        export_fhir(u, LAB, w)
    bulk = b"".join(s.getvalue() for s in streams.values())
    assert QUALIFIED_NIR.encode() in bulk and provisional.encode() not in bulk and b"IPP-77" in bulk
    patients = [orjson.loads(x) for x in streams["Patient"].getvalue().splitlines()]
    assert sorted(p["extension"][0]["extension"][0]["valueCoding"]["code"] for p in patients) == ["PROV", "QUAL"]
