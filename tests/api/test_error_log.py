"""Internal errors reach the log with their traceback, never with a personal value (G2)."""

from __future__ import annotations

import io
import logging

import pytest

from labvault import logs
from labvault.access.gateway import Unit
from tests.api.conftest import LAB_A


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    handler = logs.configure(stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def test_an_internal_error_is_logged_with_frames_and_type_but_no_planted_personal_value(
    api, bio_a, log_stream, monkeypatch
):
    """G2: a bug in data code raises with a NIR and a name in its message, its arguments and its
    locals; the answer is a bare 500, the log has the traceback (frames, type names), the route
    template, the actor; the NIR, the name and the query never appear."""
    nir = api.nirs[LAB_A][0]

    def broken(self, tenant_id, value):  # a bug planted in data code: the exception quotes the NIR
        patient_name = "DUPONT Jean"
        try:
            {}[value]
        except KeyError as exc:
            raise ValueError(f"no patient {value} ({patient_name})", value) from exc

    monkeypatch.setattr(Unit, "find_patients_by_nir", broken)
    r = bio_a.get(f"/api/v1/tenants/{LAB_A}/patients", params={"nir": nir})
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    text = log_stream.getvalue()
    assert "internal error in GET /api/v1/tenants/{tenant}/patients" in text, text
    assert "Traceback (most recent call last)" in text and ", in broken" in text and ", in search_patients" in text
    assert "builtins.KeyError: [message removed]" in text and "builtins.ValueError: [message removed]" in text
    assert "The above exception was the direct cause" in text
    access = [ln for ln in text.splitlines() if "labvault.access.http" in ln]
    assert len(access) == 1 and "status=500" in access[0] and "actor=" in access[0] and "actor=-" not in access[0]
    for secret in (nir, "DUPONT", "Jean"):
        assert secret not in text, secret


def test_the_filter_also_cleans_other_libraries_records(log_stream):
    """G2: a library's log call with a raw path and an exception: text arguments and the message go."""
    try:
        raise RuntimeError("patient 185077512345608 DUPONT")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception(
            "Invalid request to %s from %s (%d)", "/fhir/Patient?identifier=185077512345608", "DUPONT", 3
        )
    text = log_stream.getvalue()
    assert "Invalid request to <redacted> from <redacted> (3)" in text and "builtins.RuntimeError" in text
    assert "185077512345608" not in text and "DUPONT" not in text
