"""The FHIR reader on the real examples under ../shared/realdata/fhir: the lab results of the
official R4 examples are read with their patient's identity status (no INS: none of them is French)
and their values as written; ``docs/interop/fhir-realdata.md`` is this module's table, checked here.

Regenerate the document with:
``PYTHONPATH=src python tests/interop/test_fhir_realdata.py > docs/interop/fhir-realdata.md``
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from labvault.domain.models import LOINC, IdentityStatus, ResultStatus
from labvault.interop import fhir
from labvault.interop.fhir import FhirError, map_document, map_ndjson

ROOT = Path(__file__).resolve().parents[2]
REALDATA = ROOT.parent / "shared" / "realdata" / "fhir"
R4 = REALDATA / "r4-official"
DOC = ROOT / "docs" / "interop" / "fhir-realdata.md"
UCUM = fhir.UCUM
PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})$")


def need_realdata() -> None:
    if REALDATA.is_dir():
        return
    reason = f"real FHIR test data absent: {REALDATA}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


def real_files() -> list[Path]:
    if not REALDATA.is_dir():
        return []
    return sorted(p for p in REALDATA.rglob("*") if p.is_file() and "schema" not in p.parts)


def _walk(node: object):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def missing_patients(raw: bytes) -> list[str]:
    """The ids of the Patients a document names but does not hold."""
    doc = json.loads(raw)
    present = {n.get("id") for n in _walk(doc) if n.get("resourceType") == "Patient"}
    missing: list[str] = []
    for n in _walk(doc):
        ref = n.get("reference")
        m = PATIENT_REF.search(ref) if isinstance(ref, str) else None
        if m is not None and m.group(1) not in present and m.group(1) not in missing:
            missing.append(m.group(1))
    return missing


def with_patients(raw: bytes) -> tuple[bytes, list[str]] | None:
    """The document with, for each Patient it names but does not hold, the official example of that
    Patient (``r4-official/Patient-<id>.json``) when there is one: real files only, nothing made up.
    None when no patient is missing or none of them has a file. A single resource is wrapped in a
    collection Bundle."""
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        return None
    found = [pid for pid in missing_patients(raw) if (R4 / f"Patient-{pid}.json").is_file()]
    if not found:
        return None
    added = [{"resource": json.loads((R4 / f"Patient-{pid}.json").read_bytes())} for pid in found]
    if doc.get("resourceType") == "Bundle":
        doc.setdefault("entry", []).extend(added)
    else:
        doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": doc}, *added]}
    return json.dumps(doc).encode(), found


def run(path: Path, raw: bytes | None = None) -> fhir.Outcome | FhirError:
    name = path.relative_to(REALDATA).as_posix()
    data = path.read_bytes() if raw is None else raw
    try:
        if path.suffix == ".ndjson":
            return map_ndjson({name: data})
        return map_document(data, file=name)
    except FhirError as exc:
        return exc


def describe(o: fhir.Outcome | FhirError) -> str:
    if isinstance(o, FhirError):
        return f"refused: {o}"
    parts = []
    for m in o.mapped:
        i = m.identity
        ins = "INS" if i.nir else "no INS"
        ids = f", {len(i.local_ids)} local id" + ("s" if len(i.local_ids) != 1 else "") if i.local_ids else ""
        statuses = Counter(r.status.value for r in m.results)
        said = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        parts.append(
            f"{len(m.results)} result{'s' if len(m.results) != 1 else ''}"
            + (f" ({said})" if said else "")
            + f", identity {i.identity_status.value} ({ins}{ids})"
        )
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(o.skipped.items()))
    return "accepted: " + "; ".join(parts) + (f"; skipped: {skipped}" if skipped else "")


def table() -> list[str]:
    rows = ["| file | as received | with its patient's official example |", "|---|---|---|"]
    for path in real_files():
        name = path.relative_to(REALDATA).as_posix()
        first = describe(run(path))
        second = "(no patient missing)"
        if path.suffix == ".json":
            joined = with_patients(path.read_bytes())
            if joined is not None:
                raw, found = joined
                second = f"{describe(run(path, raw))} (added: {', '.join(f'Patient/{p}' for p in found)})"
            elif missing := missing_patients(path.read_bytes()):
                second = "(no official example of " + ", ".join(f"Patient/{p}" for p in missing) + ")"
        rows.append(f"| `{name}` | {first} | {second} |")
    return rows


HEAD = """# FHIR R4 reader against real files

