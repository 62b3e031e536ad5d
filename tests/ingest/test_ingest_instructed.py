"""Importing a legacy system's export under the lab's signed ``migration_in`` instruction: only the
results and fields it names are stored; an instruction that cannot govern the import is refused
before anything is read (the scenario: the lab instructed 2019-2020, without free text)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text as sql

from labvault.access import Purpose
from labvault.config import Settings
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.domain.models import LOINC, Identity, Request, Result, Sensitivity, Specimen
from labvault.domain.sensitivity import codes_in
from labvault.ingest.service import Ingestor, instruction_for_ingest
from labvault.instructions import document, intake_filter, signers
from labvault.interop import hl7v2
from labvault.runtime import open_runtime
from tests.cli.helpers import PASSWORD, enrolled_account
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import ADMIN, first_lab_admin, lab_user, make_lab
from tests.interop.messages import NIR

NIR2 = "2850775123456" + f"{97 - int('2850775123456') % 97:02d}"
HIV = codes_in(Sensitivity.HIV)[0][1]
NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = date(2019, 1, 1), date(2020, 12, 31)
AGE = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
ALLOWED = {  # what the store needs, a value and a unit; no free text, no contact details
    "identity": ["nir", "family_name", "given_names", "birth_name", "birth_date", "sex"],
    "prescriber": ["rpps", "family_name", "given_name"],
    "request": ["requested_at", "accession"],
    "specimen": ["type", "collected_at"],
    "result": ["code", "code_system", "label", "value_num", "unit", "flag", "status"],
}

# The legacy export: message -> (patient, [(collection day, [(LOINC code, value, comment)])]).
# Values are all different, so that what is stored can be traced back to one input result.
EXPORT: dict[str, tuple[str, list[tuple[str, list[tuple[str, str, str | None]]]]]] = {
    "A": (
        NIR,
        [
            ("20180315", [("2823-3", "4.1", "haemolysed"), ("2951-2", "141", None)]),
            ("20190620", [("2823-3", "4.2", "called Dr House"), ("2951-2", "142", None)]),
        ],
    ),
    "B": (NIR, [("20210105", [("2823-3", "4.3", "repeat"), ("2951-2", "143", None)])]),
    "C": (NIR, [("20201231", [("2823-3", "4.4", None), (HIV, "1", "confirm by WB")])]),
    "D": (NIR2, [("20190101", [("2951-2", "144", "fasting")])]),
}


def hl7(control: str) -> bytes:
    nir, orders = EXPORT[control]
    lines = [
        f"MSH|^~\\&|OLDLIS|OLD^1.2.3^ISO|GW|HOSP|20240101120000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{nir}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||DUPONT^Jean^^^^^L||19850704|M|||"
        "1 rue de la Paix^^Lyon^^69001||0612345678",
    ]
    for k, (day, obx) in enumerate(orders, 1):
        lines += [
            "ORC|RE|||||||||||10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
            f"OBR|{k}|P-{control}{k}|F-{control}{k}|24326-1^Panel^LN|||{day}083000",
        ]
        for n, (code, value, comment) in enumerate(obx, 1):
            lines.append(f"OBX|{n}|NM|{code}^Test {code}^LN||{value}|mmol/L^^UCUM||N|||F")
            if comment:
                lines.append(f"NTE|1||{comment}")
    return ("\r".join(lines) + "\r").encode()


def expected(controls, *, codes=None, patients=None, sensitive=()) -> dict[str, list]:
    """The oracle, from the export alone: results kept as (patient, day, code, value), messages outside."""
    kept, outside, dropped = [], [], {}
    for c in controls:
        nir, orders = EXPORT[c]
        mine = []
        for day, obx in orders:
            d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
            for code, value, _ in obx:
                why = (
                    "patient"
                    if patients is not None and nir not in patients
                    else "period"
                    if not FROM <= d <= TO
                    else "code"
                    if codes is not None and code not in codes
                    else "sensitive"
                    if code == HIV and "hiv" not in sensitive
                    else None
                )
                if why:
                    dropped[why] = dropped.get(why, 0) + 1
                else:
                    mine.append((nir, d, code, float(value)))
        kept += mine
        if not mine:
            outside.append(c)
    return {"kept": sorted(kept), "outside": outside, "dropped": dropped}


def body(instruction_id: str = "MIG-IN-1", kind: str = "migration_in", **over) -> dict:
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    rec = {
        "id": instruction_id,
        "tenant": "lab-a",
        "kind": kind,
        "purpose": "Bring 2019-2020 over from the old LIS",
        "fields": ALLOWED,
        "selection": {"collected_from": FROM.isoformat(), "collected_to": TO.isoformat()},
        "source": {"name": "OldLIS", "country": "FR"},
        "valid_from": z(NOW - timedelta(hours=1)),
        "valid_until": z(NOW + timedelta(days=7)),
    }
    if kind != "migration_in":
        del rec["source"]
        rec.update(
            destination={"name": "NewLIS SAS", "country": "FR", "recipient_age_key": AGE},
            expected_volume=100,
            deletion_deadline=z(NOW + timedelta(days=30)),
        )
    rec.update(over)
    return rec


@pytest.fixture
def world(gateway):
    make_lab(gateway, "lab-a")
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    bio = lab_user(gateway, "lab-a", "biologist", name="Bio")
    tech = lab_user(gateway, "lab-a", "technician", name="Tech")
    operator = lab_user(gateway, PLATFORM, "operator", name="Op")
    private, public = Signer.generate()
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        signer = signers.add_signer(u, "lab-a", email=f"{bio.account_id}@lab.invalid", public_key=public.hex())

    def receive(record: dict) -> None:
        """Signed by the lab's signer and kept as received (checked when it was received)."""
        signed = document.sign(document.from_record(record), Signer(private))
        with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            i = document.from_record(signed["instruction"])
            signers.record_instruction(
                u,
                "lab-a",
                instruction_id=i.id,
                kind=i.kind,
                signer_id=signer.signer_id,
                body=signed["instruction"],
                signature=signed["signature"],
                valid_until=i.valid_until,
            )

    return gateway, admin, bio, tech, operator, signer, receive


