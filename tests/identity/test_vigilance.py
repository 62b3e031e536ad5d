"""The lab's staff resolve the identity-vigilance queue (attach, create, reject), change an
identity's status on evidence, merge and unmerge identities (also from HL7 ADT^A40); vendor
accounts do none of it."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from labvault.access import Purpose, identities
from labvault.errors import AccessDenied, InvalidInput
from labvault.identity import service
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab
from tests.identity.helpers import (
    DUPONT_NIR,
    JONES_NIR,
    MARTIN_NIR,
    TENANT,
    a40,
    by_name,
    ingest,
    oru,
    patient_by_nir,
    state,
)


@pytest.fixture
def lab(gateway):
    make_lab(gateway, TENANT)
    bio = lab_user(gateway, TENANT, "biologist")
    ingest(gateway, bio, oru("J1", ins=JONES_NIR, family="JONES", given="Mary", born="19610615", sex="F"))
    ingest(gateway, bio, oru("D1", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704"))
    ingest(gateway, bio, oru("D2", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704", value="4.4"))
    return gateway, bio


def queued(gw, who, control: str, **kw) -> str:
    s = ingest(gw, who, oru(control, **kw))
    assert s.queued == 1, (s.accepted, s.rejected, s.reasons)
    with gw.unit(who, Purpose.CARE) as u:
        return service.queue(u, TENANT)[-1].queue_id


def events(raw_engine, action: str) -> list[tuple[str, str | None]]:
    ev = t.audit_event
    with raw_engine.connect() as conn:
        return [
            (r.outcome, r.object_refs)
            for r in conn.execute(select(ev).where(ev.c.action == action).order_by(ev.c.seq)).all()
        ]


def test_resolved_by_a_lab_account_attach_create_reject(lab, raw_engine):
    """M2, G1, G2: the lab's technician attaches one queued message to its candidate, has a new
    identity created for another (without the conflicting INS), rejects a third: each decision
    stored once, audited with ids; a rejected message sent again comes back to the queue."""
    gw, bio = lab
    tech = lab_user(gw, TENANT, "technician")
    jones = patient_by_nir(gw, bio, JONES_NIR)
    before = state(gw, bio, jones)
    attach = queued(gw, bio, "Q1", ins=JONES_NIR, family="JONES-SMITH", given="Mary", born="19610615", sex="F")
    create = queued(gw, bio, "Q2", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101", value="9.9")
    reject = queued(gw, bio, "Q3", ins=JONES_NIR, family="EVIL", given="Eve", born="19990101", value="1.0")

    with gw.unit(tech, Purpose.CARE) as u:
        done = service.resolve(u, TENANT, attach, "attach")
    assert (done.item.status, done.item.resolved_to, done.item.resolved_by, done.results) == (
        "attached",
        jones,
        tech.account_id,
        2,
    )
    after = state(gw, bio, jones)
    assert len(after[0]) == len(before[0]) + 1 and set(before[0]) < set(after[0])

    with gw.unit(tech, Purpose.CARE) as u:
        done = service.resolve(u, TENANT, create, "create")
    assert done.item.status == "created"
    (pierre,) = by_name(gw, bio, "JEAN", "PIERRE", date(1950, 1, 1))
    assert pierre == done.item.resolved_to and pierre != jones
    with gw.unit(bio, Purpose.CARE) as u:
        assert u.get_patient(TENANT, pierre).nir is None  # the conflicting INS is not copied
    assert sorted(v for _, _, v in state(gw, bio, pierre)[1]) == [9.9, 140.0]
    assert state(gw, bio, jones) == after  # Jones untouched by the created one

    with gw.unit(tech, Purpose.CARE) as u:
        done = service.resolve(u, TENANT, reject, "reject")
        _, key, raw = identities.get(u, TENANT, reject)
    assert done.item.status == "rejected" and (key, raw) == (None, None)  # the sealed bytes are erased
    assert by_name(gw, bio, "EVIL", "Eve", date(1999, 1, 1)) == []
    assert state(gw, bio, jones) == after
    with gw.unit(tech, Purpose.CARE) as u, pytest.raises(InvalidInput, match="already rejected"):
        service.resolve(u, TENANT, reject, "attach")
    s = ingest(gw, bio, oru("Q3", ins=JONES_NIR, family="EVIL", given="Eve", born="19990101", value="1.0"))
    assert s.queued == 1

    assert [o for o, _ in events(raw_engine, "identity:attach")] == ["allowed"]
    assert [o for o, _ in events(raw_engine, "identity:create")] == ["allowed"]
    assert [o for o, _ in events(raw_engine, "identity:reject")] == ["allowed"]
    assert jones in events(raw_engine, "identity:attach")[0][1]


def test_attach_to_a_named_patient(lab):
    """M2: the lab attaches a queued message to the patient it names, not the candidate."""
    gw, bio = lab
    dupont = patient_by_nir(gw, bio, DUPONT_NIR)
    before = state(gw, bio, dupont)
    qid = queued(gw, bio, "Q1", ins=JONES_NIR, family="DUPONT", given="Jean", born="19850704", value="5.5")
    with gw.unit(bio, Purpose.CARE) as u:
        done = service.resolve(u, TENANT, qid, "attach", patient_id=dupont)
    assert done.item.resolved_to == dupont
    assert len(state(gw, bio, dupont)[0]) == len(before[0]) + 1


def test_issue_forged_mllp_message_is_queued_and_acknowledged(listener):
    """M2, C2: the issue's case over MLLP: a forged message for "DUPONT Jean, 1985-07-04" carrying
    another patient's NIR, with potassium 9.9, is acknowledged AA (received), queued, and the other
    patient's results are unchanged."""
    from tests.mllp.test_mllp import connect, framed, msa, read_ack

    gw, running = listener
    bio = lab_user(gw, TENANT, "biologist")
    s = connect(running)
    buf = bytearray()
    s.sendall(framed(oru("V1", ins=MARTIN_NIR, family="MARTIN", given="Claire", born="19700202", sex="F")))
    assert msa(read_ack(s, buf))[1] == "AA"
    victim = patient_by_nir(gw, bio, MARTIN_NIR)
    before = state(gw, bio, victim)
    s.sendall(framed(oru("F1", ins=MARTIN_NIR, family="DUPONT", given="Jean", born="19850704", value="9.9")))
    assert msa(read_ack(s, buf))[1] == "AA"
    s.close()
    assert state(gw, bio, victim) == before
    assert 9.9 not in [v for _, _, v in before[1]]
    with gw.unit(bio, Purpose.CARE) as u:
        (item,) = service.queue(u, TENANT)
    assert (item.reason, item.candidate_id, item.feed) == ("ins-traits", victim, "mllp")