`labvault.interop.fhir` (read a FHIR R4 JSON document or a Bulk Data ndjson export, map it into domain
objects) run over every file under `../shared/realdata/fhir/` except the JSON schema (third-party
material, see that folder's `SOURCES.md` for origin and licence; the files are not copied into this
repository). The table is produced by running the code
(`PYTHONPATH=src python tests/interop/test_fhir_realdata.py > docs/interop/fhir-realdata.md`);
`tests/interop/test_fhir_realdata.py` checks that it is up to date and asserts the values read.

Columns:

- **as received**: `map_document` on a `.json` or `.fsh` file as it is; `map_ndjson` on an `.ndjson`
  file alone. Accepted: per patient, the results mapped (by status), the identity status and whether
  an INS came (none of these files is French: no identifier with system
  `urn:oid:1.2.250.1.213.1.4.8` / `.4.9`; the patients are read from their traits and local
  identifiers, provisional unless the FR Core identity-reliability extension says otherwise).
  Most lab files do not hold the Patient they point to: they are refused, the patient's traits
  being needed to match it.
- **with its patient's official example**: the same `.json` file with, for each Patient it names
  but does not hold, the official example of that Patient (`r4-official/Patient-<id>.json`) when
  there is one (real files only; a single resource is then wrapped in a collection Bundle). Some
  patients have no example; `pat2` (lipids, ghp) has no birth date, a strict trait: refused.

Refusals name the file, the bundle entry (counted from 1) or ndjson line, the resource type and
the element path, never the value found there. "skipped" counts what carries no lab data.

"""


def document() -> str:
    return HEAD + "\n".join(table()) + "\n"


# ------------------------------------------------------------------------------------------ tests


def test_document_is_up_to_date():
    need_realdata()
    assert DOC.read_text(encoding="utf-8") == document(), "regenerate: see this module's docstring"


def _joined(name: str) -> fhir.Outcome:
    path = R4 / name
    joined = with_patients(path.read_bytes())
    assert joined is not None
    out = run(path, joined[0])
    assert isinstance(out, fhir.Outcome), out
    return out


OBSERVATIONS_F00X = {
    # file: (code, value as written, unit, ref low, ref high, flag)
    "Observation-f001.json": ("15074-8", "6.3", "mmol/L", 3.1, 6.2, "H"),
    "Observation-f002.json": ("11555-0", "12.6", "mmol/L", 7.1, 11.2, "H"),
    "Observation-f003.json": ("11557-6", "6.2", "kPa", 4.8, 6.0, "H"),
    "Observation-f004.json": ("789-8", "4.12", "10*12/L", None, None, "L"),
    "Observation-f005.json": ("718-7", "7.2", "g/dL", 7.5, 10.0, "L"),
}


@pytest.mark.parametrize("name", sorted(OBSERVATIONS_F00X))
def test_official_observations_with_their_patient(name):
    """M2: Observation-f00x as received is refused (its Patient is not in it); with Patient-f001,
    accepted: no INS, provisional, the Dutch local identifier kept with its OID, the traits; the
    value as written, its UCUM unit, range, flag and status."""
    need_realdata()
    refused = run(R4 / name)
    assert isinstance(refused, FhirError) and "patient not in the input" in str(refused)
    assert "INS" not in str(refused)
    [m] = _joined(name).mapped
    i = m.identity
    assert (i.nir, i.identity_status) == (None, IdentityStatus.PROVISIONAL)
    assert ("2.16.840.1.113883.2.4.6.3", "738472983") in i.local_ids
    assert (i.family_name, i.given_names, i.birth_date, i.sex) == ("van de Heuvel", "Pieter", date(1944, 11, 17), "M")
    [r] = m.results
    code, written, unit, low, high, flag = OBSERVATIONS_F00X[name]
    assert (r.code, r.code_system, r.value_repr, r.value_num) == (code, LOINC, written, float(written))
    assert (r.unit, r.unit_system, r.ref_low, r.ref_high, r.flag) == (unit, UCUM, low, high, flag)
    assert (r.status, r.comparator) == (ResultStatus.FINAL, None)
    text = (R4 / name).read_text()
    assert re.search(rf'"value"\s*:\s*{re.escape(written)}\b', text)


def test_lri_example_orders_and_values():
    """M2: the LRI example with Patient/example: provisional, no INS, birth name and given names,
    the used given name; the report's placer and filler numbers with their system as sender, the
    Bundle's lastUpdated as message time; MIC values as bounds with their comparator."""
    need_realdata()
    refused = run(R4 / "Bundle-lri-example.json")
    assert isinstance(refused, FhirError) and "DiagnosticReport.subject: patient not in the input" in str(refused)
    [m] = _joined("Bundle-lri-example.json").mapped
    i = m.identity
    assert (i.nir, i.identity_status, i.local_ids) == (
        None,
        IdentityStatus.PROVISIONAL,
        [("1.2.36.146.595.217.0.1", "12345")],
    )
    assert (i.family_name, i.birth_name, i.given_names, i.first_given_name, i.used_given_name) == (
        "Chalmers",
        "Chalmers",
        "Peter James",
        "Peter",
        "Jim",
    )
    assert (i.birth_date, i.sex) == (date(1974, 12, 25), "M")
    [req] = m.requests
    assert (req.placer_number, req.filler_number, req.sender) == ("RP723234", "250401", "https://acme.org/identifiers")
    assert req.message_at == datetime(2017, 6, 27, 0, 52, 51, tzinfo=UTC)
    assert len(m.results) == 20 and all(r.status is ResultStatus.FINAL for r in m.results)
    mics = {(r.code, r.comparator, r.value_repr, r.unit, r.unit_system, r.flag) for r in m.results if r.value_repr}
    assert mics == {
        ("28-1", "<", "0.06", "ug/mL", UCUM, "S"),
        ("185-9", "<", "0.05", "ug/mL", UCUM, "S"),
        ("267-5", "<", "0.05", "ug/mL", UCUM, "S"),
    }
    texts = {r.value_text for r in m.results if r.code == "624-7"}
    assert {"Heavy growth", "Klebsiella pneumonia", "Staphlyococcuc aureus"} <= texts


