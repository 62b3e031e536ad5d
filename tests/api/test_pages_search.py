"""The patient search page by the start of the name and the birth date (``POST /patients``), and the
JSON API's ``prefix=true``: found within the lab only, a refusal names the field and never the value,
a vendor account finds nothing, the trail names only the patients shown."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.domain.models import Identity, IdentityStatus
from labvault.store import schema as t
from labvault.web.pages import PAGE_CSP
from tests.api.conftest import LAB_A, LAB_B
from tests.api.test_pages import _form_csrf, _page_login, _search
from tests.conftest import ADMIN

BORN = date(1932, 2, 29)
NAMES = {
    LAB_A: [("qa-durand", "DURAND", "Jean", BORN), ("qa-lefevre", "Lefèvre-d'Orgeval", "Hélène", BORN)],
    LAB_B: [("qb-durand", "DURAND", "Jean", BORN)],
}


@pytest.fixture
def named(api):
    """A few identities with the names the tests search, in both labs."""
    with api.gateway.unit(ADMIN, Purpose.GENERATE) as u:
        for lab, people in NAMES.items():
            u.add_patients(
                lab,
                [
                    Identity(
                        patient_id=pid,
                        nir=None,
                        identity_status=IdentityStatus.PROVISIONAL,
                        family_name=family,
                        given_names=given,
                        birth_date=born,
                        sex="M",
                    )
                    for pid, family, given, born in people
                ],
            )
    return api


def _events(api, actor_email: str) -> list:
    ev, acct = t.audit_event, t.account
    with api.gateway.engine.connect() as conn:
        actor = conn.execute(select(acct.c.account_id).where(acct.c.email == actor_email)).scalar_one()
        return conn.execute(select(ev).where(ev.c.actor == actor).order_by(ev.c.seq)).all()


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_the_start_of_the_name_and_the_birth_date_find_the_patient(named):
    """M2, F1: "DUR" with the birth date finds lab A's DURAND (not lab B's); "lefe" finds
    "Lefèvre-d'Orgeval" (accents, hyphen, apostrophe ignored); another birth date finds nobody."""
    c = _page_login(named, f"biologist@{LAB_A}")
    r = _search(c, family_name="DUR", birth_date=BORN.isoformat())
    assert r.status_code == 200 and r.headers["content-security-policy"] == PAGE_CSP
    assert 'href="/patients/qa-durand"' in r.text and "qb-durand" not in r.text and "qa-lefevre" not in r.text
    r = _search(c, family_name="lefe", given_name="hel", birth_date=BORN.isoformat())
    assert r.status_code == 200 and 'href="/patients/qa-lefevre"' in r.text and "Lefèvre-d&#39;Orgeval" in r.text
    r = _search(c, family_name="DUR", birth_date="1932-03-01")
    assert r.status_code == 200 and "qa-durand" not in r.text and "Aucun patient ne correspond." in r.text
    r = c.post(
        "/patients",
        data={"csrf": _form_csrf(c.get("/patients").text), "family_name": "dura", "birth_date": BORN.isoformat()},
        headers={"hx-request": "true"},
    )
    assert r.status_code == 200 and 'href="/patients/qa-durand"' in r.text and "<form" not in r.text
    b = _page_login(named, f"biologist@{LAB_B}")
    r = _search(b, family_name="DUR", birth_date=BORN.isoformat())
    assert 'href="/patients/qb-durand"' in r.text and "qa-durand" not in r.text


def test_one_letter_or_no_birth_date_is_a_400_naming_the_field(named):
    """M3, G2: one letter of the family name, or no birth date, is refused (400, the same fragment
    to htmx as 200): the message says what is missing, in the reader's language."""
    c = _page_login(named, f"biologist@{LAB_A}")
    r = _search(c, family_name="D", given_name="Jean", birth_date=BORN.isoformat())
    assert r.status_code == 400 and "Donnez au moins deux lettres du nom." in r.text and "qa-durand" not in r.text
    r = _search(c, family_name="DURAND", given_name="Jean")
    assert r.status_code == 400 and "Une recherche par nom demande la date de naissance." in r.text
    r = c.post(
        "/patients",
        params={"lang": "en"},
        data={"csrf": _form_csrf(c.get("/patients").text), "family_name": "é", "birth_date": BORN.isoformat()},
        headers={"hx-request": "true"},
    )
    assert r.status_code == 200 and "Give at least two letters of the family name." in r.text


def test_a_vendor_account_finds_nothing(named):
    """F2: a vendor support account signed in on the page finds no lab's patient by name."""
    c = _page_login(named, "support")
    for family in ("DUR", "DURAND", "lefe"):
        r = _search(c, family_name=family, given_name="Jean", birth_date=BORN.isoformat())
        assert "Vous n'avez pas accès aux patients de ce laboratoire." in r.text.replace("&#39;", "'")
        assert "qa-durand" not in r.text and "qb-durand" not in r.text and "qa-lefevre" not in r.text


def test_the_trail_names_only_the_patients_shown(named):
    """G1, G2: the search's event names the patient shown and no other, and holds no name or date."""
    c = _page_login(named, f"biologist@{LAB_A}")
    assert 'href="/patients/qa-durand"' in _search(c, family_name="dur", birth_date=BORN.isoformat()).text
    events = _events(named, named.accounts[f"biologist@{LAB_A}"].email)
    search = [e for e in events if e.action == "patient:identity:search"]
    assert [json.loads(e.object_refs) for e in search] == [["qa-durand"]]
    said = " ".join(str(v) for e in events for k, v in e._mapping.items() if k != "at").upper()
    assert "DUR" not in said.replace("QA-DURAND", "") and "1932" not in said


def test_the_json_api_searches_by_prefix_too(named, bio_a):
    """M2, F1: ``prefix=true`` on the JSON search: the start of the name with the birth date, given
    name optional; one letter refused (400) without the value."""
    url = f"/api/v1/tenants/{LAB_A}/patients"
    r = bio_a.get(url, params={"family_name": "lefe", "birth_date": BORN.isoformat(), "prefix": "true"})
    assert r.status_code == 200, r.text
    assert [p["patient_id"] for p in r.json()] == ["qa-lefevre"]
    r = bio_a.get(url, params={"family_name": "DUR", "given_name": "j", "birth_date": BORN.isoformat(), "prefix": "1"})
    assert [p["patient_id"] for p in r.json()] == ["qa-durand"]
    r = bio_a.get(url, params={"family_name": "DUR", "birth_date": BORN.isoformat()})  # exact needs a given name
    assert r.status_code == 400
    r = bio_a.get(url, params={"family_name": "Q", "birth_date": BORN.isoformat(), "prefix": "true"})
    assert r.status_code == 400 and r.json()["error"] == "a name search needs at least 2 letters of the family name"
    r = bio_a.get(
        f"/api/v1/tenants/{LAB_B}/patients",
        params={"family_name": "DUR", "birth_date": BORN.isoformat(), "prefix": "true"},
    )
    assert r.status_code in (403, 404) and "qb-durand" not in r.text
