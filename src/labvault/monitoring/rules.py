"""Rules over the audit stream (H1), written in TOML in the shape of Sigma correlations.

A rule selects audit events (action, outcome, object type, purpose, the actor's kind of roles,
outside the lab's working hours), then either raises on every match or counts per group over a
sliding window: ``event_count`` (how many events) or ``value_count`` (how many distinct values of
a field: the object references of the events, the first reference, the actor, the source
address), with a condition ``gte N``. The shipped rules are ``rules_default.toml`` beside this
module; the platform's rules file (``--rules FILE``, by default ``<home>/monitor-rules.toml`` when
it exists) may add rules (``[[rule]]``, same shape, a new id), replace a shipped one (same id)
and, per lab, change a rule's threshold, window or severity, or turn it off::

    [lab.lab-a.bulk-read]      # lab 'lab-a': its own threshold for the shipped rule
    gte = 1000
    timespan = "2h"
    [lab.lab-b.off-hours-read] # a lab open day and night
    enabled = false

A per-lab section applies to rules grouped by lab (``group_by`` holds ``tenant``); a rule that
looks across labs (password spraying, anonymous probing) is the platform's and has no per-lab
variant. Nothing in a rule is a personal value: ids, action names, numbers.

The rules in ``PROTECTED`` protect a lab from the vendor, whose file the platform's is: that file
may make them stricter, but a file turning one off, redefining it or weakening it is refused at
load (one line naming the rule). ``digest`` is the SHA-256 of the rule set in force, recorded in
the consumer's ``monitor:start`` event.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from importlib import resources
from pathlib import Path
from typing import Any

from labvault.crypto.digest import sha256_hex
from labvault.errors import InvalidInput
from labvault.monitoring.findings import Severity

GROUP_FIELDS = ("tenant", "actor", "source_addr", "source_net", "ref0", "action")
VALUE_FIELDS = ("refs", "ref0", "actor", "source_addr", "source_net", "action")
MAX_SPAN_S = 7 * 86400  # a window holds its events in memory and is re-read at start: a week at most
DEFAULT_MAX_ALERTS_PER_HOUR = 30  # new alerts one rule opens per lab (or for the platform) in an hour

# The rules that protect a lab from the vendor: what they watch is done by vendor staff (support,
# operators, administrators) or would hide it (an edited trail, a stopped checkpoint). The
# platform's rules file is the vendor's: it may make them stricter, never turn them off, redefine
# them or weaken them (a larger threshold, a shorter window, a lower severity, a lower cap).
# docs/design/monitoring-rules.md gives the reason for each.
PROTECTED = frozenset(
    {
        "canary-touched",
        "bulk-read-vendor",
        "vendor-sensitive-read",
        "support-read-refused",
        "export-refused",
        "audit-verification-failed",
        "scheduler-failed",
        "key-operation",
        "privilege-change",
    }
)
ROLE_KINDS = ("vendor", "lab")
_RULE_KEYS = frozenset({"id", "title", "severity", "selection", "correlation", "why", "enabled", "max_alerts_per_hour"})
_ID = re.compile(r"^[a-z][a-z0-9-]{1,47}$")
_SPAN = re.compile(r"^(\d+)(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ACTION_PATTERN = re.compile(r"^(\*|[a-z][a-z_-]*(:[a-z_-]+)*(:\*)?)$")


@dataclass(frozen=True, slots=True)
class Selection:
    actions: tuple[str, ...]  # exact names, or prefixes ending in ':*' ('*' alone: any action)
    outcomes: frozenset[str] | None = None
    object_types: frozenset[str] | None = None
    purposes: frozenset[str] | None = None
    roles: str | None = None  # 'vendor' | 'lab': the actor holds a vendor role / a lab role
    off_hours: bool = False
    not_actor: tuple[str, ...] = ()  # globs of actors left out ('system:*')
    not_actor_prefixes: tuple[str, ...] = ()  # the globs' prefixes (set by the parser)

    def matches_action(self, action: str) -> bool:
        return any(_glob(p, action) for p in self.actions)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    severity: Severity
    selection: Selection
    kind: str = "event_count"  # or 'value_count'
    field: str | None = None  # value_count: the field whose distinct values are counted
    group_by: tuple[str, ...] = ("tenant",)
    timespan_s: int = 3600
    gte: int = 1
    why: str = ""
    enabled: bool = True
    max_alerts_per_hour: int = DEFAULT_MAX_ALERTS_PER_HOUR
    per_lab: Mapping[str, Rule] = dc_field(default_factory=dict)

    @property
    def protected(self) -> bool:
        """One of the rules that protect a lab from the vendor (``PROTECTED``)."""
        return self.id in PROTECTED

    @property
    def platform_wide(self) -> bool:
        """Grouped across labs: its findings are the platform's."""
        return "tenant" not in self.group_by

    def for_lab(self, tenant_id: str) -> Rule:
        return self.per_lab.get(tenant_id, self)


