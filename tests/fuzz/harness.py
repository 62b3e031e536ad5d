"""The fuzz harness shared by the hypothesis tests and the atheris runs: feed bytes to a reader and
accept exactly one outcome besides success, the reader's own input error. Any other exception (a
KeyError, TypeError, IndexError... inside a reader) is a bug: it escapes and fails the run.

``check(reader, data)`` returns the refusal messages seen, each checked to be one line; the callers
look for planted values in them. ``SEEDS`` are near-valid inputs of each format, to mutate.
"""

from __future__ import annotations

import json
from pathlib import Path

from labvault.ingest import service as ingest
from labvault.interop import csv_in, fhir, hl7v2, hprim

READERS = ("hl7v2", "hprim", "fhir", "csv")
NIR = "185077512345608"  # structure-only, valid key (tests.interop.messages)
OTHER_NIR = "269059913800167"  # a second valid-looking NIR, planted where it does not belong
REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def _hl7(reader_input: bytes, out: list[str]) -> None:
    try:
        messages = hl7v2.split_messages(reader_input, file="f.hl7")
    except hl7v2.Hl7Error as exc:
        out.append(str(exc))
        return
    for i, raw in enumerate(messages, 1):
        for test_mode in (False, True):
            try:
                hl7v2.to_domain(hl7v2.parse(raw, index=i, file="f.hl7"), test_mode=test_mode)
            except hl7v2.Hl7Error as exc:
                out.append(str(exc))


def _hprim(data: bytes, out: list[str]) -> None:
    try:
        f = hprim.parse(data, file="f.hpr")
    except hprim.HprimError as exc:
        out.append(str(exc))
        return
    out.extend(f.warnings)
    for test_mode in (False, True):
        try:
            hprim.to_domain(f, test_mode=test_mode)
        except hprim.HprimError as exc:
            out.append(str(exc))


def _fhir(data: bytes, out: list[str]) -> None:
    for test_mode in (False, True):
        try:
            outcome = fhir.map_document(data, file="f.json", test_mode=test_mode)
            out.extend(outcome.skipped)
        except fhir.FhirError as exc:
            out.append(str(exc))
    try:
        fhir.read_ndjson({"f.ndjson": data})
    except fhir.FhirError as exc:
        out.append(str(exc))


def _csv(data: bytes, out: list[str]) -> None:
    for test_mode in (False, True):
        out.extend(m.reason for m in csv_in.read(data, file="f.csv", test_mode=test_mode) if m.reason)


_DIRECT = {"hl7v2": _hl7, "hprim": _hprim, "fhir": _fhir, "csv": _csv}
_FORMAT = {"hl7v2": "hl7v2", "hprim": "hprim", "fhir": "fhir-json", "csv": "csv"}


def check(reader: str, data: bytes) -> list[str]:
    """Run ``reader`` over ``data`` (directly, then through ``ingest.read`` as the ingest command and
    the MLLP listener do, with the check before the store). Returns every refusal message (and, for
    the FHIR reader, the names of what was skipped); raises whatever else a reader raised."""
    out: list[str] = []
    _DIRECT[reader](data, out)
    detected = ingest.detect(data)
    for fmt in (_FORMAT[reader], None) if detected != _FORMAT[reader] else (None,):
        pieces = ingest.read(data, file="f", fmt=fmt)
        assert pieces, "ingest.read gave no piece"
        for p in pieces:
            assert (p.envelope is None) != (p.reason is None), "a piece is both stored and refused"
            if p.reason is not None:
                out.append(p.reason)
    for message in out:
        assert isinstance(message, str) and "\n" not in message and "\r" not in message, message
    return out


# ------------------------------------------------------------------------------------------ seeds


