"""Deleting a lab's data needs the lab: a real lab is shredded or ended only under its signed
deletion instruction (kind deletion, scope lab), re-checked at the moment of use; only labs
created synthetic go without one, and a purpose the caller names (generate, benchmark) never
unlocks a real lab. On SQLite and on a real PostgreSQL 15, with a real keyring."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from labvault.access import Principal, Purpose, instructed
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer, canonical
from labvault.errors import AccessDenied, NotFound
from labvault.instructions import document, signers
from labvault.retention import purge
from labvault.store import schema as t
from labvault.synth import LabGenerator
from labvault.synth.load import load_lab
from tests.conftest import ADMIN, lab_user, make_lab

LAB, OTHER = "lab-a", "lab-b"
VENDOR_ROLES = ("platform_admin", "operator", "support", "security_officer")
PURPOSES = (Purpose.ADMINISTRATION, Purpose.GENERATE, Purpose.BENCHMARK)


# -- one place that makes labs, accounts and instructions ---------------------------------------------
def real_lab(gw, lab: str = LAB, finess: str = "690000017") -> None:
    """A real lab (not synthetic), filled with generated patients by the lab's own technician."""
    make_lab(gw, lab, finess, synthetic=False)
    load_lab(gw, lab_user(gw, lab, "technician", name="Tech"), lab, patients=4, seed=3)


def synthetic_lab(gw, lab: str, finess: str = "690000025") -> None:
    make_lab(gw, lab, finess, synthetic=True)
    load_lab(gw, ADMIN, lab, patients=3, seed=4)  # vendor accounts may generate into a synthetic lab


def vendor(gw, role: str) -> Principal:
    account_id = f"vendor-{role}".replace("_", "-")
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            PLATFORM, account_id, f"Vendor {role}", f"{account_id}@vendor.invalid", [role], commitment="test"
        )
    return Principal(account_id, f"Vendor {role}", PLATFORM, frozenset({role}))


def lab_signer(gw, lab: str = LAB) -> tuple[Signer, str]:
    """A registered signer of the lab (added by the lab's admin); its private key stays here."""
    person = lab_user(gw, lab, "biologist", name="Signer")
    private, public = Signer.generate()
    with gw.unit(lab_user(gw, lab, "lab_admin", name="Admin"), Purpose.ADMINISTRATION) as u:
        sid = signers.add_signer(u, lab, email=f"{person.account_id}@lab.invalid", public_key=public.hex()).signer_id
    return Signer(private), sid


def deletion_doc(signer: Signer, lab: str = LAB, *, instruction_id: str = "DEL-1", **over) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    ts = lambda d: d.isoformat().replace("+00:00", "Z")  # noqa: E731
    record = {
        "id": instruction_id,
        "tenant": lab,
        "kind": "deletion",
        "scope": "lab",
        "purpose": "End of contract: delete every record of the lab",
        "deletion_deadline": ts(now + timedelta(days=30)),
        "valid_from": ts(now - timedelta(hours=1)),
        "valid_until": ts(now + timedelta(days=7)),
    }
    record.update(over)
    record = {k: v for k, v in record.items() if v is not None}
    return document.sign(document.from_record(record), signer)


def receive(gw, doc: dict, lab: str = LAB) -> str:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        return signers.receive(u, lab, doc, datetime.now(UTC)).instruction_id


# -- what "nothing changed" means -----------------------------------------------------------------------
def state(gw, lab: str = LAB) -> dict:
    with gw.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", lab, True)))
        out = {
            name: conn.execute(
                select(func.count())
                .select_from(t.metadata.tables[name])
                .where(t.metadata.tables[name].c.tenant_id == lab)
            ).scalar_one()
            for name in ("patient_identity", "request", "result", "tenant_key", "signed_record")
        }
        out["status"] = conn.execute(select(t.tenant.c.status).where(t.tenant.c.tenant_id == lab)).scalar_one()
    out["keyring_scope"] = gw.keys.has_scope(lab)
    return out


def denials(gw, lab: str, actor: str) -> list[tuple[str, str]]:
    with gw.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", lab, True)))
        rows = conn.execute(
            select(t.audit_event.c.action, t.audit_event.c.outcome)
            .where(
                t.audit_event.c.tenant_id == lab, t.audit_event.c.actor == actor, t.audit_event.c.outcome == "denied"
            )
            .order_by(t.audit_event.c.seq)
        ).all()
    return [(r.action, r.outcome) for r in rows]


