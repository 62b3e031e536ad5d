"""The synthetic lab generator: determinism, valid French identifiers, coherent medical data."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from labvault.domain.models import (
    LOINC,
    IdentityStatus,
    Result,
    ResultStatus,
    Sensitivity,
)
from labvault.domain.sensitivity import sensitivity_of
from labvault.synth import LabGenerator, PatientRecord, field_count, results_stream

UCUM_UNITS = {
    "10*9/L",
    "10*12/L",
    "g/dL",
    "%",
    "fL",
    "g/L",
    "mmol/L",
    "mg/L",
    "mU/L",
    "ug/L",
    "ng/mL",
    "U/mL",
    "[IU]/L",
    "m[IU]/mL",
    "1",
}

URINE_CODES = {"5811-5", "2888-6", "14957-5", "2106-3"}

_GEN = LabGenerator("lab-test", 20240611)


@pytest.fixture(scope="module")
def sample() -> list[PatientRecord]:
    return list(_GEN.patients(500))


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


# --- determinism ------------------------------------------------------------------------------


def test_same_tenant_and_seed_give_identical_records() -> None:
    a = LabGenerator("lab-x", 42)
    b = LabGenerator("lab-x", 42)
    assert a.prescribers == b.prescribers
    first = [a.patient(i) for i in range(25)]
    # other order, other calls in between: a record depends on (tenant, seed, index) only
    assert b.patient(17) == first[17]
    b.patient(999)
    assert [b.patient(i) for i in reversed(range(25))] == first[::-1]
    assert list(b.patients(5, start=10)) == first[10:15]


def test_different_seed_or_tenant_give_different_people() -> None:
    base = LabGenerator("lab-x", 42)
    other_seed = LabGenerator("lab-x", 43)
    other_tenant = LabGenerator("lab-y", 42)
    for other in (other_seed, other_tenant):
        assert other.prescribers != base.prescribers
        pairs = [(base.patient(i), other.patient(i)) for i in range(20)]
        assert all(p != q for p, q in pairs)
        assert all(p.identity.patient_id != q.identity.patient_id for p, q in pairs)
        assert sum(p.identity.nir != q.identity.nir for p, q in pairs) == 20
        assert sum(p.identity.family_name != q.identity.family_name for p, q in pairs) >= 15


def test_patients_yields_count_records_from_start() -> None:
    got = list(_GEN.patients(3, start=7))
    assert len(got) == 3
    assert [p.identity.patient_id for p in got] == [_GEN.patient(i).identity.patient_id for i in (7, 8, 9)]


# --- identities -------------------------------------------------------------------------------


def _assert_nir_consistent(ident) -> None:
    nir = ident.nir
    assert stdnum_nir.is_valid(nir), nir
    assert len(nir) == 15
    assert nir[0] == {"M": "1", "F": "2"}[ident.sex]
    assert nir[1:3] == f"{ident.birth_date.year % 100:02d}"
    assert nir[3:5] == f"{ident.birth_date.month:02d}"
    bp = ident.birthplace_code
    assert bp is not None and len(bp) == 5
    if bp[:2] in ("2A", "2B") and ident.birth_date.year < 1976:
        assert nir[5:10] == "20" + bp[2:]  # Corsica was department 20 before 1976
    else:
        assert nir[5:10] == bp
    assert 1 <= int(nir[10:13]) <= 999


def test_nir_valid_and_consistent_with_sex_birth_and_birthplace(sample) -> None:
    for rec in sample:
        _assert_nir_consistent(rec.identity)
    places = Counter(rec.identity.birthplace_code[:2] for rec in sample)
    assert len(places) >= 15
    assert places["99"] > 0  # some born abroad


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**12))
def test_nir_valid_for_any_index(index: int) -> None:
    _assert_nir_consistent(_GEN.patient(index).identity)


def test_nir_key_rejects_a_changed_digit(sample) -> None:
    nir = sample[0].identity.nir
    bad = nir[:12] + str((int(nir[12]) + 1) % 10) + nir[13:]
    assert not stdnum_nir.is_valid(bad)


def test_identity_fields(sample) -> None:
    statuses = Counter(rec.identity.identity_status for rec in sample)
    assert statuses[IdentityStatus.QUALIFIED] > 0.8 * len(sample)
    assert statuses[IdentityStatus.PROVISIONAL] > 0
    sexes = Counter(rec.identity.sex for rec in sample)
    assert set(sexes) == {"M", "F"}
    for rec in sample:
        ident = rec.identity
        assert date(1930, 1, 1) <= ident.birth_date <= date(2018, 12, 31)
        assert ident.family_name and ident.given_names
        if ident.birth_name is not None:
            assert ident.sex == "F"
        if ident.email is not None:
            assert "@" in ident.email and " " not in ident.email
        if ident.address is not None:
            assert "\n" not in ident.address
        assert ident.ins_oid in ("1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9")
    assert any(" " in rec.identity.given_names for rec in sample)  # some have two given names
    assert any(rec.identity.birth_name for rec in sample)


# --- prescribers ------------------------------------------------------------------------------


def test_prescribers_have_valid_rpps() -> None:
    assert len(_GEN.prescribers) == 40
    for p in _GEN.prescribers:
        assert len(p.rpps) == 11 and p.rpps.isdigit() and p.rpps.startswith("10")
        assert luhn.is_valid(p.rpps), p.rpps
        assert p.family_name and p.given_name
    assert len({p.rpps for p in _GEN.prescribers}) == 40
    assert len({p.prescriber_id for p in _GEN.prescribers}) == 40
    assert len(LabGenerator("lab-test", 1, prescribers=5).prescribers) == 5


def test_rpps_check_rejects_a_changed_digit() -> None:
    rpps = _GEN.prescribers[0].rpps
    assert not luhn.is_valid(rpps[:-1] + str((int(rpps[-1]) + 1) % 10))


def test_no_prescribers_means_no_prescriber_ids() -> None:
    g = LabGenerator("lab-test", 1, prescribers=0)
    assert g.prescribers == []
    assert all(r.prescriber_id is None for i in range(20) for r in g.patient(i).requests)


# --- medical data -----------------------------------------------------------------------------


def _expected_flag(r: Result) -> str | None:
    if r.value_num is not None:
        if r.ref_low is not None and r.value_num < r.ref_low:
            return "L"
        if r.ref_high is not None and r.value_num > r.ref_high:
            return "H"
        return "N"
    if r.value_text == "Négatif":
        return "NEG"
    if r.value_text == "Positif":
        return "POS"
    return r.flag  # free text: checked below


def test_flags_consistent_with_values_and_ranges(sample) -> None:
    flags: Counter[str | None] = Counter()
    for rec in sample:
        for r in rec.results:
            flags[r.flag] += 1
            assert r.flag == _expected_flag(r), r
            if r.value_num is None and r.value_text not in ("Négatif", "Positif"):
                if r.sensitivity is Sensitivity.GENETICS:
                    assert r.flag in ("N", "A") and r.value_text
                else:  # LDL not computable when triglycerides are high
                    assert r.code == "13457-7" and r.flag is None and r.value_text
    assert flags["N"] > flags["H"] > 0
    assert flags["L"] > 0 and flags["NEG"] > flags["POS"] > 0


def test_results_are_well_formed(sample) -> None:
    statuses: Counter[ResultStatus] = Counter()
    comments = 0
    total = 0
    for rec in sample:
        for r in rec.results:
            total += 1
            statuses[r.status] += 1
            comments += r.comment is not None
            assert r.code_system == LOINC and r.code and r.label
            assert r.sensitivity is sensitivity_of(r.code_system, r.code)
            assert (r.value_num is None) != (r.value_text is None)
            if r.value_num is not None:
                assert r.unit in UCUM_UNITS, r.unit
                assert r.ref_low is not None or r.ref_high is not None
            if r.status is ResultStatus.PRELIMINARY:
                assert r.validated_at is None and r.validated_by is None
            else:
                assert r.validated_at is not None and r.validated_by.startswith("Dr ")
    assert statuses[ResultStatus.FINAL] > 0.9 * total
    assert statuses[ResultStatus.PRELIMINARY] > 0 and statuses[ResultStatus.CORRECTED] > 0
    assert 0.02 < comments / total < 0.10


def test_links_and_dates_are_coherent(sample) -> None:
    prescriber_ids = {p.prescriber_id for p in _GEN.prescribers}
    for rec in sample:
        ident = rec.identity
        assert 1 <= len(rec.requests) <= 4
        specimens = {s.specimen_id: s for s in rec.specimens}
        requests = {q.request_id: q for q in rec.requests}
        for q in rec.requests:
            assert q.patient_id == ident.patient_id
            assert q.prescriber_id is None or q.prescriber_id in prescriber_ids
            own = [s for s in rec.specimens if s.request_id == q.request_id]
            assert len(own) in (1, 2)
            assert own[0].type in ("SER", "BLD")
            if len(own) == 2:
                assert own[1].type == "UR"
            validated = [
                r.validated_at for r in rec.results if r.request_id == q.request_id and r.validated_at is not None
            ]
            assert q.reported_at == (max(validated) if validated else None)
        for s in rec.specimens:
            assert s.request_id in requests
            assert datetime(2015, 1, 1) <= s.collected_at <= datetime(2020, 12, 31, 23, 59)
            assert s.collected_at.date() > ident.birth_date
            assert s.received_at >= s.collected_at
            assert requests[s.request_id].requested_at <= s.collected_at
        for r in rec.results:
            spec = specimens[r.specimen_id]
            assert spec.request_id == r.request_id
            assert (spec.type == "UR") == (r.code in URINE_CODES)
            if r.validated_at is not None:
                assert r.validated_at > spec.collected_at


def test_ids_unique_across_patients(sample) -> None:
    ids: list[str] = []
    for rec in sample:
        ids.append(rec.identity.patient_id)
        ids += [q.request_id for q in rec.requests]
        ids += [s.specimen_id for s in rec.specimens]
        ids += [r.result_id for r in rec.results]
    assert all(isinstance(i, str) and len(i) == 32 for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({rec.identity.nir for rec in sample}) == len(sample)


def test_sensitive_categories_present_and_plausible() -> None:
    seen: Counter[Sensitivity] = Counter()
    for rec in _GEN.patients(300):
        ident = rec.identity
        collected = {s.specimen_id: s.collected_at.date() for s in rec.specimens}
        for r in rec.results:
            seen[r.sensitivity] += 1
            age = _age(ident.birth_date, collected[r.specimen_id])
            if r.sensitivity is Sensitivity.PREGNANCY:
                assert ident.sex == "F" and 15 <= age <= 50
            elif r.sensitivity is Sensitivity.ONCOLOGY:
                assert age >= 50
                if r.code == "2857-1":  # PSA
                    assert ident.sex == "M"
    for category in (
        Sensitivity.HIV,
        Sensitivity.VIRAL_HEPATITIS,
        Sensitivity.PREGNANCY,
        Sensitivity.ONCOLOGY,
        Sensitivity.GENETICS,
    ):
        assert seen[category] > 0, category
    assert seen[Sensitivity.OTHER] > 0.85 * sum(seen.values())


def test_size_per_patient(sample) -> None:
    results = statistics.mean(len(rec.results) for rec in sample)
    fields = statistics.mean(field_count(rec) for rec in sample)
    assert 20 <= results <= 40
    # ~15 non-None fields per result, so 20-40 results make several hundred fields.
    assert 300 <= fields <= 650


def test_field_count_counts_non_none_fields(sample) -> None:
    rec = sample[0]
    expected = sum(
        getattr(obj, f.name) is not None
        for obj in (rec.identity, *rec.requests, *rec.specimens, *rec.results)
        for f in dataclasses.fields(obj)
    )
    assert field_count(rec) == expected
    empty = PatientRecord(identity=rec.identity, requests=[], specimens=[], results=[])
    assert field_count(empty) == sum(
        getattr(rec.identity, f.name) is not None for f in dataclasses.fields(rec.identity)
    )


# --- fast stream ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 11, 12, 13, 1000, 30_000])
def test_results_stream_yields_exactly_n(n: int) -> None:
    got = list(results_stream("lab-test", 3, n))
    assert len(got) == n
    assert all(type(r) is Result for r in got)
    assert len({r.result_id for r in got}) == n


def test_results_stream_is_deterministic_grouped_and_coherent() -> None:
    a = list(results_stream("lab-test", 3, 20_000))
    assert a == list(results_stream("lab-test", 3, 20_000))
    assert a[:100] == list(results_stream("lab-test", 3, 100))
    other = list(results_stream("lab-other", 3, 100))
    assert {r.result_id for r in other}.isdisjoint(r.result_id for r in a)
    per_request = Counter(r.request_id for r in a)
    assert 9 <= len(a) / len(per_request) <= 15
    categories = {r.sensitivity for r in a}
    assert {Sensitivity.HIV, Sensitivity.VIRAL_HEPATITIS, Sensitivity.ONCOLOGY, Sensitivity.PREGNANCY} <= categories
    for r in a:
        assert r.flag == _expected_flag(r)
        assert r.sensitivity is sensitivity_of(r.code_system, r.code)


def test_results_stream_rejects_negative_n() -> None:
    with pytest.raises(ValueError):
        list(results_stream("lab-test", 3, -1))
