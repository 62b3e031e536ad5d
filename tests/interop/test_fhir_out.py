"""FHIR writer: domain objects -> fhir_out -> ndjson -> fhir.read_ndjson gives the same values back;
every written resource is valid R4 (fhir.resources R4B models, and the official R4 JSON schema)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.crypto import derive
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.domain.models import (
    LOINC,
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    RequestStatus,
    Result,
    ResultStatus,
    Specimen,
)
from labvault.interop import fhir, fhir_out
from labvault.interop.fhir_out import NdjsonWriter

SCHEMA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "fhir" / "schema" / "fhir.schema.r4.json"
IN_CI = os.environ.get("CI") == "true"
TENANT = "lab-42"

# ------------------------------------------------------------------------------------------ validators


_validators: dict[str, object] = {}


def schema_validator(rtype: str):
    """jsonschema_rs validator of one resource type against the official R4 schema, or None when absent."""
    if rtype in _validators:
        return _validators[rtype]
    if not SCHEMA.is_file():
        if IN_CI:
            pytest.fail(f"R4 JSON schema absent: {SCHEMA} (required under CI=true)")
        return None
    import jsonschema_rs

    if "_schema" not in _validators:
        schema = json.loads(SCHEMA.read_bytes())
        # the copy in realdata had additionalProperties relaxed on three types (its PATCH-APPLIED file): undo it
        for name in ("Patient", "Appointment", "Encounter"):
            schema["definitions"][name]["additionalProperties"] = False
        _validators["_schema"] = schema
    schema = dict(_validators["_schema"])
    schema.pop("oneOf")
    schema.pop("discriminator", None)
    schema["$ref"] = f"#/definitions/{rtype}"
    _validators[rtype] = jsonschema_rs.validator_for(schema)
    return _validators[rtype]


def assert_valid(resource: dict) -> None:
    from fhir.resources.R4B import get_fhir_model_class

    rtype = resource["resourceType"]
    get_fhir_model_class(rtype).model_validate(copy.deepcopy(resource))
    validator = schema_validator(rtype)
    if validator is not None:
        errors = [str(e).splitlines()[0] for e in validator.iter_errors(resource)]
        assert not errors, errors[:3]


# ------------------------------------------------------------------------------------------ strategies


# FHIR strings: any Unicode but the spaces other than space, tab, CR, LF (the R4 schema's pattern, ECMAScript
# \S, refuses NBSP and friends) and lone surrogates.
CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), exclude_characters="\ufeff\u180e"
) | st.sampled_from(" \n\t")
TEXT = st.text(CHARS, min_size=1, max_size=20).filter(lambda s: s.strip(" \n\t"))
OPT_TEXT = st.none() | TEXT
IDS = st.text("0123456789abcdef", min_size=32, max_size=32)
CODE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,11}", fullmatch=True)
CODE_SYSTEM = st.sampled_from([LOINC, "urn:hl7v2:codesystem:L", "http://lab.example.org/codes", "urn:oid:1.2.3"])
UNIT = st.none() | st.sampled_from(["mmol/L", "g/dL", "10*9/L", "%", "mg/L", "[IU]/L"]) | TEXT
FLAG = st.none() | st.sampled_from(["L", "H", "LL", "HH", "N", "A", "POS", "NEG"]) | TEXT
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=64)
OFFSETS = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=1)),
        timezone(timedelta(hours=-5, minutes=-30)),
        timezone(timedelta(hours=14)),
        ZoneInfo("Europe/Paris"),
        ZoneInfo("America/New_York"),
    ]
)


@st.composite
def datetimes(draw):
    """Naive (lab local time) or aware, to the second or the microsecond."""
    value = draw(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2100, 1, 1)))
    if draw(st.booleans()):
        value = value.replace(microsecond=0)
    # A local time without a zone says nothing of the DST fold (no message format carries it): an
    # hour repeated in autumn is read as its first occurrence.
    zoned = draw(st.booleans())
    return value.replace(tzinfo=draw(OFFSETS)) if zoned else value.replace(fold=0)


@st.composite
def patients(draw, ids):
    return Identity(
        patient_id=draw(ids),
        nir=draw(st.from_regex(r"[12][0-9]{14}", fullmatch=True)),
        identity_status=draw(st.sampled_from(IdentityStatus)),
        family_name=draw(TEXT),
        given_names=draw(st.just("") | TEXT | st.just("Jean  Pierre") | st.just("Marie Anne")),
        birth_date=draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 1, 1))),
        sex=draw(st.sampled_from("MFU")),
        birth_name=draw(OPT_TEXT),
        birthplace_code=draw(st.none() | st.from_regex(r"(2[AB]|[0-9]{2})[0-9]{3}", fullmatch=True) | TEXT),
        address=draw(OPT_TEXT),
        phone=draw(st.none() | st.from_regex(r"0[1-9]( [0-9]{2}){4}", fullmatch=True)),
        email=draw(st.none() | st.emails()),
        ins_oid=draw(st.sampled_from([OID_NIR, OID_NIA])),
    )


@st.composite
def scenarios(draw):
    """One or two patients, their prescribers, requests, specimens and results (a consistent graph)."""
    used: set[str] = set()
    ids = IDS.filter(lambda x: x not in used).map(lambda x: used.add(x) or x)
    rpps = st.just("") | st.from_regex(r"[0-9]{11}", fullmatch=True)
    prescribers = [
        Prescriber(
            prescriber_id=draw(ids),
            rpps=draw(rpps),
            family_name=draw(st.just("") | TEXT),
            given_name=draw(st.just("") | TEXT),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    people = []
    for _ in range(draw(st.integers(1, 2))):
        identity = draw(patients(ids))
        requests, specimens, results = [], [], []
        for _ in range(draw(st.integers(1, 3))):
            req = Request(
                request_id=draw(ids),
                patient_id=identity.patient_id,
                prescriber_id=draw(st.none() | st.sampled_from([p.prescriber_id for p in prescribers]))
                if prescribers
                else None,
                requested_at=draw(datetimes()),
                accession=draw(OPT_TEXT),
                reported_at=draw(st.none() | datetimes()),
            )
            requests.append(req)
            own = [
                Specimen(
                    specimen_id=draw(ids),
                    request_id=req.request_id,
                    type=draw(st.sampled_from(["BLD", "SER", "UR", "PLAS"]) | TEXT),
                    collected_at=draw(datetimes()),
                    received_at=draw(st.none() | datetimes()),
                )
                for _ in range(draw(st.integers(0, 2)))
            ]
            specimens += own
            for _ in range(draw(st.integers(1, 4))):
                status = draw(st.sampled_from(ResultStatus))
                pending = status is ResultStatus.PENDING  # asked, nothing measured: no value
                results.append(
                    Result(
                        result_id=draw(ids),
                        request_id=req.request_id,
                        code=draw(CODE),
                        label=draw(st.just("") | TEXT),
                        code_system=draw(CODE_SYSTEM),
                        specimen_id=draw(st.none() | st.sampled_from([s.specimen_id for s in own])) if own else None,
                        value_num=None if pending else draw(st.none() | NUMBER),
                        value_text=None if pending else draw(OPT_TEXT),
                        unit=draw(UNIT),
                        ref_low=draw(st.none() | NUMBER),
                        ref_high=draw(st.none() | NUMBER),
                        ref_text=draw(OPT_TEXT),
                        flag=draw(FLAG),
                        status=status,
                        validated_by=draw(OPT_TEXT),
                        validated_at=draw(st.none() | datetimes()),
                        comment=draw(OPT_TEXT),
                    )
                )
        people.append((identity, requests, specimens, results))
    return prescribers, people


def write_all(writer: NdjsonWriter, prescribers, people, *, fast: bool) -> None:
    for p in prescribers:
        writer.write(fhir_out.practitioner(p))
    for identity, requests, specimens, results in people:
        writer.write(fhir_out.patient(identity, TENANT))
        for r in requests:
            writer.write(fhir_out.service_request(r))
            writer.write(fhir_out.diagnostic_report(r, [x.result_id for x in results if x.request_id == r.request_id]))
        for s in specimens:
            writer.write(fhir_out.specimen(s))
        for res in results:
            if fast:
                writer.write_observation(res, identity.patient_id)
            else:
                writer.write(fhir_out.observation(res, identity.patient_id))


PARIS = ZoneInfo("Europe/Paris")


def _when(v: datetime) -> str:
    """A datetime as ISO text with its offset; a naive one is the lab's local time (Europe/Paris),
    which the writer marks and a reader may give back zoned."""
    return (v.replace(tzinfo=PARIS) if v.tzinfo is None else v).isoformat()


def _plain(obj) -> dict:
    """Dataclass as a dict, datetimes as ISO text so that offsets are compared too."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = _when(v) if isinstance(v, datetime) else v
    return out