def ingest(tmp_path, world, instruction_id: str, controls=tuple(EXPORT)):
    gw, _, _, tech, operator, _, _ = world
    f = tmp_path / "export.hl7"
    f.write_bytes(b"".join(hl7(c) for c in controls))
    instr = instruction_for_ingest(gw, operator, "lab-a", instruction_id)
    [s] = Ingestor(gw, tech, "lab-a", instruction=instr).ingest_files([f])
    return s


def stored(gw, bio) -> dict[str, list]:
    """What the lab holds, read back as its biologist."""
    out: dict[str, list] = {"kept": [], "comments": [], "identities": [], "requests": []}
    with gw.unit(bio, Purpose.CARE) as u:
        for nir in (NIR, NIR2):
            for p in u.find_patients_by_nir("lab-a", nir):
                out["identities"].append(p)
                out["requests"] += u.requests_of("lab-a", p.patient_id)
                days = {q.request_id: q.requested_at.date() for q in u.requests_of("lab-a", p.patient_id)}
                for r in u.results_of("lab-a", p.patient_id):
                    out["kept"].append((nir, days[r.request_id], r.code, r.value_num))
                    out["comments"].append(r.comment)
    out["kept"].sort()
    return out


def counts(gw) -> dict[str, int]:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return u.counts("lab-a")


def events(gw) -> list[tuple[str, int, list[str]]]:
    with gw.engine.connect() as c:
        if c.dialect.name == "postgresql":
            c.execute(sql("SELECT set_config('labvault.tenant', 'lab-a', false)"))
        rows = c.execute(
            sql(
                "SELECT action, record_count, object_refs FROM audit_event WHERE tenant_id = 'lab-a' "
                "AND (action LIKE 'ingest:%' OR action = 'instruction:use') ORDER BY seq"
            )
        )
        return [(a, n, json.loads(refs) if refs else []) for a, n, refs in rows]


# -- the pure filter --------------------------------------------------------------------------------


def test_the_filter_keeps_only_what_is_named():
    """A1, A2: the filter keeps only what is named."""
    instr = document.from_record(
        body(fields={**ALLOWED, "identity": ALLOWED["identity"] + ["phone"], "free_text": ["result.comment"]})
    )
    mapped = hl7v2.to_domain(hl7v2.parse(hl7("A")))
    tally = intake_filter.Tally()
    out = intake_filter.apply(instr, mapped, tally)
    assert out is not None and out is not mapped
    assert [(r.code, r.value_num, r.comment) for r in out.results] == [
        ("2823-3", 4.2, "called Dr House"),
        ("2951-2", 142.0, None),
    ]
    assert [q.requested_at.date() for q in out.requests] == [date(2019, 6, 20)]
    assert {s.request_id for s in out.specimens} == {out.requests[0].request_id}
    assert out.identity.phone == mapped.identity.phone and out.identity.address is None
    assert tally.dropped == {"period": 2} and tally.cleared == {"identity.address": 1}
    assert len(mapped.results) == 4 and mapped.identity.address  # the input is untouched


