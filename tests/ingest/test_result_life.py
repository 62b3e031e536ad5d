"""The life of a result: the same order received again updates its request, a correction keeps every
earlier version, versions follow the messages' times and not their arrival, and the request's status
follows its results."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text as sql

from labvault.access import Purpose
from labvault.access.orders import request_status
from labvault.domain.mapped import Mapped
from labvault.domain.models import (
    Identity,
    IdentityStatus,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.ingest import intake
from tests.conftest import lab_user, make_lab

LAB = "lab-a"
T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
F, P, C, X, W, R = (
    ResultStatus.FINAL,
    ResultStatus.PRELIMINARY,
    ResultStatus.CORRECTED,
    ResultStatus.CANCELLED,
    ResultStatus.ENTERED_IN_ERROR,
    ResultStatus.PENDING,
)
_patients = itertools.count(1)


def nir_for(n: int) -> str:
    body = f"{1850775000000 + n:013d}"
    return body + f"{97 - int(body) % 97:02d}"


@dataclass(frozen=True)
class Msg:
    """One message of an order: its control id, its time, and per code (value, status)."""

    control: str
    at: datetime | None
    values: tuple[tuple[str, float | None, ResultStatus], ...]
    filler: str | None = "F-1"
    placer: str | None = "P-1"
    sender: str = "LIS"
    reported: datetime | None = None


def envelope(msg: Msg, nir: str, *, family: str = "DUPONT", fmt: str = "hl7v2") -> intake.Envelope:
    """What a reader gives for ``msg``: ids scoped by the message (as every reader derives them)."""
    scope = f"p{int(nir[:13]) - 1850775000000}-{msg.control}"  # each test patient has its own control ids
    pid, req = f"pat-{scope}", f"req-{scope}"
    ident = Identity(
        patient_id=pid,
        nir=nir,
        identity_status=IdentityStatus.QUALIFIED,
        family_name=family,
        given_names="Jean",
        birth_date=date(1985, 7, 4),
        sex="M",
    )
    request = Request(
        request_id=req,
        patient_id=pid,
        prescriber_id=None,
        requested_at=T0 - timedelta(hours=1),
        reported_at=msg.reported,
        filler_number=msg.filler,
        placer_number=msg.placer,
        sender=msg.sender,
        message_at=msg.at,
    )
    specimen = Specimen(f"spe-{scope}", req, "SER", T0 - timedelta(hours=1))
    results = [
        Result(
            result_id=f"res-{scope}-{code}",
            request_id=req,
            code=code,
            label={"2823-3": "Potassium", "2951-2": "Sodium", "2345-7": "Glucose"}.get(code, code),
            specimen_id=specimen.specimen_id,
            value_num=value,
            value_repr=None if value is None else f"{value:g}",
            unit="mmol/L",
            status=status,
        )
        for code, value, status in msg.values
    ]
    mapped = Mapped(ident, [], [request], [specimen], results, [], [], msg.control, msg.sender)
    return intake.Envelope(intake.message_key(f"{fmt}:{msg.sender}", scope), fmt, [mapped])


def store(gw, who, envelopes: list[intake.Envelope]) -> list[str]:
    with gw.unit(who, Purpose.INGEST) as u:
        return intake.store(u, LAB, envelopes, feed="test")


def state(gw, who, nir: str) -> tuple:
    """What a reader of the lab sees: the patient's requests (status) and, per code, the current
    result and its history (values, statuses, times; never ids or arrival)."""
    with gw.unit(who, Purpose.CARE) as u:
        (patient,) = u.find_patients_by_nir(LAB, nir)
        requests = u.requests_of(LAB, patient.patient_id)
        results = u.results_of(LAB, patient.patient_id)
        histories = {r.code: u.result_history(LAB, r.result_id) for r in results}
    return (
        [(str(q.status), q.filler_number, q.placer_number) for q in requests],
        sorted((r.code, r.value_num, str(r.status), r.version) for r in results),
        {
            code: [(v.version, v.value_num, str(v.status), v.message_at) for v in versions]
            for code, versions in sorted(histories.items())
        },
    )


@pytest.fixture
def lab(gateway):
    make_lab(gateway, LAB)
    return gateway, lab_user(gateway, LAB, "technician")


K, NA = "2823-3", "2951-2"
# An order's messages: first results (one pending), the final report, the same report sent again
# under a new control id, a correction of potassium, a cancellation of sodium.
FIRST = Msg("M0", T0, ((K, 4.0, P), (NA, None, R)))
REPORT = Msg("M1", T0 + timedelta(hours=1), ((K, 4.2, F), (NA, 140.0, F)))
RESEND = Msg("M1b", T0 + timedelta(hours=1), ((K, 4.2, F), (NA, 140.0, F)))
LATER = Msg("M1c", T0 + timedelta(minutes=90), ((K, 4.2, F), (NA, 140.0, F)))  # the same, sent again later
CORRECTION = Msg("M2", T0 + timedelta(hours=2), ((K, 4.5, C),))
CANCEL = Msg("M3", T0 + timedelta(hours=3), ((NA, None, X),))
LIFE = (FIRST, REPORT, RESEND, LATER, CORRECTION, CANCEL)
# The report and its resend at the same time are one version; the same values sent again later are
# one more version, read once with the report (under its latest number).
EXPECTED = (
    [("amended", "F-1", "P-1")],
    [(K, 4.5, "corrected", 4), (NA, None, "cancelled", 4)],
    {
        K: [(1, 4.0, "preliminary", FIRST.at), (3, 4.2, "final", LATER.at), (4, 4.5, "corrected", CORRECTION.at)],
        NA: [(1, None, "pending", FIRST.at), (3, 140.0, "final", LATER.at), (4, None, "cancelled", CANCEL.at)],
    },
)


def test_a_correction_updates_the_order_and_keeps_the_earlier_value(lab):
    """G1: a resend under a new control id and a correction (OBX-11 = C) update the stored request
    (one request, one result per test): the current value is the correction, the earlier ones are
    versions with their status and time; the request is 'corrected'."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    assert store(gw, tech, [envelope(REPORT, nir)]) == ["accepted"]
    assert state(gw, tech, nir)[0] == [("final", "F-1", "P-1")]
    assert store(gw, tech, [envelope(RESEND, nir)]) == ["accepted"]
    assert store(gw, tech, [envelope(CORRECTION, nir)]) == ["accepted"]
    requests, current, history = state(gw, tech, nir)
    assert requests == [("corrected", "F-1", "P-1")]
    assert current == [(K, 4.5, "corrected", 2), (NA, 140.0, "final", 1)]
    assert history[K] == [(1, 4.2, "final", REPORT.at), (2, 4.5, "corrected", CORRECTION.at)]
    assert history[NA] == [(1, 140.0, "final", REPORT.at)]


