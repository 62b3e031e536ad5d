"""HL7 v2 -> store -> FHIR ndjson -> store gives identical values (property-based), and the FHIR
written from the store validates against the R4 models and the official R4 JSON schema."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import astuple, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from stdnum.fr import nir as stdnum_nir

from labvault.access import Purpose, scan
from labvault.domain.models import LOINC, IdentityStatus
from labvault.ingest import service as ingest
from labvault.interop.fhir_out import NdjsonWriter
from labvault.interop.hl7v2_out import oru_r01
from labvault.migration.export import RESOURCE_TYPES, export_fhir
from labvault.synth.hl7 import messages
from tests.conftest import lab_user, make_lab
from tests.interop.test_hl7v2_out import cases

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "fhir" / "schema" / "fhir.schema.r4.json"
_labs = itertools.count()
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]  # shrinking a store round trip takes minutes
NAMES = st.from_regex(r"\A[A-Z][a-z]{1,8}\Z")
UNITS = ["mmol/L", "g/L", "%", "10*9/L", "{cells}/uL", "UI/l", "mg/dl"]  # UCUM, then units that are not
CODES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9.\-]{0,11}\Z")


def valid_nirs() -> st.SearchStrategy[str]:
    body = st.tuples(
        st.sampled_from("12"),
        st.integers(0, 99),
        st.integers(1, 12),
        st.integers(1, 95),
        st.integers(1, 990),
        st.integers(1, 999),
    )
    return body.map(lambda b: f"{b[0]}{b[1]:02d}{b[2]:02d}{b[3]:02d}{b[4]:03d}{b[5]:03d}").map(
        lambda s: s + stdnum_nir.calc_check_digits(s)
    )


def new_labs(gw) -> tuple[str, str, Any, Any]:
    k = next(_labs)
    a, b = f"rt-a{k}", f"rt-b{k}"
    make_lab(gw, a)
    make_lab(gw, b, "690000025")
    return a, b, lab_user(gw, a, "biologist"), lab_user(gw, b, "biologist")


def store(gw, who, lab: str, pieces: list[ingest.Piece]) -> ingest.Summary:
    s = ingest.Summary("test", "test")
    ingest.Ingestor(gw, who, lab, group=50).ingest_pieces(pieces, s)
    if any("is not a code" in r for r in s.reasons):
        assume(False)  # refused at the door (a code no export format can carry): nothing to compare
    assert s.rejected == 0, s.reasons
    return s


def export(gw, who, lab: str) -> dict[str, bytes]:
    streams = {t: io.BytesIO() for t in RESOURCE_TYPES}
    with gw.unit(who, Purpose.CARE) as u:
        with NdjsonWriter(streams=streams) as w:
            export_fhir(u, lab, w)
    return {f"{t}.ndjson": s.getvalue() for t, s in streams.items() if s.getvalue()}


def _same_instant(values: tuple) -> tuple:
    """Aware datetimes as UTC: an offset FHIR cannot carry (beyond +14:00) is written as the same
    instant in UTC, which is the same value."""
    return tuple(v.astimezone(UTC) if isinstance(v, datetime) and v.tzinfo else v for v in values)


# What a message says about itself (the sender's order numbers and sending system, the message's time,
# the observation's place in its order): kept to update an order from its sender's later messages, not
# carried by the FHIR export, so left out of the comparison. The FHIR reader would read placer and filler
# numbers (ServiceRequest/DiagnosticReport identifiers PLAC/FILL), but fhir_out does not write them.
_REQUEST_BOOKKEEPING: dict[str, Any] = dict.fromkeys(("placer_number", "filler_number", "sender", "message_at"))
_RESULT_BOOKKEEPING: dict[str, Any] = {"observation_key": None, "message_at": None}


def canonical(gw, who, lab: str) -> dict:
    """A lab's stored values without ids: patients by INS, local ids and traits, their requests with
    prescriber, specimens and results, each list sorted (ids differ between stores; links between rows
    must not)."""
    with gw.unit(who, Purpose.CARE) as u:
        idents = list(scan.patients(u, lab))
        prescribers = {p.prescriber_id: (p.rpps, p.family_name, p.given_name) for p in scan.prescribers(u, lab)}
        requests = list(scan.requests(u, lab))
        specimens = list(scan.specimens(u, lab))
        results = [r for _, r in scan.results(u, lab)]
    spec = {s.specimen_id: _same_instant(astuple(replace(s, specimen_id="", request_id=""))) for s in specimens}
    out = {}
    for ident in idents:
        reqs = []
        for q in requests:
            if q.patient_id != ident.patient_id:
                continue
            mine = sorted((spec[s.specimen_id] for s in specimens if s.request_id == q.request_id), key=repr)
            res = sorted(
                (
                    (
                        _same_instant(
                            astuple(replace(r, result_id="", request_id="", specimen_id="", **_RESULT_BOOKKEEPING))
                        ),
                        spec.get(r.specimen_id) if r.specimen_id else None,
                    )
                    for r in results
                    if r.request_id == q.request_id
                ),
                key=repr,
            )
            reqs.append(
                (
                    _same_instant(
                        astuple(replace(q, request_id="", patient_id="", prescriber_id="", **_REQUEST_BOOKKEEPING))
                    ),
                    prescribers.get(q.prescriber_id) if q.prescriber_id else None,
                    mine,
                    repr(res),
                )
            )
        out[(ident.nir, tuple(ident.local_ids), ident.family_name, ident.birth_date)] = (
            # first_given_name None means "the first of given_names": compared by what it means
            astuple(replace(ident, patient_id="", first_given_name=ident.first_given)),
            sorted(reqs, key=repr),
        )
    return out


def round_trip(gw, raw: list[bytes]) -> tuple[dict, dict, dict[str, bytes]]:
    a, b, bio_a, bio_b = new_labs(gw)
    pieces = [p for k, m in enumerate(raw) for p in ingest.read(m, file=f"m{k}.hl7")]
    store(gw, bio_a, a, pieces)
    files = export(gw, bio_a, a)
    store(gw, bio_b, b, ingest.read_bulk(files))
    return canonical(gw, bio_a, a), canonical(gw, bio_b, b), files


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@settings(
    max_examples=40,
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    case=cases(),
    nir=valid_nirs(),
    rpps=st.lists(st.from_regex(r"\A[0-9]{11}\Z"), max_size=3, unique=True),
    codes=st.lists(CODES, min_size=12, max_size=12),
    comparators=st.lists(st.sampled_from([None, "<", "<=", ">", ">="]), min_size=12, max_size=12),
    units=st.lists(st.none() | st.sampled_from(UNITS), min_size=12, max_size=12),
    names=st.tuples(NAMES, NAMES, NAMES, st.sampled_from(["none", "first", "composed"]), st.none() | NAMES),
)
def test_hl7_store_fhir_store_keeps_every_value(gateway, case, nir, rpps, codes, comparators, units, names):
    """M2, F1: what HL7 v2 stores, FHIR carries to another store unchanged: identity (INS, traits,
    every given name at birth, the first and the used one), results with every status (pending,
    cancelled, entered in error too), the number as written, its comparator and the unit's system."""
    case.identity.nir = nir
    case.identity.identity_status = IdentityStatus.QUALIFIED  # RNIV: only a qualified INS goes out again
    # Given names separated by blanks other than single spaces (line breaks, tabs, U+2028) or by commas:
    # FHIR writes them as one given name where the store's first given name splits on any blank, so
    # the first given name read back differs; compared on given names separated by single spaces.
    ident = case.identity
    ident.given_names = " ".join(ident.given_names.replace(",", " ").split())
    g1, g2, g3, which, used = names
    if which != "none":  # else given names from the generator, the first of them implied
        ident.given_names = f"{g1} {g2} {g3}"
        ident.first_given_name = g1 if which == "first" else f"{g1} {g2}"  # a composed first given name
    ident.used_given_name = used
    for r, code, comparator, unit in zip(case.results, codes, comparators, units, strict=False):
        r.code = code  # codes as labs send them (tokens)
        r.code_system = LOINC
        if unit is not None:  # else the generator's own text
            r.unit = unit
        if r.value_num is not None:
            r.comparator = comparator
    case.prescribers = {
        k: replace(p, rpps=rpps[i]) for i, (k, p) in enumerate(case.prescribers.items()) if i < len(rpps)
    }
    for q in case.requests:
        if q.prescriber_id not in case.prescribers:
            q.prescriber_id = None
    try:
        raw = oru_r01(
            case.identity,
            case.requests,
            case.specimens,
            case.results,
            case.prescribers,
            sending_facility="LAB1",
            control_id=f"RT-{next(_labs)}",
        )
    except ValueError:
        return  # a value HL7 v2 cannot carry (the writer's own test covers these)
    first, second, _ = round_trip(gateway, [raw])
    assert first == second


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_generated_lab_messages_survive_and_the_fhir_validates(gateway):
    """M2, F1: generated messages (identities of every status: only a qualified one's INS written) are
    all stored from HL7 v2, exported as valid FHIR R4 and stored again with the same values."""
    raw = list(messages("rt-synth", 5, 40))
    a, b, bio_a, bio_b = new_labs(gateway)
    store(gateway, bio_a, a, [p for k, m in enumerate(raw) for p in ingest.read(m, file=f"m{k}.hl7")])
    first = canonical(gateway, bio_a, a)
    assert len(first) >= 5 and sum(len(r[1]) for r in first.values()) == 40
    files = export(gateway, bio_a, a)
    validator = None
    if SCHEMA.is_file():
        import jsonschema_rs

        validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text("utf-8")))
    seen = set()
    for name, data in files.items():
        for line in data.splitlines():
            resource = json.loads(line)
            seen.add(resource["resourceType"])
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            if validator is not None:
                errors = [e.message for e in validator.iter_errors(resource)]
                assert not errors, (name, errors[:3])
    assert seen == set(RESOURCE_TYPES)
    s = ingest.Summary("test", "test")
    ingest.Ingestor(gateway, bio_b, b, group=50).ingest_pieces(ingest.read_bulk(files), s)
    assert s.rejected == 0, s.reasons
    second = canonical(gateway, bio_b, b)
    assert first == second
