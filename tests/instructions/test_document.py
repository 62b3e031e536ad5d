"""The instruction document: strict parsing, round trips, signatures and each refusal, excess."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labvault.crypto.signing import SignatureInvalid, Signer
from labvault.errors import AccessDenied, InvalidInput
from labvault.instructions import document as d

# --- an independent bech32 encoder (BIP-173), to make age recipients --------------------------

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _polymod(values):
    gen = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for v in values:
        b = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if ((b >> i) & 1) else 0
    return chk


def age_recipient(raw: bytes) -> str:
    bits = int.from_bytes(raw, "big") << 4  # 256 bits + 4 padding = 52 groups of 5
    data = [(bits >> (5 * (51 - n))) & 31 for n in range(52)]
    hrp = [ord(c) >> 5 for c in "age"] + [0] + [ord(c) & 31 for c in "age"]
    pm = _polymod(hrp + data + [0] * 6) ^ 1
    check = [(pm >> 5 * (5 - n)) & 31 for n in range(6)]
    return "age1" + "".join(CHARSET[v] for v in data + check)


# From the age README (a real X25519 recipient).
AGE_README = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
KEY = age_recipient(bytes(range(32)))

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def doc(**over) -> dict:
    base = {
        "id": "exp-2025-001",
        "tenant": "lab-a",
        "kind": "export",
        "purpose": "Export to the lab's new LIS vendor",
        "fields": {"identity": ["nir", "family_name"], "result": ["code", "value_num", "unit"]},
        "selection": {"collected_from": "2024-01-01", "collected_to": "2024-12-31"},
        "destination": {"name": "NewLIS SAS", "country": "FR", "recipient_age_key": KEY},
        "expected_volume": 1000,
        "deletion_deadline": "2025-06-30T00:00:00Z",
        "valid_from": "2025-01-01T00:00:00Z",
        "valid_until": "2025-04-01T00:00:00Z",
    }
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def as_json(x) -> bytes:
    return json.dumps(x).encode()


def refused(data: dict, where: str) -> str:
    with pytest.raises(d.InstructionInvalid) as e:
        d.parse(as_json(data))
    msg = str(e.value)
    assert msg.startswith(f"instruction: {where}: "), msg
    assert "\n" not in msg
    return msg


@pytest.fixture
def signer():
    priv, _pub = Signer.generate()
    return Signer(priv)


# --- parsing --------------------------------------------------------------------------------------


def test_parses_json_and_yaml_alike():
    j = d.parse(as_json(doc()))
    y = d.parse(yaml.safe_dump(doc()).encode())
    assert j == y
    assert j.fields == {"identity": ("nir", "family_name"), "result": ("code", "value_num", "unit")}
    assert j.valid_from == datetime(2025, 1, 1, tzinfo=UTC)
    assert j.collected_to == date(2024, 12, 31)
    assert j.tolerance == 0.10


def test_yaml_native_dates_and_norway():
    text = f"""