def test_a_late_older_message_becomes_an_earlier_version(lab):
    """A correction that arrives before the report it corrects stays current: versions follow the
    messages' times, not their arrival."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    store(gw, tech, [envelope(CORRECTION, nir)])
    store(gw, tech, [envelope(REPORT, nir)])
    _, current, history = state(gw, tech, nir)
    assert (K, 4.5, "corrected", 2) in current
    assert history[K] == [(1, 4.2, "final", REPORT.at), (2, 4.5, "corrected", CORRECTION.at)]


def test_the_same_message_twice_is_a_duplicate(lab):
    gw, tech = lab
    nir = nir_for(next(_patients))
    assert store(gw, tech, [envelope(REPORT, nir)]) == ["accepted"]
    assert store(gw, tech, [envelope(REPORT, nir)]) == ["duplicate"]
    assert store(gw, tech, [envelope(REPORT, nir), envelope(REPORT, nir)]) == ["duplicate", "duplicate"]
    _, current, history = state(gw, tech, nir)
    assert [v for _, _, _, v in current] == [1, 1] and all(len(h) == 1 for h in history.values())


def test_another_patients_order_with_the_same_numbers_is_not_touched(lab):
    """Order keys hold the patient: the same filler number for another patient is another order."""
    gw, tech = lab
    a, b = nir_for(next(_patients)), nir_for(next(_patients))
    store(gw, tech, [envelope(REPORT, a)])
    store(gw, tech, [envelope(CORRECTION, b, family="MARTIN")])
    assert state(gw, tech, a)[1] == [(K, 4.2, "final", 1), (NA, 140.0, "final", 1)]
    assert state(gw, tech, b)[1] == [(K, 4.5, "corrected", 1)]


def test_another_patients_message_deriving_the_same_ids_touches_nothing_and_is_stored(lab):
    """B4: a message of another patient whose ids are derived from the same sender and control id
    (a forged or mistaken CSV resend) neither updates the stored order nor is refused for it: its
    records get ids of their own."""
    gw, tech = lab
    a, b = nir_for(next(_patients)), nir_for(next(_patients))
    first = envelope(Msg("A", T0, ((K, 4.2, F),), filler=None, placer=None), a)
    forged = envelope(Msg("A", T0 + timedelta(hours=1), ((K, 9.9, C),), filler=None, placer=None), b, family="MARTIN")
    forged.mapped[0].identity.patient_id = "pat-other"
    for m in forged.mapped:  # the same derived request, specimen and result ids as the first message
        m.requests[0].patient_id = "pat-other"
        m.requests[0].request_id = first.mapped[0].requests[0].request_id
        m.specimens[0].request_id = m.specimens[0].specimen_id = first.mapped[0].specimens[0].specimen_id
        m.specimens[0].request_id = first.mapped[0].requests[0].request_id
        m.results[0].request_id = first.mapped[0].requests[0].request_id
        m.results[0].specimen_id = first.mapped[0].specimens[0].specimen_id
        m.results[0].result_id = first.mapped[0].results[0].result_id
    forged.key = intake.message_key("hl7v2:LIS", "forged")
    assert store(gw, tech, [first]) == ["accepted"]
    assert store(gw, tech, [forged]) == ["accepted"]
    assert state(gw, tech, a)[1] == [(K, 4.2, "final", 1)]
    assert state(gw, tech, b)[1] == [(K, 9.9, "corrected", 1)]


def test_the_placer_number_from_the_same_sender_finds_the_order(lab):
    """Without a filler number, (sender, placer number) finds the order; from another sender it
    does not."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    store(gw, tech, [envelope(Msg("A", T0, ((K, 4.2, F),), filler=None), nir)])
    store(gw, tech, [envelope(Msg("B", T0 + timedelta(hours=1), ((K, 4.4, C),), filler=None), nir)])
    store(gw, tech, [envelope(Msg("C", T0 + timedelta(hours=2), ((K, 9.9, F),), filler=None, sender="OTHER"), nir)])
    requests, current, _ = state(gw, tech, nir)
    assert len(requests) == 2
    assert sorted(current) == [(K, 4.4, "corrected", 2), (K, 9.9, "final", 1)]


