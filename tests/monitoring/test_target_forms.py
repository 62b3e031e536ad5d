"""H1: channel targets in the forms that slip past naive checks: decimal, octal and
hexadecimal IPv4, short forms, trailing dots, localhost, scoped IPv6 (global too), IPv4 carried in
IPv6 (mapped, translated, compatible, local-use NAT64, 6to4). All refused."""

from __future__ import annotations

import pytest

from labvault.monitoring import targets
from labvault.monitoring.errors import TargetRefused

WEBHOOKS = [
    "https://2130706433/",
    "https://0x7f.1/",
    "https://017700000001/",
    "https://127.1/",
    "https://0/",
    "https://localhost/",
    "https://localhost./",
    "https://127.0.0.1./",
    "https://[fe80::1%25eth0]/",
    "https://[2606:4700::1111%25eth0]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:0:7f00:1]/",
    "https://[::7f00:1]/",
    "https://[64:ff9b:1::7f00:1]/",
    "https://[2002:7f00:1::1]/",
    "https://169.254.169.254/",
]
SYSLOG = [
    "localhost:514",
    "127.1:514",
    "[::1]:514",
    "udp://2130706433:514",
    "tcp://[fe80::1%eth0]:514",
    "[2606:4700::1111%eth0]:514",
    "tcp://localhost.:514",
]


@pytest.mark.parametrize("url", WEBHOOKS)
def test_webhook_forms_refused(url):
    with pytest.raises(TargetRefused):
        targets.webhook_endpoint(url, allow_private=False)


@pytest.mark.parametrize("target", SYSLOG)
def test_syslog_forms_refused(target):
    with pytest.raises(TargetRefused):
        targets.syslog_endpoint(target, allow_private=False)
