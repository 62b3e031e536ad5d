"""Cross-lab isolation: no principal ever gets data of a lab other than its own.

Property-based: hypothesis draws who acts (every lab role of every lab, every vendor role),
which lab is targeted (the three labs, the platform, an unknown lab), which operation, and
which object (real ids of all three labs, or junk). The oracle is the generator: each lab's
patients, NIRs, requests and results are known in memory.

The same property runs on PostgreSQL with the application's own tenant filter switched off,
so row-level security alone has to keep the labs apart; a control on SQLite shows that
without both the filter and RLS the checks do fail.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from sqlalchemy import bindparam, text
from sqlalchemy.exc import DBAPIError

from labvault.access import Principal, Purpose
from labvault.crypto.keys import PLATFORM
from labvault.domain.identifiers import normalise_nir
from labvault.errors import AccessDenied, DecryptionError, InvalidInput, NotFound, UnknownTenant
from tests.access.conftest import (
    DATA,
    LAB_ROLES,
    LABS,
    READERS,
    VENDOR_ROLES,
    readable,
    visible,
)

UNKNOWN_LAB = "lab-zz"
TARGETS = (*LABS, PLATFORM, UNKNOWN_LAB, "*")  # "*" is the RLS setting that opens administrative tables
NO_DATA = (AccessDenied, NotFound, UnknownTenant, InvalidInput)

ALL_PATIENTS = sorted(p for d in DATA.values() for p in d.identities)
ALL_REQUESTS = sorted(q for d in DATA.values() for q in d.requests)
ALL_RESULTS = sorted(r for d in DATA.values() for r in d.results)
ALL_NIRS = sorted(n for d in DATA.values() for n in d.nirs)
ALL_NAMES = sorted(
    ((i.family_name, i.given_names, i.birth_date) for d in DATA.values() for i in d.identities.values()),
    key=repr,
)

# -- strategies ------------------------------------------------------------------------------------
# NUL is excluded: PostgreSQL text cannot hold it (see the test at the end of this module).
junk = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
object_ids = st.one_of(st.sampled_from(ALL_PATIENTS), st.sampled_from(ALL_REQUESTS), st.sampled_from(ALL_RESULTS), junk)
random_nir = st.integers(1_000_000_000_000, 2_999_999_999_999).map(lambda n: f"{n}{97 - n % 97:02d}")
nirs = st.one_of(
    st.sampled_from(ALL_NIRS),
    st.sampled_from(ALL_NIRS).map(lambda n: f"{n[0]} {n[1:3]} {n[3:5]} {n[5:7]} {n[7:10]} {n[10:13]} {n[13:]}"),
    random_nir,
    junk,
)
names = st.one_of(
    st.sampled_from(ALL_NAMES),
    st.sampled_from(ALL_NAMES).map(lambda t: (t[0].upper(), t[1].lower(), t[2])),
    st.tuples(junk, junk, st.dates(date(1900, 1, 1), date(2030, 12, 31))),
)
actors = st.one_of(
    st.tuples(st.sampled_from(LABS), st.sampled_from(LAB_ROLES)),
    st.tuples(st.sampled_from(LABS), st.sampled_from(sorted(READERS))),  # more reads that may succeed
    st.tuples(st.just(PLATFORM), st.sampled_from(VENDOR_ROLES)),
)


def calls(lab: str):
    """An operation with its arguments: objects of ``lab``, of any lab, or junk."""
    d = DATA[lab]
    oids = st.one_of(st.sampled_from(sorted(d.identities)), st.sampled_from(sorted(d.requests)), object_ids)
    own_names = st.sampled_from(
        sorted(((i.family_name, i.given_names, i.birth_date) for i in d.identities.values()), key=repr)
    )
    return st.one_of(
        st.tuples(st.just("find_patients_by_nir"), st.tuples(st.one_of(st.sampled_from(sorted(d.nirs)), nirs))),
        st.tuples(st.just("find_patients_by_name"), st.one_of(own_names, names)),
        st.tuples(st.sampled_from(["get_patient", "requests_of", "results_of", "results_of_request"]), st.tuples(oids)),
        st.tuples(st.sampled_from(["iter_results", "counts"]), st.just(())),
    )


@st.composite
def scenarios(draw):
    lab, role = draw(actors)
    # Often the principal's own lab, so that allowed reads are exercised too.
    target = draw(st.one_of(st.just(lab), st.sampled_from(TARGETS)) if lab != PLATFORM else st.sampled_from(TARGETS))
    # Objects of the principal's lab or of the target lab (or of any lab, or junk).
    source = draw(st.sampled_from(sorted({x for x in (lab, target) if x in DATA} or set(LABS))))
    op, args = draw(calls(source))
    return lab, role, target, op, args


# -- running one call and judging its outcome ------------------------------------------------------
def perform(gw, principal: Principal, target: str, op: str, args: tuple):
    purpose = Purpose.SUPPORT if principal.is_platform else Purpose.CARE
    with gw.unit(principal, purpose) as u:
        out = getattr(u, op)(target, *args)
        return list(out) if op == "iter_results" else out


def ids(items, attr: str) -> list[str]:
    return [getattr(x, attr) for x in items]


def check_call(gw, principal: Principal, target: str, op: str, args: tuple) -> None:
    """Run one call and assert that it reveals nothing of another lab (and, for an allowed call
    on the principal's own lab, that it returns exactly that lab's data)."""
    role = next(iter(principal.roles))
    where = f"{principal.tenant_id}/{role} -> {op}({target!r}, {args!r})"
    try:
        out = perform(gw, principal, target, op, args)
    except NO_DATA as exc:
        err, out = exc, None
    else:
        err = None
    if currently_in_test_context():  # what the property exercised: pytest --hypothesis-show-statistics
        event(
            f"{'vendor' if principal.is_platform else 'own lab' if target == principal.tenant_id else 'other'}: "
            f"{type(err).__name__ if err else 'data' if out else 'empty'}"
        )

    if op == "find_patients_by_nir" and isinstance(err, InvalidInput):
        return  # refused before anything is looked up
    own = principal.tenant_id

    # Vendor roles: counts (no personal value) of an existing lab, and nothing else.
    if principal.is_platform:
        if op == "counts" and target in LABS:
            assert err is None, where
            assert out == DATA[target].counts, where
            return
        if op == "counts" and out is not None:  # rls-only mode: tenant('*') finds a row; RLS still hides all
            assert target == "*" and set(out.values()) == {0}, where
            return
        assert err is not None, f"vendor account got data: {where}"
        assert isinstance(err, AccessDenied | UnknownTenant), f"{where}: {err!r}"
        return

    # Lab roles on anything but their own lab: refused, whatever the object.
    if target != own:
        assert isinstance(err, AccessDenied), f"{where}: expected AccessDenied, got {err!r} / {out!r}"
        return

    d = DATA[own]
    if op == "counts":
        assert err is None, where
        assert out == d.counts, f"{where}: counts are not the lab's own"
        return
    if role not in READERS:
        assert isinstance(err, AccessDenied), f"{where}: expected AccessDenied, got {err!r} / {out!r}"
        return

    cats = readable(role)
    if op == "find_patients_by_nir":
        (nir,) = args
        assert err is None, f"{where}: {err!r}"
        assert set(ids(out, "patient_id")) == d.by_nir(nir), where
        assert all(normalise_nir(i.nir) == normalise_nir(nir) for i in out), where
        assert all(i == d.identities[i.patient_id] for i in out), where
    elif op == "find_patients_by_name":
        family, given, birth = args
        if not family.strip() or not given.strip():
            assert isinstance(err, InvalidInput), where
            return
        assert err is None, f"{where}: {err!r}"
        assert set(ids(out, "patient_id")) == d.by_name(family, given, birth), where
        assert all(i == d.identities[i.patient_id] for i in out), where
    elif op == "get_patient":
        (pid,) = args
        if pid in d.identities:
            assert err is None, f"{where}: {err!r}"
            assert out == d.identities[pid], where
        else:
            assert isinstance(err, NotFound), f"{where}: expected NotFound, got {err!r} / {out!r}"
    elif op == "requests_of":
        (pid,) = args
        assert err is None, f"{where}: {err!r}"
        assert sorted(ids(out, "request_id")) == sorted(d.requests_of.get(pid, [])), where
        assert all(q == d.requests[q.request_id] for q in out), where
    elif op == "results_of":
        (pid,) = args
        assert err is None, f"{where}: {err!r}"
        expected = visible((d.results[r] for r in d.results_of.get(pid, [])), cats)
        assert sorted(ids(out, "result_id")) == sorted(ids(expected, "result_id")), where
        assert all(r == d.results[r.result_id] for r in out), where
    elif op == "results_of_request":
        (rid,) = args
        if rid not in d.requests:
            assert isinstance(err, NotFound), f"{where}: expected NotFound, got {err!r} / {out!r}"
            return
        assert err is None, f"{where}: {err!r}"
        expected = visible((d.results[r] for r in d.results_of_request[rid]), cats)
        assert sorted(ids(out, "result_id")) == sorted(ids(expected, "result_id")), where
        assert all(r == d.results[r.result_id] for r in out), where
    elif op == "iter_results":
        assert err is None, f"{where}: {err!r}"
        expected = visible(d.results.values(), cats)
        assert sorted(ids(out, "result_id")) == sorted(ids(expected, "result_id")), where
        assert all(r == d.results[r.result_id] for r in out), where
    else:  # pragma: no cover
        raise AssertionError(op)


@pytest.fixture(params=[True, False], ids=["app-filter", "rls-only"])
def gw_under_test(request, world):
    if request.param:
        return world.gw
    if world.backend != "postgresql":
        pytest.skip("without the application's tenant filter only PostgreSQL has a second wall (RLS)")
    return world.unfiltered()


# -- 1 and 2: the property, with and without the application's tenant filter ----------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=scenarios())
def test_no_principal_reads_another_labs_data(world, gw_under_test, case):
    """F1: no principal reads another labs data."""
    lab, role, target, op, args = case
    check_call(gw_under_test, world.principal(lab, role), target, op, args)


@pytest.mark.parametrize("op", ["get_patient", "requests_of", "results_of", "results_of_request"])
def test_every_lab_role_on_every_foreign_object(world, gw_under_test, op):
    """F1: Deterministic sweep next to the property: each lab role of lab-a, on lab-a and on the
    other labs, with one patient/request of every lab."""
    for role in LAB_ROLES:
        p = world.principal("lab-a", role)
        for lab in LABS:
            d = DATA[lab]
            pid = next(iter(d.identities))
            obj = d.requests_of[pid][0] if op == "results_of_request" else pid
            for target in ("lab-a", lab):
                check_call(gw_under_test, p, target, op, (obj,))


def test_vendor_roles_get_no_personal_field(world):
    """F2, F1: Every vendor role, every personal read, every lab, real objects of that lab: refused."""
    for role in VENDOR_ROLES:
        p = world.principal(PLATFORM, role)
        for lab in LABS:
            d = DATA[lab]
            ident = next(iter(d.identities.values()))
            req = d.requests_of[ident.patient_id][0]
            for op, args in (
                ("find_patients_by_nir", (ident.nir,)),
                ("find_patients_by_name", (ident.family_name, ident.given_names, ident.birth_date)),
                ("get_patient", (ident.patient_id,)),
                ("requests_of", (ident.patient_id,)),
                ("results_of", (ident.patient_id,)),
                ("results_of_request", (req,)),
                ("iter_results", ()),
            ):
                with pytest.raises(AccessDenied):
                    perform(world.gw, p, lab, op, args)
            assert perform(world.gw, p, lab, "counts", ()) == d.counts


# -- 2: row-level security alone -------------------------------------------------------------------
def _pg_only(world):
    if world.backend != "postgresql":
        pytest.skip("row-level security is PostgreSQL's")


def test_rls_alone_stops_crafted_cross_lab_reads(world):
    """F1: Tenant filter off: a lab-a biologist naming lab-b objects under 'lab-a' sees nothing of lab-b."""
    _pg_only(world)
    gw = world.unfiltered()
    assert gw.tenant_filter is False
    bio = world.principal("lab-a", "biologist")
    a, b = DATA["lab-a"], DATA["lab-b"]
    pid_b = next(iter(b.identities))
    req_b = b.requests_of[pid_b][0]

    # The rows are there: a superuser (bypassing RLS) sees them.
    with world.raw.connect() as conn:
        for table in ("patient_identity", "request", "result"):
            n = conn.execute(text(f"SELECT count(*) FROM {table} WHERE tenant_id = 'lab-b'")).scalar_one()
            assert n == b.counts[table]
        assert (
            conn.execute(
                text("SELECT count(*) FROM request WHERE tenant_id = 'lab-b' AND request_id = :r"), {"r": req_b}
            ).scalar_one()
            == 1
        )

    assert perform(gw, bio, "lab-a", "results_of", (pid_b,)) == []
    assert perform(gw, bio, "lab-a", "requests_of", (pid_b,)) == []
    with pytest.raises(NotFound):
        perform(gw, bio, "lab-a", "get_patient", (pid_b,))
    with pytest.raises(NotFound):
        perform(gw, bio, "lab-a", "results_of_request", (req_b,))
    scanned = perform(gw, bio, "lab-a", "iter_results", ())
    assert {r.result_id for r in scanned} == {r.result_id for r in visible(a.results.values(), readable("biologist"))}
    assert not {r.result_id for r in scanned} & (set(b.results) | set(DATA["lab-c"].results))
    assert perform(gw, bio, "lab-a", "counts", ()) == a.counts
    # and the vendor's counts of each lab are that lab's only
    op = world.principal(PLATFORM, "operator")
    for lab in LABS:
        assert perform(gw, op, lab, "counts", ()) == DATA[lab].counts


def test_control_sqlite_without_the_app_filter_nothing_stops_the_query(world):
    """The control: on SQLite (no RLS) with the tenant filter off, the same crafted calls reach
    lab-b's rows. Only their encryption under lab-b's key stops the reads, and the row counts
    leak; the checks of this module flag it, so they can fail."""
    if world.backend != "sqlite":
        pytest.skip("the control runs where there is no row-level security")
    gw = world.unfiltered()
    bio = world.principal("lab-a", "biologist")
    b = DATA["lab-b"]
    pid_b = next(iter(b.identities))
    req_b = b.requests_of[pid_b][0]
    total = {k: sum(DATA[lab].counts[k] for lab in LABS) for k in DATA["lab-a"].counts}
    assert perform(gw, bio, "lab-a", "counts", ()) == total
    with pytest.raises(DecryptionError):  # lab-b's row was read; lab-a's key cannot open it
        perform(gw, bio, "lab-a", "get_patient", (pid_b,))
    with pytest.raises(DecryptionError):
        perform(gw, bio, "lab-a", "results_of_request", (req_b,))
    with pytest.raises(DecryptionError):
        perform(gw, bio, "lab-a", "iter_results", ())
    with pytest.raises(AssertionError, match="counts are not the lab's own"):
        check_call(gw, bio, "lab-a", "counts", ())
    # with the filter on, the same calls are clean
    check_call(world.gw, bio, "lab-a", "counts", ())
    check_call(world.gw, bio, "lab-a", "get_patient", (pid_b,))
    check_call(world.gw, bio, "lab-a", "results_of_request", (req_b,))


def test_app_role_sql_session_sees_and_writes_only_the_named_lab(world):
    """F1: Plain SQL as the application's role (no gateway): the RLS policies alone."""
    _pg_only(world)
    engine = world.gw.engine
    with engine.connect() as conn:
        su, bypass = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        ).one()
        assert not su and not bypass

    def scoped(conn, tenant: str) -> None:
        conn.execute(text("SELECT set_config('labvault.tenant', :t, true)"), {"t": tenant})

    with engine.begin() as conn:
        # No lab named: no row of any personal table.
        for table in ("patient_identity", "request", "result", "tenant_key"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0
        scoped(conn, "lab-a")
        assert conn.execute(text("SELECT count(*) FROM result WHERE tenant_id = 'lab-b'")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM result")).scalar_one() == DATA["lab-a"].counts["result"]
        assert conn.execute(text("SELECT count(*) FROM patient_identity WHERE tenant_id <> 'lab-a'")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM tenant_key WHERE tenant_id = 'lab-b'")).scalar_one() == 0
        # Updates and deletes of another lab's rows touch nothing.
        assert conn.execute(text("UPDATE result SET status = 'corrected' WHERE tenant_id = 'lab-b'")).rowcount == 0
        assert conn.execute(text("DELETE FROM patient_identity WHERE tenant_id = 'lab-b'")).rowcount == 0
        # '*' opens the administrative tables, never the personal ones.
        scoped(conn, "*")
        assert conn.execute(text("SELECT count(*) FROM result")).scalar_one() == 0
        assert (
            conn.execute(
                text("SELECT count(*) FROM tenant WHERE tenant_id IN ('lab-a', 'lab-b', 'lab-c')")
            ).scalar_one()
            == 3
        )
    # The same rows are all there for a superuser.
    with world.raw.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM result WHERE tenant_id = 'lab-b'")).scalar_one()
            == DATA["lab-b"].counts["result"]
        )

    insert_b = text(
        "INSERT INTO result (tenant_id, result_id, request_id, specimen_id, pseudonym, status, key_version,"
        " observation_enc) VALUES ('lab-b', 'rls-probe', 'rls-probe', NULL, 'p', 'final', 1, :blob)"
    ).bindparams(bindparam("blob", b"\x00" * 32))
    with pytest.raises(DBAPIError, match="row-level security"):
        with engine.begin() as conn:
            scoped(conn, "lab-a")
            conn.execute(insert_b)
    with pytest.raises(DBAPIError, match="row-level security"):
        with engine.begin() as conn:  # moving a row of lab-a into lab-b: refused as well
            scoped(conn, "lab-a")
            conn.execute(text("UPDATE result SET tenant_id = 'lab-b' WHERE tenant_id = 'lab-a'"))
    with pytest.raises(DBAPIError, match="row-level security"):
        with engine.begin() as conn:  # '*' is no way in for personal rows either
            scoped(conn, "*")
            conn.execute(insert_b)
    with world.raw.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM result WHERE result_id = 'rls-probe'")).scalar_one() == 0
        assert (
            conn.execute(text("SELECT count(*) FROM result WHERE tenant_id = 'lab-a'")).scalar_one()
            == DATA["lab-a"].counts["result"]
        )


# -- robustness and audit of refusals --------------------------------------------------------------
def test_nul_in_an_object_id_is_not_found_not_a_driver_error(world, request):
    """An id is untrusted input: a NUL character in it must end as NotFound/InvalidInput."""
    bio = world.principal("lab-a", "biologist")
    for op in ("get_patient", "results_of_request"):
        with pytest.raises((NotFound, InvalidInput)):
            perform(world.gw, bio, "lab-a", op, ("a\x00b",))


def test_a_refused_cross_lab_read_is_audited(world):
    """F1, G1: a refused cross lab read is audited."""
    bio = world.principal("lab-a", "biologist")
    pid_b = next(iter(DATA["lab-b"].identities))
    with pytest.raises(AccessDenied):
        perform(world.gw, bio, "lab-b", "get_patient", (pid_b,))
    with world.raw.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM audit_event WHERE actor = :a AND outcome = 'denied'"), {"a": bio.account_id}
        ).scalar_one()
    assert n >= 1
