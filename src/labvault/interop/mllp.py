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
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from labvault.errors import AccessDenied, LabvaultError, TenantShredded, UnknownTenant
from labvault.interop import ingest

log = logging.getLogger("labvault.mllp")

VT, FS, CR = 0x0B, 0x1C, 0x0D
MAX_FRAME = 1024 * 1024
MAX_GROUP = 500


@dataclass
class Stats:
    frames: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    groups: int = 0
    connections: int = 0
    oversized: int = 0


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
        "MSH", enc, "LABVAULT", "LABVAULT", f(2), f(3), now, "", f"ACK{enc[0]}{trigger}{enc[0]}ACK" if trigger else "ACK",
        control_id or f"ACK{now}", "P", "2.5.1",
    ]
    segments = [sep.join(head), sep.join(["MSA", code, f(9), _clean(reason or "", 80) if code != "AA" else ""])]
    if code != "AA":
        err_code = _ERR_CODES.get(code, "207")
        segments.append(sep.join(["ERR", "", "", f"{err_code}{enc[0]}{'Unsupported message type' if code == 'AR' else 'Application internal error'}{enc[0]}HL70357",
                                  "E", "", "", "", _clean(reason or "refused")]))
    body = "\r".join(segments) + "\r"
    return bytes([VT]) + body.encode("utf-8") + bytes([FS, CR])


@dataclass
class _Job:
    frame: bytes
    done: Callable[[bytes], None]


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

    def __init__(self, ingestor: ingest.Ingestor, stats: Stats, *, max_group: int = MAX_GROUP,
                 parsers: Executor | None = None) -> None:
        super().__init__(name="labvault-mllp-committer", daemon=True)
        self.ing = ingestor
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
            return self.parsers.submit(_read_frames, frames, self.ing.test_mode)
        done: Future = Future()
        done.set_result(_read_frames(frames, self.ing.test_mode))
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
        except Exception as exc:  # the parser process died: nothing stored, nothing acknowledged positively
            log.error("group of %d frames not parsed: %s", len(batch), type(exc).__name__)
            for job in batch:
                job.done(ack(job.frame, "AE", "temporary failure; send again"))
            return
        self._process(batch, got)

    def _process(self, batch: list[_Job], parsed: list[list[ingest.Piece]]) -> None:
        pieces: list[ingest.Piece] = []
        spans: list[tuple[int, int]] = []
        for got in parsed:
            spans.append((len(pieces), len(pieces) + len(got)))
            pieces.extend(got)
        summary = ingest.Summary("mllp", "hl7v2")
        try:
            outcomes = self.ing.ingest_pieces(pieces, summary)
        except (AccessDenied, UnknownTenant, TenantShredded) as exc:
            self.fatal = exc
            for job in batch:
                job.done(ack(job.frame, "AE", f"not accepted: {exc}"))
            return
        except Exception as exc:  # the store is unreachable: say so, store nothing, ACK nothing positive
            log.error("group of %d frames not stored: %s", len(batch), type(exc).__name__)
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
            unreadable = not _msh_fields(job.frame)[1] or "unsupported message type" in reason \
                or "unsupported version" in reason
            note = f"{reason} (quarantine {bad[0].quarantine_id})" if bad[0].quarantine_id else reason
            job.done(ack(job.frame, "AR" if unreadable else "AE", note))


class Server:
    """An asyncio MLLP server feeding one ``Committer``."""

    def __init__(
        self, ingestor: ingest.Ingestor, *, host: str = "127.0.0.1", port: int = 2575, ssl_context: ssl.SSLContext | None = None,
        max_frame: int = MAX_FRAME, max_group: int = MAX_GROUP, idle_timeout: float = 300.0, max_connections: int = 64,
        parsers: int = 0,
    ) -> None:
        self.host, self.port, self.ssl = host, port, ssl_context
        self.max_frame, self.idle_timeout, self.max_connections = max_frame, idle_timeout, max_connections
        self.stats = Stats()
        # Parser processes are spawned, not forked: this process has threads (the committer, the
        # database pool) whose locks a fork would copy in whatever state they are.
        self._pool = ProcessPoolExecutor(parsers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_watch_parent, initargs=(os.getpid(),)) if parsers else None
        self.committer = Committer(ingestor, self.stats, max_group=max_group, parsers=self._pool)
        self._server: asyncio.base_events.Server | None = None
        self._open = 0
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> tuple[str, int]:
        if self._pool is not None:  # start the parser processes now, not on the first message
            await asyncio.wrap_future(self._pool.submit(_read_frames, [], False))
        self.committer.start()
        self._server = await asyncio.start_server(self._client, self.host, self.port, ssl=self.ssl,
                                                  limit=self.max_frame + 16)
        sock = self._server.sockets[0].getsockname()
        return sock[0], sock[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):  # connections still open: their frames are dropped, unacknowledged
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.committer.stop()
        await asyncio.to_thread(self.committer.join, 30)
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def _submit(self, frame: bytes) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        def done(reply: bytes) -> None:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(reply))

        self.committer.submit(_Job(frame, done))
        return fut

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self.max_connections:
            writer.close()
            return
        self._open += 1
        self.stats.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        pending: asyncio.Queue[asyncio.Future[bytes] | bytes | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_acks(pending, writer))
        try:
            await self._read_frames(reader, pending)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
            pass
        finally:
            await pending.put(None)
            with contextlib.suppress(Exception):
                await sender
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            self._open -= 1
            self._clients.discard(task)

    async def _read_frames(self, reader: asyncio.StreamReader, pending: asyncio.Queue) -> None:
        buf = bytearray()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), self.idle_timeout)
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
                        await pending.put(ack(bytes(buf[:4096]), "AR", f"frame exceeds {self.max_frame} bytes"))
                        return
                    break
                frame = bytes(buf[1:end])
                cut = end + 2 if end + 1 < len(buf) and buf[end + 1] == CR else end + 1
                del buf[:cut]
                if len(frame) > self.max_frame:
                    self.stats.oversized += 1
                    await pending.put(ack(frame[:4096], "AR", f"frame exceeds {self.max_frame} bytes"))
                    return
                if not frame.strip():
                    continue
                self.stats.frames += 1
                await pending.put(self._submit(frame))

    async def _send_acks(self, pending: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        """ACKs leave in the order the frames came, each once its frame is stored (or refused)."""
        broken = False
        while True:
            item = await pending.get()
            if item is None:
                return
            reply = item if isinstance(item, bytes) else await item
            if broken:
                continue  # the client is gone: its stored messages stay stored, it will resend
            try:
                writer.write(reply)
                await writer.drain()
            except (ConnectionError, OSError):
                broken = True


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise LabvaultError(f"cannot load the TLS certificate or key: {getattr(exc, 'strerror', None) or exc}") from None
    return ctx