def shred(gw, who, purpose=Purpose.ADMINISTRATION, lab=LAB, instruction_id=None):
    with gw.unit(who, purpose) as u:
        return u.shred_tenant(lab, instruction_id=instruction_id)


def end(gw, who, purpose=Purpose.ADMINISTRATION, lab=LAB, instruction_id=None):
    with gw.unit(who, purpose) as u:
        return purge.end_delete(u, lab, instruction_id=instruction_id)


# -- tests -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_no_vendor_role_deletes_a_real_lab_without_its_instruction(gateway, role):
    """D2, A1, A8, G1: per vendor role and per purpose it may name, `tenant shred` and `tenant end
    --delete` on a real lab are refused with the reason, audited as denied, and change nothing."""
    real_lab(gateway)
    who = vendor(gateway, role)
    before = state(gateway)
    assert before["patient_identity"] == 4 and before["tenant_key"] == 2 and before["keyring_scope"]
    for purpose in PURPOSES:
        for op in (shred, end):
            with pytest.raises(AccessDenied) as e:
                op(gateway, who, purpose)
            reason = str(e.value)
            if role == "platform_admin":
                assert "not a synthetic lab" in reason and "signed deletion instruction" in reason
            else:
                assert "is not allowed for roles" in reason
            assert state(gateway) == before
    assert denials(gateway, LAB, who.account_id) == [
        (action, "denied") for _ in PURPOSES for action in ("tenant:shred", "tenant:end")
    ]


@pytest.mark.parametrize("role", VENDOR_ROLES)
def test_a_named_purpose_never_writes_into_a_real_lab(gateway, role):
    """A8: generate or benchmark, named by the caller, writes into synthetic labs only."""
    real_lab(gateway)
    synthetic_lab(gateway, OTHER)
    who = vendor(gateway, role)
    before, other_before = state(gateway), state(gateway, OTHER)
    record = LabGenerator(LAB, 9).patient(0)
    for purpose in PURPOSES:
        with pytest.raises(AccessDenied) as e, gateway.unit(who, purpose) as u:
            u.add_patients(LAB, [record.identity])
        if role in ("platform_admin", "operator") and purpose is not Purpose.ADMINISTRATION:
            assert "not a synthetic lab" in str(e.value)
        else:
            assert "do not write lab data" in str(e.value)
    assert state(gateway) == before
    assert denials(gateway, LAB, who.account_id) == [("patient:identity:create", "denied")] * len(PURPOSES)
    if role in ("platform_admin", "operator"):  # the roles that generate: into a synthetic lab only
        assert load_lab(gateway, who, OTHER, patients=1, seed=9).patients == 1
    else:
        with pytest.raises(AccessDenied):
            load_lab(gateway, who, OTHER, patients=1, seed=9)
        assert state(gateway, OTHER) == other_before


def test_deletion_under_the_labs_signed_instruction_names_it(gateway):
    """D2, A1, C3: with the lab's signed deletion instruction the lab is deleted (rows, keys) and the
    certificate names the instruction: id, SHA-256 of the signed record, signer, signature."""
    real_lab(gateway)
    real_lab(gateway, OTHER, "690000025")
    signer, sid = lab_signer(gateway)
    doc = deletion_doc(signer)
    iid = receive(gateway, doc)
    other_before = state(gateway, OTHER)
    record = end(gateway, ADMIN, instruction_id=iid)
    named = record["body"]["instruction"]
    assert record["body"]["synthetic"] is False
    assert named["id"] == "DEL-1" and named["kind"] == "deletion" and named["scope"] == "lab"
    assert named["sha256"] == hashlib.sha256(canonical(doc["instruction"])).hexdigest()
    assert (named["signer_id"], named["signer_public_key"], named["signature"]) == (
        sid,
        doc["signer_public_key"],
        doc["signature"],
    )
    after = state(gateway)
    assert (
        after["patient_identity"],
        after["result"],
        after["tenant_key"],
        after["status"],
        after["keyring_scope"],
    ) == (0, 0, 0, "shredded", False)
    assert state(gateway, OTHER) == other_before
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        [cert] = purge.certificates(u, LAB)
        purge.verify_certificate(u, cert)
        shred_record = u.signed_records(LAB, "tenant-shred")[0]
    assert cert["body"]["instruction"] == named and shred_record["body"]["instruction"] == named


