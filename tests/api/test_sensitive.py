"""Sensitive categories: results a lab restricts to biologists never reach its technicians."""

from __future__ import annotations

from tests.api.conftest import LAB_A

BIOLOGIST_ONLY = {"hiv", "genetics"}  # policy.DEFAULT_SENSITIVE_ACCESS


def test_technician_does_not_receive_hiv_or_genetics_results(api, bio_a, tech_a):
    restricted_seen: set[str] = set()
    withheld = 0
    for pid in api.patients[LAB_A]:
        path = f"/api/v1/tenants/{LAB_A}/patients/{pid}/results"
        by_bio, by_tech = bio_a.get(path), tech_a.get(path)
        assert by_bio.status_code == 200 and by_tech.status_code == 200
        bio = {r["result_id"]: r for r in by_bio.json()}
        tech = {r["result_id"]: r for r in by_tech.json()}
        assert not {r["sensitivity"] for r in tech.values()} & BIOLOGIST_ONLY, pid
        hidden = {rid for rid, r in bio.items() if r["sensitivity"] in BIOLOGIST_ONLY}
        # the technician gets exactly the biologist's results minus the restricted ones
        assert set(tech) == set(bio) - hidden, pid
        restricted_seen |= {bio[rid]["sensitivity"] for rid in hidden}
        withheld += len(hidden)
        # the same holds when reading by request, and for a code filter naming a hidden result
        for rid in hidden:
            request_path = f"/api/v1/tenants/{LAB_A}/requests/{bio[rid]['request_id']}/results"
            assert rid in {r["result_id"] for r in bio_a.get(request_path).json()}
            assert rid not in {r["result_id"] for r in tech_a.get(request_path).json()}
            assert tech_a.get(path, params={"code": bio[rid]["code"]}).json() == []
            assert bio_a.get(path, params={"code": bio[rid]["code"]}).json() != []
            assert rid not in tech_a.get(request_path).text and bio[rid]["label"] not in by_tech.text
    assert withheld > 0 and restricted_seen, "the generated lab should hold HIV or genetics results"
