"""A page that waits on the database waits alone: the server's event loop, which every other
connection needs, never runs a page's database work."""

from __future__ import annotations

import re
import sqlite3
import threading

import httpx


def _database_file(web_server) -> str:
    url = str(web_server.gateway.engine.url)
    return url.split("///", 1)[1]


def test_a_sign_in_waiting_for_the_database_writer_leaves_the_server_answering(web_server):
    """E2: a sign-in (which writes its session or its failure) waits while another process holds
    SQLite's write lock; meanwhile the server answers other connections, and the sign-in completes
    once the lock is released."""
    account = web_server.accounts["biologist_a"]
    with httpx.Client(base_url=web_server.base, timeout=30.0, follow_redirects=False, trust_env=False) as c:
        page = c.get("/login")
        m = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert page.status_code == 200 and m is not None
        form = {"csrf": m.group(1), "email": account.email, "password": account.password, "next": "/patients"}

        holder = sqlite3.connect(_database_file(web_server), timeout=1.0, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer, as `labvault mllp` may be
        outcome: dict[str, int] = {}

        def sign_in() -> None:
            outcome["status"] = c.post("/login", data=form).status_code

        signing_in = threading.Thread(target=sign_in)
        try:
            signing_in.start()
            signing_in.join(0.5)
            assert signing_in.is_alive(), "the sign-in did not wait for the database writer"
            # The loop must still serve: a blocked loop would answer only once the sign-in's wait
            # for the writer ends (SQLite's busy timeout, 10 s), after this client's deadline.
            with httpx.Client(base_url=web_server.base, timeout=5.0, trust_env=False) as other:
                assert other.get("/health").status_code == 200
                assert other.get("/login").status_code == 200
            assert signing_in.is_alive(), "the sign-in finished while the writer was held"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            signing_in.join(30)
        assert outcome.get("status") == 303  # to the TOTP step: the sign-in went through
