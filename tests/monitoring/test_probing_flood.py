"""Anonymous probing from many addresses (H1): grouped by network (IPv4 /24, IPv6 /64), a rule's
new alerts capped per hour (a "saturated" alert beyond), and the recording of unauthenticated
requests limited per network and minute with a bounded memory that keeps limiting."""

from __future__ import annotations

import ipaddress

from labvault.api.deps import ProbeLimiter
from labvault.monitoring import rules as rules_mod
from labvault.monitoring.engine import SATURATED, Engine, network_of
from tests.monitoring.events import DAY, ev

SHIPPED = rules_mod.shipped()
CAP = next(r for r in SHIPPED if r.id == "anonymous-probing").max_alerts_per_hour


def _probe(addr: str, route: int, at: float):
    return ev(
        "api:unauthenticated",
        tenant="platform",
        actor="system:authentication",
        roles=None,
        outcome="denied",
        refs=[f"GET:.api.v1.route{route}"],
        addr=addr,
        at=at,
        object_type="route",
        purpose="authentication",
    )


def _probing(findings):
    return [f for f in findings if f.rule_id == "anonymous-probing"]


def _feed(events):
    engine = Engine(SHIPPED)
    out = []
    for i in range(0, len(events), 100):  # in batches, as the consumer reads them
        out += engine.feed(events[i : i + 100])
    return out


def test_the_network_of_an_address():
    """H1: IPv4 /24, IPv6 /64, an IPv4-mapped IPv6 address as IPv4, other text as it is."""
    assert network_of("198.51.100.77") == "198.51.100.0/24"
    assert network_of("2001:db8:1:2:aaaa::9") == "2001:db8:1:2::/64"
    assert network_of("::ffff:198.51.100.77") == "198.51.100.0/24"
    assert network_of("testclient") == "testclient"
    assert network_of(None) is None


def test_a_thousand_addresses_of_one_ipv6_network_open_one_alert():
    """H1: 1,000 probes from 1,000 addresses of one /64, over 20 routes in 10 minutes: one group,
    one alert key (the network), every probe counted."""
    net = ipaddress.ip_network("2001:db8:1:2::/64")
    events = [_probe(str(net[1000 + i * 7919]), i % 20, DAY + i * 0.5) for i in range(1000)]
    assert len({e.source_addr for e in events}) == 1000
    found = _probing(_feed(events))
    assert found and {f.dedup_key for f in found} == {"anonymous-probing:source_net=2001:db8:1:2::/64"}
    assert all(f.tenant_id == "platform" for f in found)
    assert found[-1].event_count == 20  # distinct routes in the window


def test_five_hundred_networks_open_at_most_the_cap():
    """H1: 500 /24 networks each probing 5 routes within the hour: ``max_alerts_per_hour`` alert
    keys of their own, and the rest in the rule's one saturated alert (its references: networks)."""
    events = []
    for n in range(500):
        addr = f"10.{n // 256}.{n % 256}.9"
        events += [_probe(addr, r, DAY + n * 5 + r) for r in range(5)]
    found = _probing(_feed(events))
    keys = {f.dedup_key for f in found}
    own = keys - {f"anonymous-probing:{SATURATED}"}
    assert len(own) == CAP == 10
    assert f"anonymous-probing:{SATURATED}" in keys and len(keys) == CAP + 1
    saturated = [f for f in found if f.group == SATURATED]
    assert "10.0.10.0/24" in saturated[0].refs and "saturée" in saturated[0].title
    assert sum(f.event_count for f in saturated) == 5 * (500 - CAP)


def test_the_cap_counts_per_hour():
    """H1: an hour later the rule opens alerts of its own again."""
    late = DAY + 2 * 3600
    events = [_probe(f"10.1.{n}.9", r, DAY + n * 5 + r) for n in range(CAP + 3) for r in range(5)]
    events += [_probe("10.9.9.9", r, late + r) for r in range(5)]
    keys = [f.dedup_key for f in _probing(_feed(events))]
    assert "anonymous-probing:source_net=10.9.9.0/24" in keys


def test_a_lab_rules_cap_is_the_labs_own():
    """H1, G1: one lab's flood saturates that lab's rule, never another lab's alerts."""
    events = [ev("canary:touch", tenant="lab-a", refs=[f"canary-{i}"], outcome="alert", at=DAY + i) for i in range(40)]
    events.append(ev("canary:touch", tenant="lab-b", refs=["canary-b"], outcome="alert", at=DAY + 50))
    found = [f for f in _feed(events) if f.rule_id == "canary-touched"]
    assert {f.dedup_key for f in found if f.tenant_id == "lab-b"} == {"canary-touched:ref0=canary-b"}
    saturated = [f for f in found if f.group == SATURATED]
    assert saturated and all(f.tenant_id == "lab-a" for f in saturated)
    assert len({f.dedup_key for f in found if f.tenant_id == "lab-a"}) == 30 + 1


def test_the_limiter_keeps_limiting_after_many_addresses():
    """H1: 20,000 addresses of one /64 and 20,000 of 20,000 /24 networks in one minute record at
    most the budget, a (network, route) at most once; the memory stays at the budget; the next
    minute records again."""
    limiter = ProbeLimiter(budget=300)
    net = ipaddress.ip_network("2001:db8:5::/64")
    addrs = [str(ipaddress.IPv6Address(int(net.network_address) + i * 7919)) for i in range(20_000)]
    one_net = sum(limiter.allow(a, "GET:.api.v1.patients", 10.0) for a in addrs)
    assert one_net == 1
    spread = sum(
        limiter.allow(f"{10 + i // 65536}.{i // 256 % 256}.{i % 256}.1", "GET:.x", 20.0) for i in range(20_000)
    )
    assert spread == 299 and len(limiter._seen) == 300
    assert not limiter.allow(str(net[1]), "GET:.api.v1.patients", 59.0)
    assert limiter.allow(str(net[2]), "GET:.api.v1.patients", 61.0)
    assert not limiter.allow(str(net[3]), "GET:.api.v1.patients", 62.0)
