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

Derived field: ``source_net``, the network of ``source_addr`` (IPv4 /24, IPv6 /64), usable in
``group_by`` and ``value_count``: one party holding a network (an IPv6 /64 is billions of
addresses) is one group, not one group per address.

Saturation: a rule opens at most ``Rule.max_alerts_per_hour`` new groups per lab (per platform,
for a rule across labs) in an hour of event time. Beyond it, a group that starts to hold goes to
the rule's one "saturated" finding of that lab (group ``saturated``, the groups' values as
references), so that a flood from many sources is one more alert, not one alert (and one e-mail)
per source.
"""

from __future__ import annotations

import ipaddress
import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

from labvault.access.policy import VENDOR_ROLES
from labvault.crypto.keys import PLATFORM
from labvault.domain.hours import Hours, parse_hours
from labvault.monitoring.findings import Finding
from labvault.monitoring.rules import Rule, Selection
from labvault.monitoring.rules import digest as rules_digest

MAX_REFS = 20  # distinct values named in a finding (references only)
SATURATION_S = 3600  # the cap on new alerts per rule counts over this window
SATURATED = "saturated"  # the group of a rule's saturated finding


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
    __slots__ = ("counts", "entries", "fired", "saturated", "tenant")

    def __init__(self, tenant: str) -> None:
        self.entries: deque[tuple[float, int, str | None]] = deque()  # (at, seq, value)
        self.counts: dict[str, int] = {}  # value_count: distinct values in the window
        self.fired = False
        self.saturated = False  # raised beyond the rule's cap: goes to the saturated finding
        self.tenant = tenant


def network_of(addr: str | None) -> str | None:
    """The network an address belongs to: IPv4 /24, IPv6 /64 (an IPv4-mapped IPv6 address is
    IPv4); text that is no address stays as it is (at most 64 characters)."""
    if not addr:
        return None
    try:
        ip = ipaddress.ip_address(addr.strip().split("%", 1)[0])
    except ValueError:
        return addr[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return f"{ipaddress.IPv4Address(int(ip) & _V4_NET)}/24"
    return f"{ipaddress.IPv6Address(int(ip) & _V6_NET)}/64"


_V4_NET = 0xFFFFFF00
_V6_NET = ((1 << 64) - 1) << 64


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
        rules = list(rules)
        self.digest = rules_digest(rules)  # the rule set in force (recorded in monitor:start)
        self.rules = [r for r in rules if r.enabled or any(v.enabled for v in r.per_lab.values())]
        self.hours: dict[str, tuple[Hours, tzinfo]] = dict(hours or {})
        self._by_action: dict[str, tuple[Rule, ...]] = {}
        self._role_kind: dict[str | None, tuple[bool, bool]] = {}
        self._open: dict[tuple[str, int], bool] = {}
        self._windows: dict[tuple[object, ...], _Window] = {}
        self._dirty: dict[tuple[object, ...], tuple[Rule, _Window]] = {}
        self._nets: dict[str, str | None] = {}
        self._opened: dict[tuple[str, str], deque[float]] = {}  # (rule, lab): times of new groups
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

    def _net(self, addr: str | None) -> str | None:
        if addr is None:
            return None
        net = self._nets.get(addr)
        if net is None:
            if len(self._nets) > 100_000:
                self._nets.clear()  # a cache: cleared, it is only computed again
            net = self._nets[addr] = network_of(addr)
        return net

    def _may_open(self, rule: Rule, tenant: str, at: float) -> bool:
        """A new group starts to hold: within the rule's cap for this lab and hour, or not."""
        key = (rule.id, tenant)
        opened = self._opened.get(key)
        if opened is None:
            opened = self._opened[key] = deque()
        while opened and opened[0] <= at - SATURATION_S:
            opened.popleft()
        if len(opened) >= rule.max_alerts_per_hour:
            return False
        opened.append(at)
        return True

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
                    elif f == "source_net":
                        v = self._net(ev.source_addr)
                        values = [v] if v else []
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
                    if not w.fired:  # a new group: within the rule's cap, or saturated
                        w.saturated = not self._may_open(rule, w.tenant, ev.at)
                    w.fired = True
                    if emit:
                        dirty[key] = (rule, w)
                elif w.fired:
                    w.fired = False
        self.events_seen += n
        if not emit:
            dirty.clear()
            return []
        out: list[Finding] = []
        saturated: dict[tuple[str, str], Finding] = {}
        for wkey, (rule, w) in dirty.items():
            found = self._finding(rule, wkey, w)
            if not w.saturated:
                out.append(found)
                continue
            skey = (rule.id, w.tenant)
            named = tuple(str(v) for g, v in zip(rule.group_by, wkey[1:], strict=True) if g not in ("tenant", "action"))
            saturated[skey] = self._saturated(rule, found, named, saturated.get(skey))
        out.extend(saturated.values())
        dirty.clear()
        return out

    @staticmethod
    def _saturated(rule: Rule, f: Finding, group_refs: tuple[str, ...], into: Finding | None) -> Finding:
        """The rule's one finding for the groups beyond its cap (references: their values)."""
        if into is None:
            title = f"{rule.title} (règle saturée : plus de {rule.max_alerts_per_hour} alertes en une heure)"
            return Finding(
                rule_id=rule.id,
                severity=rule.severity,
                tenant_id=f.tenant_id,
                title=title[:200],
                group=SATURATED,
                refs=group_refs[:MAX_REFS],
                event_count=f.event_count,
                first_seq=f.first_seq,
                last_seq=f.last_seq,
                first_at=f.first_at,
                last_at=f.last_at,
            )
        refs = into.refs + tuple(r for r in group_refs if r not in into.refs)
        seqs = [s for s in (into.first_seq, f.first_seq) if s is not None]
        lasts = [s for s in (into.last_seq, f.last_seq) if s is not None]
        firsts_at = [a for a in (into.first_at, f.first_at) if a is not None]
        lasts_at = [a for a in (into.last_at, f.last_at) if a is not None]
        return replace(
            into,
            refs=refs[:MAX_REFS],
            event_count=into.event_count + f.event_count,
            first_seq=min(seqs, default=None),
            last_seq=max(lasts, default=None),
            first_at=min(firsts_at, default=None),
            last_at=max(lasts_at, default=None),
        )

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
            elif g == "source_net":
                net = self._net(ev.source_addr)
                if net is None:
                    return None
                parts.append(net)
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
        done = [k for k, opened in self._opened.items() if not opened or opened[-1] < at - SATURATION_S]
        for k in done:
            del self._opened[k]


def evaluate(rules: Iterable[Rule], events: Iterable[Event]) -> list[Finding]:
    """One engine, one batch: the findings of ``events`` (tests, the bench)."""
    return Engine(rules).feed(events)