def test_merge_then_unmerge_restores_every_request(lab, raw_engine):
    """M2, G1: merging Dupont into Jones moves Dupont's requests and results to Jones; a message for
    Dupont's INS then goes to Jones; unmerging moves exactly the moved requests back."""
    gw, bio = lab
    jones, dupont = patient_by_nir(gw, bio, JONES_NIR), patient_by_nir(gw, bio, DUPONT_NIR)
    jones_before, dupont_before = state(gw, bio, jones), state(gw, bio, dupont)
    assert len(dupont_before[0]) == 2

    with gw.unit(bio, Purpose.CARE) as u:
        m = service.merge(u, TENANT, jones, dupont)
    assert m.requests == 2
    merged = state(gw, bio, jones)
    assert merged[0] == sorted(jones_before[0] + dupont_before[0])
    assert merged[1] == sorted(jones_before[1] + dupont_before[1])
    assert state(gw, bio, dupont) == ([], [])
    with gw.unit(bio, Purpose.CARE) as u:
        view = service.show(u, TENANT, jones)
        assert view.merged_from == [dupont] and view.merges[0].merged_id == dupont
        assert u.get_patient(TENANT, dupont).merged_into == jones

    s = ingest(gw, bio, oru("D3", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704", value="4.6"))
    assert (s.accepted, s.queued) == (1, 0)
    later = state(gw, bio, jones)
    assert len(later[0]) == len(merged[0]) + 1
    new_request = (set(later[0]) - set(merged[0])).pop()

    with gw.unit(bio, Purpose.CARE) as u:
        back = service.unmerge(u, TENANT, dupont)
    assert back.requests == 2
    assert state(gw, bio, dupont) == dupont_before
    assert state(gw, bio, jones)[0] == sorted(jones_before[0] + [new_request])
    with gw.unit(bio, Purpose.CARE) as u:
        assert u.get_patient(TENANT, dupont).merged_into is None
        with pytest.raises(InvalidInput, match="not merged"):
            service.unmerge(u, TENANT, dupont)
    (merge_event,) = events(raw_engine, "identity:merge")
    (unmerge_event,) = events(raw_engine, "identity:unmerge")
    assert merge_event[0] == unmerge_event[0] == "allowed"
    assert jones in merge_event[1] and dupont in merge_event[1]


def test_adt_a40_merges(lab):
    """M2: an HL7 ADT^A40 from the feed (PID: the surviving patient, MRG-1: the merged one) merges
    them; the same message again is a duplicate; a merge naming an unknown patient is refused and
    kept in the quarantine."""
    gw, bio = lab
    feed = lab_user(gw, TENANT, "service", name="Feed")
    jones, dupont = patient_by_nir(gw, bio, JONES_NIR), patient_by_nir(gw, bio, DUPONT_NIR)
    jones_before, dupont_before = state(gw, bio, jones), state(gw, bio, dupont)
    s = ingest(gw, feed, a40("A1", kept_ins=JONES_NIR, merged_ins=DUPONT_NIR))
    assert (s.accepted, s.rejected) == (1, 0), s.reasons
    assert state(gw, bio, jones)[0] == sorted(jones_before[0] + dupont_before[0])
    with gw.unit(bio, Purpose.CARE) as u:
        view = service.show(u, TENANT, jones)
    assert [(m.source, m.merged_id, m.merged_by) for m in view.merges] == [("hl7-a40", dupont, feed.account_id)]
    assert ingest(gw, feed, a40("A1", kept_ins=JONES_NIR, merged_ins=DUPONT_NIR)).duplicates == 1
    s = ingest(gw, feed, a40("A2", kept_ins=JONES_NIR, merged_ins=MARTIN_NIR))
    assert s.rejected == 1 and "not known to the lab" in s.reasons[0] and s.quarantine_ids
    with gw.unit(bio, Purpose.CARE) as u:
        service.unmerge(u, TENANT, dupont)
    assert state(gw, bio, dupont) == dupont_before


def test_status_changes_with_who_when_and_evidence(lab, raw_engine):
    """M2, G2: a biologist validates an identity on an identity card; qualified needs an INS; the
    evidence is a code from a fixed list; the audit names the patient id only."""
    gw, bio = lab
    dupont = patient_by_nir(gw, bio, DUPONT_NIR)
    with gw.unit(bio, Purpose.CARE) as u:
        service.change_status(u, TENANT, dupont, "validated", evidence="id-card")
        view = service.show(u, TENANT, dupont)
    assert (view.identity.identity_status, view.status_changed_by, view.status_evidence) == (
        "validated",
        bio.account_id,
        "id-card",
    )
    assert view.status_changed_at is not None
    with gw.unit(bio, Purpose.CARE) as u, pytest.raises(InvalidInput, match="evidence is a code"):
        service.change_status(u, TENANT, dupont, "qualified", evidence="123456789")
    with gw.unit(bio, Purpose.CARE) as u:
        service.change_status(u, TENANT, dupont, "qualified", evidence="insi")
        assert u.get_patient(TENANT, dupont).qualified
    # an identity without an INS cannot be qualified without one
    qid = queued(gw, bio, "Q1", ins=DUPONT_NIR, family="NOINS", given="Nina", born="20000101", sex="F")
    with gw.unit(bio, Purpose.CARE) as u:
        created = service.resolve(u, TENANT, qid, "create").item.resolved_to
    assert created is not None
    with gw.unit(bio, Purpose.CARE) as u, pytest.raises(InvalidInput, match="needs an INS"):
        service.change_status(u, TENANT, created, "qualified", evidence="insi")
    assert [o for o, _ in events(raw_engine, "identity:status:validated")] == ["allowed"]
    assert events(raw_engine, "identity:status:validated")[0][1] == f'["{dupont}"]'


@pytest.mark.parametrize("role", ["platform_admin", "support", "operator", "security_officer"])
def test_vendor_accounts_are_refused(lab, raw_engine, role):
    """F1, F2, G1: vendor accounts (the vendor's admin, support without a grant, the operator, the
    security officer) read no queue, resolve nothing, merge nothing, change no status: each refusal
    audited in the lab's trail, nothing changed."""
    gw, bio = lab
    vendor = vendor_user(gw, role)
    jones, dupont = patient_by_nir(gw, bio, JONES_NIR), patient_by_nir(gw, bio, DUPONT_NIR)
    qid = queued(gw, bio, "Q1", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101")
    before = state(gw, bio, jones), state(gw, bio, dupont)
    attempts = [
        lambda u: service.queue(u, TENANT),
        lambda u: service.resolve(u, TENANT, qid, "attach"),
        lambda u: service.merge(u, TENANT, jones, dupont),
        lambda u: service.change_status(u, TENANT, jones, "validated", evidence="id-card"),
        lambda u: service.show(u, TENANT, jones),
        lambda u: identities.get(u, TENANT, qid),
    ]
    denied = len([e for e in _all(raw_engine) if e == "denied"])
    for attempt in attempts:
        with pytest.raises(AccessDenied), gw.unit(vendor, Purpose.SUPPORT) as u:
            attempt(u)
    assert len([e for e in _all(raw_engine) if e == "denied"]) == denied + len(attempts)
    assert (state(gw, bio, jones), state(gw, bio, dupont)) == before
    with gw.unit(bio, Purpose.CARE) as u:
        assert [i.status for i in service.queue(u, TENANT)] == ["held"]


def _all(raw_engine) -> list[str]:
    ev = t.audit_event
    with raw_engine.connect() as conn:
        return [r.outcome for r in conn.execute(select(ev.c.outcome).where(ev.c.tenant_id == TENANT)).all()]


def test_lab_roles_who_may_do_what(lab):
    """F1: the lab_admin reads the queue but resolves and merges nothing (it stores no medical
    record); the DPO and the feed's service account do neither; the technician does both."""
    gw, bio = lab
    jones, dupont = patient_by_nir(gw, bio, JONES_NIR), patient_by_nir(gw, bio, DUPONT_NIR)
    qid = queued(gw, bio, "Q1", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101")
    admin = lab_user(gw, TENANT, "lab_admin")
    dpo = lab_user(gw, TENANT, "lab_dpo")
    feed = lab_user(gw, TENANT, "service", name="Feed")
    with gw.unit(admin, Purpose.CARE) as u:
        assert [i.queue_id for i in service.queue(u, TENANT)] == [qid]
    for who in (admin, dpo, feed):
        for attempt in (
            lambda u: service.resolve(u, TENANT, qid, "reject"),
            lambda u: service.merge(u, TENANT, jones, dupont),
            lambda u: service.change_status(u, TENANT, jones, "validated", evidence="id-card"),
        ):
            with pytest.raises(AccessDenied), gw.unit(who, Purpose.INGEST if who is feed else Purpose.CARE) as u:
                attempt(u)
    with gw.unit(dpo, Purpose.CARE) as u, pytest.raises(AccessDenied):
        service.queue(u, TENANT)


from tests.mllp.test_mllp import listener  # noqa: E402, F401  (the listener fixture, as the MLLP tests have it)
