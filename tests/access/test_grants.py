"""Break-glass grants: vendor support reads a lab's personal data only under a grant that a
lab_admin of that lab approved, within its scope (patients, fields), never sensitive categories,
for 1 to 8 hours, and every read under it is tied to it in the audit trail.

Runs on SQLite and on PostgreSQL (the ``world`` fixture: three labs with generated patients).
Each test uses its own support account, so grants of one test never serve another.
"""

from __future__ import annotations

import itertools
import json
from datetime import date, timedelta

import pytest
from sqlalchemy import text, update

from labvault.access import Principal, Purpose, grants
from labvault.accounts import service as accounts
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Sensitivity
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.store import schema as t
from tests.access.conftest import DATA, LABS, visible
from tests.conftest import ADMIN, lab_user

_n = itertools.count()
ALL_FIELDS = ["identity", "requests", "results"]


def support_account(world) -> Principal:
    """A fresh platform support account (with its confidentiality commitment)."""
    account_id = f"support-{next(_n)}"
    with world.gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(
            PLATFORM,
            account_id,
            f"Support {account_id}",
            f"{account_id}@vendor.invalid",
            ["support"],
            commitment="test",
        )
    return Principal(account_id, f"Support {account_id}", PLATFORM, frozenset({"support"}))


def admin_of(world, lab: str) -> Principal:
    return world.principal(lab, "lab_admin")


FIRST = object()  # the lab's first patient: a grant's scope is always named


def request_grant(world, sup, lab="lab-a", *, hours=2, fields=ALL_FIELDS, patients=FIRST, period=None):
    if patients is FIRST:
        patients = [next(iter(DATA[lab].identities))]
    with world.gw.unit(sup, Purpose.SUPPORT) as u:
        return grants.request_grant(
            u,
            lab,
            ticket="INC-1234",
            reason="lab reports a wrong display",
            hours=hours,
            fields=list(fields),
            patients=patients,
            period_from=period[0] if period else None,
            period_to=period[1] if period else None,
        )


def approve(world, approver, lab, grant_id):
    with world.gw.unit(approver, Purpose.ADMINISTRATION) as u:
        return grants.approve_grant(u, lab, grant_id)


def revoke(world, who, lab, grant_id):
    with world.gw.unit(who, Purpose.ADMINISTRATION) as u:
        return grants.revoke_grant(u, lab, grant_id)


def state_of(world, lab, grant_id) -> str:
    with world.gw.unit(admin_of(world, lab), Purpose.ADMINISTRATION) as u:
        return grants.get_grant(u, lab, grant_id).state


def granted(world, sup, lab="lab-a", **kw):
    g = request_grant(world, sup, lab, **kw)
    return approve(world, admin_of(world, lab), lab, g.grant_id)


def read(world, sup, op, lab, *args):
    with world.gw.unit(sup, Purpose.SUPPORT) as u:
        out = getattr(u, op)(lab, *args)
        return list(out) if op == "iter_results" else out


def personal_reads(lab: str, patient_index: int = 0):
    """One call of every personal read, on a real patient of ``lab``."""
    d = DATA[lab]
    ident = list(d.identities.values())[patient_index]
    req = d.requests_of[ident.patient_id][0]
    return [
        ("find_patients_by_nir", (ident.nir,)),
        ("find_patients_by_name", (ident.family_name, ident.given_names, ident.birth_date)),
        ("get_patient", (ident.patient_id,)),
        ("requests_of", (ident.patient_id,)),
        ("results_of", (ident.patient_id,)),
        ("results_of_request", (req,)),
        ("iter_results", ()),
    ]


def assert_no_personal_read(world, sup, lab):
    for op, args in personal_reads(lab):
        with pytest.raises(AccessDenied):
            read(world, sup, op, lab, *args)


def patient_with_sensitive_results(lab: str) -> str:
    d = DATA[lab]
    for pid, rids in d.results_of.items():
        if any(d.results[r].sensitivity is not Sensitivity.OTHER for r in rids):
            return pid
    raise AssertionError(f"no generated patient of {lab} has a sensitive result: change SEED")


# -- tests -----------------------------------------------------------------------------------------
def test_support_without_grant_reads_nothing(world):
    """F2: support without grant reads nothing."""
    sup = support_account(world)
    for lab in LABS:
        assert_no_personal_read(world, sup, lab)
    # what support may do without a grant: no personal value
    assert read(world, sup, "counts", "lab-a") == DATA["lab-a"].counts


