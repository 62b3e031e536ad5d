"""H3, G2: a leaked file is whatever someone put online. Random bytes, random text and mutated
files of every shape (cut from a generated package by ``labvault.synth.leak``) either read as rows
or raise ``LeakUnreadable``, never another error; a refusal never quotes the file."""

from __future__ import annotations

import json
from datetime import date, datetime, time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.breach.errors import LeakUnreadable
from labvault.breach.reader import KINDS, open_bytes
from labvault.synth import leak

SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
MARKER = "QZXMARK"


def _records() -> list[dict]:
    """Package-shaped records without a database: what ``flatten`` joins."""
    out: list[dict] = []
    for i in range(30):
        pid, req, spec = f"{i:032x}", f"{i + 100:032x}", f"{i + 200:032x}"
        body = f"{1 + i % 2}{60 + i:02d}{1 + i % 12:02d}75{100 + i:03d}{200 + i:03d}"
        out.append(
            {
                "record": "identity",
                "id": pid,
                "nir": body + f"{97 - int(body) % 97:02d}",
                "family_name": ["Noël", "Lefèvre", "O'Brien", MARKER][i % 4],
                "given_names": ["Hélène", "Jean Pierre", "Zoé"][i % 3],
                "birth_name": None,
                "birth_date": date(1960 + i, 1 + i % 12, 1 + i % 28).isoformat(),
                "sex": "MF"[i % 2],
            }
        )
        at = datetime.combine(date(2020, 1 + i % 12, 1 + i % 28), time(8, i % 60))
        out.append({"record": "request", "id": req, "patient": pid, "requested_at": at.isoformat()})
        out.append({"record": "specimen", "id": spec, "request": req, "collected_at": at.isoformat()})
        out.append(
            {
                "record": "result",
                "id": f"{i + 300:032x}",
                "request": req,
                "specimen": spec,
                "patient": pid,
                "code": "718-7",
                "label": "Hémoglobine",
                "value_num": 13.5 + i / 10,
                "unit": "g/dL",
                "comment": f'contrôle; "{MARKER}" à refaire' if i % 5 == 0 else None,
            }
        )
    return out


SEEDS = [leak.cut(_records(), shape, seed=1)[0] for shape in leak.SHAPES]


def check(data: bytes) -> None:
    """Read ``data`` to its end: rows, or LeakUnreadable with one line that quotes nothing."""
    try:
        opened = open_bytes(data, "leak")
        for row in opened.rows():
            assert row.nir is None or len(row.nir) == 13
        assert all(c.kind in KINDS for c in opened.layout.columns)
        assert opened.layout.rows >= 0 and opened.layout.junk >= 0
    except LeakUnreadable as exc:
        message = str(exc)
        assert "\n" not in message and MARKER.lower() not in message.lower()


def test_the_seeds_read():
    """The unmutated shapes are read (so that the mutations start from files that work)."""
    for data in SEEDS:
        opened = open_bytes(data, "leak")
        assert sum(1 for _ in opened.rows()) >= 30


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_raise_nothing_but_leak_unreadable(data):
    check(data)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("ab;,|\t\"'\n\r 0123456789/-.{}[]:()é\\")), max_size=600))
def test_random_delimited_text_raises_nothing_but_leak_unreadable(text):
    for encoding in ("utf-8", "utf-16"):
        check(text.encode(encoding))


@SETTINGS
@given(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 40), st.binary(max_size=10)), max_size=8),
)
def test_mutated_shapes_raise_nothing_but_leak_unreadable(seed, edits):
    data = bytearray(SEEDS[seed])
    for pos, cut, insert in edits:
        at = pos % (len(data) + 1)
        data[at : at + cut] = insert
    check(bytes(data))


@pytest.mark.parametrize("prefix", [b"PK\x03\x04", b"INSERT INTO t VALUES (", b"COPY t FROM stdin;\n", b'{"record":'])
@SETTINGS
@given(st.binary(max_size=2048))
def test_format_prefixes_then_random_bytes(prefix, data):
    check(prefix + data)


def test_json_lines_of_other_shapes():
    """ndjson whose lines are lists, numbers or nested objects: read or refused, nothing else."""
    lines = [json.dumps(x) for x in ({"a": [1, 2]}, [1, 2], 3, {"record": {"x": 1}}, {"nir": 12})]
    check(("\n".join(lines) + "\n").encode())
