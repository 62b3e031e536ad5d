"""One lab order written as HL7 v2, HPRIM, FHIR and CSV (by the writers of ``labvault.interop``)
and read back by each reader gives the same request, specimen and result ids: the ids of an order's
records are derived from its accession number, not from the message that carried it."""

from __future__ import annotations

import io
import json
from datetime import date, datetime

from labvault.domain.models import LOINC, Identity, IdentityStatus, Prescriber, Request, Result, ResultStatus, Specimen
from labvault.interop import csv_in, fhir, fhir_out, hl7v2, hprim
from labvault.interop.hl7v2_out import oru_r01
from labvault.interop.writers import CSV_FIELDS, CsvWriter, HprimWriter, PatientReport
from tests.interop.messages import NIR

IDENTITY = Identity(
    patient_id="p" * 32,
    nir=NIR,
    identity_status=IdentityStatus.PROVISIONAL,
    family_name="DUPONT",
    given_names="Jean",
    birth_date=date(1985, 7, 4),
    sex="M",
)
PRESCRIBER = Prescriber(prescriber_id="d" * 32, rpps="10001234567", family_name="HOUSE", given_name="Greg")
AT = datetime(2024, 1, 1, 8, 30)


def _order(accession: str, k: int) -> tuple[Request, Specimen, list[Result]]:
    rid = f"{k}" * 32
    request = Request(
        request_id=rid,
        patient_id=IDENTITY.patient_id,
        prescriber_id=PRESCRIBER.prescriber_id,
        requested_at=AT,
        accession=accession,
    )
    specimen = Specimen(specimen_id=f"s{k}" * 16, request_id=rid, type="SER", collected_at=AT)

    def result(n: int, code: str, value: float) -> Result:
        return Result(
            result_id=f"r{k}{n}".ljust(32, "x"),
            request_id=rid,
            code=code,
            label="",
            code_system=LOINC,
            specimen_id=specimen.specimen_id,
            value_num=value,
            unit="mmol/L",
            status=ResultStatus.FINAL,
        )

    # the same code twice: a repeated measure is a result of its own
    return request, specimen, [result(1, "2823-3", 4.2), result(2, "2951-2", 140.0), result(3, "2823-3", 4.4)]


def _report(accessions: list[str]) -> PatientReport:
    parts = [_order(acc, k) for k, acc in enumerate(accessions, 1)]
    return PatientReport(
        IDENTITY, [p[0] for p in parts], [p[1] for p in parts], [r for p in parts for r in p[2]], [PRESCRIBER]
    )


def _as_hl7(report: PatientReport):
    data = oru_r01(
        report.identity,
        report.requests,
        report.specimens,
        report.results,
        {PRESCRIBER.prescriber_id: PRESCRIBER},
        sending_facility="LAB1",
        control_id="MSG-1",
    )
    return [hl7v2.to_domain(hl7v2.parse(data))]


def _as_hprim(report: PatientReport):
    out = io.BytesIO()
    with HprimWriter(out, sender="LAB01", created_at=AT) as w:
        w.write_one(report)
    return hprim.to_domain(hprim.parse(out.getvalue()))


def _as_fhir(report: PatientReport):
    entries = [fhir_out.patient(report.identity, "lab-a"), fhir_out.practitioner(PRESCRIBER)]
    for r in report.requests:
        entries.append(fhir_out.service_request(r))
        entries.append(
            fhir_out.diagnostic_report(r, [x.result_id for x in report.results if x.request_id == r.request_id])
        )
    entries += [fhir_out.specimen(s) for s in report.specimens]
    entries += [fhir_out.observation(x, report.identity.patient_id) for x in report.results]
    bundle = {"resourceType": "Bundle", "id": "b-1", "type": "collection", "entry": [{"resource": e} for e in entries]}
    return fhir.read(json.dumps(bundle).encode())