def _derived(want: dict, got: dict, allowed: dict[str, object]) -> dict:
    """``want`` where a field absent from the input may come back derived by the reader from what
    was written (``allowed``: field -> the values it may take, or ``str`` for any text)."""
    out = dict(want)
    for name, values in allowed.items():
        derived = got.get(name)
        if out.get(name) is None and derived is not None and (values is str or derived in values):  # type: ignore[operator]
            out[name] = derived
    return out


def _expected_identity(identity: Identity, m) -> dict:
    """What comes back of an identity: its INS only when qualified (RNIV: otherwise not written), and
    then a recovered or qualified status reads as provisional (both need the INS)."""
    d = _expected(identity, m, {"patient_id": "Patient"})
    if not identity.qualified:
        d["nir"], d["ins_oid"] = None, OID_NIR
        if identity.identity_status in (IdentityStatus.RECOVERED, IdentityStatus.QUALIFIED):
            d["identity_status"] = IdentityStatus.PROVISIONAL
    return d


def _expected(obj, m, translate: dict[str, str], order_ids: dict[str, str] | None = None) -> dict:
    d = _plain(obj)
    for name, rtype in translate.items():
        if d.get(name) is not None:
            d[name] = (order_ids or {}).get(d[name]) or fhir.domain_id(m, rtype, d[name])
    return d


