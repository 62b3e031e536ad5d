"""What the monitoring tests share: a real SMTP server on loopback (aiosmtpd)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, list[tuple[list[str], bytes]]]]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) keeping every message it is given."""
    from aiosmtpd.controller import Controller

    mails: list[tuple[list[str], bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            mails.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, mails
    controller.stop()
