"""A lab's signed instructions and the migration procedure over the HTTP API, against the real app.

Instructions are signed here as a lab signer would on their own machine (``document.sign`` with a
key registered by the lab); migrations are planned in process by a vendor operator, as
``labvault migrate plan`` does, then approved, and their receipt imported, over HTTP.
``planned_migration`` is also what the route-wide tests use for real ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyrage import x25519

from labvault.access import Principal, Purpose
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import Signer
from labvault.instructions import document, signers
from labvault.migration import service as migration
from labvault.synth import LabGenerator
from tests.api.conftest import LAB_A, LAB_B, PATIENTS, SEED
from tests.conftest import lab_user

NOW = datetime.now(UTC).replace(microsecond=0)
PURPOSE = "Move results to NewLIS (purpose-sentinel-7731)"  # a value of the document: never echoed
DESTINATION = "NewLIS SAS"


def z(d: datetime) -> str:
    return d.isoformat().replace("+00:00", "Z")


def add_signer(gw, lab: str) -> Signer:
    """A named person of ``lab`` registered by its admin as a signer; their key stays here."""
    admin = lab_user(gw, lab, "lab_admin", name="Keeper")
    person = lab_user(gw, lab, "biologist", name="Signer")
    private, public = Signer.generate()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        signers.add_signer(u, lab, email=f"{person.account_id}@lab.invalid", public_key=public.hex())
    return Signer(private)


def record(lab: str, recipient: str, **over: object) -> dict:
    rec: dict = {
        "id": "MIG-API-1",
        "tenant": lab,
        "kind": "migration_out",
        "purpose": PURPOSE,
        "fields": {
            "request": ["requested_at"],
            "specimen": ["type"],
            "result": ["code", "code_system", "value_num", "unit"],
        },
        "selection": {"collected_from": "1990-01-01", "collected_to": NOW.date().isoformat()},
        "destination": {"name": DESTINATION, "country": "FR", "recipient_age_key": recipient},
        "expected_volume": 100_000,
        "deletion_deadline": z(NOW + timedelta(days=30)),
        "valid_from": z(NOW - timedelta(hours=1)),
        "valid_until": z(NOW + timedelta(days=7)),
    }
    rec.update(over)
    return rec


def signed(signer: Signer, lab: str, **over: object) -> dict:
    recipient = str(x25519.Identity.generate().to_public())
    return document.sign(document.from_record(record(lab, recipient, **over)), signer)


@dataclass(frozen=True)
class Planned:
    instruction_id: str
    migration_id: str
    signer: Signer
    identity: x25519.Identity  # the recipient's
    operator: Principal  # the vendor operator who planned it, in process


def planned_migration(gw, lab: str) -> Planned:
    """A received migration_out instruction of ``lab`` and a migration planned under it."""
    signer = add_signer(gw, lab)
    identity = x25519.Identity.generate()
    doc = document.sign(document.from_record(record(lab, str(identity.to_public()))), signer)
    admin = lab_user(gw, lab, "lab_admin", name="Keeper")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        received = signers.receive(u, lab, doc, NOW)
    operator = lab_user(gw, PLATFORM, "operator", name="Planner")
    with gw.unit(operator, Purpose.EXPORT) as u:
        job = migration.plan(u, lab, received.instruction_id)
    return Planned(received.instruction_id, job.migration_id, signer, identity, operator)


def personal_values(lab: str) -> set[str]:
    out: set[str] = set()
    for r in LabGenerator(lab, SEED).patients(PATIENTS):
        i = r.identity
        out |= {i.nir, i.patient_id} | {v for v in (i.phone, i.email) if v}
    return out


def clean(r, lab: str = LAB_A) -> None:
    """No personal value of the lab, and no value of the instruction's text, in an answer."""
    assert not [v for v in personal_values(lab) if v in r.text], r.text[:200]
    assert "sentinel" not in r.text or r.request.method == "GET", r.text[:200]


