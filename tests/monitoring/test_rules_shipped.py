"""Each shipped rule (H1) fires on its scenario and stays quiet just under its threshold; the
per-lab settings change a lab's threshold only; every action a rule names is one the code writes."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from labvault.errors import InvalidInput
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.engine import Engine, evaluate
from labvault.monitoring.findings import Severity
from tests.monitoring.events import DAY, NIGHT, ev, reads

SHIPPED = rules_mod.shipped()
BY_ID = {r.id: r for r in SHIPPED}


def _failures(n, *, account="acc-1", addr="198.51.100.7", action="account:login:failure"):
    return [
        ev(
            action,
            at=DAY + 60 * i,
            actor="system:authentication",
            roles=None,
            outcome="denied",
            refs=[account] if isinstance(account, str) else [account[i]],
            addr=addr,
            object_type="account",
        )
        for i in range(n)
    ]


# rule id -> (events that fire it, events just under its threshold)
SCENARIOS = {
    "bulk-read": (reads(300, step=10), reads(299, step=10)),
    "bulk-read-vendor": (
        reads(20, roles="support", actor="sup-1", purpose="support"),
        reads(19, roles="support", actor="sup-1", purpose="support"),
    ),
    "vendor-sensitive-read": (
        [ev("patient:result:read", roles="support", actor="sup-1", outcome="denied")],
        [ev("patient:result:read", roles="biologist", outcome="denied")],
    ),
    "support-read-refused": (
        [ev("patient:identity:read", roles="support", actor="sup-1", outcome="denied", object_type="patient")],
        [ev("patient:identity:read", roles="support", actor="sup-1", refs=["pat-1"], object_type="patient")],
    ),
    "off-hours-read": (reads(10, at=NIGHT, step=60), reads(9, at=NIGHT, step=60)),
    "canary-touched": (
        [ev("canary:touch", refs=["canary-1"], outcome="alert", object_type="canary")],
        [ev("canary:seed", refs=["canary-1"], object_type="canary")],
    ),
    "export-refused": (
        [ev("export:records", actor="op-1", roles="operator", outcome="denied", purpose="export")],
        [ev("export:records", actor="op-1", roles="operator", purpose="export", refs=["export-1"])],
    ),
    "login-failure-burst": (_failures(5), _failures(4)),
    "password-spraying": (
        _failures(5, account=[f"acc-{i}" for i in range(5)]),
        _failures(4, account=[f"acc-{i}" for i in range(4)]),
    ),
    "shared-account": (
        [
            ev("patient:result:read", addr="192.0.2.1", refs=["p1"]),
            ev("patient:result:read", at=DAY + 240, addr="203.0.113.9", refs=["p2"]),
        ],
        [
            ev("patient:result:read", addr="192.0.2.1", refs=["p1"]),
            ev("patient:result:read", at=DAY + 301, addr="203.0.113.9", refs=["p2"]),
        ],
    ),
    "shared-account-login": (
        [ev("account:concurrent-use", actor="system:authentication", roles=None, outcome="alert", refs=["acc-1"])],
        [ev("account:login", actor="system:authentication", roles=None, refs=["acc-1"])],
    ),
    "anonymous-probing": (
        [
            ev(
                "api:unauthenticated",
                tenant="platform",
                actor="system:authentication",
                roles=None,
                outcome="denied",
                refs=[f"GET:.api.v1.route{i}"],
                addr="198.51.100.9",
                at=DAY + i,
            )
            for i in range(5)
        ],
        [
            ev(
                "api:unauthenticated",
                tenant="platform",
                actor="system:authentication",
                roles=None,
                outcome="denied",
                refs=[f"GET:.api.v1.route{i}"],
                addr="198.51.100.9",
                at=DAY + i,
            )
            for i in range(4)
        ],
    ),
    "privilege-change": (
        [ev("account:roles:change", actor="adm-1", roles="lab_admin", refs=["acc-2"], object_type="account")],
        [ev("account:login", actor="system:authentication", roles=None, refs=["acc-2"], object_type="account")],
    ),
    "audit-verification-failed": (
        [ev("audit:verify", actor="dpo-1", roles="lab_dpo", outcome="alert", object_type="audit")],
        [ev("audit:verify", actor="dpo-1", roles="lab_dpo", object_type="audit")],
    ),
    "key-operation": (
        [ev("keys:rotate:start", actor="adm", roles="platform_admin", object_type="key")],
        [ev("tenant:settings", actor="adm-1", roles="lab_admin", object_type="tenant")],
    ),
    "scheduler-failed": (
        [ev("scheduler:checkpoint", actor="adm", roles="platform_admin", outcome="error", refs=["OperationalError"])],
        [ev("audit:checkpoint", actor="adm", roles="platform_admin", object_type="audit")],
    ),
}


def test_every_shipped_rule_has_its_scenarios():
    """H1: no shipped rule without a test that fires it and one that stays quiet."""
    assert set(SCENARIOS) == set(BY_ID)


@pytest.mark.parametrize("rule_id", sorted(SCENARIOS))
def test_rule_fires(rule_id):
    """H1: the rule raises one finding, of its severity, for its group."""
    fire, _ = SCENARIOS[rule_id]
    found = [f for f in evaluate(SHIPPED, fire) if f.rule_id == rule_id]
    assert len(found) == 1
    f = found[0]
    rule = BY_ID[rule_id]
    assert f.severity == rule.severity
    assert f.event_count >= rule.gte
    assert f.first_seq is not None and f.last_seq is not None and f.first_seq <= f.last_seq
    assert f.tenant_id == ("platform" if rule.platform_wide else fire[0].tenant_id)


@pytest.mark.parametrize("rule_id", sorted(SCENARIOS))
def test_rule_stays_quiet_just_under(rule_id):
    """H1: one event (or one distinct value) fewer, or the near miss: no finding of this rule."""
    _, quiet = SCENARIOS[rule_id]
    assert [f for f in evaluate(SHIPPED, quiet) if f.rule_id == rule_id] == []


def test_reads_in_working_hours_are_not_off_hours():
    """H1: the same ten reads at 10:00 on a Tuesday (Paris) raise no off-hours finding; a lab
    open day and night (its own hours) has none at 3 am either."""
    assert [f for f in evaluate(SHIPPED, reads(10, step=60)) if f.rule_id == "off-hours-read"] == []
    engine = Engine(SHIPPED)
    engine.set_hours("lab-a", "mon-sun 00:00-24:00", "Europe/Paris")
    assert [f for f in engine.feed(reads(10, at=NIGHT, step=60)) if f.rule_id == "off-hours-read"] == []


def test_a_window_slides():
    """H1: 300 reads spread over more than an hour never hold 300 in one window."""
    spread = reads(300, step=13)  # 3,887 s
    assert [f for f in evaluate(SHIPPED, spread) if f.rule_id == "bulk-read"] == []


def test_one_finding_per_group_then_updates():
    """H1: a group raises once per batch; later matches in the same window update it (same key)."""
    engine = Engine(SHIPPED)
    first = [f for f in engine.feed(reads(300)) if f.rule_id == "bulk-read"]
    more = [f for f in engine.feed(reads(5, at=DAY + 400)) if f.rule_id == "bulk-read"]
    assert len(first) == len(more) == 1
    assert first[0].dedup_key == more[0].dedup_key == "bulk-read:actor=bio-1"
    assert more[0].event_count > first[0].event_count or more[0].last_seq > first[0].last_seq


def test_a_lab_sets_its_own_threshold():
    """H1: [lab.<id>.<rule>] changes that lab's threshold only; a rule across labs has none."""
    text = "[lab.lab-b.bulk-read]\ngte = 1000\n[lab.lab-c.off-hours-read]\nenabled = false\n"
    rules = rules_mod.parse(text, base=SHIPPED)
    a = [f for f in evaluate(rules, reads(300, tenant="lab-a")) if f.rule_id == "bulk-read"]
    b = [f for f in evaluate(rules, reads(300, tenant="lab-b")) if f.rule_id == "bulk-read"]
    c = [f for f in evaluate(rules, reads(20, tenant="lab-c", at=NIGHT)) if f.rule_id == "off-hours-read"]
    assert len(a) == 1 and b == [] and c == []
    with pytest.raises(InvalidInput, match="password-spraying"):
        rules_mod.parse("[lab.lab-b.password-spraying]\ngte = 50\n", base=SHIPPED)
    with pytest.raises(InvalidInput, match="no such rule"):
        rules_mod.parse("[lab.lab-b.nothing-here]\ngte = 5\n", base=SHIPPED)