def test_pending_grant_gives_nothing(world):
    """F2: pending grant gives nothing."""
    sup = support_account(world)
    g = request_grant(world, sup)
    assert g.state == "pending" and g.expires_at is None and g.approved_by is None
    assert_no_personal_read(world, sup, "lab-a")
    assert state_of(world, "lab-a", g.grant_id) == "pending"


def test_only_the_labs_own_lab_admin_approves(world):
    """F2: only the labs own lab admin approves."""
    sup = support_account(world)
    g = request_grant(world, sup, "lab-a", hours=3)
    refusals = [
        (admin_of(world, "lab-b"), "lab-a", AccessDenied),  # lab_admin of another lab
        (admin_of(world, "lab-b"), "lab-b", NotFound),  # ... through its own lab: no such grant there
        (world.principal("lab-a", "biologist"), "lab-a", AccessDenied),
        (world.principal("lab-a", "technician"), "lab-a", AccessDenied),
        (world.principal("lab-a", "lab_dpo"), "lab-a", AccessDenied),
        (world.principal("lab-a", "service"), "lab-a", AccessDenied),
        (sup, "lab-a", AccessDenied),  # support approving its own grant
        (world.principal(PLATFORM, "platform_admin"), "lab-a", AccessDenied),
        (world.principal(PLATFORM, "security_officer"), "lab-a", AccessDenied),
        (ADMIN, "lab-a", AccessDenied),
    ]
    for who, lab, error in refusals:
        with pytest.raises(error):
            approve(world, who, lab, g.grant_id)
        assert state_of(world, "lab-a", g.grant_id) == "pending", who
    assert_no_personal_read(world, sup, "lab-a")

    before = utcnow()
    ok = approve(world, admin_of(world, "lab-a"), "lab-a", g.grant_id)
    assert ok.state == "active"
    assert ok.approved_by == admin_of(world, "lab-a").account_id
    assert before + timedelta(hours=3) <= ok.expires_at <= utcnow() + timedelta(hours=3)
    with pytest.raises(InvalidInput):  # approved once only
        approve(world, admin_of(world, "lab-a"), "lab-a", g.grant_id)
    # the grant opens lab-a, and only lab-a
    pid = next(iter(DATA["lab-a"].identities))
    assert read(world, sup, "get_patient", "lab-a", pid) == DATA["lab-a"].identities[pid]
    for lab in ("lab-b", "lab-c"):
        assert_no_personal_read(world, sup, lab)
    # another support account does not ride on it
    assert_no_personal_read(world, support_account(world), "lab-a")


def test_grant_reads_only_its_patients(world):
    """F2: grant reads only its patients."""
    sup = support_account(world)
    a = DATA["lab-a"]
    p1, p2 = list(a.identities)[:2]
    pid_b = next(iter(DATA["lab-b"].identities))
    g = granted(world, sup, patients=[p1], fields=ALL_FIELDS)  # a lab-b id is refused at the request
    assert g.patients == frozenset({p1})

    # in scope
    assert read(world, sup, "get_patient", "lab-a", p1) == a.identities[p1]
    found = read(world, sup, "find_patients_by_nir", "lab-a", a.identities[p1].nir)
    assert [i.patient_id for i in found] == [p1]
    assert sorted(q.request_id for q in read(world, sup, "requests_of", "lab-a", p1)) == sorted(a.requests_of[p1])
    res = read(world, sup, "results_of", "lab-a", p1)
    assert {r.result_id for r in res} == {
        r.result_id for r in visible((a.results[x] for x in a.results_of[p1]), frozenset())
    }
    req1 = a.requests_of[p1][0]
    assert {r.result_id for r in read(world, sup, "results_of_request", "lab-a", req1)} <= set(a.results_of[p1])

    # out of scope: another patient of the lab
    with pytest.raises(NotFound):
        read(world, sup, "get_patient", "lab-a", p2)
    assert read(world, sup, "find_patients_by_nir", "lab-a", a.identities[p2].nir) == []
    i2 = a.identities[p2]
    assert read(world, sup, "find_patients_by_name", "lab-a", i2.family_name, i2.given_names, i2.birth_date) == []
    for op in ("requests_of", "results_of"):
        with pytest.raises(AccessDenied):
            read(world, sup, op, "lab-a", p2)
    with pytest.raises(AccessDenied):
        read(world, sup, "results_of_request", "lab-a", a.requests_of[p2][0])
    with pytest.raises(AccessDenied):  # no whole-lab scans under a grant
        read(world, sup, "iter_results", "lab-a")
    # a lab-b patient's id under a lab-a grant: still nothing of lab-b
    with pytest.raises(NotFound):
        read(world, sup, "get_patient", "lab-a", pid_b)
    with pytest.raises(AccessDenied):
        read(world, sup, "results_of", "lab-a", pid_b)
    assert_no_personal_read(world, sup, "lab-b")


