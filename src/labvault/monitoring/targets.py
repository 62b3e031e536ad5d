"""Where a channel may send (H1): a lab's admin chooses its channels' targets, and the dispatcher
sends from the platform's own network; a target must therefore never reach that network.

- A webhook is an ``https://`` URL (``http://`` only with ``LABVAULT_CHANNELS_ALLOW_PRIVATE``),
  without user information, in ASCII (an international name in punycode).
- A syslog target is ``udp://host:port``, ``tcp://host:port`` or ``host:port`` (UDP).
- The host (a name or a literal address) is resolved, and every address it resolves to must be a
  public internet address: not private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback,
  link-local (169.254/16, the cloud metadata service 169.254.169.254, fe80::/10), multicast,
  reserved, unspecified, shared (100.64/10) or otherwise not global; an IPv6 address carrying an
  IPv4 one (IPv4-mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64 ``64:ff9b::/96``) is judged on the
  IPv4 address too. A name that does not resolve is refused (nothing to check).
- An e-mail address is handed to the operator's relay (its routing is the relay's): only an
  address literal for a domain (``user@[10.0.0.5]``) is refused.
- The check runs when the channel is added (``check_channel_target``, from ``add_channel``) and
  again before every send (``webhook_endpoint``, ``syslog_endpoint``): the sender then connects
  to the addresses that were checked, never to the name again (a second lookup could answer
  differently: DNS rebinding).

With the operator's setting ``LABVAULT_CHANNELS_ALLOW_PRIVATE`` on, none of the address rules
apply (tests, a deployment whose every lab admin the operator trusts with its network).

A refusal's reason names the rule, never the target.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from labvault.config import Settings
from labvault.errors import ConfigError, InvalidInput
from labvault.monitoring.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
NOT_PUBLIC = "the host must resolve to public internet addresses only (no private, loopback, link-local address)"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A checked target: ``scheme`` (https, http, udp, tcp), the ``host`` as written (for the Host
    header and TLS), ``port``, the request's ``path`` (webhooks) and the ``addresses`` to connect
    to, checked (empty when not resolved: the opt-in is on and the name did not resolve)."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = [v for v in (ip.ipv4_mapped, ip.sixtofour) if v is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def is_public(ip: IPAddress) -> bool:
    """True for a global unicast address (and any IPv4 address an IPv6 one carries is one too)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        if any(not is_public(v4) for v4 in _embedded_ipv4(ip)):
            return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def resolve(host: str, port: int, *, datagram: bool = False) -> tuple[str, ...]:
    """The addresses ``host`` resolves to (a literal address: itself), in the resolver's order,
    without repeats; ``TargetRefused`` when it does not resolve."""
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError, TypeError):
        raise TargetRefused(NOT_PUBLIC) from None
    found: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and str(sockaddr[0]) not in found:
            found.append(str(sockaddr[0]))
    if not found:
        raise TargetRefused(NOT_PUBLIC)
    return tuple(found)


def checked_addresses(
    host: str, port: int, *, allow_private: bool, datagram: bool = False, lookup: bool = True
) -> tuple[str, ...]:
    """``resolve`` then every address public (unless ``allow_private``). With ``allow_private``
    and ``lookup`` off, nothing is resolved (an empty tuple)."""
    if allow_private:
        if not lookup:
            return ()
        return resolve(host, port, datagram=datagram)
    addresses = resolve(host, port, datagram=datagram)
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise TargetRefused(NOT_PUBLIC) from None
        if not is_public(ip):
            raise TargetRefused(NOT_PUBLIC)
    return addresses


def _ascii_without_space(text: str) -> bool:
    return text.isascii() and not any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def webhook_endpoint(url: str, *, allow_private: bool, lookup: bool = True) -> Endpoint:
    """The checked endpoint of a webhook URL (see the module's docstring); ``TargetRefused``."""
    if not _ascii_without_space(url):
        raise TargetRefused("a webhook's URL is ASCII without spaces (an international name in punycode)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise TargetRefused("a webhook's URL starts with https://")
    if "@" in parts.netloc:
        raise TargetRefused("a webhook's URL holds no user name or password")
    try:
        port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("a webhook's URL has a port from 1 to 65535") from None
    host = parts.hostname or ""
    if not host or not 0 < port < 65536:
        raise TargetRefused("a webhook's URL names a host (and a port from 1 to 65535)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    addresses = checked_addresses(host, port, allow_private=allow_private, lookup=lookup)
    return Endpoint(scheme, host, port, path, addresses)


def syslog_endpoint(target: str, *, allow_private: bool, lookup: bool = True) -> Endpoint:
    """The checked endpoint of ``udp://host:port``, ``tcp://host:port`` or ``host:port`` (UDP)."""
    if not _ascii_without_space(target):
        raise TargetRefused("a syslog target is ASCII without spaces (an international name in punycode)")
    transport, sep, rest = target.partition("://")
    if not sep:
        transport, rest = "udp", target
    host, _, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if transport not in ("udp", "tcp") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetRefused("a syslog target is udp://host:port or tcp://host:port")
    addresses = checked_addresses(
        host, int(port), allow_private=allow_private, datagram=transport == "udp", lookup=lookup
    )
    return Endpoint(transport, host, int(port), "", addresses)


def private_targets_allowed() -> bool:
    """The operator's ``LABVAULT_CHANNELS_ALLOW_PRIVATE`` (environment or TOML file); off when
    the configuration cannot be read."""
    try:
        return Settings.from_env().channels_allow_private
    except ConfigError:
        return False


def check_channel_target(kind: str, target: str, *, allow_private: bool | None = None) -> None:
    """``InvalidInput`` (one line, the rule, never the target) unless a channel of ``kind`` may
    send to ``target``: when a channel is added. ``allow_private``: by default the operator's
    setting."""
    allow = private_targets_allowed() if allow_private is None else allow_private
    try:
        if kind == "webhook":
            webhook_endpoint(target, allow_private=allow, lookup=not allow)
        elif kind == "syslog":
            syslog_endpoint(target, allow_private=allow, lookup=not allow)
        elif kind == "email" and not allow and "[" in target.rpartition("@")[2]:
            raise TargetRefused("an e-mail address names a domain, not an address literal")
    except TargetRefused as exc:
        raise InvalidInput(f"{kind} channel refused: {exc}") from None
