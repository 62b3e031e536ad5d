"""Retention, on SQLite and a real PostgreSQL: with the clock moved past a deadline, the purge
removes exactly the expired data (the expected sets are computed from what was loaded, never read
back), legal holds keep their scope whole, and the audit trail says what was deleted, in counts.
The end of a contract by deletion leaves no personal row and no key, with a signed certificate."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from labvault.access import Principal, Purpose
from labvault.crypto.keys import PLATFORM
from labvault.crypto.signing import SignatureInvalid, verify
from labvault.domain.models import LOINC, Identity, IdentityStatus, Request, Result, Sensitivity, Specimen
from labvault.domain.sensitivity import codes_in
from labvault.errors import AccessDenied, InvalidInput, TenantKeyMissing, TenantShredded
from labvault.retention import parse_duration, parse_rules, policy, purge
from labvault.store import schema as t
from tests.conftest import ADMIN, lab_user, make_lab

NOW = datetime(2031, 6, 1, tzinfo=UTC)
RESULTS_DAYS, HIV_DAYS = 3650, 10950  # 10 and 30 years, the lab's choice in these tests
RULES = {"results": RESULTS_DAYS, "hiv": HIV_DAYS}
HIV_CODE = codes_in(Sensitivity.HIV)[0][1]
GENETICS_CODE = codes_in(Sensitivity.GENETICS)[0][1]
OTHER_CODES = ("718-7", "2345-7", "2160-0")


@dataclass
class Lab:
    """What was loaded into one lab (the oracle)."""

    identities: dict[str, Identity] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    specimens: dict[str, Specimen] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)

    def result_time(self, r: Result) -> datetime:
        if r.specimen_id:
            return self.specimens[r.specimen_id].collected_at
        return self.request_time(r.request_id)

    def request_time(self, request_id: str) -> datetime:
        times = [s.collected_at for s in self.specimens.values() if s.request_id == request_id]
        return min(times) if times else self.requests[request_id].requested_at

    def category(self, r: Result) -> str:
        return "hiv" if r.code == HIV_CODE else "genetics" if r.code == GENETICS_CODE else "results"

    def expected(self, now: datetime, days: dict[str, int], held: frozenset[str] = frozenset()) -> dict[str, set[str]]:
        """The ids a purge at ``now`` must delete, per kind."""
        gone_results = {
            i
            for i, r in self.results.items()
            if self.category(r) not in held
            and "results" not in held
            and self.result_time(r) < now - timedelta(days=days.get(self.category(r), days["results"]))
        }
        gone_requests = set()
        for q in self.requests:
            mine = {i for i, r in self.results.items() if r.request_id == q}
            if (mine and mine <= gone_results) or (
                not mine and "results" not in held and self.request_time(q) < now - timedelta(days=days["results"])
            ):
                gone_requests.add(q)
        lost = {self.requests[q].patient_id for q in gone_requests}
        gone_patients = {
            p for p in lost if all(q in gone_requests for q, x in self.requests.items() if x.patient_id == p)
        }
        return {
            "result": gone_results,
            "request": gone_requests,
            "patient": gone_patients,
            "specimen": {s for s, x in self.specimens.items() if x.request_id in gone_requests},
        }


def _nir(k: int) -> str:
    base = f"1800175000{k:03d}"
    return base + f"{97 - int(base) % 97:02d}"


def build(tenant_id: str, patients: int = 24, seed: int = 11) -> Lab:
    """Patients with requests collected from 2005 to 2030; some results of sensitive categories,
    some without a specimen, one request without a specimen, requests without any result."""
    rng = random.Random(seed)
    lab = Lab()
    for p in range(1, patients + 1):
        pid = f"{tenant_id}-p{p}"
        lab.identities[pid] = Identity(
            pid, _nir(p), IdentityStatus.QUALIFIED, "Martin", "Jeanne", datetime(1960, 1, 1).date(), "F"
        )
        for k in range(rng.randint(1, 3)):
            qid = f"{pid}-q{k}"
            collected = datetime(2005, 1, 1, 8, tzinfo=UTC) + timedelta(
                days=rng.randrange(25 * 365), minutes=rng.randrange(600)
            )
            if p % 7 == 0 and k == 0:  # requests without a result: one old, the others recent
                collected = datetime(2006 if p == 7 else 2029, 3, 1, 9, tzinfo=UTC)
            lab.requests[qid] = Request(qid, pid, None, collected - timedelta(minutes=20))
            with_specimen = not (p == 3 and k == 0)
            if with_specimen:
                for s in range(rng.randint(1, 2)):
                    sid = f"{qid}-s{s}"
                    lab.specimens[sid] = Specimen(sid, qid, "BLD", collected + timedelta(minutes=s))
            if p % 7 == 0 and k == 0:
                continue  # a request without any result
            sids = [s for s in lab.specimens if lab.specimens[s].request_id == qid]
            for j in range(rng.randint(1, 4)):
                roll = rng.random()
                code = HIV_CODE if roll < 0.2 else GENETICS_CODE if roll < 0.3 else rng.choice(OTHER_CODES)
                rid = f"{qid}-r{j}"
                spec = sids[-1] if sids and rng.random() < 0.8 else None
                lab.results[rid] = Result(rid, qid, code, "label", LOINC, spec, value_num=1.0)
    return lab


def load(gw, tenant_id: str, lab: Lab) -> None:
    with gw.unit(ADMIN, Purpose.GENERATE) as u:
        u.add_patients(tenant_id, list(lab.identities.values()))
        u.add_requests(tenant_id, list(lab.requests.values()))
        u.add_specimens(tenant_id, list(lab.specimens.values()))
        u.add_results(tenant_id, list(lab.results.values()))


def stored(raw_engine, tenant_id: str) -> dict[str, set[str]]:
    """Ids in the store, read as a superuser (no gateway, no row-level security)."""
    with raw_engine.connect() as conn:
        return {
            "patient": set(
                conn.execute(
                    select(t.patient_identity.c.patient_id).where(t.patient_identity.c.tenant_id == tenant_id)
                ).scalars()
            ),
            "request": set(
                conn.execute(select(t.request.c.request_id).where(t.request.c.tenant_id == tenant_id)).scalars()
            ),
            "specimen": set(
                conn.execute(select(t.specimen.c.specimen_id).where(t.specimen.c.tenant_id == tenant_id)).scalars()
            ),
            "result": set(
                conn.execute(select(t.result.c.result_id).where(t.result.c.tenant_id == tenant_id)).scalars()
            ),
        }


def events(raw_engine, tenant_id: str, action_prefix: str = "retention:purge") -> list[tuple[str, str, int]]:
    with raw_engine.connect() as conn:
        rows = conn.execute(
            select(t.audit_event)
            .where(t.audit_event.c.tenant_id == tenant_id, t.audit_event.c.action.like(action_prefix + "%"))
            .order_by(t.audit_event.c.seq)
        ).all()
    return [(r.action, r.object_type, r.record_count) for r in rows]


def vendor(gw, role: str) -> Principal:
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.ensure_account(PLATFORM, f"v-{role}", f"Vendor {role}", f"v-{role}@vendor.invalid", [role], commitment="test")
    return Principal(f"v-{role}", f"Vendor {role}", PLATFORM, frozenset({role}))


@pytest.fixture
def world(gateway, raw_engine):
    make_lab(gateway, "lab-a", retention={"results": (RESULTS_DAYS, "CSP art. R.1112-7")})
    make_lab(gateway, "lab-b", "690000025", retention={"results": (1, "a very short test rule")})
    a, b = build("lab-a"), build("lab-b", patients=6, seed=3)
    load(gateway, "lab-a", a)
    load(gateway, "lab-b", b)
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.set_rule(u, "lab-a", "hiv", HIV_DAYS, "CSP art. R.1112-7; HIV follow-up, lab's decision")
    return gateway, raw_engine, admin, a, b


def _all(lab: Lab) -> dict[str, set[str]]:
    return {
        "patient": set(lab.identities),
        "request": set(lab.requests),
        "specimen": set(lab.specimens),
        "result": set(lab.results),
    }


def test_purge_removes_exactly_the_expired_data(world):
    """D1: purge removes exactly the expired data."""
    gw, raw, _admin, a, b = world
    want = a.expected(NOW, RULES)
    # The data exercises every branch, or this test proves less than it says.
    hiv_kept = {
        i
        for i, r in a.results.items()
        if a.category(r) == "hiv" and i not in want["result"] and a.result_time(r) < NOW - timedelta(days=RESULTS_DAYS)
    }
    assert want["result"] and want["request"] and want["patient"] and hiv_kept
    assert want["result"] != set(a.results) and want["patient"] != set(a.identities)
    assert any(r.specimen_id is None for i, r in a.results.items() if i in want["result"])
    assert any(q not in {r.request_id for r in a.results.values()} for q in want["request"])
    operator = vendor(gw, "operator")
    with gw.unit(operator, Purpose.ADMINISTRATION) as u:
        report = purge.run(u, "lab-a", now=NOW)
    left = stored(raw, "lab-a")
    assert left == {k: ids - want[k] for k, ids in _all(a).items()}
    assert left["result"] >= hiv_kept  # the longer HIV rule kept what 'results' alone would delete
    assert stored(raw, "lab-b") == _all(b)  # another lab, with a 1-day rule, untouched
    gone_hiv = {i for i in want["result"] if a.category(a.results[i]) == "hiv"}
    assert report.categories == {"results": len(want["result"]) - len(gone_hiv), "hiv": len(gone_hiv)}
    assert (report.requests, report.specimens, report.identities) == (
        len(want["request"]),
        len(want["specimen"]),
        len(want["patient"]),
    )
    assert sorted(events(raw, "lab-a")) == sorted(
        [
            ("retention:purge", "results", report.categories["results"]),
            ("retention:purge", "hiv", len(gone_hiv)),
            ("retention:purge", "request", len(want["request"])),
            ("retention:purge", "specimen", len(want["specimen"])),
            ("retention:purge", "patient", len(want["patient"])),
        ]
    )
    # What is left is still readable, and a second run finds nothing more to delete.
    bio = lab_user(gw, "lab-a", "biologist")
    with gw.unit(bio, Purpose.CARE) as u:
        assert {r.result_id for r in u.iter_results("lab-a")} <= left["result"]
    with gw.unit(operator, Purpose.ADMINISTRATION) as u:
        again = purge.run(u, "lab-a", now=NOW)
    assert sum(again.categories.values()) == again.requests == again.identities == 0
    assert stored(raw, "lab-a") == left


def test_moving_the_clock_further_deletes_more(world):
    gw, raw, _, a, _ = world
    for now in (NOW - timedelta(days=3000), NOW, NOW + timedelta(days=9000)):
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            purge.run(u, "lab-a", now=now)
        want = a.expected(now, RULES)
        assert stored(raw, "lab-a") == {k: ids - want[k] for k, ids in _all(a).items()}


def test_a_hold_keeps_its_category_whole(world):
    """D3: a hold keeps its category whole."""
    gw, raw, admin, a, _ = world
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.set_rule(u, "lab-a", "hiv", 30, "short, to show the hold")
        h = policy.place_hold(u, "lab-a", basis="Tribunal judiciaire de Lyon, order RG 31/00042", category="hiv")
    days = {"results": RESULTS_DAYS, "hiv": 30}
    want = a.expected(NOW, days, held=frozenset({"hiv"}))
    assert want != a.expected(NOW, days)  # the hold has something to protect
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        report = purge.run(u, "lab-a", now=NOW)
    assert stored(raw, "lab-a") == {k: ids - want[k] for k, ids in _all(a).items()}
    assert report.held == ["hiv"] and ("retention:purge:held", "hiv", 0) in events(raw, "lab-a")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.release_hold(u, "lab-a", h.hold_id)
        assert policy.list_holds(u, "lab-a", active_only=True) == []
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        purge.run(u, "lab-a", now=NOW)
    want = a.expected(NOW, days)
    assert stored(raw, "lab-a") == {k: ids - want[k] for k, ids in _all(a).items()}


@pytest.mark.parametrize("scope", ["*", "results"])
def test_a_hold_on_everything_or_on_results_deletes_no_result(world, scope):
    gw, raw, admin, a, _ = world
    calls = []
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.place_hold(u, "lab-a", basis="CNIL investigation 2031-117", category=scope)
    purge.HOOKS.append(lambda u, tenant, now: calls.append(tenant) or {"packages": 0})
    try:
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            report = purge.run(u, "lab-a", now=NOW + timedelta(days=40000))
    finally:
        purge.HOOKS.pop()
    assert stored(raw, "lab-a") == _all(a)
    assert set(report.held) == {"results", "hiv"} and report.categories == {}
    assert set(events(raw, "lab-a")) == {
        ("retention:purge:held", "results", 0),
        ("retention:purge:held", "hiv", 0),
    }
    assert calls == ([] if scope == "*" else ["lab-a"])  # '*' holds what hooks would destroy too


def test_a_hold_needs_a_basis_and_the_lab_admin(world):
    """D3: a hold needs a basis and the lab admin."""
    gw, raw, admin, _, _ = world
    for basis in ("", "   "):
        with pytest.raises(InvalidInput, match="basis"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
            policy.place_hold(u, "lab-a", basis=basis)
    with pytest.raises(InvalidInput, match="scope"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.place_hold(u, "lab-a", basis="order", category="everything")
    for who in (
        lab_user(gw, "lab-a", "biologist"),
        lab_user(gw, "lab-a", "lab_dpo"),
        ADMIN,
        lab_user(gw, "lab-b", "lab_admin", name="Other"),
    ):
        with pytest.raises(AccessDenied), gw.unit(who, Purpose.ADMINISTRATION) as u:
            policy.place_hold(u, "lab-a", basis="court order")
    with raw.connect() as conn:
        assert conn.execute(select(t.legal_hold)).all() == []


def test_who_sets_reads_and_runs(world):
    """D1, M4: who sets reads and runs."""
    gw, raw, admin, _, _ = world
    dpo = lab_user(gw, "lab-a", "lab_dpo")
    with gw.unit(dpo, Purpose.ADMINISTRATION) as u:
        assert {r.category: r.days for r in policy.list_rules(u, "lab-a")} == RULES
    for who, action in (
        (dpo, "set"),
        (ADMIN, "set"),
        (vendor(gw, "operator"), "set"),
        (admin, "run"),
        (vendor(gw, "support"), "run"),
        (lab_user(gw, "lab-b", "lab_admin", name="Other"), "set"),
    ):
        with pytest.raises(AccessDenied), gw.unit(who, Purpose.ADMINISTRATION) as u:
            if action == "set":
                policy.set_rule(u, "lab-a", "results", 1, "shorter")
            else:
                purge.run(u, "lab-a", now=NOW)
    with gw.unit(dpo, Purpose.ADMINISTRATION) as u:
        assert {r.category: r.days for r in policy.list_rules(u, "lab-a")} == RULES
    for bad in ((0, "ref"), (-5, "ref"), (10, " ")):
        with pytest.raises(InvalidInput), gw.unit(admin, Purpose.ADMINISTRATION) as u:
            policy.set_rule(u, "lab-a", "results", *bad)
    with pytest.raises(InvalidInput, match="unknown retention category"), gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.set_rule(u, "lab-a", "other", 10, "ref")
    assert events(raw, "lab-a", "retention:purge") == []


def test_a_lab_without_a_results_rule_is_not_purged(world):
    gw, raw, _, a, _ = world
    with raw.begin() as conn:  # a lab from before rules existed
        conn.execute(t.retention_rule.delete().where(t.retention_rule.c.tenant_id == "lab-a"))
    with pytest.raises(InvalidInput, match="no retention rule"), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        purge.run(u, "lab-a", now=NOW + timedelta(days=40000))
    assert stored(raw, "lab-a") == _all(a)


def test_quarantine_rule_and_hooks(world):
    gw, raw, admin, _, _ = world
    from labvault.ids import utcnow

    old, new = utcnow() - timedelta(days=100), utcnow() - timedelta(days=2)
    with raw.begin() as conn:
        for qid, at in (("q-old", old), ("q-new", new)):
            conn.execute(
                t.quarantine.insert().values(
                    tenant_id="lab-a",
                    quarantine_id=qid,
                    received_at=at,
                    format="hl7v2",
                    feed="file",
                    size=1,
                    status="dropped",
                    key_version=1,
                )
            )
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.set_rule(u, "lab-a", "quarantine", parse_duration("30d"), "lab's procedure QP-12")
    purge.HOOKS.append(lambda u, tenant, now: {"test_copies_destroyed": 2})
    try:
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            report = purge.run(u, "lab-a", now=utcnow())
    finally:
        purge.HOOKS.pop()
    # The test's hook, and the migration procedure's own (no package is past its deadline here).
    assert report.categories["quarantine"] == 1 and report.hooks == {"test_copies_destroyed": 2, "packages_purged": 0}
    with raw.connect() as conn:
        assert set(conn.execute(select(t.quarantine.c.quarantine_id)).scalars()) == {"q-new"}
    assert ("retention:purge", "quarantine", 1) in events(raw, "lab-a")


@pytest.mark.parametrize(
    "retention",
    [
        {},
        {"hiv": (3650, "ref")},
        {"results": (0, "ref")},
        {"results": (3650, "")},
        {"results": (3650, "ref"), "x": (1, "r")},
        {"results": (3650.5, "ref")},
    ],
)
def test_a_lab_cannot_be_created_without_a_valid_results_rule(gateway, raw_engine, keyring, retention):
    """D1, M4: a lab cannot be created without a valid results rule."""
    with pytest.raises(InvalidInput), gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        u.create_tenant("lab-new", "Lab New", "690000017", retention=retention)
    with raw_engine.connect() as conn:
        for tbl in (t.tenant, t.tenant_key, t.retention_rule):
            assert conn.execute(select(tbl).where(tbl.c.tenant_id == "lab-new")).all() == []
    assert not keyring.has_scope("lab-new")


def test_rules_are_written_with_the_lab(gateway):
    make_lab(gateway, "lab-c", retention={"results": (4000, "ref A"), "genetics": (36500, "ref B")})
    with gateway.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        rules = {r.category: (r.days, r.legal_reference) for r in policy.list_rules(u, "lab-c")}
    assert rules == {"results": (4000, "ref A"), "genetics": (36500, "ref B")}


def test_durations():
    assert parse_duration("3650d") == 3650 and parse_duration("10y") == 3650 and parse_duration(" 1d ") == 1
    for bad in ("10", "0d", "-1d", "5m", "y", "", "1.5y"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)
    assert parse_rules(["results=10y", "hiv=30y"], "ref") == {"results": (3650, "ref"), "hiv": (10950, "ref")}
    for items, ref in ((["hiv=30y"], "ref"), (["results=10y"], ""), (["results"], "ref")):
        with pytest.raises(InvalidInput):
            parse_rules(items, ref)


PERSONAL = sorted(t.PERSONAL_TABLES)


def test_end_delete(world, keyring):
    """D2: end delete."""
    gw, raw, admin, a, b = world
    with raw.connect() as conn:
        wrapped = conn.execute(select(t.tenant_key).where(t.tenant_key.c.tenant_id == "lab-a")).first()
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        h = policy.place_hold(u, "lab-a", basis="pending litigation")
    with pytest.raises(InvalidInput, match="legal hold"), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        purge.end_delete(u, "lab-a")
    with gw.unit(admin, Purpose.ADMINISTRATION) as u:
        policy.release_hold(u, "lab-a", h.hold_id)
    for who in (vendor(gw, "operator"), admin):
        with pytest.raises(AccessDenied), gw.unit(who, Purpose.ADMINISTRATION) as u:
            purge.end_delete(u, "lab-a")
    purge.END_HOOKS.append(lambda u, tenant, now: {"packages": ["pkg-1"], "files_destroyed": 3})
    try:
        with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
            record = purge.end_delete(u, "lab-a")
    finally:
        purge.END_HOOKS.pop()
    with raw.connect() as conn:
        for name in PERSONAL:
            tbl = t.metadata.tables[name]
            assert conn.execute(select(tbl).where(tbl.c.tenant_id == "lab-a")).all() == [], name
    assert stored(raw, "lab-b") == _all(b)
    # Keys gone: the gateway refuses, and the keyring cannot unwrap what the lab's keys were.
    assert not keyring.has_scope("lab-a")
    with pytest.raises(TenantKeyMissing):
        keyring.unwrap("lab-a", wrapped.wrapped, f"{wrapped.purpose}:v{wrapped.version}".encode())
    bio = lab_user(gw, "lab-a", "biologist")
    with pytest.raises(TenantShredded), gw.unit(bio, Purpose.ADMINISTRATION) as u:
        u.results_of("lab-a", "lab-a-p1")
    # The certificate: signed by the platform, listing each store.
    with gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        platform_key = u.ensure_platform_keys()
        [stored_record] = purge.certificates(u, "lab-a")
        purge.verify_certificate(u, stored_record)
    assert stored_record == json.loads(json.dumps(record))
    verify(record["body"], record["signature"], platform_key)
    stores = {s["store"]: s for s in record["body"]["stores"]}
    assert stores["database"]["rows_deleted"] == {
        "result": len(a.results),
        "specimen": len(a.specimens),
        "request": len(a.requests),
        "prescriber": 0,
        "patient_identity": len(a.identities),
        "patient_local_id": 0,
        "identity_queue": 0,
        "identity_merge": 0,
        "result_version": 0,
        "quarantine": 0,
        "callback_task": 0,
        "canary": 0,
        "leak_match": 0,
    }
    assert stores["key provider"]["provider"] == "local" and stores["key provider"]["scope_destroyed"]
    assert {k["purpose"] for k in stores["key provider"]["keys_destroyed"]} == {"data", "index"}
    # The test's hook, and the migration procedure's (this lab made no package).
    assert stores["packages"]["destroyed"] == {
        "packages": ["pkg-1"],
        "files_destroyed": 3,
        "packages_destroyed": 0,
        "copies": [],
    }
    tampered = json.loads(json.dumps(record["body"]))
    tampered["stores"][0]["rows_deleted"]["result"] -= 1
    with pytest.raises(SignatureInvalid):
        verify(tampered, record["signature"], platform_key)
    assert ("tenant:end:delete", "result", len(a.results)) in events(raw, "lab-a", "tenant:end")
    with pytest.raises(TenantShredded), gw.unit(ADMIN, Purpose.ADMINISTRATION) as u:
        purge.end_delete(u, "lab-a")