def test_grant_reads_only_its_fields(world):
    """F2, A2: grant reads only its fields."""
    sup = support_account(world)
    a = DATA["lab-a"]
    p1 = next(iter(a.identities))
    g = granted(world, sup, patients=[p1], fields=["identity"])
    assert g.fields == ("identity",)
    assert read(world, sup, "get_patient", "lab-a", p1) == a.identities[p1]
    for op, args in (
        ("results_of", (p1,)),
        ("results_of_request", (a.requests_of[p1][0],)),
        ("requests_of", (p1,)),
        ("iter_results", ()),
    ):
        with pytest.raises(AccessDenied):
            read(world, sup, op, "lab-a", *args)

    sup2 = support_account(world)
    granted(world, sup2, patients=[p1], fields=["results"])
    assert read(world, sup2, "results_of", "lab-a", p1)
    for op, args in (("get_patient", (p1,)), ("find_patients_by_nir", (a.identities[p1].nir,)), ("requests_of", (p1,))):
        with pytest.raises(AccessDenied):
            read(world, sup2, op, "lab-a", *args)


@pytest.mark.parametrize("lab", ["lab-a", "lab-b"])
def test_sensitive_categories_never_under_a_grant(world, lab):
    """F2: sensitive categories never under a grant."""
    sup = support_account(world)
    d = DATA[lab]
    pid = patient_with_sensitive_results(lab)
    granted(world, sup, lab, patients=[pid], fields=ALL_FIELDS)  # the widest grant there is
    sensitive = {r for r in d.results_of[pid] if d.results[r].sensitivity is not Sensitivity.OTHER}
    plain = set(d.results_of[pid]) - sensitive
    assert sensitive
    got = read(world, sup, "results_of", lab, pid)
    assert {r.result_id for r in got} == plain
    assert all(r.sensitivity is Sensitivity.OTHER for r in got)
    for req in d.requests_of[pid]:
        got = read(world, sup, "results_of_request", lab, req)
        assert {r.result_id for r in got} == set(d.results_of_request[req]) - sensitive
    # the lab's biologist does see them (the data is there)
    bio = world.principal(lab, "biologist")
    with world.gw.unit(bio, Purpose.CARE) as u:
        assert sensitive <= {r.result_id for r in u.results_of(lab, pid)}


@pytest.mark.parametrize("hours", [0, 9, -1, 24, 1000])
def test_hours_out_of_range_refused(world, hours):
    sup = support_account(world)
    with pytest.raises(InvalidInput):
        request_grant(world, sup, hours=hours)
    with world.raw.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM access_grant WHERE account_id = :a"), {"a": sup.account_id}
        ).scalar_one()
    assert n == 0


@pytest.mark.parametrize("hours", [1, 8])
def test_hours_bounds_accepted(world, hours):
    sup = support_account(world)
    g = approve(world, admin_of(world, "lab-a"), "lab-a", request_grant(world, sup, hours=hours).grant_id)
    assert g.hours == hours
    left = g.expires_at - utcnow()
    assert timedelta(hours=hours) - timedelta(minutes=1) < left <= timedelta(hours=hours)


@pytest.mark.parametrize(
    "kw",
    [
        {"fields": []},
        {"fields": ["identity", "address"]},
        {"patients": []},
        {"patients": None},  # the whole lab: never
        {"patients": None, "period": (date(2024, 2, 1), date(2024, 1, 1))},
        {"patients": None, "period": (date(2020, 1, 1), date(2024, 1, 1))},
        {"patients": None, "period": (None, date(2024, 1, 1))},
    ],
)
def test_malformed_requests_refused(world, kw):
    sup = support_account(world)
    with pytest.raises(InvalidInput):
        request_grant(world, sup, **kw)
    with pytest.raises(InvalidInput):
        with world.gw.unit(sup, Purpose.SUPPORT) as u:
            grants.request_grant(u, "lab-a", ticket=" ", reason="x", hours=1, fields=["identity"], patients=None)


