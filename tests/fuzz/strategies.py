"""Hypothesis generators of near-valid inputs for each reader: a valid message whose fields are
replaced by values that matter to the reader (separators, escapes, dates at the edges, numbers
too long or overflowing, OIDs, type codes, statuses...) and whose segments or records are dropped,
repeated or moved. ``plant`` values (a marker, a NIR) can be put in any field."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from tests.fuzz import harness

INTERESTING = [
    "",
    " ",
    "^",
    "~",
    "&",
    "\\",
    "|",
    "^^",
    "~~",
    "&&",
    "\\X41\\",
    "\\XC3A9\\",
    "\\XZZ\\",
    "\\E\\",
    "\\H\\",
    "\\.br\\",
    "\\.sp2\\",
    "\\S\\",
    "\\",
    "1",
    "-1",
    "+1",
    ".5",
    "1.",
    "1,5",
    "1e5",
    "1E-5",
    "0",
    "-0",
    "9" * 41,
    "9" * 400,
    "9" * 5000,
    "0." + "1" * 45,
    "3.5-5.1",
    "<10",
    ">=2",
    "3-",
    "-5",
    "2024",
    "202402",
    "20240230",
    "20241301",
    "20240101",
    "202401011230",
    "20240101123059",
    "20240101123059.1234+0100",
    "20240101+2500",
    "99991231235959",
    "00000000",
    "2024-01-01",
    "2024-01-01T10:00:00Z",
    "2024-02-30",
    "ORU^R01",
    "OUL^R22",
    "ADT^A01",
    "2.3",
    "2.5.1",
    "2.9",
    "F",
    "C",
    "P",
    "I",
    "X",
    "N",
    "NM",
    "SN",
    "ST",
    "CE",
    "CWE",
    "FT",
    "TX",
    "LN",
    "L",
    "HL70487",
    "1.2.250.1.213.1.4.8",
    "1.2.250.1.213.1.4.9",
    "1.2.250.1.213.1.4.10",
    "&1.2.250.1.213.1.4.8&ISO",
    "^^^&1.2.250.1.213.1.4.8&ISO",
    harness.NIR,
    harness.OTHER_NIR,
    "INS-NIR",
    "NIA",
    "INS-TEST",
    "BDL",
    "NET",
    "Internet",
    "VALI",
    "D",
    "M",
    "<",
    ">=",
    "=",
    "RPPS",
    "UNICODE UTF-8",
    "8859/1",
    "ASCII",
    "UTF-16",
    "\x00",
    "é",
    "\u2028",
    "\ud7ff",
    "H2.2",
    "ORU",
    "FIC",
    "A|B",
    "QUAL",
    "final",
    "registered",
    "#x",
    "Patient/p1",
]

VALUES = st.one_of(
    st.sampled_from(INTERESTING),
    st.lists(st.sampled_from(INTERESTING), min_size=2, max_size=4).map("".join),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)


def _shuffle_records(draw, records: list[list[str]], extra_names: list[str]) -> None:
    """Up to three structural edits of a message's records after the first (the header): one
    dropped, duplicated, moved, or a record of one of ``extra_names`` inserted."""
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "dup", "move", "extra"]))
        i = draw(st.integers(1, len(records) - 1))
        if op == "drop" and len(records) > 2:
            del records[i]
        elif op == "dup":
            records.insert(draw(st.integers(1, len(records))), list(records[i]))
        elif op == "move":
            rec = records.pop(i)
            records.insert(draw(st.integers(1, len(records))), rec)
        else:
            name = draw(st.sampled_from(extra_names))
            records.insert(draw(st.integers(1, len(records))), [name, *draw(st.lists(VALUES, max_size=14))])


@st.composite
def hl7_messages(draw, plant: str | None = None) -> bytes:
    """An HL7 v2 message near ``harness.hl7_message()``: fields replaced, segments moved about."""
    text = harness.hl7_message().decode()
    segments = [s.split("|") for s in text.split("\r") if s]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(segments) - 1))
        n = draw(st.integers(1, 22))
        seg = segments[i]
        seg.extend([""] * (n + 1 - len(seg)))
        if i == 0 and n < 2 and draw(st.booleans()):
            continue  # MSH-1/MSH-2 too, but not always: the rest of the message is worth reaching
        seg[n] = plant if plant is not None else draw(VALUES)
    _shuffle_records(draw, segments, ["OBR", "OBX", "SPM", "NTE", "ORC", "PID", "ZXX", "MSH"])
    end = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    return (end.join("|".join(s) for s in segments) + end).encode("utf-8", "surrogatepass")


@st.composite
def hprim_files(draw) -> bytes:
    lines = [ln.split("|") for ln in harness.hprim_file().decode().split("\r\n") if ln]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        n = draw(st.integers(1, 20))
        rec = lines[i]
        rec.extend([""] * (n + 1 - len(rec)))
        if i == 0 and n == 1 and draw(st.booleans()):
            continue
        rec[n] = draw(VALUES).replace("^", "~") if draw(st.booleans()) else draw(VALUES)
    _shuffle_records(draw, lines, ["P", "OBR", "OBX", "C", "A", "L", "H", "ZZ"])
    end = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    return (end.join("|".join(r) for r in lines) + end).encode(draw(st.sampled_from(["utf-8", "latin-1"])), "replace")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(INTERESTING)
    | st.text(max_size=10)
    | st.sampled_from(
        [
            {"reference": r}
            for r in (
                "Patient/p1",
                "urn:uuid:p1",
                "#c1",
                "#",
                "Observation/o1",
                "ServiceRequest/sr1",
                "Specimen/s1",
                "Practitioner/dr1",
                "http://x.example/fhir/Patient/p1",
                "Group/g1",
                "Patient/zz",
            )
        ]
    ),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceType",
                    "id",
                    "reference",
                    "value",
                    "code",
                    "coding",
                    "system",
                    "status",
                    "subject",
                    "valueQuantity",
                    "valueInteger",
                    "valueString",
                    "valueRange",
                    "comparator",
                    "entry",
                    "resource",
                    "extension",
                    "url",
                    "component",
                    "contained",
                    "basedOn",
                    "result",
                    "hasMember",
                    "identifier",
                    "name",
                    "family",
                    "given",
                    "use",
                    "issued",
                    "specimen",
                    "effectiveDateTime",
                    "birthDate",
                    "request",
                    "type",
                    "category",
                    "performer",
                    "low",
                    "high",
                    "referenceRange",
                    "collection",
                    "collectedDateTime",
                    "requester",
                    "practitioner",
                    "fullUrl",
                    "valueCoding",
                    "valueAddress",
                    "district",
                    "telecom",
                    "accessionIdentifier",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=10,
)


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def put(doc: object, path: tuple, value: object) -> object:
    """``doc`` with the node at ``path`` replaced by ``value`` (in place; the root is returned)."""
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def fhir_documents(draw) -> bytes:
    doc: object = harness.fhir_bundle()
    for _ in range(draw(st.integers(0, 5))):
        paths = _paths(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        op = draw(st.sampled_from(["set", "set", "drop", "copy"]))
        if op == "drop" and path and isinstance(doc, dict):
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            if isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, list):
                parent.pop(path[-1])
        elif op == "copy":
            other = paths[draw(st.integers(0, len(paths) - 1))]
            node = doc
            for step in other:
                node = node[step]
            if path[: len(other)] != other:
                doc = put(doc, path, json.loads(json.dumps(node)))
        else:
            doc = put(doc, path, json.loads(json.dumps(draw(JSON_VALUES))))  # a copy: drawn values are shared
    text = json.dumps(doc)
    if draw(st.booleans()):  # numbers JSON allows but a float cannot hold
        text = text.replace("4.2", draw(st.sampled_from(["1e400", "9" * 500, "-0", "4.2e-400", "0." + "0" * 50])))
    return text.encode()


@st.composite
def csv_files(draw) -> bytes:
    rows = [list(r) for r in harness.csv_rows()]
    for _ in range(draw(st.integers(0, 6))):
        i = draw(st.integers(0, len(rows) - 1))
        j = draw(st.integers(0, len(rows[0]) - 1))
        rows[i][j] = draw(VALUES)
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["drop-col", "dup-row", "drop-row", "short-row"]))
        if op == "drop-col":
            j = draw(st.integers(0, len(rows[0]) - 1))
            rows = [r[:j] + r[j + 1 :] for r in rows]
        elif op == "dup-row":
            rows.append(list(rows[draw(st.integers(1, len(rows) - 1))]) if len(rows) > 1 else [])
        elif op == "drop-row" and len(rows) > 1:
            del rows[draw(st.integers(1, len(rows) - 1))]
        elif rows:
            rows[-1] = rows[-1][:-1]
    return harness.csv_bytes(rows)


GENERATORS = {"hl7v2": hl7_messages(), "hprim": hprim_files(), "fhir": fhir_documents(), "csv": csv_files()}
