"""Schemathesis over the API's own OpenAPI description, in-process, as a logged-in biologist of
lab A (session cookie + CSRF header, then a bearer token): no server error and never a NIR of
lab B in any answer. Successful answers on real data are checked against the schema as well."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from labvault.domain.identifiers import normalise_nir
from labvault.synth import LabGenerator
from tests.api.conftest import LAB_A, LAB_B, PATIENTS, SEED
from tests.api.test_instructions_api import planned_migration

SKIP = {("POST", "/api/v1/auth/logout")}  # would end the session under test
PUBLIC = {"/health", "/api/v1/auth/login", "/api/v1/auth/mfa", "/api/v1/auth/enrol", "/api/v1/auth/enrol/confirm"}
EXAMPLES = 10  # per operation and generation mode: about 900 requests a run over some 90 (operation, mode) pairs
_PARAM = re.compile(r"{([^}]+)}")


def other_lab_nirs() -> set[str]:
    nirs = {r.identity.nir for r in LabGenerator(LAB_B, SEED).patients(PATIENTS)}
    return nirs | {normalise_nir(n) for n in nirs}


def load_operations(client) -> list:
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    schema = schemathesis.openapi.from_dict(r.json())
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 15
    return ops


@pytest.fixture
def pools(api, bio_a, bio_b, support):
    """Real ids of each lab, for path parameters (most generated cases use them)."""
    grants = {}
    for lab in (LAB_A, LAB_B):
        r = support.post(
            f"/api/v1/tenants/{lab}/grants",
            json={
                "ticket": "SUP-7",
                "reason": "fuzz",
                "hours": 1,
                "fields": ["identity"],
                "period_from": "2024-01-01",
                "period_to": "2024-06-30",
            },
        )
        assert r.status_code == 201
        grants[lab] = r.json()["grant_id"]
    own_token_id, _ = api.token(bio_a, ["read"])  # fuzzing may revoke it: harmless
    other_token_id, other_token = api.token(bio_b, ["read"])
    tokens = {LAB_A: own_token_id, LAB_B: other_token_id}
    planned = {lab: planned_migration(api.gateway, lab) for lab in (LAB_A, LAB_B)}
    return {
        "labs": {
            lab: {
                "tenant": [lab],
                "patient_id": api.patients[lab][:3],
                "request_id": api.requests[lab][:3],
                "result_id": api.results[lab][:3],
                "specimen_id": api.requests[lab][:3],  # plausible ids: the lookup finds no specimen
                "grant_id": [grants[lab]],
                "token_id": [tokens[lab]],
                "instruction_id": [planned[lab].instruction_id],
                "migration_id": [planned[lab].migration_id],
                "queue_id": ["no-such-queued-message"],
                "number": ["1"],
                "advisory_id": ["no-such-advisory"],
                "alert_id": ["no-such-alert"],
                "channel_id": ["no-such-channel"],
                "incident_id": ["no-such-incident"],
                "analysis_id": ["no-such-analysis"],
                "version": ["1"],
            }
            for lab in (LAB_A, LAB_B)
        },
        "nir": api.nirs[LAB_A][:3] + api.nirs[LAB_B][:3],  # searched for in either lab
        "other_token": other_token,
    }


def fuzz(
    app, ops, pools, *, headers: dict[str, str], cookies: dict[str, str], forbidden: set[str], include_public: bool
) -> Counter:
    statuses: Counter = Counter()
    for op in ops:
        if (op.method.upper(), op.path) in SKIP or (op.path in PUBLIC and not include_public):
            continue
        # invalid data only where there is something to get wrong beyond a free-form path segment: a
        # query, or a body whose schema can be violated (any bytes are a valid binary body, such as
        # an ingested file's: its positive cases already send arbitrary bytes)
        negatable = len(op.query) or any(body.is_negatable for body in op.body)
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:
            fuzz_operation(
                app, op, mode, pools, headers=headers, cookies=cookies, forbidden=forbidden, statuses=statuses
            )
    return statuses


def fuzz_operation(app, op, mode, pools, *, headers, cookies, forbidden, statuses: Counter) -> None:
    names = _PARAM.findall(op.path)
    real = st.sampled_from(sorted(pools["labs"])).flatmap(
        lambda lab: st.fixed_dictionaries({n: st.sampled_from(pools["labs"][lab][n]) for n in names})
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        case=op.as_strategy(generation_mode=mode),
        use_real=st.integers(0, 3).map(bool),
        pp=real,
        nir=st.sampled_from(pools["nir"]),
    )
    def run(case, use_real, pp, nir):
        if use_real and names:
            case.path_parameters = {**(case.path_parameters or {}), **pp}
            if op.path.endswith("/patients") and mode is GenerationMode.POSITIVE:
                case.query = {**(case.query or {}), "nir": nir}
        response = case.call(app=app, headers=headers, cookies=cookies)
        statuses[(op.method.upper(), op.path, response.status_code)] += 1
        assert response.status_code < 500, (op.method, op.path, response.status_code, response.content[:300])
        # A PDF answer (labels, reports) is bytes, not text: the NIRs are looked for in the bytes.
        leaked = [n for n in forbidden if n.encode() in response.content]
        assert not leaked, (op.method, op.path, "NIR of the other lab in the answer")
        case.validate_response(response, checks=[not_a_server_error])

    run()


def test_fuzz_with_session(api, bio_a, pools):
    ops = load_operations(bio_a)
    forbidden = other_lab_nirs()
    csrf = bio_a.headers["x-csrf-token"]
    cookies = {"lv_session": bio_a.cookies["lv_session"], "lv_csrf": bio_a.cookies["lv_csrf"]}
    statuses = fuzz(
        api.app,
        ops,
        pools,
        headers={"x-csrf-token": csrf, "user-agent": "schemathesis"},
        cookies=cookies,
        forbidden=forbidden,
        include_public=True,
    )
    ok = {(m, p) for m, p, s in statuses if s < 300}
    assert ("GET", "/api/v1/tenants/{tenant}/patients/{patient_id}/results") in ok  # real data was reached
    assert ("GET", "/api/v1/tenants/{tenant}/patients") in ok
    # the session survived, and lab B's token was not revoked by lab A's biologist
    assert bio_a.get("/api/v1/me").status_code == 200
    assert api.bearer(pools["other_token"]).get("/api/v1/me").status_code == 200


def test_fuzz_with_bearer_token(api, bio_a, pools):
    ops = load_operations(bio_a)
    _, token = api.token(bio_a, ["read", "ingest"])
    statuses = fuzz(
        api.app,
        ops,
        pools,
        headers={"authorization": f"Bearer {token}"},
        cookies={},
        forbidden=other_lab_nirs(),
        include_public=False,
    )
    ok = {(m, p) for m, p, s in statuses if s < 300}
    assert ("GET", "/api/v1/tenants/{tenant}/patients/{patient_id}") in ok
    assert not any(s == 401 for m, p, s in statuses if p == "/api/v1/me")  # the token held throughout
    assert api.bearer(pools["other_token"]).get("/api/v1/me").status_code == 200


SCHEMA_BUG = (
    "src bug: RequestOut.requested_at/reported_at and ResultOut.validated_at are sent without a UTC offset "
    "(e.g. '2016-11-23T04:02:59'), which the schema's format: date-time (RFC 3339) does not allow"
)


def test_successful_answers_match_the_schema(api, bio_a, admin_a, support):
    """Every GET operation, on real ids of lab A, answers lab A's biologist or admin as its schema says."""
    ops = [op for op in load_operations(bio_a) if op.method.upper() == "GET"]
    planned = planned_migration(api.gateway, LAB_A)
    grant = support.post(
        f"/api/v1/tenants/{LAB_A}/grants",
        json={
            "ticket": "SUP-8",
            "reason": "schema",
            "hours": 1,
            "fields": ["identity"],
            "patients": [api.patients[LAB_A][0]],
            "period_from": "2024-01-01",
            "period_to": "2024-06-30",
        },
    )
    assert grant.status_code == 201, grant.text
    ids = {
        "tenant": LAB_A,
        "patient_id": api.patients[LAB_A][0],
        "request_id": api.requests[LAB_A][0],
        "result_id": api.results[LAB_A][0],
        "instruction_id": planned.instruction_id,
        "migration_id": planned.migration_id,
        "grant_id": grant.json()["grant_id"],
        "number": "1",
        "advisory_id": "no-such-advisory",
        "alert_id": "no-such-alert",
        "channel_id": "no-such-channel",
        "incident_id": "no-such-incident",
        "analysis_id": "no-such-analysis",
        "version": "1",
    }
    failures, checked = [], []
    for op in ops:
        names = _PARAM.findall(op.path)
        assert set(names) <= set(ids), f"no real id for {op.path}: add one"
        query = {"nir": api.nirs[LAB_A][0]} if op.path.endswith("/patients") else None
        case = op.Case(path_parameters={n: ids[n] for n in names} or None, query=query)
        for c in (bio_a, admin_a):
            response = case.call(app=api.app, cookies={"lv_session": c.cookies["lv_session"]})
            if response.status_code == 200:
                break
        else:
            continue
        checked.append(op.path)
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup: collect every failure
            failures.append(f"{op.method.upper()} {op.path}: " + " ".join(str(exc).split())[:600])
    assert len(checked) >= 8, checked
    assert not failures, "\n".join(failures)