def test_new_observations_are_added_and_request_fields_follow_the_latest_message(lab):
    gw, tech = lab
    nir = nir_for(next(_patients))
    late = T0 + timedelta(hours=5)
    store(gw, tech, [envelope(Msg("A", T0 + timedelta(hours=2), ((K, 4.2, F),), reported=late), nir)])
    store(gw, tech, [envelope(Msg("B", T0 + timedelta(hours=1), (("2345-7", 5.1, F),), reported=T0), nir)])
    with gw.unit(tech, Purpose.CARE) as u:
        (patient,) = u.find_patients_by_nir(LAB, nir)
        (req,) = u.requests_of(LAB, patient.patient_id)
        results = u.results_of(LAB, patient.patient_id)
    assert req.reported_at == late  # the older message does not take the request back
    assert sorted(r.code for r in results) == ["2345-7", K]
    assert req.status is RequestStatus.AMENDED  # by the messages' times, potassium came after a final glucose


def test_two_messages_of_one_order_in_one_group(lab):
    """Group commit: messages of the same order stored in one call converge like separate ones."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    assert (
        store(gw, tech, [envelope(m, nir) for m in (CANCEL, CORRECTION, LATER, REPORT, FIRST, RESEND)])
        == ["accepted"] * 6
    )
    assert state(gw, tech, nir) == EXPECTED


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=st.permutations(LIFE), cuts=st.sets(st.integers(1, len(LIFE) - 1), max_size=2))
def test_any_order_of_arrival_converges(lab, order, cuts):
    """Property: the messages of an order (first results, the report, its resend under a new control
    id, the same sent again later, a correction, a cancellation), in any order of arrival and any
    grouping into commits, leave the same current values and statuses, the same request status and
    the same history."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    bounds = [0, *sorted(cuts), len(order)]
    for lo, hi in itertools.pairwise(bounds):
        assert store(gw, tech, [envelope(m, nir) for m in order[lo:hi]]) == ["accepted"] * (hi - lo)
    assert state(gw, tech, nir) == EXPECTED


def _h(*steps: tuple[int, ResultStatus, float | None]) -> list[Result]:
    return [
        Result(f"r{k}", "q", "c", "c", status=s, value_num=v, message_at=T0 + timedelta(hours=h))
        for k, (h, s, v) in enumerate(steps)
    ]