def test_micro_susceptibilities_keep_comparators_and_digits():
    need_realdata()
    [m] = _joined("Bundle-micro.json").mapped
    assert m.identity.identity_status is IdentityStatus.PROVISIONAL and m.identity.nir is None
    assert len(m.results) == 22
    by_label = {r.label: r for r in m.results}
    got = {k: (by_label[k].comparator, by_label[k].value_repr) for k in ("Cefazolin", "Clindamycin", "Linezolid")}
    assert got == {"Cefazolin": ("<=", "2"), "Clindamycin": (">=", "0.5"), "Linezolid": (None, "4")}
    assert by_label["Trimethoprim/Sulfamethoxazole"].value_repr == "0.0526"
    [req] = m.requests
    assert req.requested_at == datetime(2009, 8, 10, 8, 25, 44, tzinfo=timezone(timedelta(hours=10)))


def test_lipids_patient_has_no_birth_date():
    """M2: Bundle-lipids names Patient/pat2, whose example has no birth date (a strict trait):
    refused with that reason, never as "INS missing"."""
    need_realdata()
    path = R4 / "Bundle-lipids.json"
    joined = with_patients(path.read_bytes())
    assert joined is not None
    out = run(path, joined[0])
    assert isinstance(out, FhirError) and str(out).endswith("Patient.birthDate: birth date missing")


@pytest.mark.parametrize("path", real_files() or [None], ids=[p.name for p in real_files()] or ["absent"])
def test_no_refusal_speaks_of_a_missing_ins(path):
    """M2: the INS is optional; no real file is refused for the lack of one."""
    need_realdata()
    for out in (run(path), *(() if path.suffix != ".json" else [_maybe_joined(path)])):
        if isinstance(out, FhirError):
            assert "INS missing" not in str(out)
        elif isinstance(out, fhir.Outcome):
            assert all(m.identity.nir is None for m in out.mapped)


def _maybe_joined(path: Path) -> fhir.Outcome | FhirError | None:
    joined = with_patients(path.read_bytes())
    return run(path, joined[0]) if joined is not None else None


if __name__ == "__main__":
    sys.stdout.write(document())
