"""Explained accesses (G5, G6, H1): reads of a lab's personal data explained by the actor's relation
with the patient (a request entered, a specimen received, a result entered or validated), by an
approved support grant; the same reads without a relation are listed in the DPO's daily digest."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from labvault.access import Purpose, grants
from labvault.domain.models import Identity, IdentityStatus, OrderedTest
from labvault.errors import AccessDenied
from labvault.ids import utcnow
from labvault.lab import work
from labvault.monitoring import explained
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab

TENANT, OTHER = "lab-e", "lab-f"
K = OrderedTest("http://loinc.org", "2823-3", "Potassium", "mmol/L", "SER", "SST gold")
NA = OrderedTest("http://loinc.org", "2951-2", "Sodium", "mmol/L", "SER", "SST gold")
FAMILY, NIR = "ROUXEL", "2700375123456"


@pytest.fixture
def lab(gateway):
    make_lab(gateway, TENANT)
    make_lab(gateway, OTHER, "690000025")
    p = {
        "tech": lab_user(gateway, TENANT, "technician", name="Tech"),
        "tech2": lab_user(gateway, TENANT, "technician", name="Night"),
        "bio": lab_user(gateway, TENANT, "biologist", name="Bio"),
        "bio2": lab_user(gateway, TENANT, "biologist", name="Second"),
        "admin": lab_user(gateway, TENANT, "lab_admin", name="Admin"),
        "dpo": lab_user(gateway, TENANT, "lab_dpo", name="Dpo"),
        "other_dpo": lab_user(gateway, OTHER, "lab_dpo", name="Dpo"),
        "support": vendor_user(gateway, "support"),
        "so": vendor_user(gateway, "security_officer"),
    }
    with gateway.unit(p["bio"], Purpose.CARE) as u:
        u.add_patients(
            TENANT,
            [
                Identity("pat-e1", None, IdentityStatus.PROVISIONAL, FAMILY, "Anna", date(1970, 3, 4), "F"),
                Identity("pat-e2", None, IdentityStatus.PROVISIONAL, "MARTIN", "Paul", date(1981, 5, 6), "M"),
            ],
        )
    return gateway, p


def _enter(gw, who, patient="pat-e1"):
    with gw.unit(who, Purpose.CARE) as u:
        return work.enter_request(
            u,
            TENANT,
            patient,
            [K, NA],
            collected_at=datetime(2026, 12, 7, 7, 30, tzinfo=UTC),
            collector="IDE",
            urgent=False,
            clinical=None,
            pregnant=False,
        )


def _today(gw, who):
    with gw.unit(who, Purpose.MONITORING) as u:
        return explained.digest(u, TENANT, datetime.now(UTC).astimezone(_zone()).date())


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Paris")


def _work_day(gw, p):
    """A request entered by the technician, received, valued, validated technically by the
    technician and biologically by the biologist."""
    entered = _enter(gw, p["tech"])
    (k_id, _), (na_id, _) = entered.results
    serum = entered.specimens[0][0]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, serum)
        work.enter_result(u, TENANT, k_id, "4,7")
        work.enter_result(u, TENANT, na_id, 139, "mmol/L")
        work.validate_technical(u, TENANT, [k_id, na_id])
    with gw.unit(p["bio"], Purpose.CARE) as u:
        work.validate_biological(u, TENANT, [k_id, na_id])
    return entered, k_id


def test_relations_explain_reads_and_the_rest_is_listed(lab):
    """G5, H1: the technician reading the results of the request they entered, and the biologist
    who validated them, are explained; another technician and another biologist of the same lab,
    with no relation with the patient, reading the same are not: the digest counts them per
    account and lists each unexplained event by seq, time, account, action and references."""
    gw, p = lab
    entered, k_id = _work_day(gw, p)
    with gw.unit(p["tech"], Purpose.CARE) as u:
        u.results_of_request(TENANT, entered.request_id)
        u.get_patient(TENANT, "pat-e1")
    with gw.unit(p["bio"], Purpose.CARE) as u:
        u.results_of(TENANT, "pat-e1")
        u.result_history(TENANT, k_id)
    strangers = []
    for who in ("tech2", "bio2"):
        with gw.unit(p[who], Purpose.CARE) as u:
            u.results_of_request(TENANT, entered.request_id)
            u.get_patient(TENANT, "pat-e1")
            u.results_of(TENANT, "pat-e2")  # a patient nobody works on
        strangers.append(p[who].account_id)
    d = _today(gw, p["dpo"])
    by_actor = {a.actor: (a.explained, a.unexplained) for a in d.actors}
    assert by_actor[p["tech"].account_id][1] == 0 and by_actor[p["tech"].account_id][0] >= 2
    assert by_actor[p["bio"].account_id][1] == 0 and by_actor[p["bio"].account_id][0] >= 2
    for s in strangers:
        assert by_actor[s] == (0, 3)
    listed = {(e.actor, e.action, e.refs) for e in d.unexplained}
    assert listed == {
        (s, action, refs)
        for s in strangers
        for action, refs in (
            ("patient:result:read", (entered.request_id,)),
            ("patient:identity:read", ("pat-e1",)),
            ("patient:result:read", ("pat-e2",)),
        )
    }
    assert {e.reason for e in d.unexplained} == {"no-relation"}
    assert all(e.seq > 0 and e.at.tzinfo is not None for e in d.unexplained)
    assert d.total == d.explained + len(d.unexplained)
    reasons = {e.actor: e for e in d.unexplained}
    assert set(reasons) == set(strangers)
    assert d.reasons.get("validated-biological", 0) + d.reasons.get("validated-technical", 0) >= 1
    subject, body = explained.digest_text(d)
    assert "6 unexplained" in subject
    for s in strangers:
        assert s in body
    for personal in (FAMILY, "Anna", NIR, "4,7", "4.7", "139"):
        assert personal not in subject + body


def test_a_support_read_under_an_approved_grant_is_explained(lab):
    """F2, G5: vendor support reading a patient's results under a grant the lab approved is
    explained by the grant (the event carries its id); the digest is the lab's: the vendor's
    security officer and support, and another lab's DPO, are refused it."""
    gw, p = lab
    _enter(gw, p["tech"])
    with gw.unit(p["support"], Purpose.SUPPORT) as u:
        g = grants.request_grant(
            u, TENANT, ticket="T-1", reason="result display", hours=2, fields=["results"], patients=["pat-e1"]
        )
    with gw.unit(p["admin"], Purpose.ADMINISTRATION) as u:
        grants.approve_grant(u, TENANT, g.grant_id)
    with gw.unit(p["support"], Purpose.SUPPORT) as u:
        u.results_of(TENANT, "pat-e1")
    d = _today(gw, p["admin"])
    (row,) = [a for a in d.actors if a.actor == p["support"].account_id]
    assert (row.explained, row.unexplained) == (1, 0)
    assert d.reasons["grant"] == 1
    for who in ("support", "so", "other_dpo"):
        with gw.unit(p[who], Purpose.MONITORING) as u, pytest.raises(AccessDenied):
            explained.digest(u, TENANT, date.today())


def test_the_digest_day_is_the_labs_day(lab):
    """G5: the digest reads the lab's day only: yesterday's digest does not hold today's reads."""
    gw, p = lab
    _work_day(gw, p)
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        u.get_patient(TENANT, "pat-e1")
    today = datetime.now(UTC).astimezone(_zone()).date()
    with gw.unit(p["dpo"], Purpose.MONITORING) as u:
        before = explained.digest(u, TENANT, today - timedelta(days=1))
        now = explained.digest(u, TENANT, today)
    assert before.total == 0 and before.actors == ()
    assert now.unexplained_count == 1
    start, end = explained.day_bounds(today, "Europe/Paris")
    assert start <= utcnow() < end and end - start in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