def test_specimens_and_prescribers_are_kept_whole_or_left_out():
    fields = {k: v for k, v in ALLOWED.items() if k not in ("prescriber", "specimen")}
    instr = document.from_record(body(fields={**fields, "specimen": ["collected_at"]}))
    mapped = hl7v2.to_domain(hl7v2.parse(hl7("C")))
    tally = intake_filter.Tally()
    out = intake_filter.apply(instr, mapped, tally)
    assert out.specimens == [] and out.prescribers == []
    assert all(r.specimen_id is None for r in out.results) and all(q.prescriber_id is None for q in out.requests)
    assert tally.cleared["specimen.type"] == tally.cleared["specimen.collected_at"] == 1
    assert tally.cleared["prescriber.rpps"] == 1 and tally.dropped == {"sensitive": 1}


def test_collection_day_is_the_specimens_else_the_requests():
    q = Request("q1", "p1", None, datetime(2018, 12, 31, 23, 0))
    s = Specimen("s1", "q1", "BLD", datetime(2019, 1, 1, 8, 0))
    with_specimen, without = Result("r1", "q1", "2823-3", "K", specimen_id="s1"), Result("r2", "q1", "2823-3", "K")
    assert intake_filter.collected_on(with_specimen, {"q1": q}, {"s1": s}) == date(2019, 1, 1)
    assert intake_filter.collected_on(without, {"q1": q}, {"s1": s}) == date(2018, 12, 31)
    assert intake_filter.collected_on(Result("r3", "q9", "x", "x"), {}, {}) is None
    instr = document.from_record(body())
    assert intake_filter.outside(instr, without, date(2018, 12, 31)) == "period"
    assert intake_filter.outside(instr, with_specimen, date(2019, 1, 1)) is None
    assert intake_filter.outside(instr, with_specimen, None) == "period"


def test_patients_are_matched_on_their_ins():
    """M2: patients are matched on their ins."""
    instr = document.from_record(
        body(selection={"collected_from": "2019-01-01", "collected_to": "2020-12-31", "patients": [NIR2]})
    )
    ident = Identity("p", NIR2[:5] + "-" + NIR2[5:], "provisional", "X", "Y", date(1985, 7, 4), "F")
    assert intake_filter.listed_patient(instr, ident)
    ident.nir = NIR
    assert not intake_filter.listed_patient(instr, ident)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("identity", "sex"), "identity.sex"),
        (("identity", "nir"), "identity.nir"),
        (("result", "code"), "result.code"),
        (("request", "requested_at"), "request.requested_at"),
    ],
)
def test_fields_the_store_needs_must_be_allowed(drop, named):
    cat, name = drop
    fields = {**ALLOWED, cat: [f for f in ALLOWED[cat] if f != name]}
    fields = {c: names for c, names in fields.items() if names}
    instr = document.from_record(body(fields=fields))
    with pytest.raises(intake_filter.MissingFields) as caught:
        intake_filter.check(instr, "lab-a")
    assert str(caught.value).endswith(f"fields the store needs: {named}")
    intake_filter.check(document.from_record(body()), "lab-a")
    with pytest.raises(document.WrongTenant):
        intake_filter.check(document.from_record(body()), "lab-b")


# -- through the store ------------------------------------------------------------------------------


def test_only_the_instructed_period_is_stored_without_free_text(world, tmp_path):
    """A2, A4: only the instructed period is stored without free text."""
    gw, _, bio, _, _, _, receive = world
    receive(body())
    s = ingest(tmp_path, world, "MIG-IN-1")
    want = expected(EXPORT)
    got = stored(gw, bio)
    assert got["kept"] == want["kept"] and want["kept"]
    assert got["comments"] == [None] * len(want["kept"])
    assert all(p.phone is None and p.address is None for p in got["identities"])
    assert {q.requested_at.date() for q in got["requests"]} == {d for _, d, _, _ in want["kept"]}
    kept_messages = len(EXPORT) - len(want["outside"])
    assert (s.accepted, s.outside, s.rejected, s.results) == (kept_messages, len(want["outside"]), 0, len(want["kept"]))
    assert s.dropped == want["dropped"] and s.quarantine_ids == []
    commented = sum(
        1
        for c in EXPORT
        for day, obx in EXPORT[c][1]
        for code, v, note in obx
        if note and (EXPORT[c][0], date(int(day[:4]), int(day[4:6]), int(day[6:])), code, float(v)) in want["kept"]
    )
    assert s.cleared == {
        "identity.address": kept_messages,
        "identity.phone": kept_messages,
        "result.comment": commented,
    }
    assert counts(gw)["result"] == len(want["kept"])
    ev = events(gw)
    assert ("instruction:use", len(want["kept"]), ["MIG-IN-1"]) in ev
    assert all("MIG-IN-1" in refs for a, _, refs in ev if a == "ingest:message")
    assert sum(n for a, n, _ in ev if a == "ingest:message") == kept_messages


