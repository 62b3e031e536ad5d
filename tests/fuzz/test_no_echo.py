"""M3, G2: a refusal names positions, never a value the sender wrote. A marker (and a valid-looking
NIR) is planted in every field position of real and generated messages of each reader; it never
appears in an error message, in what the FHIR reader reports as skipped, nor in a quarantine
reason. Before, a NIR used as a FHIR id, a name in OBX-11, a message type or a CSV header cell
were echoed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.access import Purpose
from labvault.ingest import intake
from labvault.ingest import service as ingest
from labvault.ingest.service import Ingestor, Summary
from tests.conftest import lab_user, make_lab
from tests.fuzz import harness
from tests.fuzz.strategies import GENERATORS, _paths, put

MARKER = "QZXMARK"
PLANTS = (MARKER, harness.OTHER_NIR, f"Patient/{MARKER}", f"{MARKER} {harness.OTHER_NIR}", MARKER.lower())
SENDER_VALUES = (MARKER.lower(), harness.OTHER_NIR, harness.NIR)


def leaked(messages: list[str]) -> list[str]:
    return [m for m in messages if any(v in m.lower() for v in SENDER_VALUES)]


def _leaf_variants(text: str, seps: str, plant: str) -> Iterator[str]:
    """``text`` with each of its leaves (split on each separator in turn) replaced by ``plant``."""
    yield plant
    if not seps:
        return
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    for i, part in enumerate(parts):
        for variant in _leaf_variants(part, rest, plant):
            if len(parts) > 1 or rest:
                yield sep.join([*parts[:i], variant, *parts[i + 1 :]])


def planted_lines(
    data: bytes, field_sep: str, seps: str, plant: str, line_end: str, skip: int = 0
) -> Iterator[tuple[str, bytes]]:
    """Every (position, input) with ``plant`` put in one field, component or subcomponent."""
    lines = data.decode().split(line_end)
    for i, line in enumerate(lines):
        if not line:
            continue
        fields = line.split(field_sep)
        for n in range(1, len(fields) + 2):
            if i == 0 and n <= skip:
                continue  # the separators themselves
            padded = fields + [""] * (n + 1 - len(fields))
            for variant in dict.fromkeys(_leaf_variants(padded[n], seps, plant)):
                out = list(padded)
                out[n] = variant
                yield (
                    f"line {i + 1} field {n}",
                    line_end.join([*lines[:i], field_sep.join(out), *lines[i + 1 :]]).encode(),
                )


def hl7_inputs(plant: str) -> Iterator[tuple[str, bytes]]:
    yield from planted_lines(harness.hl7_message(), "|", "~^&", plant, "\r", skip=1)


def hprim_inputs(plant: str) -> Iterator[tuple[str, bytes]]:
    yield from planted_lines(harness.hprim_file(), "|", "^~&", plant, "\r\n", skip=1)


def fhir_inputs(plant: str) -> Iterator[tuple[str, bytes]]:
    doc = harness.fhir_bundle()
    for path in _paths(doc):
        if not path:
            continue
        changed = put(json.loads(json.dumps(doc)), path, plant)
        yield "/".join(map(str, path)), json.dumps(changed).encode()
    ndjson = "\n".join(json.dumps(e["resource"]) for e in doc["entry"])
    for path in _paths(doc["entry"]):
        if len(path) < 3:
            continue
        entries = json.loads(json.dumps(doc["entry"]))
        put(entries, path, plant)
        yield "ndjson " + "/".join(map(str, path)), "\n".join(json.dumps(e["resource"]) for e in entries).encode()
    assert ndjson


def csv_inputs(plant: str) -> Iterator[tuple[str, bytes]]:
    rows = harness.csv_rows()
    for i, row in enumerate(rows):
        for j in range(len(row)):
            changed = [list(r) for r in rows]
            changed[i][j] = plant
            yield f"row {i + 1} column {j + 1}", harness.csv_bytes(changed)


INPUTS = {"hl7v2": hl7_inputs, "hprim": hprim_inputs, "fhir": fhir_inputs, "csv": csv_inputs}


@pytest.mark.parametrize("plant", PLANTS[:3])
@pytest.mark.parametrize("reader", harness.READERS)
def test_a_value_planted_in_any_field_is_never_echoed(reader, plant):
    checked = refused = 0
    for where, data in INPUTS[reader](plant):
        messages = harness.check(reader, data)
        assert not leaked(messages), (where, leaked(messages))
        checked += 1
        refused += bool(messages)
    assert checked >= 40 and refused >= 10, (checked, refused)  # the plants did reach refusals


def test_a_value_planted_in_a_real_file_is_never_echoed():
    """The same over the real files of ../shared/realdata (when present): every field of each."""
    total = 0
    for reader, sep, _seps, end in (("hl7v2", "|", "~^&", "\r"), ("hprim", "|", "^~&", "\r\n")):
        for seed in harness.seeds(reader, real=6)[1:]:
            text = seed.replace(b"\r\n", b"\r").replace(b"\n", b"\r") if reader == "hl7v2" else seed
            try:
                text.decode()
            except UnicodeDecodeError:
                continue
            planted = list(planted_lines(text, sep, "", MARKER, end if reader == "hprim" else "\r", skip=1))
            for where, data in planted[:: max(1, len(planted) // 60)]:  # 60 fields of each file, spread
                assert not leaked(harness.check(reader, data)), (reader, where)
                total += 1
    for seed in harness.seeds("fhir", real=6)[1:]:
        try:
            doc = json.loads(seed)
        except ValueError:
            continue
        paths = _paths(doc)[1:]
        for path in paths[:: max(1, len(paths) // 60)]:
            data = json.dumps(put(json.loads(seed), path, MARKER)).encode()
            assert not leaked(harness.check("fhir", data)), ("fhir", path)
            total += 1
    if not harness.REALDATA.is_dir():
        pytest.skip("real test data absent")
    assert total > 200


@pytest.mark.parametrize("reader", harness.READERS)
def test_planted_values_in_generated_inputs_are_never_echoed(reader):
    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(GENERATORS[reader], st.integers(0, 1 << 30), st.sampled_from(PLANTS))
    def run(data, pos, plant):
        text = data.decode("utf-8", "replace")
        if reader == "fhir":
            try:
                doc = json.loads(text)
            except ValueError:
                return
            paths = _paths(doc)
            data = json.dumps(put(doc, paths[pos % len(paths)], plant)).encode()
        else:
            cut = [i for i, c in enumerate(text) if c in "|,;\r\n"] or [0]
            at = cut[pos % len(cut)] + 1
            data = (text[:at] + plant + text[at:]).encode()
        assert not leaked(harness.check(reader, data))

    run()


def test_quarantine_reasons_hold_no_planted_value(gateway):
    """Through the store: every HL7 v2 field planted in turn, ingested into a lab; the reasons the
    quarantine keeps (and the summary shows) name no planted value."""
    make_lab(gateway, "lab-echo")
    tech = lab_user(gateway, "lab-echo", "technician")
    summary = Summary("feed.hl7", "hl7v2")
    # each its own message (control id) and its own order (accession: an order's ids derive from it)
    messages = [
        data.replace(b"|CTRL1|", f"|E{k}|".encode()).replace(b"|F-1|", f"|F-E{k}|".encode())
        for k, (_, data) in enumerate(hl7_inputs(MARKER))
    ]
    messages += [
        data.replace(b"|CTRL1|", f"|N{k}|".encode()).replace(b"|F-1|", f"|F-N{k}|".encode())
        for k, (_, data) in enumerate(hl7_inputs(harness.OTHER_NIR))
    ]
    Ingestor(gateway, tech, "lab-echo", group=20).ingest_pieces(
        ingest.read(b"".join(messages), file="feed.hl7"), summary
    )
    assert summary.rejected >= 20 and summary.accepted >= 20
    assert not leaked(summary.reasons)
    with gateway.unit(lab_user(gateway, "lab-echo", "biologist"), Purpose.CARE) as u:
        held = intake.listing(u, "lab-echo")
    assert len(held) == summary.rejected and not leaked([h.reason for h in held])
