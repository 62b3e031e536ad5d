"""The rules that protect a lab from the vendor (H1, G1, G2) stay in force whatever the platform's
rules file says: not turned off, not redefined, not weakened; made stricter, yes. The rule set in
force is recorded (its SHA-256 in ``monitor:start``, shown by ``labvault monitor rules``)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from labvault.access.principal import MONITOR
from labvault.errors import InvalidInput
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.consumer import Consumer
from labvault.monitoring.engine import evaluate
from labvault.monitoring.findings import Severity
from labvault.store import schema as t
from tests.cli.test_cli import home, one_line_error, run  # noqa: F401  (home is a fixture)
from tests.conftest import make_lab
from tests.monitoring.events import ListSink, reads

SHIPPED = rules_mod.shipped()
BY_ID = {r.id: r for r in SHIPPED}
SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _refused(text: str, rule_id: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        rules_mod.parse(text, base=SHIPPED)
    message = str(caught.value)
    assert "\n" not in message and f"'{rule_id}'" in message and "protects the labs" in message
    return message


def test_the_protected_rules_are_shipped_and_kept_per_lab():
    """H1, G2: every protected rule is a shipped rule grouped by lab (a lab's own alert)."""
    assert set(BY_ID) >= rules_mod.PROTECTED
    assert {
        "canary-touched",
        "bulk-read-vendor",
        "support-read-refused",
        "vendor-sensitive-read",
    } <= rules_mod.PROTECTED
    assert {"audit-verification-failed", "export-refused"} <= rules_mod.PROTECTED
    assert all(not BY_ID[r].platform_wide for r in rules_mod.PROTECTED)
    assert not BY_ID["bulk-read"].protected and not BY_ID["off-hours-read"].protected


@pytest.mark.parametrize("rule_id", sorted(rules_mod.PROTECTED))
def test_a_protected_rule_cannot_be_turned_off_for_a_lab(rule_id):
    """H1, G2: ``[lab.<lab>.<rule>] enabled = false`` on a protected rule is refused at load, the
    message naming the rule on one line; the same setting on an ordinary rule is accepted."""
    assert "turned off" in _refused(f"[lab.lab-a.{rule_id}]\nenabled = false\n", rule_id)
    kept = rules_mod.parse("[lab.lab-a.off-hours-read]\nenabled = false\n", base=SHIPPED)
    assert not next(r for r in kept if r.id == "off-hours-read").for_lab("lab-a").enabled


def test_a_protected_rule_cannot_be_redefined_or_turned_off_by_id():
    """H1, G2: a platform's ``[[rule]]`` of a protected id with another selection, title, grouping
    or ``enabled = false`` is refused; the shipped definition, tightened, is accepted."""
    canary = BY_ID["canary-touched"]
    never = '[[rule]]\nid = "canary-touched"\ntitle = "%s"\nselection = { action = ["nothing:at-all"] }\n'
    assert "selection" in _refused(never % canary.title, "canary-touched")
    retitled = (
        '[[rule]]\nid = "canary-touched"\ntitle = "Essai, ne pas traiter"\nseverity = "critical"\n'
        f'why = "{canary.why}"\nselection = {{ action = ["canary:touch"] }}\n'
        'correlation = { type = "event_count", group_by = ["tenant", "ref0"], timespan = "1d", gte = 1 }\n'
    )
    assert "title" in _refused(retitled, "canary-touched")
    assert rules_mod.parse(retitled.replace("Essai, ne pas traiter", canary.title), base=SHIPPED)
    vendor = BY_ID["bulk-read-vendor"]
    same = (
        f'[[rule]]\nid = "bulk-read-vendor"\ntitle = "{vendor.title}"\nwhy = "{vendor.why}"\n'
        'severity = "high"\nselection = { action = ["patient:identity:read", "patient:identity:search", '
        '"patient:request:read", "patient:result:read", "report:read", "specimen:timeline"], '
        'outcome = ["allowed"], roles = "vendor" }\n'
    )
    wider_group = (
        same
        + 'correlation = { type = "value_count", field = "refs", group_by = ["tenant"], timespan = "1h", gte = 20 }\n'
    )
    assert "group_by" in _refused(wider_group, "bulk-read-vendor")
    corr = (
        'correlation = { type = "value_count", field = "refs", group_by = ["tenant", "actor"], '
        'timespan = "%s", gte = %d }\n'
    )
    assert "turned off" in _refused(same + corr % ("1h", 20) + "enabled = false\n", "bulk-read-vendor")
    assert "threshold" in _refused(same + corr % ("1h", 21), "bulk-read-vendor")
    tightened = {r.id: r for r in rules_mod.parse(same + corr % ("2h", 10), base=SHIPPED)}["bulk-read-vendor"]
    assert (tightened.gte, tightened.timespan_s) == (10, 7200)


@pytest.mark.parametrize(
    ("setting", "fault"),
    [
        ("gte = 21", "threshold"),
        ('timespan = "30m"', "window"),
        ('severity = "medium"', "severity"),
    ],
)
def test_a_protected_rule_cannot_be_weakened_for_a_lab(setting, fault):
    """H1, G2: a larger threshold, a shorter window (fewer events counted) or a lower severity on
    a protected rule is refused; the same on an ordinary rule is the lab's setting."""
    assert fault in _refused(f"[lab.lab-a.bulk-read-vendor]\n{setting}\n", "bulk-read-vendor")
    _refused('[lab.lab-b.canary-touched]\nseverity = "high"\n', "canary-touched")
    _refused('[lab.lab-b.audit-verification-failed]\ntimespan = "10m"\n', "audit-verification-failed")
    loose = rules_mod.parse(f"[lab.lab-a.bulk-read]\n{setting.replace('21', '500')}\n", base=SHIPPED)
    assert next(r for r in loose if r.id == "bulk-read").per_lab["lab-a"] != BY_ID["bulk-read"]


def test_a_protected_rule_may_be_made_stricter():
    """H1: a lower threshold, a longer window, a higher severity: accepted, for that lab only, and
    the stricter rule fires where the shipped one stays quiet."""
    text = '[lab.lab-a.bulk-read-vendor]\ngte = 5\ntimespan = "2h"\nseverity = "critical"\n'
    loaded = rules_mod.parse(text, base=SHIPPED)
    rule = next(r for r in loaded if r.id == "bulk-read-vendor")
    mine = rule.for_lab("lab-a")
    assert (mine.gte, mine.timespan_s, mine.severity, mine.enabled) == (5, 7200, Severity.CRITICAL, True)
    assert rule.for_lab("lab-b") is rule and rule.gte == 20
    in_a, in_b = (
        [
            f
            for f in evaluate(loaded, reads(6, tenant=lab, roles="support", actor="sup-1", purpose="support"))
            if f.rule_id == "bulk-read-vendor"
        ]
        for lab in ("lab-a", "lab-b")
    )
    assert len(in_a) == 1 and in_a[0].severity is Severity.CRITICAL and in_b == []


def test_the_digest_covers_every_setting():
    """H1: the SHA-256 changes with any setting, a lab's included, and not with the file's order."""
    base = rules_mod.digest(SHIPPED)
    assert len(base) == 64 and base == rules_mod.digest(list(reversed(SHIPPED)))
    assert rules_mod.digest(rules_mod.parse("[lab.lab-a.bulk-read]\ngte = 301\n", base=SHIPPED)) != base
    assert rules_mod.digest(rules_mod.parse("[lab.lab-a.canary-touched]\nenabled = true\n", base=SHIPPED)) != base


@SQLITE
def test_monitor_start_records_the_rule_sets_digest(gateway):
    """H1, G1: the consumer's ``monitor:start`` event names the SHA-256 of the rules in force."""
    make_lab(gateway, "lab-a")
    loaded = rules_mod.parse("[lab.lab-a.bulk-read-vendor]\ngte = 5\n", base=SHIPPED)
    Consumer(gateway, MONITOR, loaded, sink=ListSink()).start()
    with gateway.engine.connect() as conn:
        refs = (
            conn.execute(select(t.audit_event.c.object_refs).where(t.audit_event.c.action == "monitor:start"))
            .scalars()
            .all()
        )
    assert [json.loads(r) for r in refs] == [["rules", rules_mod.digest(loaded)]]
    assert rules_mod.digest(loaded) != rules_mod.digest(SHIPPED)


def test_monitor_rules_shows_the_digest_and_refuses_a_weakening_file(home, capsys, tmp_path):
    """H1, G2: ``labvault monitor rules --tenant T`` shows the lab's thresholds, which rules are
    protected, and the digest ``monitor:start`` records; a file weakening a protected rule is
    refused in one line naming it."""
    good = tmp_path / "good.toml"
    good.write_text('[lab.bio-lyon.canary-touched]\ntimespan = "2d"\n', encoding="utf-8")
    code, out, err = run(capsys, "monitor", "rules", "--rules", str(good), "--tenant", "bio-lyon")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    canary = next(x for x in lines if x.get("id") == "canary-touched")
    assert canary["protected"] is True and canary["timespan_s"] == 2 * 86400
    assert lines[-1] == {"rules_sha256": rules_mod.digest(rules_mod.load(good)), "rules": len(SHIPPED)}
    bad = tmp_path / "bad.toml"
    bad.write_text("[lab.bio-lyon.canary-touched]\nenabled = false\n", encoding="utf-8")
    code, _, err = run(capsys, "monitor", "rules", "--rules", str(bad))
    assert code != 0 and "canary-touched" in one_line_error(err)


@SQLITE
def test_the_platforms_rules_file_cannot_turn_off_a_labs_canary_rule(gateway):
    """Attack: the vendor's operator writes ``<home>/monitor-rules.toml`` (read by ``serve`` and
    ``monitor run``, never shown to the lab, no audit event naming it) with
    ``[lab.lab-a.canary-touched] enabled = false``, or replaces the rule by id with one that
    never matches. The lab's canaries are then read without an alert, and the lab does not know.
    Expected: the rules a lab relies on against the vendor (canary-touched, bulk-read-vendor,
    support-read-refused, vendor-sensitive-read, audit-verification-failed) cannot be turned
    off or weakened by the platform's file; a lab's own settings are the lab's (audited)."""
    text = "[lab.lab-a.canary-touched]\nenabled = false\n"
    try:
        loaded = rules_mod.parse(text, base=rules_mod.shipped())
    except InvalidInput:  # refused: the fix
        loaded = None
    if loaded is not None:
        rule = next(r for r in loaded if r.id == "canary-touched")
        assert rule.for_lab("lab-a").enabled, "the vendor's file silenced lab-a's canaries"
    replaced = '[[rule]]\nid = "canary-touched"\ntitle = "x"\nselection = { action = ["nothing:at-all"] }\n'
    try:
        loaded = rules_mod.parse(replaced, base=rules_mod.shipped())
    except InvalidInput:
        loaded = None
    if loaded is not None:
        rule = next(r for r in loaded if r.id == "canary-touched")
        assert rule.selection.matches_action("canary:touch"), "the vendor's file redefined the canary rule away"
