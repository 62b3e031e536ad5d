"""A real package to cut leaked files from: a generated lab, a signed instruction naming every
field (free text included), the export run by the operator and opened with the real ``age`` CLI."""

from __future__ import annotations

import pytest

from labvault.instructions import document
from tests.migration.test_package_scope import _age_decrypt, _lab, _package

EVERY_FIELD = {t: list(f) for t, f in document.FIELDS.items()} | {document.FREE_TEXT: ["result.comment"]}


@pytest.fixture
def package_records(gateway, tmp_path) -> list[dict]:
    """The decrypted records of an export of a generated lab (every field named)."""
    w = _lab(gateway)
    job, ident = _package(w, "export", EVERY_FIELD, tmp_path / "packages")
    assert job.package is not None
    return _age_decrypt(ident, job.package)