def hl7_message(fields: dict[tuple[str, int], str] | None = None) -> bytes:
    """An ORU^R01 v2.5.1 with two results; ``fields`` overrides (segment, field number) -> raw text."""
    segments = [
        [
            "MSH",
            "^~\\&",
            "LIS",
            "LAB1^1.2.3^ISO",
            "GW",
            "HOSP",
            "20240101120000+0100",
            "",
            "ORU^R01^ORU_R01",
            "CTRL1",
            "P",
            "2.5.1",
            "",
            "",
            "",
            "",
            "",
            "UNICODE UTF-8",
        ],
        [
            "PID",
            "1",
            "",
            f"{NIR}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS~IPP1^^^HOSP^PI",
            "",
            "DUPONT^Jean^^^^^L~MARTIN^Jean^^^^^D",
            "",
            "19850704",
            "M",
            "",
            "",
            "1 rue A^^Paris^^75001^FRA",
            "",
            "0102030405",
        ],
        [
            "ORC",
            "RE",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
        ],
        [
            "OBR",
            "1",
            "P-1",
            "F-1",
            "24326-1^Electrolytes^LN",
            "",
            "",
            "20240101083000",
            "",
            "",
            "",
            "",
            "",
            "",
            "20240101090000",
            "SER",
        ],
        [
            "OBX",
            "1",
            "NM",
            "2823-3^Potassium^LN",
            "",
            "4.2",
            "mmol/L^^UCUM",
            "3.5-5.1",
            "N",
            "",
            "",
            "F",
            "",
            "",
            "20240101100000",
            "",
            "BIO^Marie^Curie",
            "",
            "",
            "20240101103000",
        ],
        ["NTE", "1", "", "Hemolysed \\T\\ repeated"],
        ["OBX", "2", "SN", "2951-2^Sodium^LN", "", "^140", "mmol/L", "<150", "N", "", "", "C"],
        ["OBX", "3", "ST", "X-1^Aspect^L", "", "clear", "", "", "", "", "", "P"],
        [
            "SPM",
            "1",
            "",
            "",
            "BLD^Blood^HL70487",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "20240101080000",
            "20240101093000",
        ],
    ]
    for (name, n), text in (fields or {}).items():
        seg = next(s for s in segments if s[0] == name)
        k = n - 1 if name == "MSH" else n  # MSH-1 is the separator itself
        seg.extend([""] * (k + 1 - len(seg)))
        seg[k] = text
    return ("\r".join("|".join(s) for s in segments) + "\r").encode()