def _order_ids(m, requests, specimens, results) -> dict[str, str]:
    """Written id -> the id the reader derives for the records of orders (labvault.crypto.derive):
    from the order's accession number (its rank among the patient's orders with it), else from the
    ServiceRequest's place in the input; specimens in turn, results by code."""
    ranks = derive.Orders(derive.message_scope("fhir", m.sending_facility, m.control_id))
    orders = {r.request_id: ranks.order(f"ServiceRequest/{r.request_id}") for r in requests}
    out = {rid: order.request_id() for rid, order in orders.items()}
    out |= {s.specimen_id: orders[s.request_id].specimen_id() for s in specimens}
    out |= {x.result_id: orders[x.request_id].result_id(x.code) for x in results}
    return out


# ------------------------------------------------------------------------------------------ round trip


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.booleans())
def test_round_trip_preserves_every_field(scenario, fast):
    prescribers, people = scenario
    streams: dict[str, io.BytesIO] = {
        t: io.BytesIO()
        for t in ("Patient", "Practitioner", "ServiceRequest", "DiagnosticReport", "Specimen", "Observation")
    }
    with NdjsonWriter(streams=streams) as writer:
        write_all(writer, prescribers, people, fast=fast)
    counts = writer.counts()
    assert counts["Patient"] == len(people)
    assert counts["Observation"] == sum(len(p[3]) for p in people)
    files = {f"{t}.ndjson": s.getvalue() for t, s in streams.items()}
    for data in files.values():
        for line in data.splitlines():
            assert_valid(json.loads(line))
    mapped = fhir.read_ndjson(files)
    assert len(mapped) == len(people)
    by_patient = {m.identity.patient_id: m for m in mapped}
    for identity, requests, specimens, results in people:
        m = (
            by_patient[fhir.domain_id(mapped[0], "Patient", identity.patient_id)]
            if len(mapped) == 1
            else next(x for x in mapped if x.identity.patient_id == fhir.domain_id(x, "Patient", identity.patient_id))
        )
        written = fhir_out._given(identity.given_names)  # the given names as written, one or several
        firsts = {identity.first_given or None, written[0] if written else None}
        assert _plain(m.identity) == _derived(
            _expected_identity(identity, m),
            _plain(m.identity),
            {"first_given_name": firsts, "used_given_name": firsts},
        )
        assert m.other_identifiers == []
        assert m.sending_facility == f"fhir:urn:labvault:tenant:{TENANT}"
        ids = _order_ids(m, requests, specimens, results)
        want_req = {
            ids[r.request_id]: _expected(
                r, m, {"request_id": "ServiceRequest", "patient_id": "Patient", "prescriber_id": "Practitioner"}, ids
            )
            for r in requests
        }
        got_req = {r.request_id: _plain(r) for r in m.requests}
        for rid, want in want_req.items():
            accession = want.get("accession")
            want_req[rid] = _derived(
                want,
                got_req.get(rid, {}),
                {
                    "filler_number": {accession},
                    "sender": {f"urn:labvault:tenant:{TENANT}"},
                    "status": set(RequestStatus),
                    "message_at": str,
                },
            )
        assert got_req == want_req
        want_spec = [
            _expected(s, m, {"specimen_id": "Specimen", "request_id": "ServiceRequest"}, ids) for s in specimens
        ]
        assert [_plain(s) for s in m.specimens] == want_spec
        want_res = [
            _expected(
                r, m, {"result_id": "Observation", "request_id": "ServiceRequest", "specimen_id": "Specimen"}, ids
            )
            for r in results
        ]
        got_res = [_plain(r) for r in m.results]
        want_res = [
            _derived(
                w,
                g,
                {
                    "value_repr": {None if w["value_num"] is None else fhir_out.number_text(None, w["value_num"])},
                    "observation_key": str,
                    "unit_system": {fhir_out.UCUM},
                },
            )
            for w, g in zip(want_res, got_res, strict=False)
        ]
        assert got_res == want_res
        used = {r.prescriber_id for r in requests if r.prescriber_id}
        want_pres = sorted(
            (_expected(p, m, {"prescriber_id": "Practitioner"}) for p in prescribers if p.prescriber_id in used),
            key=lambda d: d["prescriber_id"],
        )
        assert sorted((_plain(p) for p in m.prescribers), key=lambda d: d["prescriber_id"]) == want_pres


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_fast_observation_path_writes_the_same_bytes(scenario):
    _, people = scenario
    id_map = lambda rtype, i: f"x-{rtype[:3].lower()}-{i[:20]}"  # noqa: E731
    for identity, _, _, results in people:
        for res in results:
            for mapping in (None, id_map):
                fast, slow = io.BytesIO(), io.BytesIO()
                with NdjsonWriter(streams={"Observation": fast}, id_map=mapping) as w:
                    w.write_observation(res, identity.patient_id)
                with NdjsonWriter(streams={"Observation": slow}) as w:
                    w.write(fhir_out.observation(res, identity.patient_id, id_map=mapping))
                assert fast.getvalue() == slow.getvalue()


