"""Per-export ids: stable within an export, different across exports, valid FHIR ids, and a leak
traced back to the export it came from."""

from __future__ import annotations

import io
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labvault.crypto import fingerprint
from labvault.interop.fhir_out import NdjsonWriter
from labvault.synth import results_stream

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@given(st.text(min_size=1, max_size=64), st.sampled_from(["Patient", "Observation", "ServiceRequest"]))
def test_ids_are_stable_distinct_per_export_and_fhir_ids(internal, rtype):
    a, b = fingerprint.new_key(), fingerprint.new_key()
    one, two = fingerprint.id_map(a), fingerprint.id_map(b)
    assert one(rtype, internal) == one(rtype, internal)
    assert one(rtype, internal) != two(rtype, internal)
    assert FHIR_ID.match(one(rtype, internal))


def test_key_id_says_nothing_of_the_key():
    key = fingerprint.new_key()
    assert fingerprint.key_id(key) == fingerprint.key_id(key) != fingerprint.key_id(fingerprint.new_key())
    assert key.hex() not in fingerprint.key_id(key)
    with pytest.raises(ValueError):
        fingerprint.id_map(b"short")


def test_a_leaked_file_points_to_its_export():
    """H3: a leaked file points to its export."""
    results = list(results_stream("lab-a", 3, 300))
    exports = {name: fingerprint.new_key() for name in ("exp-1", "exp-2", "exp-3")}
    written = {}
    for name, key in exports.items():
        buf = io.BytesIO()
        with NdjsonWriter(streams={"Observation": buf}, id_map=fingerprint.id_map(key)) as w:
            for r in results:
                w.write_observation(r, "patient-1")
        written[name] = buf.getvalue()
    leak = written["exp-2"].splitlines()[40:96]  # 56 lines found on the Internet
    leaked = [("Observation", json.loads(line)["id"]) for line in leak]
    held = [("Observation", r.result_id) for r in results]
    ranking = fingerprint.matches(leaked, [(n, k, held) for n, k in exports.items()])
    assert ranking == [("exp-2", 56)]
