"""The one rule and the map, checked on the source with ``ast`` (rules in ``tests/architecture_rules.py``).

Each rule runs on the real tree and must find nothing; each is also shown failing: one offence is
planted in a copy of the tree, and the rule must report exactly that offence and nothing else new.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

import labvault
from tests import architecture_rules as rules

SRC = Path(labvault.__file__).parent

Rule = Callable[[Path], list[str]]


def _accounts_and_audit(root: Path) -> list[str]:
    return rules.personal_attributes_in(root, ("accounts/", "audit/"))


def _crypto_and_store_reach_up(root: Path) -> list[str]:
    upward = [o for o in rules.layer_offences(root) if o.startswith(("crypto/", "store/"))]
    return sorted(rules.kernel_apart(root) + upward)


# -- the real tree ----------------------------------------------------------------------------------


def test_no_private_member_or_connection_use_outside_the_gateway():
    """F1: outside access/ and store/, no code touches a unit of work's private members or its
    connection: the gateway's checks cannot be stepped around."""
    offences = rules.private_member_use(SRC)
    assert offences == [], rules.summary(offences)


def test_every_module_has_a_layer_and_imports_point_down():
    offences = rules.layer_offences(SRC)
    assert offences == [], rules.summary(offences)


def test_no_import_cycle_between_packages():
    offences = rules.import_cycles(SRC)
    assert offences == [], "\n".join(offences)


def test_interop_is_pure_formats():
    offences = rules.interop_impurity(SRC)
    assert offences == [], rules.summary(offences)


def test_only_crypto_touches_primitives():
    """C1: only crypto touches primitives (hmac, hashlib, secrets also in audit's hashing)."""
    offences = rules.primitive_imports(SRC)
    assert offences == [], rules.summary(offences)


def test_only_the_gateway_and_store_reach_the_tables():
    """F1: only the gateway and store reach the tables."""
    offences = rules.schema_importers(SRC)
    assert offences == [], rules.summary(offences)


def test_no_personal_table_is_named_outside_the_gateway():
    """F1: no module outside access/ and store/ names a personal-data table."""
    offences = rules.personal_table_names(SRC)
    assert offences == [], rules.summary(offences)


def test_accounts_and_audit_never_touch_personal_data_tables():
    offences = _accounts_and_audit(SRC)
    assert offences == [], rules.summary(offences)


def test_no_raw_sql_outside_the_store():
    offences = rules.raw_sql(SRC)
    assert offences == [], rules.summary(offences)


def test_crypto_and_store_do_not_reach_up():
    offences = _crypto_and_store_reach_up(SRC)
    assert offences == [], rules.summary(offences)


# -- each rule fails on a planted offence -----------------------------------------------------------


