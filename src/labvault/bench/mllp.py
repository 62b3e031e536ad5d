"""MLLP benchmark: synthetic ORU^R01 messages sent over loopback by a client process, each ACKed
only after its group is committed (SQLite with a sync at every commit, or PostgreSQL).

As in production, over TLS with a client certificate: the benchmark makes a listener certificate
and a feed's client certificate (self-signed, ``cryptography``), pins the latter on a service
account of the scratch lab (as its lab_admin), and the clients present it.

Baseline in the same run: the same clients against the same TLS server with a committer that
ACKs every frame at once without parsing or storing it (the ceiling of TLS, framing, sockets and
ACKs).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

from labvault.access import Principal, Purpose
from labvault.bench.ingest import peak_rss_mb
from labvault.bench.scratch import Scratch, scratch
from labvault.crypto.certificates import self_signed
from labvault.mllp import listener as mllp

TLS = dict[str, Path]


def _pinned_feed(sc: Scratch) -> TLS:
    """Certificates for the listener and the feed; the feed's pinned, by the lab's lab_admin, on a
    service account of the scratch lab."""
    from labvault.accounts import feeds, service

    server_cert, server_key = self_signed(sc.folder, "listener", server=True)
    feed_cert, feed_key = self_signed(sc.folder, "feed", server=False)
    admin = Principal(f"{sc.lab}-lab-admin", "Benchmark lab admin", sc.lab, frozenset({"lab_admin"}))
    with sc.gateway.unit(sc.admin, Purpose.BENCHMARK) as u:
        u.ensure_account(
            sc.lab,
            admin.account_id,
            admin.name,
            f"{admin.account_id}@bench.invalid",
            admin.roles,
            commitment="benchmark account",
        )
    with sc.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        service.create_account(
            u,
            tenant_id=sc.lab,
            name="Benchmark feed",
            email=f"feed@{sc.lab}.invalid",
            roles=["service"],
            kind="service",
            purpose="ingest",
        )
        feeds.pin(u, sc.lab, f"feed@{sc.lab}.invalid", feed_cert.read_bytes())
    return {"server_cert": server_cert, "server_key": server_key, "feed_cert": feed_cert, "feed_key": feed_key}


def _client(port: int, frames: list[bytes], window: int, tls: TLS, out) -> None:
    """One connection: keep ``window`` frames in flight; count AA replies."""
    counter = [0]
    try:
        _send_all(port, frames, window, tls, counter)
    finally:
        out.put(counter[0])  # even after an error: the runner never waits for a dead client


def _send_all(port: int, frames: list[bytes], window: int, tls: TLS, counter: list[int]) -> None:
    ctx = ssl.create_default_context(cafile=str(tls["server_cert"]))
    ctx.load_cert_chain(str(tls["feed_cert"]), str(tls["feed_key"]))
    raw = socket.create_connection(("127.0.0.1", port), timeout=120)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        buf = bytearray()
        sent = received = 0
        while received < len(frames):
            burst = []
            while sent < len(frames) and sent - received < window:
                burst.append(frames[sent])
                sent += 1
            if burst:
                s.sendall(b"".join(burst))
            while b"\x1c\r" not in buf:
                chunk = s.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("server closed the connection")
                buf += chunk
            while (end := buf.find(b"\x1c\r")) >= 0:
                ack = bytes(buf[:end])
                del buf[: end + 2]
                received += 1
                counter[0] += b"\rMSA|AA|" in ack


def _clients(port: int, frames: list[bytes], connections: int, window: int, tls: TLS) -> tuple[float, int]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    parts = [frames[k::connections] for k in range(connections)]
    procs = [ctx.Process(target=_client, args=(port, p, window, tls, out)) for p in parts if p]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    ok = sum(out.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    return elapsed, ok


class _EchoCommitter(mllp.Committer):
    """The baseline: ACK AA at once, nothing parsed, nothing stored."""

    def _parse(self, batch):
        done: mllp.Future[None] = mllp.Future()
        done.set_result(None)
        return done

    def _finish(self, batch, parsed):
        for job in batch:
            job.done(mllp.ack(job.frame, "AA"))


def _serve(server: mllp.Server, frames: list[bytes], connections: int, window: int, tls: TLS) -> tuple[float, int]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        _, port = asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
        serving = asyncio.run_coroutine_threadsafe(server.serve_forever(), loop)
        try:
            return _clients(port, frames, connections, window, tls)
        finally:
            serving.cancel()
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run_mllp(
    messages: int,
    *,
    connections: int = 4,
    window: int = 100,
    group: int = mllp.MAX_GROUP,
    parsers: int = 1,
    database_url: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    from labvault.synth.hl7 import messages as synth_messages

    frames = [b"\x0b" + m + b"\x1c\r" for m in synth_messages("bench-mllp", 17, messages)]
    obx = sum(f.count(b"\rOBX|") for f in frames)
    limits = mllp.Limits(max_connections=max(64, connections), max_per_address=max(8, connections))
    with scratch("mllp", roles=("technician",), database_url=database_url, durable=True) as sc:
        tls = _pinned_feed(sc)

        def listener(**kw) -> mllp.Server:
            ctx = mllp.server_ssl_context(str(tls["server_cert"]), str(tls["server_key"]))
            return mllp.Server(
                None,
                port=0,
                ssl_context=ctx,
                feeds=mllp.PinnedFeeds(sc.gateway, sc.lab, group=group),
                limits=limits,
                **kw,
            )

        base = listener()  # its committer is replaced below: no parser processes
        base.committer = _EchoCommitter(None, base.stats)
        if on_progress:
            on_progress("baseline: ACK without storing")
        base_s, base_ok = _serve(base, frames, connections, window, tls)
        if on_progress:
            on_progress("stored: ACK after the group commit")
        server = listener(max_group=group, parsers=parsers)
        real_s, real_ok = _serve(server, frames, connections, window, tls)
        with sc.gateway.unit(sc.admin, Purpose.BENCHMARK) as u:
            stored = u.counts(sc.lab)["request"]
        dialect = sc.dialect
    return {
        "bench": "mllp",
        "database": dialect,
        "durable_commit": True,
        "transport": "TLS, pinned client certificate",
        "messages": messages,
        "obx_per_message_avg": round(obx / messages, 1) if messages else 0,
        "connections": connections,
        "window": window,
        "group_max": group,
        "parser_processes": parsers,
        "acked_aa": real_ok,
        "stored_requests": stored,
        "groups": server.stats.groups,
        "seconds": round(real_s, 3),
        "messages_per_s": round(real_ok / real_s) if real_s else 0,
        "baseline_per_s": round(base_ok / base_s) if base_s else 0,
        "ratio": round((real_ok / real_s) / (base_ok / base_s), 3) if real_s and base_s and base_ok else None,
        "peak_rss_mb": peak_rss_mb(),
    }
