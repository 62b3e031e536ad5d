"""Errors become HTTP answers from one table, the classes' own attributes: each its status, a JSON
error body under /api and an OperationOutcome under /fhir; a 5xx says nothing of the message and
logs the traceback (G2)."""

from __future__ import annotations

import io
import logging
import warnings

import pytest
from fastapi import FastAPI

from labvault import errors, logs
from labvault.accounts.errors import LockedOut
from labvault.api import errors as api_errors
from labvault.migration.errors import ReconciliationFailed
from tests.api.conftest import LAB_A

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient` is deprecated")
    from fastapi.testclient import TestClient

# What the review found answered 400 ("bad input"), and what each is.
CASES = {
    "tenant-key-missing": (
        errors.TenantKeyMissing("no key for 'lab-a' in the key provider (destroyed)"),
        410,
        "no key for 'lab-a'",
        "deleted",
    ),
    "schema-outdated": (
        errors.SchemaOutdated("the database schema is at 0012, this Labvault needs 0013: run 'labvault init'"),
        503,
        "not ready",
        "transient",
    ),
    "reconciliation-failed": (
        ReconciliationFailed("counts differ from the manifest: results 3 != 4"),
        409,
        "counts differ from the manifest",
        "conflict",
    ),
    "package-error": (
        errors.PackageError(
            "package /srv/labvault/home/packages/M-1/package.ndjson.age does not decrypt with this identity"
        ),
        500,
        "a package could not be written",
        "exception",
    ),
}


@pytest.fixture
def client() -> TestClient:
    """The error handlers of the app on routes that raise the error named in their path."""
    app = FastAPI()
    api_errors.install(app)

    def raiser(name: str) -> None:
        if name == "locked":
            raise LockedOut("this account is locked after repeated failures: try again later", 900)
        if name == "bug":
            raise KeyError("185077512345608")
        raise CASES[name][0]

    app.get("/api/v1/raise/{name}")(raiser)
    app.get("/fhir/R4/raise/{name}")(raiser)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    handler = logs.configure(stream)
    yield stream
    logging.getLogger().removeHandler(handler)


@pytest.mark.parametrize("name", CASES)
def test_each_error_has_its_own_status_under_api_and_fhir(client, log_stream, name):
    exc, status, said, issue = CASES[name]
    r = client.get(f"/api/v1/raise/{name}")
    assert r.status_code == status and said in r.json()["error"], r.text
    r = client.get(f"/fhir/R4/raise/{name}")
    assert r.status_code == status and r.headers["content-type"].startswith("application/fhir+json")
    [one] = r.json()["issue"]
    assert r.json()["resourceType"] == "OperationOutcome" and one["code"] == issue and said in one["diagnostics"]
    text = log_stream.getvalue()
    if status >= 500:  # the platform failed: the client is not told the message, the log has the traceback
        assert "/srv/labvault" not in r.text and "0012" not in r.text
        assert f"{type(exc).__name__} ({status}) in GET" in text and "Traceback (most recent call last)" in text
    else:
        assert "Traceback" not in text


def test_headers_come_from_the_error(client):
    r = client.get("/api/v1/raise/locked")
    assert r.status_code == 429 and r.headers["retry-after"] == "900" and "locked" in r.json()["error"]


def test_an_unexpected_error_is_a_bare_500_with_its_traceback_logged(client, log_stream):
    """G2: the body names nothing; the log has frames and type names, not the message."""
    for path, body in (("/api/v1/raise/bug", {"error": "internal error"}), ("/fhir/R4/raise/bug", None)):
        r = client.get(path)
        assert r.status_code == 500 and "185077512345608" not in r.text
        if body is not None:
            assert r.json() == body
        else:
            assert r.json()["issue"][0]["code"] == "exception"
    text = log_stream.getvalue()
    assert "Traceback (most recent call last)" in text and "builtins.KeyError" in text
    assert "185077512345608" not in text


def test_a_lab_whose_key_another_process_destroyed_is_gone_not_bad_input(api, bio_a):
    """C3: the lab's key destroyed in the key provider under a running server (a shred from the
    CLI): its reads answer 410, under /api and /fhir, and no longer 400."""
    patient = api.patients[LAB_A][0]
    assert bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{patient}").status_code == 200
    api.gateway.keys.destroy_scope(LAB_A)
    r = bio_a.get(f"/api/v1/tenants/{LAB_A}/patients/{patient}")
    assert r.status_code == 410 and "destroyed" in r.json()["error"], r.text
    r = bio_a.get(f"/fhir/R4/Patient/{patient}")
    assert r.status_code == 410 and r.json()["issue"][0]["code"] == "deleted", r.text