@cache
def _baseline(rule: Rule) -> frozenset[str]:
    return frozenset(rule(SRC))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "labvault"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _plant(root: Path, rel: str, lines: list[str]) -> list[int]:
    """Append lines to a module of the copy (lines above keep their numbers); their line numbers."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text("utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    first = len(text.splitlines()) + 1
    path.write_text(text + "\n".join(lines) + "\n", "utf-8")
    return list(range(first, first + len(lines)))


def _new(rule: Rule, root: Path) -> list[str]:
    return sorted(set(rule(root)) - _baseline(rule))


# (rule, file, planted lines, the offences expected: {0}, {1}... are the planted lines' numbers)
PLANTED: list[tuple[Rule, str, list[str], list[str]]] = [
    # a. private members and the connection
    (
        rules.private_member_use,
        "cli/patient.py",
        ["def planted(u):", "    return u._record"],
        ["cli/patient.py:{1}: u._record"],
    ),
    (
        rules.private_member_use,
        "migration/select.py",
        ["def planted(unit):", "    return unit._gw"],
        ["migration/select.py:{1}: unit._gw"],
    ),
    (
        rules.private_member_use,
        "retention/policy.py",
        ["class Planted:", "    def run(self):", "        return self.unit._scope('lab')"],
        ["retention/policy.py:{2}: self.unit._scope"],
    ),
    (
        rules.private_member_use,
        "bench/scratch.py",
        ["def planted(rt):", "    return rt.gateway._engine"],
        ["bench/scratch.py:{1}: rt.gateway._engine"],
    ),
    (
        rules.private_member_use,
        "api/routes.py",
        ["def planted(u):", "    return u.conn.execute"],
        ["api/routes.py:{1}: u.conn"],
    ),
    (
        rules.private_member_use,
        "synth/load.py",
        ["from labvault.access import Unit", "Unit._authorise = None"],
        ["synth/load.py:{1}: Unit._authorise"],
    ),
    (
        rules.private_member_use,
        "ingest/service.py",
        ["def planted(u):", "    return getattr(u, '_tf')"],
        ["ingest/service.py:{1}: getattr(u, '_tf')"],
    ),
    (
        rules.private_member_use,
        "retention/records.py",
        ["def _scope(u):", "    return u._scope('lab')"],
        ["retention/records.py:{1}: u._scope"],
    ),
    # b. imports point down, wherever they sit
    (
        rules.layer_offences,
        "crypto/fields.py",
        ["from typing import TYPE_CHECKING", "if TYPE_CHECKING:", "    from labvault.access.gateway import Unit"],
        ["crypto/fields.py:{2}: imports labvault.access.gateway.Unit (kernel -> access)"],
    ),
    (
        rules.layer_offences,
        "domain/models.py",
        ["def planted():", "    from labvault.cli import app"],
        ["domain/models.py:{1}: imports labvault.cli.app (kernel -> faces)"],
    ),
    (
        rules.layer_offences,
        "retention/policy.py",
        ["import labvault.api.app"],
        ["retention/policy.py:{0}: imports labvault.api.app (domains -> faces)"],
    ),
    (
        rules.layer_offences,
        "migration/select.py",
        ["from ..runtime import open_runtime"],
        ["migration/select.py:{0}: imports labvault.runtime.open_runtime (domains -> wiring)"],
    ),
    (
        rules.layer_offences,
        "access/policy.py",
        ["import importlib", "importlib.import_module('labvault.ingest')"],
        ["access/policy.py:{1}: imports labvault.ingest (access -> domains)"],
    ),
    (
        rules.layer_offences,
        "newthing/__init__.py",
        ['"""A package nobody placed on the map."""'],
        ["newthing/__init__.py:1: has no layer in the table"],
    ),
    (rules.interop_impurity, "interop/hprim.py", ["import socket"], ["interop/hprim.py:{0}: imports socket"]),
    (
        rules.interop_impurity,
        "interop/writers.py",
        ["def planted():", "    from labvault.store import engine"],
        ["interop/writers.py:{1}: imports labvault.store.engine"],
    ),
    (
        rules.interop_impurity,
        "interop/fhir.py",
        ["from sqlalchemy import select"],
        ["interop/fhir.py:{0}: imports sqlalchemy.select"],
    ),
    (
        _crypto_and_store_reach_up,
        "crypto/keys.py",
        ["from labvault.store import engine"],
        ["crypto/keys.py:{0}: imports labvault.store.engine"],
    ),
    (
        _crypto_and_store_reach_up,
        "store/engine.py",
        ["def planted():", "    import labvault.crypto.fields"],
        ["store/engine.py:{1}: imports labvault.crypto.fields"],
    ),
    # d. primitives
    (rules.primitive_imports, "domain/models.py", ["import hmac"], ["domain/models.py:{0}: imports hmac"]),
    (
        rules.primitive_imports,
        "retention/purge.py",
        ["def planted():", "    from hashlib import blake2b"],
        ["retention/purge.py:{1}: imports hashlib.blake2b"],
    ),
    (rules.primitive_imports, "audit/service.py", ["import secrets"], ["audit/service.py:{0}: imports secrets"]),
    (
        rules.primitive_imports,
        "audit/chain.py",
        ["from cryptography.hazmat.primitives import hashes"],
        ["audit/chain.py:{0}: imports cryptography.hazmat.primitives.hashes"],
    ),
    # e. tables and SQL
    (
        rules.schema_importers,
        "cli/patient.py",
        ["from labvault.store import schema"],
        ["cli/patient.py:{0}: imports labvault.store.schema"],
    ),
    (rules.personal_table_names, "migration/jobs.py", ["PLANTED = t.result"], ["migration/jobs.py:{0}: t.result"]),
    (
        rules.personal_table_names,
        "accounts/feeds.py",
        ["from labvault.store.schema import patient_identity"],
        ["accounts/feeds.py:{0}: labvault.store.schema.patient_identity"],
    ),
    (
        rules.personal_table_names,
        "audit/service.py",
        ["PLANTED = t.metadata.tables['quarantine']"],
        ["audit/service.py:{0}: t.metadata.tables['quarantine']"],
    ),
    (_accounts_and_audit, "accounts/service.py", ["PLANTED = t.specimen"], ["accounts/service.py:{0}: t.specimen"]),
    (
        rules.raw_sql,
        "api/routes.py",
        ["from sqlalchemy import text", "PLANTED = text('select 1')"],
        ["api/routes.py:{1}: text(...)"],
    ),
]


@pytest.mark.parametrize(
    ("rule", "rel", "lines", "expected"),
    PLANTED,
    ids=[f"{r.__name__.strip('_')}:{rel}:{lines[-1].strip()}" for r, rel, lines, _ in PLANTED],
)
def test_each_rule_reports_exactly_the_planted_offence(tree, rule, rel, lines, expected):
    numbers = _plant(tree, rel, lines)
    assert _new(rule, tree) == sorted(e.format(*numbers) for e in expected)


@pytest.mark.parametrize(
    ("rel", "lines"),
    [
        ("retention/policy.py", ["class Planted:", "    def run(self):", "        return self._own"]),
        (
            "retention/policy.py",
            [
                "class Planted:",
                "    def __init__(self):",
                "        self._n = 0",
                "    def same(self, other):",
                "        return other._n == self._n",
            ],
        ),
        ("cli/serve.py", ["import os", "def planted():", "    os._exit(0)"]),
        ("migration/select.py", ["def planted(row):", "    return row._mapping"]),
        ("cli/patient.py", ["from labvault.crypto import packages", "PLANTED = packages._Pull"]),
    ],
    ids=["self", "own-member-on-another-instance", "stdlib-module", "sqlalchemy-row", "a-module-s-own-name"],
)
def test_what_is_not_a_private_member_offence(tree, rel, lines):
    # a module's private names (``packages._Pull``) are a module's business, not a unit's members
    _plant(tree, rel, lines)
    assert _new(rules.private_member_use, tree) == []


@pytest.mark.parametrize(
    ("rel", "lines"),
    [
        ("crypto/fields.py", ["import hmac", "import secrets"]),
        ("audit/merkle.py", ["import hmac"]),
        ("access/policy.py", ["from labvault.store import engine"]),
        ("migration/select.py", ["from labvault.instructions import document", "from labvault.interop import writers"]),
    ],
    ids=["crypto-primitives", "audit-hashing", "access-to-store", "domain-to-domain-and-kernel"],
)
def test_what_is_allowed(tree, rel, lines):
    _plant(tree, rel, lines)
    for rule in (rules.primitive_imports, rules.layer_offences, rules.import_cycles, rules.interop_impurity):
        assert _new(rule, tree) == [], rule.__name__


@pytest.mark.parametrize(
    "lines",
    [
        ["def planted():", "    from labvault import config"],
        ["from typing import TYPE_CHECKING", "if TYPE_CHECKING:", "    import labvault.config"],
    ],
    ids=["function-level", "type-checking"],
)
def test_a_planted_cycle_is_printed(tree, lines):
    # config imports errors (ConfigError); errors importing config closes a loop
    numbers = _plant(tree, "errors.py", lines)
    new = _new(rules.import_cycles, tree)
    assert len(new) == 1, new
    assert new[0].startswith("cycle config -> errors -> config: config -> errors (config.py:"), new[0]
    assert f"errors -> config (errors.py:{numbers[-1]}); tangle: config, errors" in new[0]


def test_the_map_in_the_docs_gives_every_folder_its_layer():
    """docs/dev/application.md has one line per folder and module of src/labvault, in its layer."""
    doc = (SRC.parents[1] / "docs" / "dev" / "application.md").read_text("utf-8")
    rows = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`src/labvault/"):
            rows[cells[0].strip("`").removeprefix("src/labvault/")] = cells[1]
    on_disk = [p.name + "/" if p.is_dir() else p.name for p in SRC.iterdir() if p.name != "__pycache__"]
    for key in on_disk:
        if key in ("__init__.py", "py.typed"):
            continue
        assert key in rows, f"{key} has no line in docs/dev/application.md"
        layers = {rules.LAYERS[k] for k in rules.LAYERS if k == key or (k.startswith(key) and key.endswith("/"))}
        assert set(rows[key].replace(" ", "").split("/")) == layers, key