@pytest.mark.parametrize(
    ("histories", "expected"),
    [
        ([], "registered"),
        ([_h((0, R, None))], "registered"),
        ([_h((0, R, None)), _h((0, P, 1.0))], "partial"),
        ([_h((0, F, 1.0)), _h((0, R, None))], "partial"),
        ([_h((0, F, 1.0)), _h((0, F, 2.0))], "final"),
        ([_h((0, F, 1.0), (1, C, 1.5)), _h((0, F, 2.0))], "corrected"),
        ([_h((0, P, 1.0), (1, F, 1.5)), _h((0, F, 2.0))], "final"),  # preliminary then final: no correction
        ([_h((0, F, 1.0)), _h((2, F, 2.0))], "amended"),  # added after the request was final
        ([_h((0, F, 1.0)), _h((0, F, 2.0), (1, X, None))], "amended"),  # cancelled after final
        ([_h((0, X, None)), _h((0, W, None))], "cancelled"),
        ([_h((0, F, 1.0), (1, W, None))], "cancelled"),
    ],
)
def test_request_status_follows_the_results(histories, expected):
    assert request_status(histories) == expected


def test_versions_are_sealed(lab, raw_engine):
    """C1: earlier values are encrypted like the current one: no value in clear in result_version."""
    gw, tech = lab
    nir = nir_for(next(_patients))
    store(gw, tech, [envelope(Msg("A", T0, ((K, 7.123456, F),)), nir)])
    store(gw, tech, [envelope(Msg("B", T0 + timedelta(hours=1), ((K, 4.5, C),)), nir)])
    with raw_engine.connect() as conn:
        rows = conn.execute(sql("SELECT observation_enc, message_key FROM result_version")).all()
    assert len(rows) == 1
    blob = bytes(rows[0][0])
    assert b"7.123456" not in blob and b"Potassium" not in blob and b"2823-3" not in blob
    said_by = intake.message_key("hl7v2:LIS", f"p{int(nir[:13]) - 1850775000000}-A")
    assert rows[0][1] == said_by  # the message that said it


def _oru(control: str, stamp: str, potassium: str, status: str) -> bytes:
    """An ORU^R01 of one order (placer P-77, filler F-77), its control id and time its own."""
    lines = [
        f"MSH|^~\\&|LIS|LAB1^1.2.3^ISO|GW|HOSP|{stamp}+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{nir_for(7777)}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||DUPONT^Jean^^^^^L||19850704|M",
        "ORC|RE|P-77|F-77||||||||||10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
        f"OBR|1|P-77|F-77|24326-1^Electrolytes^LN|||20240101083000|||||||||||||||{stamp}+0100||CH|F",
        f"OBX|1|NM|2823-3^Potassium^LN||{potassium}|mmol/L^^UCUM|3.5-5.1|N|||{status}",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|135-145|N|||F",
    ]
    return ("\r".join(lines) + "\r").encode()


def test_hl7_resend_and_correction_update_one_request(lab):
    """HL7 v2: the report, its resend under a new MSH-10, and a correction (OBX-11 = C) arriving
    first: one request, potassium corrected with the report's value as version 1."""
    from labvault.ingest import service as ingest
    from labvault.ingest.service import Ingestor, Summary

    gw, tech = lab
    report = _oru("R1", "20240101100000", "4.2", "F")
    (piece,) = ingest.read(report, file="r.hl7")
    if piece.ready().mapped[0].requests[0].filler_number is None:
        pytest.skip("the HL7 v2 reader does not give order numbers (ORC-3/OBR-3) yet")
    for data in (_oru("C1", "20240101120000", "4.6", "C"), report, _oru("R2", "20240101100000", "4.2", "F")):
        summary = Summary("x.hl7", "hl7v2")
        Ingestor(gw, tech, LAB, group=1).ingest_pieces(ingest.read(data, file="x.hl7"), summary)
        assert summary.accepted == 1, summary.reasons
    with gw.unit(tech, Purpose.CARE) as u:
        (patient,) = u.find_patients_by_nir(LAB, nir_for(7777))
        (req,) = u.requests_of(LAB, patient.patient_id)
        current = {r.code: r for r in u.results_of(LAB, patient.patient_id)}
        history = [(v.value_num, str(v.status)) for v in u.result_history(LAB, current[K].result_id)]
        sodium = [(v.value_num, str(v.status)) for v in u.result_history(LAB, current[NA].result_id)]
    assert req.status is RequestStatus.CORRECTED
    assert (current[K].value_num, str(current[K].status)) == (4.6, "corrected")
    assert history == [(4.2, "final"), (4.6, "corrected")]
    assert {v for v, _ in sodium} == {140.0}  # the correction's report time is new: not the value