def test_a_rules_file_replaces_and_adds():
    """H1: a rule of the same id replaces the shipped one; a new one is added; errors name the key."""
    text = """
[[rule]]
id = "bulk-read"
title = "Lecture massive"
severity = "critical"
selection = { action = ["patient:*"] }
correlation = { type = "value_count", field = "refs", group_by = ["tenant", "actor"], timespan = "10m", gte = 50 }
"""
    rules = {r.id: r for r in rules_mod.parse(text, base=SHIPPED)}
    assert rules["bulk-read"].gte == 50 and rules["bulk-read"].severity is Severity.CRITICAL
    assert len(rules) == len(SHIPPED)
    with pytest.raises(InvalidInput, match="timespan"):
        rules_mod.parse('[[rule]]\nid = "x-y"\ntitle = "t"\ncorrelation = { timespan = "soon" }\n')


# -- the actions the rules name are actions the code writes ----------------------------------------
SRC = Path(__file__).resolve().parents[2] / "src" / "labvault"
_AUDIT_CALLS = {"_record", "audit", "refuse", "_deny", "_authorise", "authorise", "_ev", "_fail", "authorise_deletion"}
_ACTION = re.compile(r"^[a-z][a-z_-]*(:[a-z_-]+)+$")
# Actions written by parts of issue 16 that are built beside the rules (the canaries).
ANNOUNCED = {"canary:touch"}


def written_actions() -> set[str]:
    """Every action name passed to the calls that write audit events (f-strings: their prefix + '*')."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                for a, d in zip(args, defaults + node.args.kw_defaults, strict=False):
                    if a.arg == "action" and isinstance(d, ast.Constant) and isinstance(d.value, str):
                        found.add(d.value)
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in _AUDIT_CALLS:
                continue
            values = list(node.args) + [k.value for k in node.keywords if k.arg == "action"]
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str) and _ACTION.match(v.value):
                    found.add(v.value)
                elif isinstance(v, ast.JoinedStr) and v.values and isinstance(v.values[0], ast.Constant):
                    found.add(f"{v.values[0].value}*")
    return found


def test_every_action_a_rule_names_is_written_somewhere():
    """H1: a rule on an action nobody writes would never fire: each pattern matches a real action."""
    actions = written_actions() | ANNOUNCED
    assert {"account:login:failure", "patient:result:read", "scheduler:*", "api:unauthenticated"} <= actions
    for rule in SHIPPED:
        for pattern in rule.selection.actions:
            if pattern == "*":
                continue
            prefix = pattern[:-1] if pattern.endswith("*") else None
            hit = [a for a in actions if (a.startswith(prefix) if prefix else a == pattern or a == pattern + "*")]
            assert hit, f"rule {rule.id}: no code writes an action matching {pattern}"