def _glob(pattern: str, action: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(":*"):
        return action.startswith(pattern[:-1])
    return action == pattern


def parse_span(text: str | int, where: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool) and 0 < text <= MAX_SPAN_S:
        return text
    m = _SPAN.match(str(text).strip())
    if m is None or int(m[1]) <= 0:
        raise InvalidInput(f"{where}: timespan is a number and a unit (90s, 10m, 1h, 1d)")
    span = int(m[1]) * _UNIT[m[2]]
    if span > MAX_SPAN_S:
        raise InvalidInput(f"{where}: timespan is at most 7d")
    return span


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(f"{where}: {key} is a string or a list of strings")
    return tuple(value)


def _selection(raw: Any, where: str) -> Selection:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: selection is a table")
    unknown = set(raw) - {"action", "outcome", "object_type", "purpose", "roles", "off_hours", "not_actor"}
    if unknown:
        raise InvalidInput(f"{where}: unknown selection key(s) {', '.join(sorted(unknown))}")
    actions = _strings(raw.get("action", ["*"]), where, "action")
    for a in actions:
        if not _ACTION_PATTERN.match(a):
            raise InvalidInput(f"{where}: action pattern '{a}' is an action name or a prefix ending in ':*'")

    def opt(key: str) -> frozenset[str] | None:
        return frozenset(_strings(raw[key], where, key)) if key in raw else None

    roles = raw.get("roles")
    if roles is not None and roles not in ROLE_KINDS:
        raise InvalidInput(f"{where}: roles is 'vendor' or 'lab'")
    off = raw.get("off_hours", False)
    if not isinstance(off, bool):
        raise InvalidInput(f"{where}: off_hours is true or false")
    not_actor = _strings(raw["not_actor"], where, "not_actor") if raw.get("not_actor") else ()
    return Selection(
        actions=actions,
        outcomes=opt("outcome"),
        object_types=opt("object_type"),
        purposes=opt("purpose"),
        roles=roles,
        off_hours=off,
        not_actor=not_actor,
        not_actor_prefixes=tuple(p[:-1] for p in not_actor if p.endswith("*")),
    )


def _severity(value: Any, where: str) -> Severity:
    try:
        return Severity(value)
    except ValueError:
        raise InvalidInput(f"{where}: severity is one of {', '.join(s.value for s in Severity)}") from None


def parse_rule(raw: Mapping[str, Any]) -> Rule:
    """One ``[[rule]]`` table; InvalidInput names the rule and the key at fault."""
    rid = raw.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise InvalidInput("rule: id is lowercase letters, digits and dashes (2 to 48)")
    where = f"rule '{rid}'"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > 200:
        raise InvalidInput(f"{where}: title is a text of 1 to 200 characters")
    corr = raw.get("correlation")
    kind, fld, span, gte = "event_count", None, 3600, 1
    group_by: tuple[str, ...] = ("tenant",)
    if corr is not None:
        if not isinstance(corr, dict):
            raise InvalidInput(f"{where}: correlation is a table")
        unknown = set(corr) - {"type", "field", "group_by", "timespan", "gte"}
        if unknown:
            raise InvalidInput(f"{where}: unknown correlation key(s) {', '.join(sorted(unknown))}")
        kind = corr.get("type", "event_count")
        if kind not in ("event_count", "value_count"):
            raise InvalidInput(f"{where}: correlation type is event_count or value_count")
        if kind == "value_count":
            fld = corr.get("field")
            if fld not in VALUE_FIELDS:
                raise InvalidInput(f"{where}: value_count counts one of {', '.join(VALUE_FIELDS)}")
        group_by = _strings(corr.get("group_by", ["tenant"]), where, "group_by")
        if not set(group_by) <= set(GROUP_FIELDS):
            raise InvalidInput(f"{where}: group_by fields are among {', '.join(GROUP_FIELDS)}")
        span = parse_span(corr.get("timespan", "1h"), where)
        gte = corr.get("gte", 1)
        if not isinstance(gte, int) or isinstance(gte, bool) or gte < 1:
            raise InvalidInput(f"{where}: gte is a whole number of at least 1")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput(f"{where}: enabled is true or false")
    cap = _cap(raw.get("max_alerts_per_hour", DEFAULT_MAX_ALERTS_PER_HOUR), where)
    return Rule(
        id=rid,
        title=title.strip(),
        severity=_severity(raw.get("severity", "medium"), where),
        selection=_selection(raw.get("selection", {}), where),
        kind=kind,
        field=fld,
        group_by=group_by,
        timespan_s=span,
        gte=gte,
        why=str(raw.get("why", "")),
        enabled=enabled,
        max_alerts_per_hour=cap,
    )


def _cap(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
        raise InvalidInput(f"{where}: max_alerts_per_hour is a whole number from 1 to 10000")
    return value


def _weakened(before: Rule, after: Rule) -> str | None:
    """What makes ``after`` weaker than ``before`` (None: as strict or stricter). A rule fires less
    when it is off, needs more events, counts them over a shorter window, or opens fewer alerts; a
    lower severity reaches fewer channels and later deadlines."""
    if before.enabled and not after.enabled:
        return "it cannot be turned off"
    if after.gte > before.gte:
        return f"its threshold cannot go above {before.gte}"
    if after.timespan_s < before.timespan_s:
        return f"its window cannot be shorter than {before.timespan_s} s"
    if after.severity.rank < before.severity.rank:
        return f"its severity cannot be lower than {before.severity.value}"
    if after.max_alerts_per_hour < before.max_alerts_per_hour:
        return f"its max_alerts_per_hour cannot be lower than {before.max_alerts_per_hour}"
    return None


def _redefined(before: Rule, after: Rule) -> str | None:
    """What a platform's ``[[rule]]`` of a protected id changes besides its thresholds."""
    for name in ("selection", "kind", "field", "group_by", "title", "why"):
        if getattr(before, name) != getattr(after, name):
            return f"its {name} cannot be redefined"
    return None


def _refuse_weaker(before: Rule, after: Rule, where: str, *, redefinition: bool = False) -> None:
    if not before.protected:
        return
    fault = (_redefined(before, after) if redefinition else None) or _weakened(before, after)
    if fault:
        raise InvalidInput(f"{where}: this rule protects the labs from the vendor; {fault}")


def _override(rule: Rule, raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where}: a lab's section is a table")
    unknown = set(raw) - {"gte", "timespan", "severity", "enabled"}
    if unknown:
        raise InvalidInput(
            f"{where}: a lab changes gte, timespan, severity or enabled only, not {', '.join(sorted(unknown))}"
        )
    changes: dict[str, Any] = {}
    if "gte" in raw:
        if not isinstance(raw["gte"], int) or isinstance(raw["gte"], bool) or raw["gte"] < 1:
            raise InvalidInput(f"{where}: gte is a whole number of at least 1")
        changes["gte"] = raw["gte"]
    if "timespan" in raw:
        changes["timespan_s"] = parse_span(raw["timespan"], where)
    if "severity" in raw:
        changes["severity"] = _severity(raw["severity"], where)
    if "enabled" in raw:
        if not isinstance(raw["enabled"], bool):
            raise InvalidInput(f"{where}: enabled is true or false")
        changes["enabled"] = raw["enabled"]
    out = replace(rule, per_lab={}, **changes)
    _refuse_weaker(rule, out, where)
    return out


def parse(text: str, *, base: Iterable[Rule] = ()) -> list[Rule]:
    """Rules from TOML text, on top of ``base`` (same id: replaced); then the per-lab sections."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"rules file: not valid TOML ({exc})") from None
    unknown = set(doc) - {"rule", "lab"}
    if unknown:
        raise InvalidInput(f"rules file: unknown top-level key(s) {', '.join(sorted(unknown))}")
    rules: dict[str, Rule] = {r.id: r for r in base}
    seen: set[str] = set()
    for raw in doc.get("rule", []):
        rule = parse_rule(raw)
        if rule.id in seen:
            raise InvalidInput(f"rule '{rule.id}': defined twice in one file")
        seen.add(rule.id)
        if rule.id in rules:
            _refuse_weaker(rules[rule.id], rule, f"rule '{rule.id}'", redefinition=True)
        rules[rule.id] = rule
    labs = doc.get("lab", {})
    if not isinstance(labs, dict):
        raise InvalidInput("rules file: [lab.<lab id>.<rule id>] sections")
    per_lab: dict[str, dict[str, Rule]] = {}
    for lab, sections in labs.items():
        if not isinstance(sections, dict):
            raise InvalidInput(f"lab '{lab}': [lab.{lab}.<rule id>] sections")
        for rid, raw in sections.items():
            where = f"lab '{lab}', rule '{rid}'"
            if rid not in rules:
                raise InvalidInput(f"{where}: no such rule")
            if rules[rid].platform_wide:
                raise InvalidInput(f"{where}: this rule looks across labs; it has no per-lab setting")
            per_lab.setdefault(rid, {})[lab] = _override(rules[rid], raw, where)
    return [replace(r, per_lab=per_lab.get(r.id, {})) for r in rules.values()]


def shipped() -> list[Rule]:
    """The rules Labvault ships (``rules_default.toml``)."""
    text = resources.files("labvault.monitoring").joinpath("rules_default.toml").read_text(encoding="utf-8")
    return parse(text)


def load(path: Path | None = None) -> list[Rule]:
    """The rules in force: the shipped ones, with the platform's rules file on top (if given)."""
    rules = shipped()
    if path is None:
        return rules
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"rules file: cannot read it ({type(exc).__name__})") from None
    return parse(text, base=rules)


def default_path(home: Path) -> Path | None:
    """The platform's rules file in its home, when there is one."""
    p = home / "monitor-rules.toml"
    return p if p.exists() else None


def describe(rule: Rule) -> dict[str, Any]:
    """A rule as plain data (its per-lab settings included): what the digest covers."""
    s = rule.selection
    return {
        "id": rule.id,
        "title": rule.title,
        "why": rule.why,
        "severity": rule.severity.value,
        "enabled": rule.enabled,
        "protected": rule.protected,
        "selection": {
            "action": list(s.actions),
            "outcome": sorted(s.outcomes) if s.outcomes is not None else None,
            "object_type": sorted(s.object_types) if s.object_types is not None else None,
            "purpose": sorted(s.purposes) if s.purposes is not None else None,
            "roles": s.roles,
            "off_hours": s.off_hours,
            "not_actor": list(s.not_actor),
        },
        "type": rule.kind,
        "field": rule.field,
        "group_by": list(rule.group_by),
        "timespan_s": rule.timespan_s,
        "gte": rule.gte,
        "max_alerts_per_hour": rule.max_alerts_per_hour,
        "per_lab": {lab: describe(r) for lab, r in sorted(rule.per_lab.items())},
    }


def digest(rules: Iterable[Rule]) -> str:
    """SHA-256 (hex) of the rule set in force: the shipped rules with the platform's file applied,
    per-lab settings included. Recorded in ``monitor:start``; ``labvault monitor rules`` shows it,
    so a lab can tell which rules watched it."""
    doc = [describe(r) for r in sorted(rules, key=lambda r: r.id)]
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return sha256_hex(text.encode("utf-8"))


def longest_window(rules: Iterable[Rule]) -> int:
    spans = [r.timespan_s for rule in rules for r in (rule, *rule.per_lab.values()) if r.enabled]
    return max(spans, default=0)