def test_pieces_handed_in_directly_are_cut_down_too(world):
    """Not only files: whatever hands an instructed Ingestor its messages gets them filtered."""
    from labvault.ingest.service import Summary, read

    gw, _, bio, tech, operator, _, receive = world
    receive(body())
    instr = instruction_for_ingest(gw, operator, "lab-a", "MIG-IN-1")
    pieces = read(b"".join(hl7(c) for c in EXPORT), file="feed")
    summary = Summary("feed", "hl7v2")
    outcomes = Ingestor(gw, tech, "lab-a", instruction=instr).ingest_pieces(pieces, summary)
    want = expected(EXPORT)
    assert stored(gw, bio)["kept"] == want["kept"]
    assert [o.status for o in outcomes].count("outside") == len(want["outside"]) == summary.outside
    assert [o.status for o in outcomes].count("accepted") == len(EXPORT) - len(want["outside"])


def test_codes_patients_and_sensitive_categories(world, tmp_path):
    gw, _, bio, _, _, _, receive = world
    sel = {"collected_from": FROM.isoformat(), "collected_to": TO.isoformat()}
    receive(
        body(
            "CODES",
            selection={**sel, "codes": [f"{LOINC}|2823-3", f"{LOINC}|{HIV}"], "sensitive": ["hiv"], "patients": [NIR]},
        )
    )
    s = ingest(tmp_path, world, "CODES")
    want = expected(EXPORT, codes={"2823-3", HIV}, patients={NIR}, sensitive=("hiv",))
    assert stored(gw, bio)["kept"] == want["kept"]
    assert {code for _, _, code, _ in want["kept"]} == {"2823-3", HIV}
    assert s.dropped == want["dropped"] and set(want["dropped"]) == {"patient", "period", "code"}


def test_a_sensitive_category_not_listed_is_left_out(world, tmp_path):
    gw, _, bio, _, _, _, receive = world
    receive(body())
    s = ingest(tmp_path, world, "MIG-IN-1", controls=("C",))
    assert [c for _, _, c, _ in stored(gw, bio)["kept"]] == ["2823-3"]
    assert s.dropped == {"sensitive": 1}


@pytest.mark.parametrize("case", ["wrong kind", "expired", "revoked signer", "missing field"])
def test_an_unfit_instruction_stops_the_import_before_anything_is_stored(world, tmp_path, case):
    gw, admin, _, _, _, signer, receive = world
    z = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    if case == "wrong kind":
        receive(body(kind="migration_out"))
        err, said = intake_filter.WrongKind, "is of kind migration_out: an import needs kind migration_in"
    elif case == "expired":
        receive(body(valid_from=z(NOW - timedelta(days=9)), valid_until=z(NOW - timedelta(days=2))))
        err, said = document.Expired, "expired"
    elif case == "revoked signer":
        receive(body())
        with gw.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.revoke_signer(u, "lab-a", signer.signer_id)
        err, said = document.UnknownSigner, "revoked"
    else:
        receive(body(fields={**ALLOWED, "identity": ["nir", "family_name", "given_names"]}))
        err, said = intake_filter.MissingFields, "identity.birth_date, identity.sex"
    with pytest.raises(err, match=said) as caught:
        ingest(tmp_path, world, "MIG-IN-1")
    assert "\n" not in str(caught.value) and "DUPONT" not in str(caught.value)
    assert counts(gw) == {"patient_identity": 0, "prescriber": 0, "request": 0, "specimen": 0, "result": 0}
    assert events(gw) == []


def test_refused_messages_are_reported_not_quarantined(world, tmp_path):
    gw, _, bio, tech, operator, _, receive = world
    receive(body())
    f = tmp_path / "export.hl7"
    bad = hl7("A").replace(NIR.encode(), NIR[:-2].encode() + b"00")
    f.write_bytes(bad + hl7("C"))
    instr = instruction_for_ingest(gw, operator, "lab-a", "MIG-IN-1")
    [s] = Ingestor(gw, tech, "lab-a", instruction=instr).ingest_files([f])
    assert (s.accepted, s.rejected, s.quarantine_ids) == (1, 1, [])
    assert "not a valid NIR" in s.reasons[0]
    with gw.unit(bio, Purpose.CARE) as u:
        from labvault.ingest import intake

        assert intake.listing(u, "lab-a") == []