id: mig-1
tenant: lab-a
kind: export
purpose: to Norway
fields: {{result: [code]}}
selection: {{collected_from: 2024-01-01, collected_to: 2024-02-01}}
destination: {{name: Recipient AS, country: NO, recipient_age_key: {KEY}}}
expected_volume: 10
deletion_deadline: 2025-06-30T00:00:00Z
valid_from: 2025-01-01T00:00:00+01:00
valid_until: 2025-04-01T00:00:00Z
"""
    i = d.parse(text.encode())
    assert i.destination.country == "NO"  # not False (YAML 1.1 boolean)
    assert i.valid_from == datetime(2024, 12, 31, 23, tzinfo=UTC)


def test_real_age_recipient_is_accepted():
    assert d.is_age_recipient(AGE_README)
    assert d.is_age_recipient(KEY)


@pytest.mark.parametrize(
    "bad",
    [
        AGE_README[:-1] + ("q" if AGE_README[-1] != "q" else "p"),  # checksum
        AGE_README.upper(),
        AGE_README[:-1],
        "age1" + "b" * 58,  # 'b' is not bech32
        "age2" + AGE_README[4:],
        "AGE-SECRET-KEY-1" + "q" * 46,
    ],
)
def test_bad_age_key_is_refused(bad):
    msg = refused(
        doc(destination={"name": "X", "country": "FR", "recipient_age_key": bad}), "destination.recipient_age_key"
    )
    assert bad not in msg


def test_the_recipients_receipt_key_is_an_ed25519_key_kept_in_the_signed_record():
    dest = {"name": "NewLIS SAS", "country": "FR", "recipient_age_key": KEY, "receipt_key": "AB" * 32}
    ok = d.parse(as_json(doc(destination=dest)))
    assert ok.destination.receipt_key == "ab" * 32
    assert d.to_record(ok)["destination"]["receipt_key"] == "ab" * 32
    assert d.from_record(d.to_record(ok)) == ok
    for bad in ("ab" * 31, "zz" * 32, 12):
        msg = refused(doc(destination={**dest, "receipt_key": bad}), "destination.receipt_key")
        assert str(bad) not in msg


def test_outside_eea_needs_a_transfer_basis():
    """A6, M1: outside eea needs a transfer basis."""
    dest = {"name": "Cloud Inc", "country": "US", "recipient_age_key": KEY}
    refused(doc(destination=dest), "destination.transfer_basis")
    ok = d.parse(as_json(doc(destination={**dest, "transfer_basis": "SCCs 2021/914 module 2"})))
    assert ok.destination.transfer_basis
    # Iceland is in the EEA, not the EU.
    assert d.parse(as_json(doc(destination={**dest, "country": "IS"}))).destination.country == "IS"
    refused(doc(destination={**dest, "country": "XX"}), "destination.country")
    refused(doc(destination={**dest, "country": "fr"}), "destination.country")


def test_unknown_category_and_field_are_named():
    msg = refused(doc(fields={"identity": ["nir", "shoe_size"]}), "fields.identity[1]")
    assert "shoe_size" in msg
    msg = refused(doc(fields={"diagnosis": ["icd10"]}), "fields.diagnosis")
    assert "unknown category" in msg
    refused(doc(fields={"identity": ["nir", "nir"]}), "fields.identity[1]")


def test_free_text_is_excluded_unless_listed():
    """A4: free text is excluded unless listed."""
    i = d.parse(as_json(doc(fields={"result": list(d.FIELDS["result"])})))
    assert not i.allows("free_text", "result.comment")
    assert "comment" not in d.FIELDS["result"]
    assert d.excess(i, {"free_text": ["result.comment"]}, date(2024, 1, 1), date(2024, 12, 31)) == [
        "field free_text.result.comment is not in the instruction"
    ]
    j = d.parse(as_json(doc(fields={"result": ["code"], "free_text": ["result.comment"]})))
    assert j.allows("free_text", "result.comment")


@pytest.mark.parametrize(
    ("over", "where"),
    [
        ({"colour": "blue"}, "colour"),
        ({"id": "has space"}, "id"),
        ({"id": "x" * 65}, "id"),
        ({"id": 12}, "id"),
        ({"tenant": "Lab A"}, "tenant"),
        ({"kind": "sell"}, "kind"),
        ({"purpose": ""}, "purpose"),
        ({"purpose": "x" * 501}, "purpose"),
        ({"purpose": "ok\x00"}, "purpose"),
        ({"expected_volume": "1000"}, "expected_volume"),
        ({"expected_volume": True}, "expected_volume"),
        ({"expected_volume": -1}, "expected_volume"),
        ({"tolerance": 2}, "tolerance"),
        ({"selection": {"collected_from": "2024-12-31", "collected_to": "2024-01-01"}}, "selection.collected_from"),
        ({"selection": {"collected_from": "2024-02-30", "collected_to": "2024-12-31"}}, "selection.collected_from"),
        ({"selection": {"collected_from": "2024-01-01", "collected_to": "2024-12-31", "extra": 1}}, "selection.extra"),
        (
            {"selection": {"collected_from": "2024-01-01", "collected_to": "2024-12-31", "patients": []}},
            "selection.patients",
        ),
        (
            {"selection": {"collected_from": "2024-01-01", "collected_to": "2024-12-31", "codes": ["718-7"]}},
            "selection.codes[0]",
        ),
        (
            {"selection": {"collected_from": "2024-01-01", "collected_to": "2024-12-31", "sensitive": ["other"]}},
            "selection.sensitive[0]",
        ),
        ({"valid_from": "2025-01-01T00:00:00"}, "valid_from"),
        ({"valid_until": "2024-12-01T00:00:00Z"}, "valid_until"),
        ({"deletion_deadline": "2024-12-01T00:00:00Z"}, "deletion_deadline"),
        ({"deletion_deadline": None}, "deletion_deadline"),
        ({"destination": None}, "destination"),
        ({"expected_volume": None}, "expected_volume"),
        ({"fields": None}, "fields"),
        ({"source": {"name": "Old LIS"}}, "source"),
        ({"version": 2}, "version"),
    ],
)
def test_each_wrong_document_is_refused_where(over, where):
    refused(doc(**over), where)


def test_refusals_never_echo_values():
    """G2: refusals never echo values."""
    secret = "Dupont-1-85-05-78-006-084-36"
    for over in (
        {"purpose": secret * 30},
        {"id": secret + " "},
        {"kind": secret},
        {"destination": {"name": "X", "country": secret, "recipient_age_key": KEY}},
        {"selection": {"collected_from": secret, "collected_to": "2024-01-01"}},
        {secret + " !": 1},
    ):
        with pytest.raises(InvalidInput) as e:
            d.parse(as_json(doc(**over)))
        assert secret not in str(e.value)


def test_duplicate_keys_aliases_and_garbage():
    with pytest.raises(d.InstructionInvalid, match="appears twice"):
        d.parse(b'{"id": "a", "id": "b"}')
    with pytest.raises(d.InstructionInvalid, match="appears twice"):
        d.parse(b"id: a\nid: b\n")
    with pytest.raises(d.InstructionInvalid, match="aliases"):
        d.parse(b"purpose: &p x\nlegal_basis: *p\n")
    with pytest.raises(d.InstructionInvalid, match="not valid JSON"):
        d.parse(b"{nope")
    with pytest.raises(d.InstructionInvalid, match="must be a mapping"):
        d.parse(b"- a\n- b\n")
    with pytest.raises(d.InstructionInvalid, match="not UTF-8"):
        d.parse(b"\xff\xfe")
    with pytest.raises(d.InstructionInvalid, match="larger"):
        d.parse(b" " * (d.MAX_BYTES + 1))


def test_kind_rules():
    deletion = doc(kind="deletion", fields=None, destination=None, expected_volume=None)
    assert d.parse(as_json(deletion)).fields == {}
    refused({**deletion, "destination": doc()["destination"]}, "destination")
    mig_in = doc(
        kind="migration_in",
        destination=None,
        expected_volume=None,
        deletion_deadline=None,
        source={"name": "Old LIS", "country": "BE"},
    )
    assert d.parse(as_json(mig_in)).source == d.Source("Old LIS", "BE")
    refused({k: v for k, v in mig_in.items() if k != "source"}, "source")
    refused({**mig_in, "destination": doc()["destination"]}, "destination")
    support = doc(kind="support_access", destination=None, expected_volume=None, deletion_deadline=None)
    assert d.parse(as_json(support)).destination is None


def test_deletion_of_the_whole_lab():
    """D2, A1: a deletion instruction with scope lab covers the whole lab and has no selection; the
    scope is refused on other kinds and beside a selection; its record round-trips and signs."""
    whole = doc(kind="deletion", fields=None, destination=None, expected_volume=None, selection=None, scope="lab")
    i = d.parse(as_json(whole))
    assert i.scope == d.SCOPE_LAB and i.patients is None and i.codes is None and i.sensitive == d.SENSITIVE
    assert d.excess(i, {}, date(1900, 1, 1), date(2100, 1, 1), None, sensitive=d.SENSITIVE) == []
    record = d.to_record(i)
    assert record["scope"] == "lab" and "selection" not in record and d.from_record(record) == i
    refused({**whole, "selection": doc()["selection"]}, "selection")
    refused({**whole, "scope": "everything"}, "scope")
    refused({**doc(), "scope": "lab"}, "scope")
    refused(doc(kind="deletion", fields=None, destination=None, expected_volume=None, selection=None), "selection")
    assert (
        d.parse(as_json(doc(kind="deletion", fields=None, destination=None, expected_volume=None))).scope
        == d.SCOPE_SELECTION
    )


# --- round trip (property) --------------------------------------------------------------------------

ident = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
text = st.text(st.characters(blacklist_categories=("C", "Z")) | st.just(" "), min_size=1, max_size=80).filter(
    lambda s: s.strip() != ""
)
aware = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))


@st.composite
def instructions(draw):
    kind = draw(st.sampled_from(d.KINDS))
    cats = draw(st.lists(st.sampled_from(list(d.FIELDS)), min_size=kind != "deletion", unique=True))
    fields = {c: tuple(draw(st.lists(st.sampled_from(d.FIELDS[c]), min_size=1, unique=True))) for c in cats}
    fields = {c: tuple(f for f in d.FIELDS[c] if f in fields[c]) for c in d.FIELDS if c in fields}
    lo, hi = sorted(draw(st.lists(st.dates(), min_size=2, max_size=2)))
    vf = draw(aware)
    vu = vf + draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)))
    country = draw(st.sampled_from(sorted(d.ISO_COUNTRIES)))
    dest = d.Destination(
        draw(text),
        country,
        age_recipient(draw(st.binary(min_size=32, max_size=32))),
        draw(st.none() | text) if country in d.EEA else draw(text),
    )
    needs_dest = kind in d.OUTBOUND or (kind == "support_access" and draw(st.booleans()))
    deadline = vf + draw(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
    code = st.tuples(
        text.map(lambda s: "".join(c for c in s if c != "|" and not c.isspace()) or "sys"),
        st.from_regex(r"[A-Za-z0-9.-]{1,20}", fullmatch=True),
    )
    return d.Instruction(
        id=draw(ident),
        tenant=draw(st.from_regex(r"[a-z0-9][a-z0-9-]{1,62}", fullmatch=True)),
        kind=kind,
        purpose=draw(text),
        fields=fields,
        collected_from=lo,
        collected_to=hi,
        valid_from=vf,
        valid_until=vu,
        legal_basis=draw(st.none() | text),
        patients=draw(st.none() | st.lists(ident, min_size=1, max_size=5, unique=True).map(tuple)),
        codes=draw(st.none() | st.lists(code, min_size=1, max_size=4, unique=True).map(tuple)),
        sensitive=tuple(s for s in d.SENSITIVE if s in draw(st.sets(st.sampled_from(d.SENSITIVE)))),
        destination=dest if needs_dest else None,
        source=d.Source(draw(text), draw(st.none() | st.sampled_from(sorted(d.ISO_COUNTRIES))))
        if kind == "migration_in"
        else None,
        expected_volume=draw(st.integers(0, 10**9)) if kind in d.NEEDS_VOLUME else draw(st.none() | st.integers(0, 10)),
        tolerance=draw(st.floats(0, 1)),
        deletion_deadline=deadline if kind in d.NEEDS_DEADLINE else draw(st.none() | st.just(deadline)),
    )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(instructions())
def test_round_trip_json_and_yaml(instr):
    record = d.to_record(instr)
    assert d.from_record(record) == instr
    assert d.parse(json.dumps(record, ensure_ascii=False).encode()) == instr
    assert d.parse(yaml.safe_dump(record, allow_unicode=True).encode(), fmt="yaml") == instr
    assert d.to_record(d.parse(as_json(record))) == record


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(instructions())
def test_sign_verify_property(instr):
    s = Signer(os.urandom(32))
    signed = d.sign(instr, s)
    now = instr.valid_from
    if instr.deletion_deadline is not None and instr.deletion_deadline <= now:
        with pytest.raises(d.DeadlinePassed):
            d.verify_signed(signed, public_keys={"s1": s.public_key}, tenant=instr.tenant, now=now)
    else:
        assert d.verify_signed(signed, public_keys={"s1": s.public_key}, tenant=instr.tenant, now=now) == instr


# --- signing and refusals ---------------------------------------------------------------------------


def signed_doc(signer, **over):
    return d.sign(d.parse(as_json(doc(**over))), signer)


def test_sign_and_verify(signer):
    signed = signed_doc(signer)
    assert set(signed) == {"instruction", "signature", "signer_public_key"}
    json.dumps(signed)  # JSON-safe
    v = d.check_signed(signed, public_keys={"sig-1": signer.public_key}, tenant="lab-a", now=NOW)
    assert v.signer_id == "sig-1"
    assert v.instruction == d.parse(as_json(doc()))
    # the keys may come from a function of the tenant
    seen = []
    assert (
        d.verify_signed(
            signed, public_keys=lambda t: seen.append(t) or {"s": signer.public_key}, tenant="lab-a", now=NOW
        ).id
        == "exp-2025-001"
    )
    assert seen == ["lab-a"]


def test_unsigned(signer):
    signed = signed_doc(signer)
    for broken in (
        {**signed, "signature": ""},
        {k: v for k, v in signed.items() if k != "signature"},
        {"instruction": signed["instruction"]},
    ):
        with pytest.raises(d.InstructionUnsigned, match="not signed"):
            d.verify_signed(broken, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)


def test_malformed(signer):
    signed = signed_doc(signer)
    for broken in (
        "text",
        {**signed, "extra": 1},
        {**signed, "instruction": "x"},
        {**signed, "signer_public_key": "zz"},
    ):
        with pytest.raises(d.InstructionInvalid):
            d.verify_signed(broken, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)


def test_tampered_body(signer):
    """A1: tampered body."""
    signed = signed_doc(signer)
    body = json.loads(json.dumps(signed["instruction"]))
    body["fields"]["identity"].append("address")
    with pytest.raises(d.InstructionSignatureInvalid, match="does not match"):
        d.verify_signed({**signed, "instruction": body}, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)


def test_other_key(signer):
    """A1: other key."""
    other = Signer(Signer.generate()[0])
    signed = signed_doc(signer)
    # Signed by a key the lab does not know.
    with pytest.raises(d.UnknownSigner, match="unknown or revoked"):
        d.verify_signed(signed, public_keys={"s": other.public_key}, tenant="lab-a", now=NOW)
    # Claims a registered signer's key, but was signed with another key.
    forged = {**signed, "signature": other.sign(signed["instruction"])}
    with pytest.raises(d.InstructionSignatureInvalid):
        d.verify_signed(forged, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)
    assert issubclass(d.InstructionSignatureInvalid, SignatureInvalid)


def test_revoked_key(signer):
    """A1: revoked key."""
    signed = signed_doc(signer)
    keys = {"s": signer.public_key}
    d.verify_signed(signed, public_keys=keys, tenant="lab-a", now=NOW)
    del keys["s"]  # revoked: no longer among the lab's active keys
    with pytest.raises(d.UnknownSigner):
        d.verify_signed(signed, public_keys=keys, tenant="lab-a", now=NOW)


def test_wrong_tenant(signer):
    """A1, F1: wrong tenant."""
    signed = signed_doc(signer)
    with pytest.raises(d.WrongTenant, match="another lab") as e:
        d.verify_signed(signed, public_keys={"s": signer.public_key}, tenant="lab-b", now=NOW)
    assert isinstance(e.value, AccessDenied) and e.value.reason == "wrong_tenant"


@pytest.mark.parametrize(
    ("now", "error"),
    [
        (datetime(2024, 12, 31, 23, 59, tzinfo=UTC), d.NotYetValid),
        (datetime(2025, 4, 1, tzinfo=UTC), d.Expired),
        (datetime(2025, 1, 1, tzinfo=UTC), None),
    ],
)
def test_validity_period(signer, now, error):
    """A1: validity period."""
    signed = signed_doc(signer)
    if error is None:
        d.verify_signed(signed, public_keys={"s": signer.public_key}, tenant="lab-a", now=now)
    else:
        with pytest.raises(error):
            d.verify_signed(signed, public_keys={"s": signer.public_key}, tenant="lab-a", now=now)


def test_deletion_deadline_passed(signer):
    signed = signed_doc(signer, deletion_deadline="2025-02-01T00:00:00Z")
    with pytest.raises(d.DeadlinePassed, match="deadline"):
        d.verify_signed(signed, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)


def test_a_signed_but_invalid_record_is_refused(signer):
    record = doc(kind="sell")
    signed = {"instruction": record, "signature": signer.sign(record), "signer_public_key": signer.public_key.hex()}
    with pytest.raises(d.InstructionInvalid, match="kind"):
        d.verify_signed(signed, public_keys={"s": signer.public_key}, tenant="lab-a", now=NOW)


# --- excess --------------------------------------------------------------------------------------


def test_excess_names_what_is_beyond():
    """A1, A2: excess names what is beyond."""
    sel = {
        "collected_from": "2024-01-01",
        "collected_to": "2024-12-31",
        "patients": ["p1", "p2"],
        "codes": ["http://loinc.org|718-7"],
    }
    i = d.parse(as_json(doc(selection=sel)))
    assert (
        d.excess(
            i,
            {"identity": ["nir"], "result": ["code"]},
            date(2024, 1, 1),
            date(2024, 12, 31),
            ["p1"],
            codes=[("http://loinc.org", "718-7")],
            volume=1100,
        )
        == []
    )
    out = d.excess(
        i,
        {"identity": ["nir", "address"], "result": ["code"], "foo": ["bar"]},
        date(2023, 12, 31),
        datetime(2025, 1, 1, tzinfo=UTC),
        ["p1", "p3", "p4"],
        codes=[("http://loinc.org", "2345-7")],
        sensitive=["hiv"],
        volume=1101,
    )
    assert out == [
        "field identity.address is not in the instruction",
        "field foo.bar is unknown",
        "period starts before the instruction's collected_from 2024-01-01",
        "period ends after the instruction's collected_to 2024-12-31",
        "2 patient(s) not named in the instruction",
        "1 code(s) not named in the instruction",
        "sensitive category hiv is not in the instruction",
        "1101 results exceed the expected volume 1000 (+10% allows 1100)",
    ]
    assert not any("p3" in line or "2345" in line for line in out)
    assert d.excess(i, {}, None, None)[:2] == [
        "period starts before the instruction's collected_from 2024-01-01",
        "period ends after the instruction's collected_to 2024-12-31",
    ]
    assert "all patients asked; the instruction names 2" in d.excess(i, {}, date(2024, 1, 1), date(2024, 1, 1))


# --- template ------------------------------------------------------------------------------------

FILL = {
    "id": "t-1",
    "purpose": "a purpose",
    "legal_basis": None,
    "expected_volume": 5,
    "deletion_deadline": "2025-06-30T00:00:00Z",
    "valid_from": "2025-01-01T00:00:00Z",
    "valid_until": "2025-04-01T00:00:00Z",
}


@pytest.mark.parametrize("kind", d.KINDS)
def test_template_fills_into_a_valid_instruction(kind):
    text = d.template(kind, "lab-a")
    assert "#" in text
    with pytest.raises(d.InstructionInvalid):  # unfilled, it is not an instruction
        d.parse(text.encode())
    data = yaml.safe_load(text)
    assert data["tenant"] == "lab-a" and data["kind"] == kind
    for k, v in FILL.items():
        if k in data:
            data[k] = v
    if kind == "deletion":  # the whole lab by default: no selection to fill
        assert data["scope"] == "lab" and "selection" not in data
    else:
        data["selection"].update(collected_from="2024-01-01", collected_to="2024-12-31")
    if "destination" in data:
        data["destination"].update(name="Recipient", country="FR", transfer_basis=None, recipient_age_key=KEY)
    if "source" in data:
        data["source"].update(name="Old LIS", country=None)
    i = d.parse(yaml.safe_dump(data).encode())
    assert i.kind == kind and not i.allows("free_text", "result.comment")
    with pytest.raises(InvalidInput):
        d.template("sell", "lab-a")