def test_only_support_requests_grants(world):
    for who in (
        world.principal(PLATFORM, "operator"),
        world.principal(PLATFORM, "platform_admin"),
        world.principal("lab-a", "lab_admin"),
        world.principal("lab-a", "biologist"),
    ):
        with pytest.raises(AccessDenied):
            with world.gw.unit(who, Purpose.SUPPORT) as u:
                grants.request_grant(u, "lab-a", ticket="T", reason="R", hours=1, fields=["identity"], patients=None)


def test_expiry_stops_reads_at_once(world):
    """F2: expiry stops reads at once."""
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    g = granted(world, sup, patients=[pid])
    assert read(world, sup, "get_patient", "lab-a", pid).patient_id == pid
    with world.raw.begin() as conn:
        conn.execute(
            update(t.access_grant)
            .where(t.access_grant.c.tenant_id == "lab-a", t.access_grant.c.grant_id == g.grant_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert state_of(world, "lab-a", g.grant_id) == "expired"
    assert_no_personal_read(world, sup, "lab-a")
    with pytest.raises(InvalidInput):  # an expired grant cannot be revoked, nor approved again
        revoke(world, admin_of(world, "lab-a"), "lab-a", g.grant_id)
    with pytest.raises(InvalidInput):
        approve(world, admin_of(world, "lab-a"), "lab-a", g.grant_id)
    assert_no_personal_read(world, sup, "lab-a")


@pytest.mark.parametrize("revoker", ["lab_admin", "lab_dpo"])
def test_revoke_stops_reads_at_once(world, revoker):
    """F2: revoke stops reads at once."""
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    g = granted(world, sup, patients=[pid])
    assert read(world, sup, "get_patient", "lab-a", pid).patient_id == pid
    # nobody else revokes it
    for who in (admin_of(world, "lab-b"), world.principal("lab-a", "biologist"), sup):
        with pytest.raises(AccessDenied):
            revoke(world, who, "lab-a", g.grant_id)
    assert read(world, sup, "results_of", "lab-a", pid) is not None
    r = revoke(world, world.principal("lab-a", revoker), "lab-a", g.grant_id)
    assert r.state == "revoked"
    assert_no_personal_read(world, sup, "lab-a")
    with pytest.raises(InvalidInput):
        revoke(world, admin_of(world, "lab-a"), "lab-a", g.grant_id)


def test_security_officer_revokes(world):
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    g = granted(world, sup, patients=[pid])
    revoke(world, world.principal(PLATFORM, "security_officer"), "lab-a", g.grant_id)
    assert_no_personal_read(world, sup, "lab-a")


def test_every_read_under_a_grant_is_audited_with_its_id(world):
    """F2, G1, G2: every read under a grant is audited with its id."""
    sup = support_account(world)
    a = DATA["lab-a"]
    p1, p2 = list(a.identities)[:2]
    g = granted(world, sup, patients=[p1, p2], fields=ALL_FIELDS)
    calls = [
        ("get_patient", (p1,)),
        ("find_patients_by_nir", (a.identities[p2].nir,)),
        (
            "find_patients_by_name",
            (a.identities[p1].family_name, a.identities[p1].given_names, a.identities[p1].birth_date),
        ),
        ("requests_of", (p2,)),
        ("results_of", (p1,)),
        ("results_of_request", (a.requests_of[p2][0],)),
    ]
    for op, args in calls:
        read(world, sup, op, "lab-a", *args)
    with world.raw.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT tenant_id, action, grant_id, outcome, purpose, object_refs FROM audit_event"
                " WHERE actor = :a AND action LIKE 'patient:%' ORDER BY seq"
            ),
            {"a": sup.account_id},
        ).all()
        trail = conn.execute(
            text("SELECT action, actor FROM audit_event WHERE object_refs LIKE :g ORDER BY seq"),
            {"g": f'%"{g.grant_id}"%'},
        ).all()
    assert len(rows) == len(calls)
    assert [r.action for r in rows] == [
        "patient:identity:read",
        "patient:identity:search",
        "patient:identity:search",
        "patient:request:read",
        "patient:result:read",
        "patient:result:read",
    ]
    for r in rows:
        assert (r.tenant_id, r.grant_id, r.outcome, r.purpose) == ("lab-a", g.grant_id, "allowed", "support")
        for ref in json.loads(r.object_refs or "[]"):
            assert ref in a.identities or ref in a.requests
    assert [(x.action, x.actor) for x in trail] == [
        ("grant:request", sup.account_id),
        ("grant:approve", admin_of(world, "lab-a").account_id),
    ]


