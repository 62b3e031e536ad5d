"""The MLLP listener: HL7 v2 messages over TCP, each answered with an ACK once it is stored.

Framing (MLLP): ``<VT> message <FS><CR>``. Bytes outside a frame are discarded; a frame above
``max_frame`` bytes is answered with an AR and the connection is closed (the rest of such a frame
cannot be trusted to resynchronise on). A client that disconnects mid-frame loses only that
frame, which was neither stored nor acknowledged.

Durability: frames from all connections go to one committer thread, which stores them in groups
(group commit: one transaction, one sync, for everything that arrived while the previous group
was being written) and only then resolves each frame's ACK. An AA therefore always follows a
commit; a message whose ACK was lost is simply sent again, and its idempotency key makes the
second copy a no-op that is acknowledged AA too.

ACK codes: AA stored (or already stored); AE refused by validation or mapping, kept in the
lab's quarantine (ERR names where, MSA-3 the reason); AR unreadable as HL7 or too large.

Authentication (C2, E1): over TLS the client must present a certificate pinned by the lab's
``lab_admin`` on one of the lab's service accounts (``labvault feed pin``); the listener trusts
exactly the pinned certificates (``PinnedFeeds``), maps the one presented to its account and
ingests as that account. A client without one, or with another, gets no ACK and stores nothing.
Plain TCP (``--insecure-plaintext``, loopback only) ingests as the one account the command names.

Connections (``Limits``): connections not yet authenticated (TLS handshake and pin check) have
``handshake_timeout`` seconds and a pool of their own (``max_pending``; when it is full, the
oldest from the address holding most of it is dropped), so a flood of them never takes the
slots of authenticated feeds (``max_connections``). Each address holds at most
``max_per_address`` connections; a frame once begun must be complete within ``frame_timeout``
seconds; an idle authenticated connection is closed after ``idle_timeout``.

Access log (G2): one line per connection refused and per message (peer, account, ACK code,
duration), never anything the sender wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from labvault import logs
from labvault.counts import Counts
from labvault.errors import AccessDenied, CannotListen, ConfigError, LabvaultError, TenantShredded, UnknownTenant
from labvault.ingest import service as ingest

log = logging.getLogger("labvault.mllp")

VT, FS, CR = 0x0B, 0x1C, 0x0D
MAX_FRAME = 1024 * 1024
MAX_GROUP = 500


class Stats(Counts):
    """What the listener did (frames, accepted, duplicates, rejected, groups, connections, oversized,
    frame_timeouts), and in ``refused`` the connections it refused, by reason."""

    def __init__(self) -> None:
        super().__init__()
        self._refused = Counts()

    @property
    def refused(self) -> Counts:
        return self._refused


def _msh_fields(frame: bytes) -> tuple[str, list[str]]:
    """(field separator, MSH fields) read leniently from a frame; empty when there is no MSH."""
    start = frame.find(b"MSH")
    if start < 0 or len(frame) < start + 8:
        return "|", []
    end = len(frame)
    for stop in (b"\r", b"\n"):
        k = frame.find(stop, start)
        if 0 <= k < end:
            end = k
    line = frame[start:end].decode("latin-1")
    sep = line[3]
    return sep, line.split(sep)


def _clean(text: str, limit: int = 200) -> str:
    """A reason made safe for an HL7 field: no separators, no escape or segment characters."""
    out = "".join(" " if c in "|^~\\&\r\n\x0b\x1c" else c for c in text)
    return out[:limit]


_ERR_CODES = {"AR": "200", "AE": "207"}


def ack(frame: bytes, code: str, reason: str | None = None, *, control_id: str = "") -> bytes:
    """An HL7 v2.5.1 ACK for ``frame`` (MSA-1 ``code``; ERR with the reason for AE/AR), MLLP-framed."""
    sep, msh = _msh_fields(frame)
    enc = msh[1] if len(msh) > 1 and len(msh[1]) >= 4 else "^~\\&"
    sep = sep if sep not in "\r\n" else "|"

    def f(i: int) -> str:
        return _clean(msh[i], 64) if len(msh) > i else ""

    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    trigger = f(8).split(enc[0])[1] if enc[0] in f(8) else ""
    head = [
        "MSH",
        enc,
        "LABVAULT",
        "LABVAULT",
        f(2),
        f(3),
        now,
        "",
        f"ACK{enc[0]}{trigger}{enc[0]}ACK" if trigger else "ACK",
        control_id or f"ACK{now}",
        "P",
        "2.5.1",
    ]
    segments = [sep.join(head), sep.join(["MSA", code, f(9), _clean(reason or "", 80) if code != "AA" else ""])]
    if code != "AA":
        err_code = _ERR_CODES.get(code, "207")
        segments.append(
            sep.join(
                [
                    "ERR",
                    "",
                    "",
                    f"{err_code}{enc[0]}"
                    f"{'Unsupported message type' if code == 'AR' else 'Application internal error'}{enc[0]}HL70357",
                    "E",
                    "",
                    "",
                    "",
                    _clean(reason or "refused"),
                ]
            )
        )
    body = "\r".join(segments) + "\r"
    return bytes([VT]) + body.encode("utf-8") + bytes([FS, CR])


@dataclass
class _Job:
    frame: bytes
    done: Callable[[bytes], None]
    ing: ingest.Ingestor | None = None  # the account the frame is stored as (None: the committer's)


def _watch_parent(parent: int) -> None:
    """In a parser process: exit as soon as the listener is gone (even killed with SIGKILL)."""
    import os
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="labvault-parent-watch").start()


def _read_frames(frames: list[bytes], test_mode: bool) -> list[list[ingest.Piece]]:
    """Parse and map frames (run in the parser process)."""
    return [ingest.read(f, file="mllp", fmt="hl7v2", test_mode=test_mode) for f in frames]


class Committer(threading.Thread):
    """The one thread that stores frames in groups, then releases their ACKs.

    With ``parsers`` (a process pool), group k+1 is parsed and mapped in another process while
    group k is being stored here: the two halves of the work use both cores. Without, this
    thread parses too.
    """

    def __init__(
        self,
        ingestor: ingest.Ingestor | None,
        stats: Stats,
        *,
        max_group: int = MAX_GROUP,
        parsers: Executor | None = None,
        test_mode: bool = False,
    ) -> None:
        super().__init__(name="labvault-mllp-committer", daemon=True)
        self.ing = ingestor
        self.test_mode = ingestor.test_mode if ingestor is not None else test_mode
        self.stats = stats
        self.max_group = max_group
        self.parsers = parsers
        self.jobs: queue.Queue[_Job | None] = queue.Queue()
        self.fatal: BaseException | None = None

    def submit(self, job: _Job) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self.jobs.put(None)

    def _take(self, block: bool) -> list[_Job] | None:
        """The next group: every job waiting, up to ``max_group``; None once stopped."""
        try:
            job = self.jobs.get(block=block)
        except queue.Empty:
            return []
        if job is None:
            return None
        batch = [job]
        while len(batch) < self.max_group:
            try:
                nxt = self.jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                self.jobs.put(None)  # seen again at the next take, after this group
                break
            batch.append(nxt)
        return batch

    def _parse(self, batch: list[_Job]) -> Future:
        frames = [j.frame for j in batch]
        if self.parsers is not None:
            return self.parsers.submit(_read_frames, frames, self.test_mode)
        done: Future = Future()
        done.set_result(_read_frames(frames, self.test_mode))
        return done

    def run(self) -> None:
        pending: tuple[list[_Job], Future] | None = None
        while True:
            batch = self._take(block=pending is None)
            parsing = (batch, self._parse(batch)) if batch else None
            if pending is not None:
                self._finish(*pending)
            pending = parsing
            if batch is None:
                return

    def _finish(self, batch: list[_Job], parsed: Future) -> None:
        try:
            got = parsed.result()
        except Exception as exc:  # noqa: BLE001 - the parser process died: nothing stored, nothing acknowledged positively
            log.error("group of %d frames not parsed: %s", len(batch), type(exc).__name__)
            for job in batch:
                job.done(ack(job.frame, "AE", "temporary failure; send again"))
            return
        by_account: dict[int, tuple[ingest.Ingestor, list[_Job], list[list[ingest.Piece]]]] = {}
        for job, pieces in zip(batch, got, strict=True):  # each account's frames stored as that account
            ing = job.ing or self.ing
            if ing is None:
                raise RuntimeError("ing is not set")
            by_account.setdefault(id(ing), (ing, [], []))
            by_account[id(ing)][1].append(job)
            by_account[id(ing)][2].append(pieces)
        for ing, jobs, pieces_of in by_account.values():
            self._process(jobs, pieces_of, ing)

    def _process(self, batch: list[_Job], parsed: list[list[ingest.Piece]], ing: ingest.Ingestor) -> None:
        pieces: list[ingest.Piece] = []
        spans: list[tuple[int, int]] = []
        for got in parsed:
            spans.append((len(pieces), len(pieces) + len(got)))
            pieces.extend(got)
        summary = ingest.Summary("mllp", "hl7v2")
        try:
            outcomes = ing.ingest_pieces(pieces, summary)
        except (AccessDenied, UnknownTenant, TenantShredded) as exc:
            self.fatal = exc
            for job in batch:
                job.done(ack(job.frame, "AE", f"not accepted: {exc}"))
            return
        except Exception:  # the store is unreachable: say so, store nothing, ACK nothing positive
            log.exception("group of %d frames not stored", len(batch))
            for job in batch:
                job.done(ack(job.frame, "AE", "temporary storage failure; send again"))
            return
        self.stats.groups += 1
        self.stats.accepted += summary.accepted
        self.stats.duplicates += summary.duplicates
        self.stats.rejected += summary.rejected
        for job, (a, b) in zip(batch, spans, strict=True):
            mine = outcomes[a:b]
            bad = [o for o in mine if o.status == "rejected"]
            if not bad:
                job.done(ack(job.frame, "AA"))
                continue
            reason = bad[0].reason or "refused"
            unreadable = (
                not _msh_fields(job.frame)[1] or "unsupported message type" in reason or "unsupported version" in reason
            )
            note = f"{reason} (quarantine {bad[0].quarantine_id})" if bad[0].quarantine_id else reason
            job.done(ack(job.frame, "AR" if unreadable else "AE", note))


@dataclass(frozen=True)
class Limits:
    """Connection limits (see the module's docstring)."""

    max_connections: int = 64  # authenticated connections, in all
    max_per_address: int = 8  # connections from one address, authenticated or not
    max_pending: int = 32  # connections not yet authenticated, in all
    handshake_timeout: float = 5.0  # seconds to complete TLS and be matched to a pinned certificate
    frame_timeout: float = 10.0  # seconds for a frame, once begun, to be complete
    idle_timeout: float = 300.0  # seconds an authenticated connection may stay silent


class PinnedFeeds:
    """The lab's pinned feed certificates: the listener's trust store, and a presented certificate
    mapped to the lab's service account it is pinned on (one ``Ingestor`` per account and address)."""

    def __init__(self, gateway, tenant_id: str, *, group: int = MAX_GROUP, test_mode: bool = False) -> None:
        self.gw, self.tenant_id, self.group, self.test_mode = gateway, tenant_id, group, test_mode
        self._ingestors: dict[tuple[str, str], ingest.Ingestor] = {}
        self._trusted: set[str] = set()
        self._lock = threading.Lock()

    def trust(self, ctx: ssl.SSLContext) -> int:
        """Add the lab's newly pinned certificates to ``ctx``'s trust store; returns how many it trusts.
        (An unpinned certificate stays in the store until restart, but ``authenticate`` refuses it.)"""
        from labvault.accounts import feeds

        with self.gw.auth_unit(source_addr="mllp", user_agent="mllp") as u:
            pems = feeds.pinned_certificates(u, self.tenant_id)
        with self._lock:
            new = [p for p in pems if p not in self._trusted]
            if new:
                ctx.load_verify_locations(cadata="".join(new))
                self._trusted.update(new)
            return len(self._trusted)

    @property
    def trusted(self) -> int:
        """How many pinned certificates the listener trusts."""
        return len(self._trusted)

    def authenticate(self, der: bytes, addr: str) -> ingest.Ingestor:
        """The ingestor of the active service account whose pinned certificate ``der`` is; else
        AccessDenied (audited in the lab's trail)."""
        from labvault.accounts import feeds

        with self.gw.auth_unit(source_addr=addr, user_agent="mllp") as u:
            principal = feeds.principal_for_certificate(u, self.tenant_id, der, addr=addr)
        key = (principal.account_id, addr)
        with self._lock:
            ing = self._ingestors.get(key)
        if ing is None:
            ing = ingest.Ingestor(
                self.gw, principal, self.tenant_id, feed="mllp", group=self.group, test_mode=self.test_mode
            )
            ing.preflight()
            with self._lock:
                ing = self._ingestors.setdefault(key, ing)
        return ing


class Server:
    """An asyncio MLLP server feeding one ``Committer``.

    Over TLS (``ssl_context`` from ``server_ssl_context``), ``feeds`` maps each client certificate
    to the lab's service account it is pinned on; in plain TCP, every connection ingests as
    ``ingestor`` (loopback only: the CLI refuses anything else).
    """

    def __init__(
        self,
        ingestor: ingest.Ingestor | None,
        *,
        host: str = "127.0.0.1",
        port: int = 2575,
        ssl_context: ssl.SSLContext | None = None,
        feeds: PinnedFeeds | None = None,
        max_frame: int = MAX_FRAME,
        max_group: int = MAX_GROUP,
        limits: Limits | None = None,
        parsers: int = 0,
        refresh_every: float = 10.0,
    ) -> None:
        if ssl_context is not None and feeds is None:
            raise ValueError("over TLS, the listener maps client certificates to accounts: give feeds")
        if ssl_context is None and ingestor is None:
            raise ValueError("in plain TCP, the listener ingests as one account: give an ingestor")
        self.host, self.port, self.ssl, self.feeds, self.ingestor = host, port, ssl_context, feeds, ingestor
        self.max_frame = max_frame
        self.limits = limits or Limits()
        self.refresh_every = refresh_every
        self.stats = Stats()
        # Parser processes are spawned, not forked: this process has threads (the committer, the
        # database pool) whose locks a fork would copy in whatever state they are.
        self._pool = (
            ProcessPoolExecutor(
                parsers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
            if parsers
            else None
        )
        test_mode = ingestor.test_mode if ingestor is not None else bool(feeds and feeds.test_mode)
        self.committer = Committer(ingestor, self.stats, max_group=max_group, parsers=self._pool, test_mode=test_mode)
        self._server: asyncio.base_events.Server | None = None
        self._open = 0  # authenticated connections
        self._by_addr: Counter[str] = Counter()  # connections per address, authenticated or not
        self._pending: dict[asyncio.Task, str] = {}  # connections not yet authenticated (oldest first)
        self._clients: set[asyncio.Task] = set()
        self._refresher: asyncio.Task | None = None

    async def start(self) -> tuple[str, int]:
        if self._pool is not None:  # start the parser processes now, not on the first message
            await asyncio.wrap_future(self._pool.submit(_read_frames, [], False))
        if self.ssl is not None and self.feeds is not None:
            await asyncio.to_thread(self.feeds.trust, self.ssl)
            self._refresher = asyncio.create_task(self._refresh(self.feeds, self.ssl))
        self.committer.start()
        # TLS is started per connection (``_authenticate``), after the address checks and under
        # the handshake timeout: the server itself listens in plain TCP, each new connection held
        # (not read) by a ``_Gate`` until then.
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Gate(self), self.host, self.port)
        except OSError as exc:  # the port is taken, say: one line, and what was started stops
            await self.close()
            raise CannotListen.on(self.host, self.port, exc) from None
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def _refresh(self, feeds: PinnedFeeds, ctx: ssl.SSLContext) -> None:
        """Certificates pinned while the listener runs are trusted within ``refresh_every`` seconds."""
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await asyncio.to_thread(feeds.trust, ctx)
            except Exception:  # the store is unreachable for now: try again at the next round
                log.exception("could not read the lab's pinned certificates")

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("_server is not set")
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._server is not None:
            self._server.close()
        for task in list(self._clients) + list(self._pending):  # their frames are dropped, unacknowledged
            task.cancel()
        waiting = self._clients | set(self._pending)
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.committer.stop()
        await asyncio.to_thread(self.committer.join, 30)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _refuse(self, transport: asyncio.WriteTransport, peer: str, reason: str, started: float) -> None:
        self.stats.refused[reason] += 1
        logs.access("mllp", event="refused", peer=peer, reason=reason, ms=(time.monotonic() - started) * 1000)
        with contextlib.suppress(Exception):
            transport.abort()

    def _evict(self) -> bool:
        """Make room among connections not yet authenticated: drop the oldest one of the address
        that holds most of them."""
        if not self._pending:
            return False
        worst = Counter(self._pending.values()).most_common(1)[0][0]
        victim = next(task for task, addr in self._pending.items() if addr == worst)
        del self._pending[victim]
        victim.cancel()
        return True

    def _streams(
        self, transport: asyncio.Transport, protocol: asyncio.StreamReaderProtocol, reader: asyncio.StreamReader
    ) -> asyncio.StreamWriter:
        protocol.connection_made(transport)
        return asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())

    async def _authenticate(
        self, transport: asyncio.Transport, addr: str
    ) -> tuple[ingest.Ingestor, asyncio.StreamReader, asyncio.StreamWriter]:
        reader = asyncio.StreamReader(limit=self.max_frame + 16)
        protocol = asyncio.StreamReaderProtocol(reader)
        if self.ssl is None:
            if self.ingestor is None:
                raise RuntimeError("ingestor is not set")
            transport.set_protocol(protocol)
            writer = self._streams(transport, protocol, reader)
            transport.resume_reading()
            return self.ingestor, reader, writer
        loop = asyncio.get_running_loop()
        # CERT_REQUIRED: no certificate, or one the store does not trust, fails here.
        tls = await loop.start_tls(
            transport, protocol, self.ssl, server_side=True, ssl_handshake_timeout=self.limits.handshake_timeout
        )
        if tls is None:  # typeshed allows it; asyncio gives the TLS transport or raises
            raise ConnectionError("TLS not started")
        writer = self._streams(tls, protocol, reader)
        sslobj = tls.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            tls.abort()
            raise AccessDenied("no client certificate")
        if self.feeds is None:
            raise RuntimeError("feeds is not set")
        try:
            ing = await asyncio.to_thread(self.feeds.authenticate, der, addr)
        except BaseException:
            tls.abort()
            raise
        return ing, reader, writer

    def _accept(self, transport: asyncio.Transport) -> None:
        """A new connection, not read yet: refused at once over a cap, else handled in a task."""
        started = time.monotonic()
        peername = transport.get_extra_info("peername") or ("?", 0)
        addr = str(peername[0])
        peer = f"{addr}:{peername[1]}" if len(peername) > 1 else addr
        if self._by_addr[addr] >= self.limits.max_per_address:
            return self._refuse(transport, peer, "per-address-cap", started)
        if len(self._pending) >= self.limits.max_pending and not self._evict():
            return self._refuse(transport, peer, "pending-cap", started)
        self._by_addr[addr] += 1
        task = asyncio.get_running_loop().create_task(self._client(transport, addr, peer, started))
        self._pending[task] = addr
        # Released when the task ends, however it ends (even cancelled before its first step).
        task.add_done_callback(lambda _t: self._release(addr, transport))

    def _release(self, addr: str, transport: asyncio.Transport) -> None:
        self._by_addr[addr] -= 1
        if self._by_addr[addr] <= 0:
            del self._by_addr[addr]
        with contextlib.suppress(Exception):
            transport.abort()  # a no-op once closed

    async def _client(self, transport: asyncio.Transport, addr: str, peer: str, started: float) -> None:
        limits = self.limits
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("task is not set")
        counted = False
        writer: asyncio.StreamWriter | None = None
        try:
            try:
                ing, reader, stream = await asyncio.wait_for(
                    self._authenticate(transport, addr), limits.handshake_timeout
                )
                writer = stream  # closed below, however the connection ends
            except asyncio.CancelledError:
                if task in self._pending:  # the listener is closing
                    raise
                return self._refuse(transport, peer, "evicted", started)
            except TimeoutError:
                return self._refuse(transport, peer, "handshake-timeout", started)
            except AccessDenied:
                return self._refuse(transport, peer, "certificate-not-pinned", started)
            except LabvaultError:  # the lab cannot take data now (shredded, ...): nothing stored
                return self._refuse(transport, peer, "not-accepted", started)
            except ssl.SSLError as exc:
                text = str(exc)
                reason = (
                    "no-certificate"
                    if "CERTIFICATE_REQUIRED" in text or "PEER_DID_NOT_RETURN" in text
                    else "certificate-refused"
                    if "CERTIFICATE_VERIFY_FAILED" in text
                    else "tls-failed"
                )
                return self._refuse(transport, peer, reason, started)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, RuntimeError):
                return self._refuse(transport, peer, "closed-during-handshake", started)
            except Exception:  # the store is unreachable, say: logged (no personal value), refused
                log.exception("connection from %s not authenticated: internal error", peer)
                return self._refuse(transport, peer, "internal-error", started)
            finally:
                self._pending.pop(task, None)
            if self._open >= limits.max_connections:
                return self._refuse(stream.transport, peer, "connection-cap", started)
            self._open += 1
            counted = True
            self.stats.connections += 1
            self._clients.add(task)
            account = ing.principal.account_id
            logs.access(
                "mllp",
                event="connected",
                peer=peer,
                account=account,
                tls=self.ssl is not None,
                ms=(time.monotonic() - started) * 1000,
            )
            pending: asyncio.Queue = asyncio.Queue()
            sender = asyncio.create_task(self._send_acks(pending, stream, peer, account))
            try:
                await self._read_frames(reader, pending, ing, peer, account)
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
                pass
            finally:
                await pending.put(None)
                with contextlib.suppress(Exception):
                    await sender
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await writer.wait_closed()
            else:
                transport.abort()
            if counted:
                self._open -= 1
            self._clients.discard(task)

    def _submit(self, frame: bytes, ing: ingest.Ingestor) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        def done(reply: bytes) -> None:
            def settle() -> None:
                if not fut.done():
                    fut.set_result(reply)

            loop.call_soon_threadsafe(settle)

        self.committer.submit(_Job(frame, done, ing))
        return fut

    async def _read_frames(
        self, reader: asyncio.StreamReader, pending: asyncio.Queue, ing: ingest.Ingestor, peer: str, account: str
    ) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        deadline: float | None = None  # when the frame begun in ``buf`` must be complete
        while True:
            if buf:
                deadline = deadline or loop.time() + self.limits.frame_timeout
                wait = max(0.0, deadline - loop.time())
            else:
                deadline, wait = None, self.limits.idle_timeout
            try:
                chunk = await asyncio.wait_for(reader.read(65536), wait)
            except TimeoutError:
                if buf:
                    self.stats.frame_timeouts += 1
                    logs.access(
                        "mllp", event="frame-timeout", peer=peer, account=account, seconds=self.limits.frame_timeout
                    )
                raise
            if not chunk:
                return  # the client left; a partial frame in ``buf`` is dropped, never acknowledged
            buf += chunk
            while True:
                start = buf.find(VT)
                if start < 0:
                    buf.clear()  # garbage between frames
                    break
                if start:
                    del buf[:start]
                end = buf.find(FS, 1)
                if end < 0:
                    if len(buf) > self.max_frame:
                        self.stats.oversized += 1
                        await pending.put(
                            (ack(bytes(buf[:4096]), "AR", f"frame exceeds {self.max_frame} bytes"), time.monotonic())
                        )
                        return
                    break
                frame = bytes(buf[1:end])
                cut = end + 2 if end + 1 < len(buf) and buf[end + 1] == CR else end + 1
                del buf[:cut]
                deadline = None  # a frame completed: the next one gets its own time
                if len(frame) > self.max_frame:
                    self.stats.oversized += 1
                    await pending.put(
                        (ack(frame[:4096], "AR", f"frame exceeds {self.max_frame} bytes"), time.monotonic())
                    )
                    return
                if not frame.strip():
                    continue
                self.stats.frames += 1
                await pending.put((self._submit(frame, ing), time.monotonic()))

    async def _send_acks(self, pending: asyncio.Queue, writer: asyncio.StreamWriter, peer: str, account: str) -> None:
        """ACKs leave in the order the frames came, each once its frame is stored (or refused)."""
        broken = False
        logging_on = logging.getLogger(f"{logs.ACCESS}.mllp").isEnabledFor(logging.INFO)
        while True:
            item = await pending.get()
            if item is None:
                return
            got, received = item
            reply = got if isinstance(got, bytes) else await got
            if logging_on:
                at = reply.find(b"\rMSA")
                code = reply[at + 5 : at + 7].decode("ascii", "replace") if at >= 0 else "?"
                logs.access(
                    "mllp",
                    event="message",
                    peer=peer,
                    account=account,
                    ack=code,
                    ms=(time.monotonic() - received) * 1000,
                    sent=not broken,
                )
            if broken:
                continue  # the client is gone: its stored messages stay stored, it will resend
            try:
                writer.write(reply)
                await writer.drain()
            except (ConnectionError, OSError):
                broken = True


class _Gate(asyncio.Protocol):
    """Holds a new connection unread until the server has checked its address and started TLS."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # type: ignore[attr-defined]
        self.server._accept(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:  # not while paused; the protocol is replaced after
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def server_ssl_context(cert: str, key: str, *, client_ca: str | None = None) -> ssl.SSLContext:
    """The listener's TLS: TLS 1.2 or later, a client certificate required (C2). The trust store
    holds the lab's pinned feed certificates (added by ``PinnedFeeds.trust``; a pinned certificate
    is a trust anchor of its own, self-signed or not) and, with ``client_ca``, a CA's certificates;
    never the system's CAs. Whatever verifies, only a pinned certificate maps to an account."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {getattr(exc, 'strerror', None) or exc}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load --client-ca: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx
