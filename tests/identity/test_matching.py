"""Matching as the RNIV wants it: by INS only when the strict traits agree, by the sender's local
identifier, by exact strict traits; a message whose INS or local identifier points to an identity
with other traits waits whole in the identity-vigilance queue (neither merged nor created)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select

from labvault.access import Purpose, identities
from labvault.domain.mapped import Mapped
from labvault.domain.models import Identity, IdentityStatus, Request, Result
from labvault.ingest import intake
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab
from tests.identity.helpers import (
    DUPONT_NIR,
    JONES_NIR,
    MARTIN_NIR,
    TENANT,
    by_name,
    ingest,
    oru,
    patient_by_nir,
    state,
)


@pytest.fixture
def lab(gateway):
    make_lab(gateway, TENANT)
    return gateway, lab_user(gateway, TENANT, "biologist")


def queue(gw, who) -> list[identities.Queued]:
    with gw.unit(who, Purpose.CARE) as u:
        return identities.listing(u, TENANT)


def test_same_ins_other_traits_is_queued_not_merged_not_created(lab):
    """M2, G2: the issue's case: a message for "JEAN PIERRE, 1950-01-01" carrying the INS of "Jones,
    1961-06-15" is received (queued), attached to nobody: Jones keeps exactly its request and results,
    no identity is created for Jean Pierre; sent again, it is a duplicate, still queued once."""
    gw, bio = lab
    s = ingest(gw, bio, oru("J1", ins=JONES_NIR, family="JONES", given="Mary", born="19610615", sex="F"))
    assert (s.accepted, s.queued) == (1, 0)
    jones = patient_by_nir(gw, bio, JONES_NIR)
    before = state(gw, bio, jones)

    forged = oru("P1", ins=JONES_NIR, family="JEAN", given="PIERRE", born="19500101", value="9.9")
    s = ingest(gw, bio, forged)
    assert (s.accepted, s.queued, s.rejected, s.duplicates) == (0, 1, 0, 0)
    assert state(gw, bio, jones) == before
    assert patient_by_nir(gw, bio, JONES_NIR) == jones
    assert by_name(gw, bio, "JEAN", "PIERRE", date(1950, 1, 1)) == []
    (item,) = queue(gw, bio)
    assert (item.reason, item.candidate_id, item.status) == ("ins-traits", jones, "held")

    s = ingest(gw, bio, forged)
    assert (s.duplicates, s.queued) == (1, 0)
    assert len(queue(gw, bio)) == 1


def test_the_queued_message_is_sealed(lab, raw_engine):
    """C1: the queued bytes are sealed with the lab's key: no NIR, no name in the row."""
    gw, bio = lab
    ingest(gw, bio, oru("J1", ins=JONES_NIR, family="JONES", given="Mary", born="19610615", sex="F"))
    ingest(gw, bio, oru("P1", ins=JONES_NIR, family="JEANPIERRE", given="Paul", born="19500101"))
    with raw_engine.connect() as conn:
        rows = conn.execute(select(t.identity_queue)).all()
    assert len(rows) == 1
    blob = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in rows[0])
    assert JONES_NIR.encode() not in blob and b"JEANPIERRE" not in blob
    with gw.unit(bio, Purpose.CARE) as u:
        _, key, raw = identities.get(u, TENANT, rows[0].queue_id)
    assert raw is not None and b"JEANPIERRE" in raw and key


def test_same_ins_agreeing_traits_matches_on_birth_name_or_name_used(lab):
    """M2: the same INS with the same strict traits is the same identity, whether the message gives
    the birth name or only the name used (compared normalised: accents and case aside)."""
    gw, bio = lab
    ingest(
        gw,
        bio,
        oru("M1", ins=MARTIN_NIR, family="MARTIN~DURAND", given="Hélène", born="19700202", sex="F", name_types="L~D"),
    )
    martin = patient_by_nir(gw, bio, MARTIN_NIR)
    used_only = oru("M2", ins=MARTIN_NIR, family="Durand", given="helene", born="19700202", sex="F", name_types="D")
    s = ingest(gw, bio, used_only)
    s3 = ingest(gw, bio, oru("M3", ins=MARTIN_NIR, family="Martin", given="HELENE", born="19700202", sex="F"))
    assert (s.accepted, s.queued, s3.accepted, s3.queued) == (1, 0, 1, 0)
    assert len(state(gw, bio, martin)[0]) == 3
    # the sex differs: another person, queued
    s = ingest(gw, bio, oru("M4", ins=MARTIN_NIR, family="MARTIN", given="Helene", born="19700202", sex="M"))
    assert s.queued == 1 and len(state(gw, bio, martin)[0]) == 3


def test_a_group_of_messages_collapses_and_queues_message_by_message(lab):
    """M2: in one group (one transaction), the first identity with an INS is what the later ones
    with that INS match; a conflicting one is queued alone, the others stored."""
    gw, bio = lab
    from labvault.ingest.service import Ingestor, Summary, read

    data = b"".join(
        [
            oru("G1", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704"),
            oru("G2", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704"),
            oru("G3", ins=DUPONT_NIR, family="MARTIN", given="Paul", born="19700202"),
            oru("G4", ins=DUPONT_NIR, family="DUPONT", given="Jean", born="19850704"),
        ]
    )
    summary = Summary("test", "hl7v2")
    got = Ingestor(gw, bio, TENANT, feed="test", group=10).ingest_pieces(read(data, file="t"), summary)
    assert [o.status for o in got] == ["accepted", "accepted", "queued", "accepted"]
    dupont = patient_by_nir(gw, bio, DUPONT_NIR)
    assert len(state(gw, bio, dupont)[0]) == 3
    (item,) = queue(gw, bio)
    assert item.candidate_id == dupont


# -- identities without an INS: local identifiers and traits (hand-built, as any reader gives them) --

IPP = ("urn:oid:1.2.250.1.71.4.2.7", "IPP-0042")


def message(
    control: str, *, family: str, given: str, born: date, local=(IPP,), ins: str | None = None
) -> intake.Envelope:
    pid = f"pat-{control}"
    ident = Identity(
        pid,
        ins,
        IdentityStatus.PROVISIONAL,
        family,
        given,
        born,
        "F",
        local_ids=list(local),
    )
    req = Request(f"req-{control}", pid, None, datetime(2024, 1, 1, 8, tzinfo=UTC))
    res = Result(f"res-{control}", req.request_id, "2823-3", "Potassium", value_num=4.0, unit="mmol/L")
    mapped = Mapped(ident, [], [req], [], [res], [], [], control, "HIS")
    return intake.Envelope(intake.message_key("test:HIS", control), "hl7v2", [mapped], raw=b"MSH|not read here")


def store(gw, who, *envelopes: intake.Envelope) -> list[str]:
    with gw.unit(who, Purpose.INGEST) as u:
        return intake.store(u, TENANT, list(envelopes), feed="test")


def test_same_local_identifier_other_traits_is_queued(lab):
    """M2: without an INS, the sender's (system, local identifier) finds the identity when the traits
    agree; the same local identifier with other traits is queued, neither merged nor created."""
    gw, bio = lab
    born = date(1990, 3, 3)
    assert store(gw, bio, message("L1", family="ROUX", given="Anna", born=born)) == ["accepted"]
    assert store(gw, bio, message("L2", family="Roux", given="ANNA", born=born)) == ["accepted"]
    assert store(gw, bio, message("L3", family="BLANC", given="Zoe", born=date(2001, 1, 1))) == ["queued"]
    assert by_name(gw, bio, "BLANC", "Zoe", date(2001, 1, 1)) == []
    with gw.unit(bio, Purpose.CARE) as u:
        assert {q.request_id for q in u.requests_of(TENANT, "pat-L1")} == {"req-L1", "req-L2"}
        assert u.get_patient(TENANT, "pat-L1").local_ids == [IPP]
    (item,) = queue(gw, bio)
    assert (item.reason, item.candidate_id) == ("local-id-traits", "pat-L1")


def test_exact_traits_match_once_and_queue_when_ambiguous(lab):
    """M2: no INS, no known local identifier: exact strict traits find one identity (its new local
    identifier attached); two identities with those traits are ambiguous: queued."""
    gw, bio = lab
    born = date(1990, 3, 3)
    other = ("urn:oid:1.2.250.1.71.4.2.8", "X-7")
    assert store(gw, bio, message("L1", family="ROUX", given="Anna", born=born)) == ["accepted"]
    assert store(gw, bio, message("L2", family="ROUX", given="Anna", born=born, local=(other,))) == ["accepted"]
    with gw.unit(bio, Purpose.CARE) as u:
        assert sorted(u.get_patient(TENANT, "pat-L1").local_ids) == sorted([IPP, other])
    # a second identity with the same traits, made by the lab (create) ...
    third = ("urn:oid:1.2.250.1.71.4.2.9", "Z-1")
    with gw.unit(bio, Purpose.INGEST) as u:
        u.add_patients(
            TENANT, [Identity("pat-L3", None, IdentityStatus.PROVISIONAL, "ROUX", "Anna", born, "F", local_ids=[third])]
        )
    # ... and a message with these traits and nothing else is ambiguous
    assert store(gw, bio, message("L4", family="ROUX", given="Anna", born=born, local=())) == ["queued"]
    (item,) = queue(gw, bio)
    assert item.reason == "ambiguous-traits" and item.candidate_id in ("pat-L1", "pat-L3")


def test_an_ins_learned_for_an_identity_without_one_is_not_written(lab):
    """M2: an identity matched on its local identifier keeps having no INS when a message brings
    one: the INS is recorded when the lab qualifies the identity, not from a message."""
    gw, bio = lab
    born = date(1985, 7, 4)
    assert store(gw, bio, message("L1", family="DUPONT", given="Jean", born=born)) == ["accepted"]
    with_ins = message("L2", family="DUPONT", given="Jean", born=born, ins=DUPONT_NIR)
    assert store(gw, bio, with_ins) == ["accepted"]
    with gw.unit(bio, Purpose.CARE) as u:
        p = u.get_patient(TENANT, "pat-L1")
        assert p.nir is None
        assert {q.request_id for q in u.requests_of(TENANT, "pat-L1")} == {"req-L1", "req-L2"}