def test_deactivated_lab_admin_cannot_approve(world):
    """E4, F2: deactivated lab admin cannot approve."""
    adm = lab_user(world.gw, "lab-a", "lab_admin", name="Leaving")
    sup = support_account(world)
    g = request_grant(world, sup)
    with world.gw.unit(admin_of(world, "lab-a"), Purpose.ADMINISTRATION) as u:  # the lab's other admin
        accounts.deactivate(u, f"{adm.account_id}@lab.invalid")
    with pytest.raises(AccessDenied):
        approve(world, adm, "lab-a", g.grant_id)
    with pytest.raises(AccessDenied):
        revoke(world, adm, "lab-a", g.grant_id)
    assert state_of(world, "lab-a", g.grant_id) == "pending"
    assert_no_personal_read(world, sup, "lab-a")


def test_deactivated_support_loses_its_grant(world):
    """E4, F2: deactivated support loses its grant."""
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    granted(world, sup, patients=[pid])
    assert read(world, sup, "get_patient", "lab-a", pid).patient_id == pid
    with world.gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        accounts.deactivate(u, f"{sup.account_id}@vendor.invalid")
    with pytest.raises(AccessDenied):
        read(world, sup, "get_patient", "lab-a", pid)


def test_account_no_longer_support_loses_its_grant(world):
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    granted(world, sup, patients=[pid])
    assert read(world, sup, "get_patient", "lab-a", pid).patient_id == pid
    with world.gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        accounts.set_roles(u, f"{sup.account_id}@vendor.invalid", ["operator"])
    with pytest.raises(AccessDenied):  # an operator never reads personal data
        read(world, sup, "get_patient", "lab-a", pid)


def test_grant_id_only_on_events_of_its_lab(world):
    """G2, F1: grant id only on events of its lab."""
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    g = granted(world, sup, patients=[pid])
    with world.gw.unit(sup, Purpose.SUPPORT) as u:
        u.get_patient("lab-a", pid)
        grants.request_grant(
            u,
            "lab-b",
            ticket="INC-2",
            reason="other lab",
            hours=1,
            fields=["identity"],
            patients=[next(iter(DATA["lab-b"].identities))],
        )
    with world.raw.connect() as conn:
        rows = conn.execute(
            text("SELECT tenant_id, action FROM audit_event WHERE grant_id = :g"), {"g": g.grant_id}
        ).all()
    assert [(r.tenant_id, r.action) for r in rows] == [("lab-a", "patient:identity:read")]


# -- what the lab's admin sees, and a named scope ------------------------------------------------------
def test_lab_admin_sees_who_asks_ticket_reason_scope_and_duration(world):
    """F2: before approving, the lab's admin sees the requester's name and e-mail (not a hex
    id), the ticket, the reason, the exact scope (patients, period, fields) and the duration."""
    sup = support_account(world)
    pid = next(iter(DATA["lab-a"].identities))
    g = request_grant(
        world,
        sup,
        patients=[pid],
        fields=["identity", "results"],
        hours=3,
        period=(date(2024, 1, 1), date(2024, 6, 30)),
    )
    with world.gw.unit(admin_of(world, "lab-a"), Purpose.ADMINISTRATION) as u:
        shown = grants.show_grant(u, "lab-a", g.grant_id)
        listed = [x for x in grants.list_grants(u, "lab-a") if x.grant_id == g.grant_id]
    for x in (shown, *listed):
        assert x.requester_name == sup.name and x.requester_email == f"{sup.account_id}@vendor.invalid"
        assert (x.ticket, x.reason, x.hours, x.state) == ("INC-1234", "lab reports a wrong display", 3, "pending")
        assert x.patients == frozenset({pid}) and x.fields == ("identity", "results")
        assert (x.period_from, x.period_to) == (date(2024, 1, 1), date(2024, 6, 30))
        assert x.scope_text() == (
            "1 named patient(s); requests dated 2024-01-01 to 2024-06-30; "
            "fields identity, results; no sensitive category"
        )
    assert len(listed) == 1
    # another support account does not see it; another lab's admin neither
    with pytest.raises(NotFound), world.gw.unit(support_account(world), Purpose.SUPPORT) as u:
        grants.show_grant(u, "lab-a", g.grant_id)
    with pytest.raises(AccessDenied), world.gw.unit(admin_of(world, "lab-b"), Purpose.ADMINISTRATION) as u:
        grants.show_grant(u, "lab-a", g.grant_id)