def hprim_file() -> bytes:
    lines = [
        "H|~^\\&|RES0001.HPR||LAB01~LABO TEST||ORU|||CAB01~CABINET||P|H2.2~C|202401011200",
        f"P|1|PAT1|L001|{NIR}~INS-NIR|DUPONT~Jean|MARTIN|19850704|M||1 RUE X~~PARIS~~75001||0102030405",
        "OBR|1|P1|ACC1|GLY~Glycemie~L^K~Potassium~L|R||202401010830|||||||202401010900|SER|12345678901~DR HOUSE~L",
        "OBX|1|NM|2823-3~Potassium~LN||4.2|mmol/L|3.5 - 5.1|N|||F|||202401011030|BIOCH",
        "C|1|L|Hemolyse legere",
        "OBX|2|NM|GLY~Glycemie~L||5,4|mmol/L|<6.1||||F",
        "OBX|3|ST|ABO~Groupe~L||A+||||||F",
        "L|1||1|8",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def fhir_bundle() -> dict:
    ins = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": NIR}
    return {
        "resourceType": "Bundle",
        "id": "b1",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "identifier": [ins, {"system": "http://h.example/ipp", "value": "I1"}],
                    "name": [{"use": "usual", "family": "DUPONT", "given": ["Jean"]}],
                    "gender": "male",
                    "birthDate": "1985-07-04",
                    "telecom": [{"system": "phone", "value": "0102030405"}],
                },
            },
            {
                "resource": {
                    "resourceType": "Practitioner",
                    "id": "dr1",
                    "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810001234567"}],
                    "name": [{"family": "HOUSE", "given": ["Greg"]}],
                }
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "id": "sr1",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "urn:uuid:p1"},
                    "requester": {"reference": "Practitioner/dr1"},
                    "authoredOn": "2024-01-01T08:00:00+01:00",
                    "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC1"}],
                }
            },
            {
                "resource": {
                    "resourceType": "Specimen",
                    "id": "s1",
                    "subject": {"reference": "Patient/p1"},
                    "request": [{"reference": "ServiceRequest/sr1"}],
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": "SER"}]},
                    "collection": {"collectedDateTime": "2024-01-01T08:30:00+01:00"},
                }
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "category": [{"coding": [{"system": fhir.CS_OBS_CATEGORY, "code": "laboratory"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3", "display": "Potassium"}]},
                    "subject": {"reference": "Patient/p1"},
                    "basedOn": [{"reference": "ServiceRequest/sr1"}],
                    "specimen": {"reference": "Specimen/s1"},
                    "issued": "2024-01-01T10:00:00Z",
                    "valueQuantity": {"value": 4.2, "unit": "mmol/L", "system": fhir.UCUM, "code": "mmol/L"},
                    "referenceRange": [{"low": {"value": 3.5}, "high": {"value": 5.1}}],
                    "interpretation": [{"coding": [{"system": fhir.CS_INTERPRETATION, "code": "N"}]}],
                    "performer": [{"display": "Dr Curie"}],
                    "note": [{"text": "ok"}],
                }
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "o2",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "2951-2"}]},
                    "subject": {"reference": "Patient/p1"},
                    "effectiveDateTime": "2024-01-01T08:30:00+01:00",
                    "valueQuantity": {"value": 5, "comparator": "<", "unit": "mmol/L"},
                    "component": [
                        {"code": {"coding": [{"code": "c1"}]}, "valueInteger": 3},
                        {"code": {"coding": [{"code": "c2"}]}, "valueString": "trace"},
                    ],
                }
            },
            {
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "id": "dr1",
                    "status": "final",
                    "code": {"coding": [{"code": "R"}]},
                    "subject": {"reference": "Patient/p1"},
                    "basedOn": [{"reference": "ServiceRequest/sr1"}],
                    "issued": "2024-01-01T11:00:00Z",
                    "result": [{"reference": "Observation/o1"}],
                }
            },
        ],
    }


CSV_HEAD = [
    "patient.nir",
    "patient.family_name",
    "patient.given_names",
    "patient.birth_date",
    "patient.sex",
    "patient.ins_oid",
    "prescriber.rpps",
    "request.accession",
    "request.requested_at",
    "specimen.type",
    "specimen.collected_at",
    "result.code",
    "result.label",
    "result.value_num",
    "result.ref_low",
    "result.ref_high",
    "result.status",
    "result.validated_at",
    "result.comment",
]


def csv_rows() -> list[list[str]]:
    row = [
        NIR,
        "DUPONT",
        "Jean",
        "1985-07-04",
        "M",
        "1.2.250.1.213.1.4.8",
        "10001234567",
        "A1",
        "2019-06-20T08:30",
        "SER",
        "2019-06-20T08:30",
        "2823-3",
        "Potassium",
        "4,2",
        "3.5",
        "5.1",
        "final",
        "2019-06-20T10:00:00+02:00",
        "'=ok",
    ]
    return [CSV_HEAD, row, [*row[:11], "2951-2", "Sodium", "140", "", "", "", "", ""]]


def csv_bytes(rows: list[list[str]]) -> bytes:
    import csv
    import io

    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerows(rows)
    return buf.getvalue().encode()


def _real(sub: str, limit: int) -> list[bytes]:
    d = REALDATA / sub
    if not d.is_dir():
        return []
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.stat().st_size < 20_000 and "schema" not in p.parts)
    return [p.read_bytes() for p in files[:limit]]


def seeds(reader: str, *, real: int = 20) -> list[bytes]:
    """Near-valid inputs of a format (ours, and a few real files when ../shared/realdata is there)."""
    if reader == "hl7v2":
        return [hl7_message(), *_real("hl7v2", real)]
    if reader == "hprim":
        return [hprim_file(), *_real("hprim", real)]
    if reader == "fhir":
        return [json.dumps(fhir_bundle()).encode(), *_real("fhir", real)]
    return [csv_bytes(csv_rows())]
