"""The one rule, checked on the source: only the gateway (and the store itself) touches tables,
only the crypto package touches key material primitives."""

from __future__ import annotations

import ast
from pathlib import Path

import labvault

SRC = Path(labvault.__file__).parent


def modules():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if "/revisions/" in rel:
            continue
        yield rel, ast.parse(path.read_text("utf-8"))


def imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_only_the_gateway_and_store_reach_the_tables():
    """F1: only the gateway and store reach the tables."""
    offenders = [
        rel
        for rel, tree in modules()
        if not rel.startswith(("access/", "store/", "accounts/", "audit/", "ingest/intake.py", "retention/records.py",
                               "migration/jobs.py", "instructions/signers.py"))
        and any(n == "labvault.store.schema" or n.startswith("labvault.store.schema.") for n in imported(tree))
    ]
    assert offenders == []


def test_accounts_and_audit_never_touch_personal_data_tables():
    from labvault.store.schema import PERSONAL_TABLES

    for rel, tree in modules():
        if not rel.startswith(("accounts/", "audit/")):
            continue
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not used & PERSONAL_TABLES, rel


def test_no_raw_sql_outside_the_store():
    offenders = []
    for rel, tree in modules():
        if rel.startswith("store/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "text":
                offenders.append(rel)
    assert offenders == []


def test_only_crypto_touches_primitives():
    """C1: only crypto touches primitives."""
    offenders = [
        rel
        for rel, tree in modules()
        if not rel.startswith("crypto/") and any(n.startswith("cryptography.") for n in imported(tree))
    ]
    assert offenders == []


def test_crypto_and_store_do_not_reach_up():
    for rel, tree in modules():
        names = imported(tree)
        if rel.startswith("crypto/"):
            assert not any(n.startswith(("labvault.store", "labvault.access", "labvault.cli")) for n in names), rel
        if rel.startswith("store/"):
            assert not any(n.startswith(("labvault.crypto", "labvault.access", "labvault.cli")) for n in names), rel