def test_a_grant_for_the_whole_lab_is_refused_with_the_reason(world):
    """F2: no patients and no period: refused, and nothing is kept."""
    sup = support_account(world)
    with pytest.raises(InvalidInput, match="never the whole lab"):
        request_grant(world, sup, patients=None)
    with world.raw.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM access_grant WHERE account_id = :a"), {"a": sup.account_id}
            ).scalar_one()
            == 0
        )


def test_a_period_grant_reads_only_requests_dated_in_it(world):
    """F2: a grant bounded to a period reads the requests dated in it, their results, and the
    identities of patients with such a request; nothing outside, enforced at each read."""
    a = DATA["lab-a"]
    days = sorted({q.requested_at.date() for q in a.requests.values()})
    assert len(days) > 4, "the generated lab should span several days"
    start = days[len(days) // 2]
    end = start + timedelta(days=365)
    inside = {rid for rid, q in a.requests.items() if start <= q.requested_at.date() <= end}
    outside = set(a.requests) - inside
    with_inside = {pid for pid, rids in a.requests_of.items() if set(rids) & inside}
    without = set(a.identities) - with_inside
    assert inside and outside and with_inside and without, "change SEED: the period must split the lab"
    sup = support_account(world)
    g = granted(world, sup, patients=None, period=(start, end))
    assert g.patients is None and g.has_period
    for pid in with_inside:
        assert read(world, sup, "get_patient", "lab-a", pid) == a.identities[pid]
        got = {q.request_id for q in read(world, sup, "requests_of", "lab-a", pid)}
        assert got == set(a.requests_of[pid]) & inside
        res = {r.result_id for r in read(world, sup, "results_of", "lab-a", pid)}
        expected = {
            r.result_id
            for r in visible((a.results[x] for x in a.results_of[pid]), frozenset())
            if r.request_id in inside
        }
        assert res == expected
    for pid in without:
        with pytest.raises(NotFound):
            read(world, sup, "get_patient", "lab-a", pid)
        assert read(world, sup, "find_patients_by_nir", "lab-a", a.identities[pid].nir) == []
        with pytest.raises(AccessDenied):
            read(world, sup, "results_of", "lab-a", pid)
    rid = next(iter(outside))
    with pytest.raises(AccessDenied, match="period"):
        read(world, sup, "results_of_request", "lab-a", rid)
    assert read(world, sup, "results_of_request", "lab-a", next(iter(inside))) is not None
    with pytest.raises(AccessDenied):  # no whole-lab scans under a grant
        read(world, sup, "iter_results", "lab-a")


def test_a_grant_names_patients_by_id_never_by_identity(world):
    """F2, M3, C1: a NIR typed where a patient id is expected is refused before it is stored (it
    would sit in clear in the grant row), and the refusal does not repeat it; another lab's
    patient id is refused too; nothing is stored."""
    sup = support_account(world)
    ident = next(iter(DATA["lab-a"].identities.values()))
    other_lab_patient = next(iter(DATA["lab-b"].identities))
    for patients in ([ident.nir], [ident.patient_id, other_lab_patient]):
        with pytest.raises(InvalidInput) as exc:
            request_grant(world, sup, patients=patients)
        assert "not patients of this lab" in str(exc.value)
        assert ident.nir not in str(exc.value) and other_lab_patient not in str(exc.value)
    with world.raw.connect() as conn:
        stored = (
            conn.execute(text("SELECT scope_patients FROM access_grant WHERE account_id = :a"), {"a": sup.account_id})
            .scalars()
            .all()
        )
    assert stored == []
    assert request_grant(world, sup, patients=[ident.patient_id]).grant_id  # its id is accepted