def test_shred_under_the_labs_signed_instruction(gateway):
    """C3, A1: `tenant shred` of a real lab under its deletion instruction; the record names it."""
    real_lab(gateway)
    signer, _ = lab_signer(gateway)
    doc = deletion_doc(signer, instruction_id="DEL-SHRED")
    record = shred(gateway, ADMIN, instruction_id=receive(gateway, doc))
    assert record["body"]["instruction"]["id"] == "DEL-SHRED"
    assert record["body"]["instruction"]["sha256"] == hashlib.sha256(canonical(doc["instruction"])).hexdigest()
    assert not gateway.keys.has_scope(LAB) and state(gateway)["status"] == "shredded"


def test_instruction_refused_at_use_expired_revoked_wrong_kind_or_scope(gateway):
    """A1: the instruction is re-checked at the moment of use: expired since it was received, its
    signer revoked, another kind, a deletion of a selection, another lab's: refused, audited, nothing
    changed."""
    real_lab(gateway)
    real_lab(gateway, OTHER, "690000025")
    signer, sid = lab_signer(gateway)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    short = receive(
        gateway, deletion_doc(signer, instruction_id="DEL-SHORT", valid_until=soon.isoformat().replace("+00:00", "Z"))
    )
    selection = receive(
        gateway,
        deletion_doc(
            signer,
            instruction_id="DEL-SEL",
            scope=None,
            selection={"collected_from": "2000-01-01", "collected_to": "2030-12-31"},
        ),
    )
    support = receive(
        gateway,
        document.sign(
            document.from_record(
                {
                    "id": "SUP-1",
                    "tenant": LAB,
                    "kind": "support_access",
                    "purpose": "a support ticket",
                    "fields": {"identity": ["nir"]},
                    "selection": {"collected_from": "2020-01-01", "collected_to": "2020-12-31"},
                    "valid_from": "2020-01-01T00:00:00Z",
                    "valid_until": "2099-01-01T00:00:00Z",
                }
            ),
            signer,
        ),
    )
    other_signer, _ = lab_signer(gateway, OTHER)
    receive(gateway, deletion_doc(other_signer, OTHER, instruction_id="DEL-OTHER"), OTHER)
    kept = receive(gateway, deletion_doc(signer, instruction_id="DEL-KEPT"))
    before = state(gateway)
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.5)
    cases = [
        (short, document.Expired, "expired"),
        (selection, AccessDenied, "scope lab"),
        (support, AccessDenied, "kind support_access"),
        ("DEL-OTHER", NotFound, "no such instruction"),
    ]
    for iid, error, words in cases:
        for op in (shred, end):
            with pytest.raises(error, match=words):
                op(gateway, ADMIN, instruction_id=iid)
            assert state(gateway) == before
    with gateway.unit(lab_user(gateway, LAB, "lab_admin", name="Admin"), Purpose.ADMINISTRATION) as u:
        signers.revoke_signer(u, LAB, sid)
    for op in (shred, end):
        with pytest.raises(document.UnknownSigner, match="revoked"):
            op(gateway, ADMIN, instruction_id=kept)
    assert state(gateway) == before
    assert denials(gateway, LAB, ADMIN.account_id).count(("tenant:end", "denied")) == len(cases) + 1


def test_synthetic_labs_go_without_an_instruction(gateway):
    """D2: a lab created synthetic is deleted or shredded without an instruction; the certificate
    says so."""
    synthetic_lab(gateway, "lab-s1")
    synthetic_lab(gateway, "lab-s2", "690000033")
    record = end(gateway, ADMIN, lab="lab-s1")
    assert record["body"]["synthetic"] is True and record["body"]["instruction"] is None
    assert state(gateway, "lab-s1")["patient_identity"] == 0 and not gateway.keys.has_scope("lab-s1")
    record = shred(gateway, ADMIN, lab="lab-s2")
    assert record["body"]["synthetic"] is True and record["body"]["instruction"] is None
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        labs = {x.id: x.synthetic for x in u.list_tenants()}
    assert labs == {"lab-s1": True, "lab-s2": True}


def test_the_check_before_confirmation_records_no_use(gateway):
    """G1: the CLI's check before asking for confirmation reads the instruction but does not count
    as its use; the deletion itself does (one ``instruction:use`` event)."""
    real_lab(gateway)
    signer, _ = lab_signer(gateway)
    iid = receive(gateway, deletion_doc(signer))
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        ground = instructed.authorise_deletion(u, LAB, iid, action="tenant:end", use=False)
    assert ground["instruction"]["id"] == iid
    end(gateway, ADMIN, instruction_id=iid)
    with gateway.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", LAB, True)))
        uses = conn.execute(
            select(func.count())
            .select_from(t.audit_event)
            .where(t.audit_event.c.tenant_id == LAB, t.audit_event.c.action == "instruction:use")
        ).scalar_one()
    assert uses == 1
