"""Explained accesses (issue 16, part 2; G5, G6, H1): the daily digest a lab's DPO reviews.

Each read of the lab's personal data that day (``labvault.access.explain``) is explained by the
actor's relation with the patient (a request they entered, a specimen they received, a result they
entered or validated, a report they issued), by a support grant the lab approved, or by the lab's
signed instruction; the rest is listed for review. The digest holds references only (account ids,
audit sequence numbers, pseudonymous object ids, action names): the e-mail built by ``digest_text``
may leave the platform without carrying personal data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from labvault.access.explain import Access

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

MAX_LISTED = 500  # unexplained events listed in one digest (the counts stay whole)


@dataclass(frozen=True, slots=True)
class ActorCount:
    actor: str
    roles: str
    explained: int
    unexplained: int


@dataclass(frozen=True, slots=True)
class Digest:
    """One lab's day: counts per actor, the unexplained reads listed (seq, time, actor, action, refs)."""

    tenant_id: str
    day: date
    start: datetime
    end: datetime
    total: int
    explained: int
    actors: tuple[ActorCount, ...]
    unexplained: tuple[Access, ...]
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def unexplained_count(self) -> int:
        return self.total - self.explained

    @property
    def share_explained(self) -> float:
        return 1.0 if self.total == 0 else self.explained / self.total

    def as_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant_id,
            "day": self.day.isoformat(),
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "accesses": self.total,
            "explained": self.explained,
            "unexplained": self.unexplained_count,
            "share_explained": round(self.share_explained, 4),
            "reasons": dict(sorted(self.reasons.items())),
            "actors": [
                {"actor": a.actor, "roles": a.roles, "explained": a.explained, "unexplained": a.unexplained}
                for a in self.actors
            ],
            "unexplained_events": [
                {
                    "seq": e.seq,
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "roles": e.actor_roles,
                    "action": e.action,
                    "refs": list(e.refs),
                    "purpose": e.purpose,
                    "grant_id": e.grant_id,
                    "why": e.reason,
                }
                for e in self.unexplained
            ],
        }


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """The lab's day (its own time zone) as UTC instants: [start, end)."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def today(u: Unit, tenant_id: str) -> date:
    """The lab's day now, in its own time zone (the page's default: the day so far)."""
    return datetime.now(ZoneInfo(u.tenant(tenant_id).timezone or "Europe/Paris")).date()


def digest(u: Unit, tenant_id: str, day: date | None = None) -> Digest:
    """G5, H1: the lab's accesses of ``day`` (its own time zone; yesterday by default), explained or
    not. The lab's lab_admin or lab_dpo only (``access:review``); the review is audited."""
    zone = u.tenant(tenant_id).timezone or "Europe/Paris"
    if day is None:
        day = datetime.now(ZoneInfo(zone)).date() - timedelta(days=1)
    start, end = day_bounds(day, zone)
    accesses = u.explained_accesses(tenant_id, start, end)
    return build(tenant_id, day, start, end, accesses)


def build(tenant_id: str, day: date, start: datetime, end: datetime, accesses: list[Access]) -> Digest:
    per: dict[str, list[int]] = {}
    roles: dict[str, str] = {}
    reasons: Counter[str] = Counter()
    for a in accesses:
        counts = per.setdefault(a.actor, [0, 0])
        counts[0 if a.explained else 1] += 1
        roles[a.actor] = a.actor_roles
        reasons[a.reason] += 1
    actors = tuple(
        ActorCount(actor, roles[actor], n[0], n[1])
        for actor, n in sorted(per.items(), key=lambda kv: (-kv[1][1], kv[0]))
    )
    unexplained = tuple(a for a in accesses if not a.explained)
    return Digest(
        tenant_id=tenant_id,
        day=day,
        start=start,
        end=end,
        total=len(accesses),
        explained=len(accesses) - len(unexplained),
        actors=actors,
        unexplained=unexplained[:MAX_LISTED],
        reasons=dict(reasons),
    )


def digest_text(d: Digest) -> tuple[str, str]:
    """The e-mail of the digest: (subject, body), references only (account ids, sequence numbers,
    actions, pseudonymous ids): never a name, a NIR or a value."""
    subject = f"[labvault] {d.tenant_id} {d.day.isoformat()}: {d.unexplained_count} unexplained accesses of {d.total}"
    lines = [
        f"Lab {d.tenant_id}, accesses to personal data on {d.day.isoformat()} (lab time).",
        f"{d.total} accesses, {d.explained} explained by a relation, a grant or an instruction, "
        f"{d.unexplained_count} to review.",
        "",
        "Per account (explained / to review):",
    ]
    lines += [f"  {a.actor} [{a.roles}]: {a.explained} / {a.unexplained}" for a in d.actors] or ["  none"]
    if d.unexplained:
        lines += ["", "To review (seq, time UTC, account, action, references, why):"]
        for e in d.unexplained:
            refs = ",".join(e.refs) or "-"
            lines.append(f"  #{e.seq} {e.at.strftime('%H:%M:%S')} {e.actor} {e.action} {refs} ({e.reason})")
        if len(d.unexplained) < d.unexplained_count:
            lines.append(f"  ... and {d.unexplained_count - len(d.unexplained)} more in the web interface")
    lines += ["", "Review them in the web interface: /dpo/accesses"]
    return subject, "\n".join(lines) + "\n"