# -- the command line ----------------------------------------------------------------------------------


@pytest.fixture
def cli_lab(home, capsys, monkeypatch, tmp_path):
    from labvault.accounts import service

    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys,
        "tenant",
        "add",
        "lab-a",
        "--name",
        "Lab A",
        "--finess",
        "690000123",
        "--retention",
        "results=10y",
        "--retention-ref",
        "Code de la santé publique",
    )
    assert code == 0, err
    tech = enrolled_account(lambda *a: run(capsys, *a), monkeypatch, "tech@lab.invalid", "technician", "lab-a")
    monkeypatch.setenv("LABVAULT_AS_PASSWORD", PASSWORD)
    private, public = Signer.generate()
    rt = open_runtime(Settings.from_env())
    try:
        admin = first_lab_admin(rt.gateway, rt.operator, "lab-a")  # invited by the platform
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:  # who adds the lab's biologist
            service.create_account(
                u, tenant_id="lab-a", name="Claire Moreau", email="signer@lab.invalid", roles=["biologist"]
            )
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            signers.add_signer(u, "lab-a", email="signer@lab.invalid", public_key=public.hex())
    finally:
        rt.close()
    key = tmp_path / "signer.key"
    key.write_text(private.hex())
    export = tmp_path / "export.hl7"
    export.write_bytes(b"".join(hl7(c) for c in EXPORT))

    def receive(record: dict) -> None:
        doc = tmp_path / f"{record['id']}.json"
        doc.write_text(json.dumps(record))
        code, _, err = run(capsys, "instruction", "sign", str(doc), "--key", str(key))
        assert code == 0, err
        code, _, err = run(capsys, "instruction", "receive", str(doc.with_suffix(".signed.json")), "--tenant", "lab-a")
        assert code == 0, err

    return tech, export, receive


def cli_counts() -> dict[str, int]:
    rt = open_runtime(Settings.from_env())
    try:
        with rt.gateway.unit(rt.operator, Purpose.ADMINISTRATION) as u:
            return u.counts("lab-a")
    finally:
        rt.close()


def test_cli_ingest_under_an_instruction(cli_lab, capsys):
    tech, export, receive = cli_lab
    receive(body())
    code, out, err = run(
        capsys, "ingest", "--tenant", "lab-a", "--instruction", "MIG-IN-1", str(export), "--as", tech, "--json"
    )
    assert code == 0, err
    s = json.loads(out.strip().splitlines()[-1])
    want = expected(EXPORT)
    assert (s["instruction"], s["results"], s["outside_instruction"]) == (
        "MIG-IN-1",
        len(want["kept"]),
        len(want["outside"]),
    )
    assert s["results_dropped"] == sum(want["dropped"].values()) and s["dropped_by"] == want["dropped"]
    assert set(s["cleared"]) == {"identity.address", "identity.phone", "result.comment"}
    assert NIR not in out and "DUPONT" not in out and "Dr House" not in out
    assert cli_counts()["result"] == len(want["kept"])
    code, out, _ = run(capsys, "ingest", "--tenant", "lab-a", "--instruction", "MIG-IN-1", str(export), "--as", tech)
    assert code == 0 and "instruction MIG-IN-1: export.hl7: 1 message(s) outside it" in out


@pytest.mark.parametrize("case", ["wrong kind", "missing field", "unknown"])
def test_cli_refuses_an_unfit_instruction(cli_lab, capsys, case):
    tech, export, receive = cli_lab
    if case == "wrong kind":
        receive(body(kind="export", tenant="lab-a"))
        said, refused = "is of kind export", 3
    elif case == "missing field":
        receive(body(fields={**ALLOWED, "result": ["code", "value_num"]}))
        said, refused = "fields the store needs: result.code_system, result.label, result.status", 3
    else:
        said, refused = "no such instruction", 1
    code, _, err = run(capsys, "ingest", "--tenant", "lab-a", "--instruction", "MIG-IN-1", str(export), "--as", tech)
    assert code == refused and said in one_line_error(err)
    assert cli_counts() == {"patient_identity": 0, "prescriber": 0, "request": 0, "specimen": 0, "result": 0}