URL = f"/api/v1/tenants/{LAB_A}/instructions"


def test_a_lab_admin_posts_a_signed_instruction(api, admin_a):
    signer = add_signer(api.gateway, LAB_A)
    doc = signed(signer, LAB_A)
    r = admin_a.post(URL, json=doc)
    assert r.status_code == 201, r.text
    out = r.json()
    assert set(out) == {"id", "kind", "signer", "valid_until", "received_at"}
    assert (out["id"], out["kind"]) == ("MIG-API-1", "migration_out") and out["signer"]
    assert "sentinel" not in r.text
    clean(r)

    r = admin_a.get(URL)
    assert r.status_code == 200 and [i["id"] for i in r.json()] == ["MIG-API-1"]
    r = admin_a.get(f"{URL}/MIG-API-1")
    assert r.status_code == 200
    kept = r.json()
    assert kept["instruction"] == doc["instruction"] and kept["signature"] == doc["signature"]
    assert kept["signer_public_key"] == doc["signer_public_key"] == signer.public_key.hex()
    # What is kept verifies again, as the lab signed it.
    again = {k: kept[k] for k in ("instruction", "signature", "signer_public_key")}
    with api.gateway.unit(lab_user(api.gateway, LAB_A, "lab_admin", name="Keeper"), Purpose.ADMINISTRATION) as u:
        keys = signers.active_keys(u, LAB_A)
    assert document.check_signed(again, public_keys=keys, tenant=LAB_A, now=NOW).instruction.id == "MIG-API-1"

    # The same instruction again: refused, still one.
    r = admin_a.post(URL, json=doc)
    assert r.status_code == 400 and "already received" in r.json()["error"]
    assert len(admin_a.get(URL).json()) == 1
    assert admin_a.get(f"{URL}/NO-SUCH").status_code == 404


