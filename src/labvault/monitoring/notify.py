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

Where a webhook or a syslog line may go (public addresses only, checked again before each send,
the connection made to the checked address, no redirect followed): ``labvault.monitoring.targets``.
What is recorded of a failed delivery: ``failed`` (see ``send``).
"""

from __future__ import annotations

import http.client
import json
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from labvault.config import Settings
from labvault.crypto import webhooks
from labvault.monitoring import targets
from labvault.monitoring.errors import DeliveryFailed

SD_ID = "labvault@32473"  # 32473: the private enterprise number RFC 5612 reserves for documentation
FACILITY = 13  # log audit
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
TIMEOUT_S = 10.0
SIGNATURE_HEADER = "X-Labvault-Signature"
TIMESTAMP_HEADER = "X-Labvault-Timestamp"
DELIVERY_HEADER = "X-Labvault-Delivery"
log = logging.getLogger(__name__)


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


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to the checked addresses (the Host header still names the URL's host)."""

    def __init__(self, endpoint: targets.Endpoint) -> None:
        super().__init__(endpoint.host, endpoint.port, timeout=TIMEOUT_S)
        self._endpoint = endpoint

    def connect(self) -> None:
        self.sock = _connect(self._endpoint)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to the checked addresses; the certificate is verified against the URL's host (SNI too)."""

    def __init__(self, endpoint: targets.Endpoint) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(endpoint.host, endpoint.port, timeout=TIMEOUT_S, context=self._tls)
        self._endpoint = endpoint

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(_connect(self._endpoint), server_hostname=self._endpoint.host)


def _connect(endpoint: targets.Endpoint) -> socket.socket:
    """A TCP connection to the first of the endpoint's checked addresses that answers (each a
    literal address: no lookup happens here)."""
    if not endpoint.addresses:
        raise DeliveryFailed(f"{endpoint.scheme}: no checked address")
    *earlier, final = endpoint.addresses
    for address in earlier:
        try:
            return socket.create_connection((address, endpoint.port), timeout=TIMEOUT_S)
        except OSError:
            continue
    return socket.create_connection((final, endpoint.port), timeout=TIMEOUT_S)


def send_webhook(url: str, key: bytes | None, message: Message, *, now: datetime, allow_private: bool = False) -> None:
    """POST the JSON payload, signed (see the module's docstring), to the URL's checked addresses
    (``labvault.monitoring.targets``); a 2xx answer is a delivery, a redirect is not followed."""
    try:
        endpoint = targets.webhook_endpoint(url, allow_private=allow_private)
    except targets.TargetRefused as exc:
        raise DeliveryFailed(f"webhook: target refused ({exc})") from None
    if key is None:
        raise DeliveryFailed("webhook: the channel has no key")
    body = message.body()
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "labvault-alerts",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(key, timestamp, body),
        DELIVERY_HEADER: message.delivery_id,
    }
    conn = _PinnedHTTPS(endpoint) if endpoint.scheme == "https" else _PinnedHTTP(endpoint)
    try:
        conn.request("POST", endpoint.path, body=body, headers=headers)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DeliveryFailed(f"webhook: {type(exc).__name__}") from None
    finally:
        conn.close()
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


def send_syslog(target: str, message: Message, *, now: datetime, allow_private: bool = False) -> None:
    """One line to the target's checked addresses (``labvault.monitoring.targets``)."""
    try:
        endpoint = targets.syslog_endpoint(target, allow_private=allow_private)
    except targets.TargetRefused as exc:
        raise DeliveryFailed(f"syslog: target refused ({exc})") from None
    line = syslog_line(message, now=now)
    try:
        if endpoint.scheme == "udp":
            address = endpoint.addresses[0]
            with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(line, (address, endpoint.port))
        else:
            with _connect(endpoint) as s:
                s.sendall(str(len(line)).encode() + b" " + line)  # RFC 6587 octet counting
    except OSError as exc:
        raise DeliveryFailed(f"syslog: {type(exc).__name__}") from None


def failed(now: datetime) -> str:
    """What a delivery's history shows of a failure: when, nothing of why (the reason, an HTTP
    status or a connection error, would tell the lab what its target reached: see ``send``)."""
    return f"failed at {now.isoformat(timespec='seconds')}"


def send(settings: Settings, kind: str, target: str, key: bytes | None, message: Message, *, now: datetime) -> None:
    """Deliver ``message`` on a channel of ``kind`` (email, webhook, syslog). A failure, whatever
    it is, raises ``DeliveryFailed`` with the generic text of ``failed`` (recorded where the lab
    reads its deliveries, next to the attempt count); its detail (the refusal's rule, the HTTP
    status, the exception's kind: never the target or the message) goes to the operator's log."""
    allow = settings.channels_allow_private
    try:
        if kind == "email":
            send_email(settings, target, message)
        elif kind == "webhook":
            send_webhook(target, key, message, now=now, allow_private=allow)
        elif kind == "syslog":
            send_syslog(target, message, now=now, allow_private=allow)
        else:
            raise DeliveryFailed(f"unknown channel kind '{kind}'")
        return
    except DeliveryFailed as exc:
        detail = str(exc)
    except Exception as exc:  # noqa: BLE001 - a channel's target (set by a lab) never stops the pass
        detail = f"{kind}: {type(exc).__name__}"
    log.warning("delivery %s (%s channel) failed: %s", message.delivery_id, kind, detail)
    raise DeliveryFailed(failed(now))
