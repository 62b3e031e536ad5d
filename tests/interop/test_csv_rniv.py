"""CSV reader: identities per the identity-vigilance rules (INS optional, local identifiers, status,
given names), numbers as written with their comparator and unit system, every result status, order
numbers; and a ``CsvWriter`` export of an identity that is not qualified reads back."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime

import pytest

from labvault.domain.identifiers import OID_NIR
from labvault.domain.models import Identity, IdentityStatus, Request, Result, ResultStatus
from labvault.interop import csv_in
from labvault.interop._common import UCUM
from labvault.interop.writers import CSV_FIELDS, CsvWriter, PatientReport
from tests.interop.messages import NIR

BASE = {
    "patient.nir": "",
    "patient.family_name": "MARTIN",
    "patient.given_names": "Anne Marie Louise",
    "patient.birth_date": "1980-02-03",
    "patient.sex": "F",
    "request.accession": "ACC-1",
    "request.requested_at": "2024-03-01T08:00",
    "result.code": "2345-7",
    "result.label": "Glucose",
    "result.value_num": "5.2",
}


def table(*rows: dict[str, str], sep: str = ",") -> bytes:
    head = list(dict.fromkeys(k for r in rows for k in (BASE | r)))
    out = io.StringIO(newline="")
    w = csv.writer(out, delimiter=sep, lineterminator="\r\n")
    w.writerow(head)
    w.writerows([(BASE | r).get(h, "") for h in head] for r in rows)
    return out.getvalue().encode()


def one(*rows: dict[str, str], sep: str = ","):
    [msg] = csv_in.read(table(*rows, sep=sep), file="t.csv")
    assert msg.reason is None, msg.reason
    assert msg.mapped is not None
    return msg.mapped


def refused(*rows: dict[str, str]) -> str:
    [msg] = csv_in.read(table(*rows), file="t.csv")
    assert msg.mapped is None and msg.reason is not None
    return msg.reason


# ------------------------------------------------------------------------------------------ identity


def test_no_ins_with_a_local_identifier_in_two_columns():
    """M2: INS cell empty: accepted, nir None, provisional; the IPP with its system; given names whole."""
    m = one({"patient.local_id": "IPP-42", "patient.local_id_system": "1.2.250.1.999.1"})
    i = m.identity
    assert (i.nir, i.identity_status, i.local_ids) == (
        None,
        IdentityStatus.PROVISIONAL,
        [("1.2.250.1.999.1", "IPP-42")],
    )
    assert (i.family_name, i.given_names, i.birth_date, i.sex) == ("MARTIN", "Anne Marie Louise", date(1980, 2, 3), "F")


def test_local_ids_as_the_writer_writes_them_and_given_names_used():
    ids = json.dumps([["urn:oid:1.2.3", "A-1"], ["http://hopital.fr/ipp", "B-2"]])
    m = one({"patient.local_ids": ids, "patient.first_given_name": "Anne", "patient.used_given_name": "Marie"})
    i = m.identity
    assert i.local_ids == [("urn:oid:1.2.3", "A-1"), ("http://hopital.fr/ipp", "B-2")]
    assert (i.first_given_name, i.used_given_name) == ("Anne", "Marie")


@pytest.mark.parametrize(
    ("cells", "column", "says"),
    [
        ({"patient.local_id": "IPP-1", "patient.local_id_system": ""}, "patient.local_id_system", "required"),
        ({"patient.local_ids": "[1, 2]"}, "patient.local_ids", "not a JSON list"),
        ({"patient.identity_status": "sure"}, "patient.identity_status", "not provisional, recovered"),
        ({"result.status": "unknown"}, "result.status", "not pending, preliminary"),
        ({"result.value_num": "<<1"}, "result.value_num", "not a number"),
    ],
)
def test_refusals_name_the_column_never_the_value(cells, column, says):
    reason = refused(cells)
    assert f"row 2, column {column}: " in reason and says in reason
    for v in cells.values():
        if len(v) > 3:
            assert v not in reason


@pytest.mark.parametrize(
    ("nir", "status", "expected"),
    [
        (NIR, "qualified", IdentityStatus.QUALIFIED),
        (NIR, "recovered", IdentityStatus.RECOVERED),
        (NIR, "validated", IdentityStatus.VALIDATED),
        ("", "qualified", IdentityStatus.VALIDATED),
        ("", "recovered", IdentityStatus.PROVISIONAL),
        ("", "validated", IdentityStatus.VALIDATED),
        ("", "", IdentityStatus.PROVISIONAL),
    ],
)
def test_identity_status_downgraded_without_ins(nir, status, expected):
    """M2: only an identity with an INS may be qualified or recovered."""
    i = one({"patient.nir": nir, "patient.identity_status": status}).identity
    assert (i.nir, i.identity_status) == (nir or None, expected)


def test_patients_without_ins_sharing_an_accession_are_two_requests():
    a = {"patient.local_id": "IPP-1", "patient.local_id_system": "urn:x"}
    b = {"patient.local_id": "IPP-2", "patient.local_id_system": "urn:x", "patient.family_name": "DURAND"}
    msgs = csv_in.read(table(a, b), file="t.csv")
    assert [m.reason for m in msgs] == [None, None]
    assert msgs[0].mapped is not None and msgs[1].mapped is not None
    assert msgs[0].mapped.requests[0].request_id != msgs[1].mapped.requests[0].request_id


# ------------------------------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("cell", "num", "written", "comparator"),
    [
        ("105600", 105600.0, "105600", None),
        ("12,50", 12.5, "12,50", None),
        ("12.50", 12.5, "12.50", None),
        ("<0,5", 0.5, "0,5", "<"),
        (">= 90", 90.0, "90", ">="),
    ],
)
def test_numbers_as_written(cell, num, written, comparator):
    [r] = one({"result.value_num": cell}, sep=";").results
    assert (r.value_num, r.value_repr, r.comparator) == (num, written, comparator)


def test_comparator_column_and_reference_bounds_with_a_comma():
    cells = {"result.value_num": "3", "result.comparator": ">", "result.ref_low": "3,9", "result.ref_high": "6,1"}
    [r] = one(cells, sep=";").results
    assert (r.value_num, r.comparator, r.ref_low, r.ref_high) == (3.0, ">", 3.9, 6.1)


@pytest.mark.parametrize(
    ("unit", "claimed", "system"),
    [
        ("mmol/L", "", UCUM),
        ("UI/l", "", None),
        ("UI/l", UCUM, None),
        ("10*9/L", "", UCUM),
        ("X", "urn:lab:u", "urn:lab:u"),
    ],
)
def test_unit_system(unit, claimed, system):
    [r] = one({"result.unit": unit, "result.unit_system": claimed}).results
    assert (r.unit, r.unit_system) == (unit, system)


@pytest.mark.parametrize("status", list(ResultStatus))
def test_every_result_status(status):
    value = "" if status is ResultStatus.PENDING else "5.2"
    [r] = one({"result.status": status.value, "result.value_num": value, "result.unit": "mmol/L"}).results
    assert r.status is status
    if status is ResultStatus.PENDING:
        assert (r.value_num, r.value_repr, r.unit) == (None, None, "mmol/L")


# ------------------------------------------------------------------------------------------ orders


def test_accession_is_the_filler_number_and_order_columns_are_read():
    m = one({})
    [req] = m.requests
    assert (req.accession, req.filler_number, req.placer_number, req.sender) == ("ACC-1", "ACC-1", None, None)
    cells = {
        "request.placer_number": "P-1",
        "request.filler_number": "F-1",
        "request.sender": "LIS-A",
        "request.message_at": "2024-03-02T10:00",
        "result.observation_key": "2345-7/1",
        "result.message_at": "2024-03-02T10:05",
    }
    m = one(cells)
    [req] = m.requests
    assert (req.placer_number, req.filler_number, req.sender) == ("P-1", "F-1", "LIS-A")
    assert req.message_at == datetime(2024, 3, 2, 10, 0)  # naive: ingest reads it in the lab's zone
    [r] = m.results
    assert (r.observation_key, r.message_at) == ("2345-7/1", datetime(2024, 3, 2, 10, 5))


# ------------------------------------------------------------------------------------------ round trip


@pytest.mark.parametrize("status", list(IdentityStatus))
def test_writer_export_reads_back(status):
    """M2: a CsvWriter export (the INS written only for a qualified identity) reads back with the
    identity's status (a recovered one, its INS not written, provisional), its IPP, names, and the
    value as written."""
    ident = Identity(
        "p1",
        NIR,
        status,
        "MARTIN",
        "Anne Marie",
        date(1980, 2, 3),
        "F",
        birth_name="DUPONT",
        first_given_name="Anne",
        used_given_name="Marie",
        local_ids=[("1.2.250.1.999", "IPP-5")],
    )
    req = Request("q1", "p1", None, datetime(2024, 3, 1, 8), accession="A-9")
    res = Result("r1", "q1", "2345-7", "Glucose", value_num=12.5, value_repr="12.50", comparator=">", unit="mmol/L")
    buf = io.BytesIO()
    with CsvWriter(buf, CSV_FIELDS) as w:
        w.write_one(PatientReport(ident, [req], [], [res]))
    [msg] = csv_in.read(buf.getvalue(), file="export.csv")
    assert msg.reason is None and msg.mapped is not None
    i = msg.mapped.identity
    assert i.nir == (NIR if status is IdentityStatus.QUALIFIED else None)
    assert i.ins_oid == OID_NIR
    assert i.identity_status is (IdentityStatus.PROVISIONAL if status is IdentityStatus.RECOVERED else status)
    assert (i.local_ids, i.birth_name, i.given_names, i.first_given_name, i.used_given_name) == (
        [("1.2.250.1.999", "IPP-5")],
        "DUPONT",
        "Anne Marie",
        "Anne",
        "Marie",
    )
    [r] = msg.mapped.results
    assert (r.value_num, r.value_repr, r.comparator, r.unit, r.unit_system) == (12.5, "12.50", ">", "mmol/L", UCUM)
