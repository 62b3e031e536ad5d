"""The rules' evaluation (H1): audit events in, findings out, sliding windows kept in memory.

Events are plain tuples (``Event`` below: the columns the consumer reads, the time as seconds
since the epoch, the references as the stored JSON text). For speed (``labvault bench monitor``):

- the rules that may match an action are found once per distinct action name and cached;
- the actor's kind of roles (vendor, lab) is cached per ``actor_roles`` text, the lab's opening
  state per lab and minute;
- the references' JSON is parsed only for a rule that counts them, and only once per event.

A window is kept per (rule, group); a rule grouped by lab keeps one per lab and group, and a lab
may have its own threshold (``Rule.per_lab``). A group raises one finding when its condition first
holds; while it keeps holding, later matches update it (one finding per group per batch, same
``dedup_key``: the sink adds them to the same open alert). Once the window falls back under the
condition, the next time it holds raises again (the same key: the alert, if still open, takes it).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

from labvault.access.policy import VENDOR_ROLES
from labvault.crypto.keys import PLATFORM
from labvault.domain.hours import Hours, parse_hours
from labvault.monitoring.findings import Finding
from labvault.monitoring.rules import Rule, Selection

MAX_REFS = 20  # distinct values named in a finding (references only)


class Event(NamedTuple):
    tenant_id: str
    seq: int
    at: float  # seconds since the epoch, UTC
    actor: str
    action: str
    object_type: str
    purpose: str
    outcome: str
    actor_roles: str | None
    object_refs: str | None  # the stored JSON list, parsed only when a rule needs it
    source_addr: str | None


EVENT_COLUMNS = Event._fields

_VENDOR = frozenset(str(r) for r in VENDOR_ROLES)
_DEFAULT_HOURS = parse_hours("")
_PARIS = ZoneInfo("Europe/Paris")


class _Window:
    __slots__ = ("counts", "entries", "fired", "tenant")

    def __init__(self, tenant: str) -> None:
        self.entries: deque[tuple[float, int, str | None]] = deque()  # (at, seq, value)
        self.counts: dict[str, int] = {}  # value_count: distinct values in the window
        self.fired = False
        self.tenant = tenant


def _refs(ev: Event) -> list[str]:
    text = ev.object_refs
    if not text:
        return []
    if text.startswith('["') and text.endswith('"]') and text.count('"') == 2 and "\\" not in text:
        return [text[2:-2]]  # one id, the common case: no JSON parse
    try:
        out = json.loads(text)
    except ValueError:
        return []
    return [str(x) for x in out] if isinstance(out, list) else []


class Engine:
    """Evaluates ``rules`` over batches of events (``feed``). ``hours``: per lab, its opening hours
    and time zone (labs not named: the default hours, Europe/Paris)."""

    def __init__(self, rules: Iterable[Rule], hours: Mapping[str, tuple[Hours, tzinfo]] | None = None) -> None:
        self.rules = [r for r in rules if r.enabled or any(v.enabled for v in r.per_lab.values())]
        self.hours: dict[str, tuple[Hours, tzinfo]] = dict(hours or {})
        self._by_action: dict[str, tuple[Rule, ...]] = {}
        self._role_kind: dict[str | None, tuple[bool, bool]] = {}
        self._open: dict[tuple[str, int], bool] = {}
        self._windows: dict[tuple[object, ...], _Window] = {}
        self._dirty: dict[tuple[object, ...], tuple[Rule, _Window]] = {}
        self.events_seen = 0

    def set_hours(self, tenant_id: str, working_hours: str, timezone: str) -> None:
        try:
            zone: tzinfo = ZoneInfo(timezone or "Europe/Paris")
        except (KeyError, ValueError):
            zone = _PARIS
        self.hours[tenant_id] = (parse_hours(working_hours), zone)
        self._open = {k: v for k, v in self._open.items() if k[0] != tenant_id}

    # -- selection ---------------------------------------------------------------------------------
    def _candidates(self, action: str) -> tuple[Rule, ...]:
        found = self._by_action.get(action)
        if found is None:
            found = self._by_action[action] = tuple(r for r in self.rules if r.selection.matches_action(action))
        return found

    def _kinds(self, roles: str | None) -> tuple[bool, bool]:
        kinds = self._role_kind.get(roles)
        if kinds is None:
            names = set(filter(None, (roles or "").split(",")))
            kinds = self._role_kind[roles] = (bool(names & _VENDOR), bool(names - _VENDOR))
        return kinds

    def is_open(self, tenant_id: str, at: float) -> bool:
        minute = int(at // 60)
        key = (tenant_id, minute)
        state = self._open.get(key)
        if state is None:
            hours, zone = self.hours.get(tenant_id, (_DEFAULT_HOURS, _PARIS))
            state = hours.open_at(datetime.fromtimestamp(minute * 60, zone))
            if len(self._open) > 200_000:
                self._open.clear()
            self._open[key] = state
        return state

    def _selected(self, s: Selection, ev: Event) -> bool:
        if s.outcomes is not None and ev.outcome not in s.outcomes:
            return False
        if s.object_types is not None and ev.object_type not in s.object_types:
            return False
        if s.purposes is not None and ev.purpose not in s.purposes:
            return False
        if s.roles is not None:
            vendor, lab = self._kinds(ev.actor_roles)
            if not (vendor if s.roles == "vendor" else lab):
                return False
        if s.not_actor and (ev.actor.startswith(s.not_actor_prefixes) or ev.actor in s.not_actor):
            return False
        return not (s.off_hours and self.is_open(ev.tenant_id, ev.at))

    # -- evaluation --------------------------------------------------------------------------------
    def feed(self, events: Iterable[Event], *, emit: bool = True) -> list[Finding]:
        """Evaluate events in order (a lab's by ``seq``; across labs by time). ``emit`` False: only
        warm the windows (groups whose condition holds are marked raised, nothing is returned)."""
        dirty = self._dirty
        windows = self._windows
        n = 0
        for ev in events:
            n += 1
            candidates = self._by_action.get(ev.action)
            if candidates is None:
                candidates = self._candidates(ev.action)
            if not candidates:
                continue
            refs: list[str] | None = None
            for base in candidates:
                rule = base.per_lab.get(ev.tenant_id, base) if base.per_lab else base
                if not rule.enabled or not self._selected(rule.selection, ev):
                    continue
                # The values this event brings to the window.
                if rule.kind == "value_count":
                    f = rule.field
                    if f == "refs":
                        if refs is None:
                            refs = _refs(ev)
                        values: list[str] = refs
                    elif f == "ref0":
                        if refs is None:
                            refs = _refs(ev)
                        values = refs[:1]
                    else:
                        v = getattr(ev, f or "actor")
                        values = [v] if v else []
                    if not values:
                        continue
                else:
                    values = []
                group = self._group(rule, ev)
                if group is None:
                    continue
                key = (rule.id, *group)
                w = windows.get(key)
                if w is None:
                    w = windows[key] = _Window(ev.tenant_id if not rule.platform_wide else PLATFORM)
                entries = w.entries
                horizon = ev.at - rule.timespan_s
                if rule.kind == "value_count":
                    counts = w.counts
                    while entries and entries[0][0] <= horizon:
                        old = entries.popleft()[2]
                        left = counts[old] - 1  # type: ignore[index]
                        if left:
                            counts[old] = left  # type: ignore[index]
                        else:
                            del counts[old]  # type: ignore[arg-type]
                    for v in values:
                        entries.append((ev.at, ev.seq, v))
                        counts[v] = counts.get(v, 0) + 1
                    holds = len(counts) >= rule.gte
                else:
                    while entries and entries[0][0] <= horizon:
                        entries.popleft()
                    entries.append((ev.at, ev.seq, None))
                    holds = len(entries) >= rule.gte
                if holds:
                    w.fired = True
                    if emit:
                        dirty[key] = (rule, w)
                elif w.fired:
                    w.fired = False
        self.events_seen += n
        if not emit:
            dirty.clear()
            return []
        out = [self._finding(rule, key, w) for key, (rule, w) in dirty.items()]
        dirty.clear()
        return out

    def _group(self, rule: Rule, ev: Event) -> tuple[str, ...] | None:
        parts = []
        for g in rule.group_by:
            if g == "tenant":
                parts.append(ev.tenant_id)
            elif g == "ref0":
                refs = _refs(ev)
                if not refs:
                    return None
                parts.append(refs[0])
            else:
                v = getattr(ev, g)
                if v is None:
                    return None
                parts.append(v)
        return tuple(parts)

    def _finding(self, rule: Rule, key: tuple[object, ...], w: _Window) -> Finding:
        named = [f"{g}={v}" for g, v in zip(rule.group_by, key[1:], strict=True) if g != "tenant"]
        refs = tuple(str(v) for g, v in zip(rule.group_by, key[1:], strict=True) if g not in ("tenant", "action"))
        if rule.kind == "value_count":
            refs += tuple(v for v in list(w.counts)[:MAX_REFS] if v not in refs)
            count = len(w.counts)
        else:
            count = len(w.entries)
        first, last = w.entries[0], w.entries[-1]
        return Finding(
            rule_id=rule.id,
            severity=rule.severity,
            tenant_id=w.tenant,
            title=rule.title,
            group=",".join(named) or "lab",
            refs=refs,
            event_count=count,
            first_seq=first[1],
            last_seq=last[1],
            first_at=datetime.fromtimestamp(first[0], UTC),
            last_at=datetime.fromtimestamp(last[0], UTC),
        )

    def forget_before(self, at: float) -> None:
        """Drop windows whose newest entry is older than ``at`` (memory stays bounded)."""
        stale = [k for k, w in self._windows.items() if not w.entries or w.entries[-1][0] < at]
        for k in stale:
            del self._windows[k]


def evaluate(rules: Iterable[Rule], events: Iterable[Event]) -> list[Finding]:
    """One engine, one batch: the findings of ``events`` (tests, the bench)."""
    return Engine(rules).feed(events)