def test_a_signer_signs_through_the_api_with_their_own_key(api, admin_a, bio_a):
    """Draft -> the exact bytes to sign -> signed on the signer's side -> received."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    signer = add_signer(api.gateway, LAB_A)
    draft = record(LAB_A, str(x25519.Identity.generate().to_public()), id="MIG-API-DRAFT")
    r = bio_a.post(f"{URL}/draft", json={"instruction": draft})
    assert r.status_code == 200, r.text
    out = r.json()
    raw = base64.b64decode(out["canonical"])
    private = Ed25519PrivateKey.from_private_bytes(signer._key.private_bytes_raw())  # the signer's own key
    doc = {
        "instruction": out["record"],
        "signature": base64.b64encode(private.sign(raw)).decode(),
        "signer_public_key": signer.public_key.hex(),
    }
    r = admin_a.post(URL, json=doc)
    assert r.status_code == 201 and r.json()["id"] == "MIG-API-DRAFT", r.text
    # A malformed draft, or one for another lab: 4xx with the reason.
    r = bio_a.post(f"{URL}/draft", json={"instruction": {**draft, "kind": "dump-everything"}})
    assert r.status_code == 400 and "kind" in r.json()["error"]
    r = bio_a.post(f"{URL}/draft", json={"instruction": {**draft, "tenant": LAB_B}})
    assert r.status_code == 403 and "another lab" in r.json()["error"]


def test_refused_instructions_say_why_and_nothing_is_kept(api, admin_a):
    signer = add_signer(api.gateway, LAB_A)
    other = add_signer(api.gateway, LAB_B)
    doc = signed(signer, LAB_A)
    tampered = json.loads(json.dumps(doc))
    tampered["instruction"]["expected_volume"] = 1_000_000
    unsigned = {"instruction": doc["instruction"]}
    not_a_signature = {**doc, "signer_public_key": "zz" * 32}
    wrongly_made = {"instruction": {**doc["instruction"], "kind": "everything"}}
    wrongly_made["signature"] = signer.sign(wrongly_made["instruction"])
    wrongly_made["signer_public_key"] = doc["signer_public_key"]
    cases = [
        (tampered, 400, "the signature does not match the instruction"),
        (unsigned, 400, "the document is not signed"),
        ({**doc, "signature": ""}, 400, "the document is not signed"),
        (not_a_signature, 400, "malformed signature or signer key"),
        (signed(other, LAB_B), 403, "it is for another lab"),
        (signed(other, LAB_A), 400, "not a current signer of this lab"),
        (
            signed(signer, LAB_A, valid_from=z(NOW - timedelta(days=9)), valid_until=z(NOW - timedelta(days=1))),
            403,
            "it has expired",
        ),
        (
            signed(signer, LAB_A, valid_from=z(NOW + timedelta(days=1)), valid_until=z(NOW + timedelta(days=9))),
            403,
            "not valid yet",
        ),
        (wrongly_made, 400, "kind: must be one of"),
    ]
    for body, status, reason in cases:
        r = admin_a.post(URL, json=body)
        assert r.status_code == status and reason in r.json()["error"], (reason, r.status_code, r.text)
        assert "sentinel" not in r.text and "1000000" not in r.text
        clean(r)
    for body in ({"instruction": "x"}, {"document": doc}, [doc], {**doc, "extra": 1}):
        r = admin_a.post(URL, json=body)
        assert r.status_code == 422 and r.json()["error"], r.text
        assert "sentinel" not in r.text
    assert admin_a.get(URL).json() == []
    # Once refused, the genuine document is still received.
    assert admin_a.post(URL, json=doc).status_code == 201


def test_instructions_stay_within_their_lab(api, admin_a, admin_b, bio_a):
    doc = signed(add_signer(api.gateway, LAB_A), LAB_A)
    assert admin_a.post(URL, json=doc).status_code == 201
    for path in (URL, f"{URL}/MIG-API-1"):
        for c in (admin_b, bio_a):  # another lab's admin; a role without instruction:read
            r = c.get(path)
            assert r.status_code in (403, 404), (path, r.status_code)
            assert "sentinel" not in r.text and doc["signature"] not in r.text
    r = admin_b.post(URL, json=doc)
    assert r.status_code == 403
    r = bio_a.post(URL, json=signed(add_signer(api.gateway, LAB_A), LAB_A, id="MIG-API-2"))
    assert r.status_code == 403
    assert [i["id"] for i in admin_a.get(URL).json()] == ["MIG-API-1"]


def test_two_approvals_over_http_turn_a_planned_migration_approved(api, admin_a, admin_b, operator):
    p = planned_migration(api.gateway, LAB_A)
    base = f"/api/v1/tenants/{LAB_A}/migrations"
    r = admin_a.get(base)
    assert r.status_code == 200 and [(m["migration"], m["state"]) for m in r.json()] == [(p.migration_id, "planned")]
    clean(r)
    r = admin_a.get(f"{base}/{p.migration_id}")
    assert r.status_code == 200 and r.json()["instruction"] == p.instruction_id and r.json()["approvals"] == []
    assert r.json()["plan"]["counts"]["results"] > 0
    clean(r)
    r = admin_a.get(f"{base}/{p.migration_id}/approval")
    assert r.status_code == 200
    with api.gateway.unit(p.operator, Purpose.EXPORT) as u:
        assert r.json() == migration.approval_record(migration.get(u, LAB_A, p.migration_id))
    approval = r.json()
    for c in (admin_b,):  # another lab reaches nothing of it
        assert c.get(f"{base}/{p.migration_id}").status_code in (403, 404)
        assert c.get(f"{base}/{p.migration_id}/approval").status_code in (403, 404)

    # Bad signatures: of another plan, by a key that is not the lab's signer, not base64.
    stranger = Signer(Signer.generate()[0])
    bad = [
        (
            {
                "public_key": p.signer.public_key.hex(),
                "signature": p.signer.sign({**approval, "plan_sha256": "0" * 64}),
            },
            400,
            "does not match this plan",
        ),
        ({"public_key": stranger.public_key.hex(), "signature": stranger.sign(approval)}, 400, "not a current signer"),
        ({"public_key": p.signer.public_key.hex(), "signature": "not base64 é"}, 400, "does not match this plan"),
    ]
    for body, status, reason in bad:
        r = admin_a.post(f"{base}/{p.migration_id}/approvals", json=body)
        assert r.status_code == status and reason in r.json()["error"], r.text
    r = admin_a.post(f"{base}/{p.migration_id}/approvals", json={"public_key": "xyz", "signature": "a"})
    assert r.status_code == 422
    # A lab admin is no vendor operator.
    assert admin_a.post(f"{base}/{p.migration_id}/approvals/operator").status_code == 403
    assert admin_a.get(f"{base}/{p.migration_id}").json()["state"] == "planned"

    r = operator.post(f"{base}/{p.migration_id}/approvals/operator")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "planned" and [a["side"] for a in r.json()["approvals"]] == ["operator"]
    r = operator.post(f"{base}/{p.migration_id}/approvals/operator")
    assert r.status_code == 400 and "already has its operator approval" in r.json()["error"]

    good = {"public_key": p.signer.public_key.hex(), "signature": p.signer.sign(approval)}
    r = admin_a.post(f"{base}/{p.migration_id}/approvals", json=good)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    assert sorted(a["side"] for a in r.json()["approvals"]) == ["lab", "operator"]
    clean(r)
    assert admin_a.get(f"{base}/{p.migration_id}").json()["state"] == "approved"
    r = admin_a.post(f"{base}/{p.migration_id}/approvals", json=good)
    assert r.status_code == 400 and "only a planned migration is approved" in r.json()["error"]


def test_the_recipients_receipt_over_http_purges_the_package(api, admin_a, operator):
    p = planned_migration(api.gateway, LAB_A)
    base = f"/api/v1/tenants/{LAB_A}/migrations/{p.migration_id}"
    store = api.app.state.runtime.settings.home / "packages"
    r = operator.post(f"{base}/receipt", json={"receipt": {}, "mac": "00"})
    assert r.status_code == 400 and "a receipt follows a run" in r.json()["error"]
    assert operator.post(f"{base}/approvals/operator").status_code == 200
    approval = admin_a.get(f"{base}/approval").json()
    r = admin_a.post(
        f"{base}/approvals", json={"public_key": p.signer.public_key.hex(), "signature": p.signer.sign(approval)}
    )
    assert r.json()["state"] == "approved"
    job = migration.run(api.gateway, p.operator, LAB_A, p.migration_id, store)
    assert job.package is not None
    package = job.package
    manifest = json.loads((package.parent / migration.MANIFEST).read_text())
    receipt = migration.acknowledge(package, manifest, str(p.identity))

    for forged, reason in (
        ({**receipt, "mac": "00" * 32}, "MAC does not verify"),
        ({"receipt": {**receipt["receipt"], "migration": "other"}, "mac": receipt["mac"]}, "for another migration"),
    ):
        r = operator.post(f"{base}/receipt", json=forged)
        assert r.status_code == 400 and reason in r.json()["error"], r.text
    assert package.exists()
    assert operator.post(f"{base}/receipt", json={"receipt": receipt["receipt"]}).status_code == 422
    r = admin_a.post(f"{base}/receipt", json=receipt)  # the lab's admin does not run migrations
    assert r.status_code == 403 and package.exists()

    r = operator.post(f"{base}/receipt", json=receipt)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "purged" and not package.exists()
    assert {d["copy"] for d in r.json()["destroyed"]} == {"package file package.ndjson.age", "package key"}
    clean(r)
    assert admin_a.get(base).json()["state"] == "purged"