# ------------------------------------------------------------------------------------------ units


def _identity(**over) -> Identity:
    base = dict(
        patient_id="p" * 32,
        nir="185077512345678",
        identity_status=IdentityStatus.QUALIFIED,
        family_name="MARTIN",
        given_names="Jean Pierre",
        birth_date=date(1985, 7, 4),
        sex="M",
        birth_name="DUPONT",
        birthplace_code="2A004",
        address="1 rue A, Paris",
        phone="0102030405",
        email="j@example.org",
    )
    return Identity(**(base | over))


def test_patient_resource_shape():
    p = fhir_out.patient(_identity(), TENANT)
    assert p["identifier"][0]["system"] == f"urn:oid:{OID_NIR}"
    assert p["identifier"][0]["type"]["coding"][0]["code"] == "INS-NIR"
    assert [(n["use"], n["family"], n["given"]) for n in p["name"]] == [
        ("usual", "MARTIN", ["Jean", "Pierre"]),
        ("official", "DUPONT", ["Jean", "Pierre"]),
    ]
    reliability, place = p["extension"]
    assert reliability["extension"][0]["valueCoding"]["code"] == "QUAL"
    assert place["valueAddress"]["extension"][0]["valueCoding"]["code"] == "2A004"
    assert_valid(p)


def test_test_ins_round_trip_needs_test_mode(tmp_path):
    identity = _identity(ins_oid=OID_INS_TEST)
    req = Request("r" * 32, identity.patient_id, None, datetime(2024, 1, 1, 8, 0))
    with NdjsonWriter(tmp_path) as w:
        w.write(fhir_out.patient(identity, TENANT))
        w.write(fhir_out.service_request(req))
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(files) == ["Patient.ndjson", "ServiceRequest.ndjson"]
    with pytest.raises(fhir.FhirError, match="test INS"):
        fhir.read_ndjson(files)
    [m] = fhir.read_ndjson(files, test_mode=True)
    assert m.identity.ins_oid == OID_INS_TEST and _when(m.requests[0].requested_at) == _when(datetime(2024, 1, 1, 8))


