"""Delivering a message to a channel (H1, G4): e-mail over SMTP, a signed webhook, a syslog line
(RFC 5424). Each message holds references only (``labvault.monitoring.dispatch`` builds it from an
alert's or a checkpoint's stored fields, never from a personal value or a typed reason).

Webhook signature (a lab verifies it with the key shown once when its channel was added)::

    X-Labvault-Timestamp: <unix seconds>
    X-Labvault-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>." + body)>

where ``body`` is the request's body as sent (UTF-8 JSON) and ``key`` the UTF-8 bytes of the
key as shown. A receiver recomputes it, compares in constant time and refuses a timestamp older
than a few minutes (a replay).

Syslog: one RFC 5424 line, ``<PRI>1 TIMESTAMP HOST labvault - MSGID [labvault@32473 ...] MSG``,
facility 13 (log audit), over UDP (one datagram) or TCP (octet counting, RFC 6587), to
``udp://host:port``, ``tcp://host:port`` (``host:port``: UDP). The structured-data element
carries the alert's id, rule, severity, lab and level (a checkpoint's lab, index, size, root).
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from labvault.config import Settings
from labvault.crypto import webhooks

SD_ID = "labvault@32473"  # 32473: the private enterprise number RFC 5612 reserves for documentation
FACILITY = 13  # log audit
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Labvault-Signature"
TIMESTAMP_HEADER = "X-Labvault-Timestamp"
DELIVERY_HEADER = "X-Labvault-Delivery"


class DeliveryFailed(Exception):
    """A channel did not take the message; the text names the channel's kind and the failure,
    never the message."""


@dataclass(frozen=True, slots=True)
class Message:
    """What is sent: ``payload`` (JSON, references only), a one-line ``subject``, the syslog
    severity name and structured-data parameters."""

    kind: str  # alert, checkpoint
    delivery_id: str
    subject: str
    severity: str
    payload: dict[str, Any]
    sd: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``timestamp + "." + body`` with the channel's key."""
    return webhooks.sign(key, timestamp, body)


def verify(key: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (constant-time comparison)."""
    return webhooks.valid(key, timestamp, body, signature)


def send_email(settings: Settings, to: str, message: Message) -> None:
    """One e-mail through the configured relay (STARTTLS first when set, then login if an account
    is set): subject and a text part with the JSON payload."""
    if not settings.smtp_host:
        raise DeliveryFailed("email: no SMTP relay configured (LABVAULT_SMTP_HOST)")
    mail = EmailMessage()
    mail["From"] = settings.smtp_from
    mail["To"] = to
    mail["Subject"] = message.subject
    mail["Message-ID"] = make_msgid(domain="labvault")
    mail["X-Labvault-Delivery"] = message.delivery_id
    mail.set_content(
        "Labvault: references only; read the alert in Labvault.\n\n"
        + json.dumps(message.payload, sort_keys=True, indent=2, ensure_ascii=False)
        + "\n"
    )
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_S) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"email: {type(exc).__name__}") from None


def send_webhook(url: str, key: bytes | None, message: Message, *, now: datetime) -> None:
    """POST the JSON payload, signed (see the module's docstring); a 2xx answer is a delivery."""
    if not url.startswith(("https://", "http://")):
        raise DeliveryFailed("webhook: the target is not an http(s) URL")
    if key is None:
        raise DeliveryFailed("webhook: the channel has no key")
    body = message.body()
    timestamp = str(int(now.timestamp()))
    req = urllib.request.Request(  # noqa: S310 (http(s) checked above)
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "labvault-alerts",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(key, timestamp, body),
            DELIVERY_HEADER: message.delivery_id,
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 (http(s) checked above)
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"webhook: HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise DeliveryFailed(f"webhook: {type(exc).__name__}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"webhook: HTTP {status}")


def _sd_value(value: str) -> str:
    """RFC 5424 section 6.3.3: '"', '\\' and ']' escaped in a parameter's value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text: str, size: int) -> str:
    """A header field of RFC 5424: printable US-ASCII, no space, ``-`` when empty."""
    out = "".join(c for c in text if 33 <= ord(c) <= 126)[:size]
    return out or "-"


def syslog_line(message: Message, *, now: datetime, hostname: str | None = None) -> bytes:
    """The RFC 5424 line for ``message`` (no trailing newline)."""
    pri = FACILITY * 8 + SYSLOG_SEVERITY.get(message.severity, 6)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = _printable(hostname or socket.gethostname(), 255)
    params = " ".join(f'{_printable(k, 32)}="{_sd_value(v)}"' for k, v in message.sd.items())
    sd = f"[{SD_ID} {params}]" if params else "-"
    msgid = _printable(message.kind, 32)
    text = message.subject.encode("utf-8")
    return f"<{pri}>1 {stamp} {host} labvault - {msgid} {sd} ".encode("ascii") + b"\xef\xbb\xbf" + text


def parse_target(target: str) -> tuple[str, str, int]:
    """(transport, host, port) of ``udp://host:port``, ``tcp://host:port`` or ``host:port``."""
    transport, sep, rest = target.partition("://")
    if not sep:
        transport, rest = "udp", target
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if transport not in ("udp", "tcp") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeliveryFailed("syslog: the target is udp://host:port or tcp://host:port")
    return transport, host, int(port)


def send_syslog(target: str, message: Message, *, now: datetime) -> None:
    transport, host, port = parse_target(target)
    line = syslog_line(message, now=now)
    try:
        if transport == "udp":
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(line, (host, port))
        else:
            with socket.create_connection((host, port), timeout=TIMEOUT_S) as s:
                s.sendall(str(len(line)).encode() + b" " + line)  # RFC 6587 octet counting
    except OSError as exc:
        raise DeliveryFailed(f"syslog: {type(exc).__name__}") from None


def send(settings: Settings, kind: str, target: str, key: bytes | None, message: Message, *, now: datetime) -> None:
    """Deliver ``message`` on a channel of ``kind`` (email, webhook, syslog); ``DeliveryFailed``."""
    if kind == "email":
        send_email(settings, target, message)
    elif kind == "webhook":
        send_webhook(target, key, message, now=now)
    elif kind == "syslog":
        send_syslog(target, message, now=now)
    else:
        raise DeliveryFailed(f"unknown channel kind '{kind}'")