def _as_csv(report: PatientReport):
    out = io.BytesIO()
    with CsvWriter(out, [f for f in CSV_FIELDS if not f.endswith("_id") or f == "request.request_id"]) as w:
        w.write_one(report)
    messages = csv_in.read(out.getvalue(), file="orders.csv")
    assert all(m.reason is None for m in messages), [m.reason for m in messages]
    return [m.mapped for m in messages]


READERS = {"hl7v2": _as_hl7, "hprim": _as_hprim, "fhir": _as_fhir, "csv": _as_csv}


def _ids(mapped) -> tuple[list[str], list[str], list[tuple[str, str, str]]]:
    requests = [r for m in mapped for r in m.requests]
    specimens = [s for m in mapped for s in m.specimens]
    results = sorted((r.code, r.result_id, r.request_id) for m in mapped for r in m.results)
    return [r.request_id for r in requests], [s.specimen_id for s in specimens], results


def test_one_order_has_the_same_ids_in_every_format():
    """The request, specimen and result ids of one order do not depend on the format it came in."""
    report = _report(["ACC-1"])
    got = {name: _ids(read(report)) for name, read in READERS.items()}
    assert len({json.dumps(v) for v in got.values()}) == 1, got
    requests, specimens, results = got["hl7v2"]
    assert len(requests) == 1 and len(specimens) == 1 and len({r[1] for r in results}) == 3


def test_orders_sharing_a_number_are_told_apart_the_same_way_in_every_format():
    """Two orders of one patient with one accession number (several OBR of one lab order): the n-th
    of them has the same ids in every format, and no id is given twice."""
    report = _report(["ACC-7", "ACC-7"])
    got = {name: _ids(read(report)) for name, read in READERS.items()}
    assert len({json.dumps(v) for v in got.values()}) == 1, got
    requests, specimens, results = got["hl7v2"]
    assert len(set(requests)) == 2 and len(set(specimens)) == 2 and len({r[1] for r in results}) == 6


def test_other_orders_and_other_messages_give_other_ids():
    """Another accession number gives other ids; the same order in another message (another
    control id, another sender) gives the same."""
    one, other = _ids(_as_hl7(_report(["ACC-1"]))), _ids(_as_hl7(_report(["ACC-2"])))
    assert not set(one[0]) & set(other[0]) and not {r[1] for r in one[2]} & {r[1] for r in other[2]}
    report = _report(["ACC-1"])
    data = oru_r01(
        report.identity,
        report.requests,
        report.specimens,
        report.results,
        {PRESCRIBER.prescriber_id: PRESCRIBER},
        sending_facility="LAB2",
        control_id="MSG-99",
    )
    assert _ids([hl7v2.to_domain(hl7v2.parse(data))]) == one


def test_an_order_stored_once_is_not_stored_again_from_another_format(gateway):
    """The same order ingested as HL7 v2, then as CSV, into one lab: the first is stored, the
    second holds records already stored and is refused whole (kept in the quarantine); the lab
    has the order once."""
    from labvault.access import Purpose
    from labvault.ingest import service as ingest
    from tests.conftest import ADMIN, lab_user, make_lab

    make_lab(gateway, "lab-a")
    who = lab_user(gateway, "lab-a", "technician")
    report = _report(["ACC-1"])
    hl7 = oru_r01(
        report.identity,
        report.requests,
        report.specimens,
        report.results,
        {PRESCRIBER.prescriber_id: PRESCRIBER},
        sending_facility="LAB1",
        control_id="MSG-1",
    )
    out = io.BytesIO()
    with CsvWriter(out, [f for f in CSV_FIELDS if not f.endswith("_id") or f == "request.request_id"]) as w:
        w.write_one(report)
    got = []
    for data, name in ((hl7, "orders.hl7"), (out.getvalue(), "orders.csv")):
        s = ingest.Summary(name, "")
        ingest.Ingestor(gateway, who, "lab-a").ingest_pieces(ingest.read(data, file=name), s)
        got.append((s.accepted, s.rejected, len(s.quarantine_ids)))
    assert got == [(1, 0, 0), (0, 1, 1)]
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        counts = u.counts("lab-a")
    assert (counts["request"], counts["specimen"], counts["result"]) == (1, 1, 3)