def test_naive_datetime_is_written_with_the_lab_offset_and_marked():
    req = Request("r" * 32, "p" * 32, None, datetime(2024, 7, 1, 8, 0), reported_at=datetime(2024, 1, 2, 9, 0, 5))
    sr = fhir_out.service_request(req)
    assert sr["authoredOn"] == "2024-07-01T08:00:00+02:00"
    assert sr["_authoredOn"]["extension"][0]["url"] == fhir.EXT_UNZONED
    dr = fhir_out.diagnostic_report(req, [])
    assert dr["issued"] == "2024-01-02T09:00:05+01:00" and "result" not in dr
    utc = datetime(2024, 7, 1, 8, tzinfo=UTC)
    aware = fhir_out.service_request(dataclasses.replace(req, requested_at=utc))
    assert aware["authoredOn"] == "2024-07-01T08:00:00+00:00" and "_authoredOn" not in aware
    for r in (sr, dr, aware):
        assert_valid(r)


def test_id_map_is_applied_to_ids_and_references():
    res = Result("a" * 32, "b" * 32, "2823-3", "K", specimen_id="c" * 32, value_num=4.2, unit="mmol/L")
    o = fhir_out.observation(res, "d" * 32, id_map=lambda t, i: f"{t}-{i[:4]}")
    assert o["id"] == "Observation-aaaa" and o["basedOn"][0]["reference"] == "ServiceRequest/ServiceRequest-bbbb"
    assert o["subject"]["reference"] == "Patient/Patient-dddd"
    assert o["specimen"]["reference"] == "Specimen/Specimen-cccc"
    with pytest.raises(ValueError, match="not a FHIR id"):
        fhir_out.observation(res, "d" * 32, id_map=lambda t, i: "bad id")


def test_values_fhir_cannot_carry_are_refused():
    base = Result("a" * 32, "b" * 32, "2823-3", "K")
    for bad in (dict(code=" K"), dict(code_system="not a uri")):
        with pytest.raises(ValueError):
            fhir_out.observation(dataclasses.replace(base, **bad), "d" * 32)
        with pytest.raises(ValueError), NdjsonWriter(streams={"Observation": io.BytesIO()}) as w:
            w.write_observation(dataclasses.replace(base, **bad), "d" * 32)


def test_a_number_stored_non_finite_is_left_out_with_its_reason():
    """Rows stored before the readers refused them: no NaN or Infinity written, no failure; the
    value is absent with dataAbsentReason error, a bound is left out; both writers agree."""
    base = Result("a" * 32, "b" * 32, "2823-3", "K", unit="mmol/L", ref_high=5.1, unit_system=fhir_out.UCUM)
    for bad in (dict(value_num=float("nan")), dict(value_num=float("inf")), dict(value_num=1.0, ref_low=float("-inf"))):
        res = dataclasses.replace(base, **bad)
        o = fhir_out.observation(res, "d" * 32)
        out = io.BytesIO()
        with NdjsonWriter(streams={"Observation": out}) as w:
            w.write_observation(res, "d" * 32)
        assert json.loads(out.getvalue()) == o
        assert "NaN" not in out.getvalue().decode() and "Infinity" not in out.getvalue().decode()
        if bad["value_num"] == 1.0:
            assert o["valueQuantity"]["value"] == 1.0 and o["referenceRange"] == [
                {"high": {"value": 5.1, "unit": "mmol/L", "system": fhir_out.UCUM, "code": "mmol/L"}}
            ]
        else:
            assert "valueQuantity" not in o and o["dataAbsentReason"]["coding"][0]["code"] == "error"


def test_writer_files_and_counts(tmp_path):
    res = Result("a" * 32, "b" * 32, "2823-3", "K", value_num=1.0)
    with NdjsonWriter(tmp_path) as w:
        for _ in range(3000):  # more than one buffer flush
            w.write_observation(res, "d" * 32)
        w.write(fhir_out.practitioner(Prescriber("e" * 32, "10001234567", "HOUSE", "Greg")))
        assert w.counts() == {"Observation": 3000, "Practitioner": 1}
    lines = (tmp_path / "Observation.ndjson").read_bytes().splitlines()
    assert len(lines) == 3000 and json.loads(lines[-1])["valueQuantity"] == {"value": 1.0}
    prac = json.loads((tmp_path / "Practitioner.ndjson").read_bytes())
    assert prac["identifier"][0]["value"] == "810001234567"
    with pytest.raises(ValueError, match="closed"):
        w.write(fhir_out.practitioner(Prescriber("f" * 32, "", "", "")))
