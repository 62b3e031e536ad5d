"""Ingest: from bytes in any supported format to stored messages, or to the quarantine.

``detect`` names the format; ``read`` cuts the input into messages and maps each (HL7 v2: one
message; HPRIM: one file; FHIR: one bundle or resource; Bulk Data ndjson: one patient of the
export; CSV: one request), giving ``Piece``s that either carry an envelope to store or the one-line reason of their
refusal. ``Ingestor`` stores the pieces through the gateway, a group of messages per transaction
(``group=1``: one transaction per message), each message whole or not at all, and keeps refused
ones in the lab's encrypted quarantine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labvault.access.gateway import Gateway
from labvault.access.principal import Principal, Purpose
from labvault.domain.mapped import Mapped
from labvault.errors import AccessDenied, InvalidInput, LabvaultError, TenantShredded, UnknownTenant
from labvault.ingest import intake
from labvault.ingest.errors import NotALabMessage
from labvault.instructions import intake_filter
from labvault.instructions.document import Instruction
from labvault.interop import hl7v2, hl7v2_adt, hprim

MAX_FILE_BYTES = 256 * 1024 * 1024
FORMATS = ("hl7v2", "hprim", "fhir-json", "fhir-ndjson", "csv")
_HPRIM_SEPARATORS = frozenset(b"|^~\\&!;:#$%*+/?@")
_LEAD = b"\xef\xbb\xbf\x0b \t\r\n"
NOT_A_LAB_MESSAGE = "not HL7 v2, HPRIM, FHIR JSON or CSV (format not recognised)"


def detect(data: bytes) -> str | None:
    """The format of an input from its first bytes, or None."""
    head = bytes(data[:4096]).lstrip(_LEAD)
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip(_LEAD)
    if head[:3] in (b"MSH", b"FHS", b"BHS"):
        return "hl7v2"
    if head[:1] == b"H" and len(head) > 1 and head[1] in _HPRIM_SEPARATORS:
        return "hprim"
    from labvault.interop import csv_in, fhir

    if csv_in.is_header(head.split(b"\n", 1)[0].decode("utf-8", "replace")):
        return "csv"
    return fhir.detect(bytes(data))


@dataclass(slots=True)
class Piece:
    """One message of an input: an envelope to store, or the reason it is refused (with its bytes)."""

    index: int
    format: str
    raw: bytes
    envelope: intake.Envelope | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.envelope is not None and not self.envelope.raw:  # kept if its identity waits in the queue
            self.envelope.raw = self.raw

    def ready(self) -> intake.Envelope:
        """The envelope to check or store: only a piece that has one (not refused) gets there."""
        if self.envelope is None:
            raise ValueError(f"message {self.index} was refused: it has no envelope to store")
        return self.envelope


# Formats whose control id says which message it is but not what it says: a CSV request's id is
# its group key, an HPRIM file keeps its name when sent again with other values.
_KEYED_BY_CONTENT = frozenset({"csv", "hprim"})


def _envelope(fmt: str, mapped: list[Mapped], facility: str = "", control_id: str = "") -> intake.Envelope:
    content = None
    if mapped:
        facility, control_id = mapped[0].sending_facility, mapped[0].control_id
        # What the message says, as read (not its bytes: the same request in a file with another
        # delimiter or line end is the same message).
        if fmt in _KEYED_BY_CONTENT:
            content = repr([dataclasses.astuple(m) for m in mapped]).encode()
    return intake.Envelope(intake.message_key(f"{fmt}:{facility}", control_id, content), fmt, mapped)


def read(data: bytes, *, file: str, fmt: str | None = None, test_mode: bool = False) -> list[Piece]:
    """Cut and map one input. Never raises for bad content: a bad message becomes a refused piece."""
    fmt = fmt or detect(data)
    if fmt is None:
        return [Piece(1, "unknown", bytes(data), reason=f"{file}: {NOT_A_LAB_MESSAGE}")]
    if len(data) > MAX_FILE_BYTES:
        return [Piece(1, fmt, b"", reason=f"{file}: input of {len(data)} bytes exceeds the limit of {MAX_FILE_BYTES}")]
    if fmt == "hl7v2":
        return _read_hl7(bytes(data), file, test_mode)
    if fmt == "hprim":
        try:
            mapped = hprim.to_domain(hprim.parse(bytes(data), file=file), test_mode=test_mode)
        except hprim.HprimError as exc:
            return [Piece(1, fmt, bytes(data), reason=str(exc))]
        return [_checked(Piece(1, fmt, bytes(data), envelope=_envelope(fmt, mapped)), file)]
    if fmt == "csv":
        from labvault.interop import csv_in

        return [
            _checked(Piece(m.index, fmt, m.raw, envelope=_envelope(fmt, [m.mapped])), file, m.index)
            if m.mapped is not None
            else Piece(m.index, fmt, m.raw, reason=m.reason)
            for m in csv_in.read(bytes(data), file=file, test_mode=test_mode)
        ]
    from labvault.interop import fhir

    try:
        if fmt == "fhir-ndjson":
            mapped = fhir.read_ndjson({file: bytes(data)}, test_mode=test_mode)
            return [
                _checked(Piece(i, fmt, bytes(data), envelope=_envelope(fmt, [m])), file)
                for i, m in enumerate(mapped, 1)
            ]
        mapped = fhir.read(bytes(data), file=file, test_mode=test_mode)
    except fhir.FhirError as exc:
        return [Piece(1, fmt, bytes(data), reason=str(exc))]
    return [_checked(Piece(1, fmt, bytes(data), envelope=_envelope(fmt, mapped)), file)]


def read_bulk(files: dict[str, bytes], *, test_mode: bool = False) -> list[Piece]:
    """A Bulk Data export: several ndjson files read together (references cross files)."""
    from labvault.interop import fhir

    name = ", ".join(files)
    try:
        mapped = fhir.read_ndjson(files, test_mode=test_mode)
    except fhir.FhirError as exc:
        return [Piece(1, "fhir-ndjson", b"".join(files.values()), reason=str(exc))]
    return [
        _checked(Piece(i, "fhir-ndjson", b"", envelope=_envelope("fhir-ndjson", [m])), name)
        for i, m in enumerate(mapped, 1)
    ]


def _read_hl7(data: bytes, file: str, test_mode: bool) -> list[Piece]:
    try:
        messages = hl7v2.split_messages(data, file=file)
    except hl7v2.Hl7Error as exc:
        return [Piece(1, "hl7v2", data, reason=str(exc))]
    pieces = []
    for i, raw in enumerate(messages, 1):
        try:
            parsed = hl7v2.parse(raw, index=i, file=file)
            if hl7v2_adt.is_merge(parsed):  # ADT^A40: identities to merge, no result
                merges = hl7v2_adt.read(parsed, test_mode=test_mode)
                envelope = _envelope("hl7v2", [], parsed.sending_facility, parsed.control_id)
                envelope.merges = merges
                pieces.append(Piece(i, "hl7v2", raw, envelope=envelope))
                continue
            mapped = hl7v2.to_domain(parsed, test_mode=test_mode)
        except hl7v2.Hl7Error as exc:
            pieces.append(Piece(i, "hl7v2", raw, reason=str(exc)))
            continue
        pieces.append(_checked(Piece(i, "hl7v2", raw, envelope=_envelope("hl7v2", [mapped])), file, i))
    return pieces


def _checked(piece: Piece, file: str, index: int | None = None) -> Piece:
    try:
        intake.check(piece.ready())
    except InvalidInput as exc:
        where = f"{file}, message {index}" if index is not None else file
        piece.envelope, piece.reason = None, f"{where}: {exc}"
    return piece


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one piece: ``accepted``, ``duplicate``, ``queued`` (received; its identity
    waits in the identity-vigilance queue), ``rejected`` (with reason, quarantine id) or, under an
    instruction, ``outside`` (nothing in it that the instruction names)."""

    status: str
    reason: str | None = None
    quarantine_id: str | None = None


@dataclass(slots=True)
class Summary:
    """What became of one input's messages (no personal value: counts and one-line reasons)."""

    file: str
    format: str
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    queued: int = 0  # received, waiting in the identity-vigilance queue
    results: int = 0
    reasons: list[str] = field(default_factory=list)
    quarantine_ids: list[str] = field(default_factory=list)
    # Under an instruction: messages left with no result (skipped), results left out by reason,
    # values cleared by field name.
    outside: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    cleared: dict[str, int] = field(default_factory=dict)

    def add(self, other: Summary) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.queued += other.queued
        self.results += other.results
        self.reasons += other.reasons
        self.quarantine_ids += other.quarantine_ids
        self.outside += other.outside
        for mine, theirs in ((self.dropped, other.dropped), (self.cleared, other.cleared)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n

    @property
    def results_dropped(self) -> int:
        return sum(self.dropped.values())


def instruction_for_ingest(gateway: Gateway, checker: Principal, tenant_id: str, instruction_id: str) -> Instruction:
    """The lab's received ``migration_in`` instruction, in force now (signer still current, signature,
    validity), checked by ``checker``: a platform account that reads the lab's instructions (the
    lab's writing roles do not). Refusals are one line naming the reason, the kind or field names."""
    from labvault.access.instructed import instruction_in_force

    with gateway.unit(checker, Purpose.ADMINISTRATION) as u:
        instr = instruction_in_force(u, tenant_id, instruction_id)
    intake_filter.check(instr, tenant_id)
    return instr


class Ingestor:
    """Stores pieces for one lab as one principal; ``group`` messages per transaction.

    With an ``instruction`` (a ``migration_in`` instruction in force, see ``instruction_for_ingest``),
    ``ingest_files`` keeps of each message only what it names (``labvault.instructions.intake_filter``),
    skips the messages left with no result, and keeps no refused message in the quarantine: its
    bytes hold what the instruction may leave out."""

    def __init__(
        self,
        gateway: Gateway,
        principal: Principal,
        tenant_id: str,
        *,
        feed: str = "file",
        group: int = 1,
        test_mode: bool = False,
        purpose: Purpose = Purpose.INGEST,
        instruction: Instruction | None = None,
    ) -> None:
        if group < 1:
            raise InvalidInput("the group size must be at least 1")
        if instruction is not None:
            intake_filter.check(instruction, tenant_id)
        self.gw, self.principal, self.tenant_id = gateway, principal, tenant_id
        self.feed, self.group, self.test_mode, self.purpose = feed, group, test_mode, purpose
        self.instruction = instruction
        self.summaries: list[Summary] = []  # of the last ingest_files, as far as it went

    def preflight(self) -> None:
        """Fail early, before reading any file, if this principal may not ingest into this lab."""
        with self.gw.unit(self.principal, self.purpose) as u:
            u.authorise(self.tenant_id, "patient:result:create")
            u.tenant(self.tenant_id)

    def ingest_pieces(
        self, pieces: Sequence[Piece], summary: Summary, on_progress: Callable[[int], None] | None = None
    ) -> list[Outcome]:
        """Store or quarantine each piece; returns what became of each. Under an instruction, each
        piece is first cut down to what the instruction names (``within_instruction``).

        ``summary`` counts each message once its transaction is committed: when an error stops
        the run (the lab shredded meanwhile, the account refused), it holds exactly what was
        stored and quarantined before."""
        result: list[Outcome] = [Outcome("outside")] * len(pieces)
        keep: Sequence[int] = range(len(pieces))
        if self.instruction is not None:
            pieces, keep = self.within_instruction(pieces, summary)
            if on_progress is not None and len(pieces) - len(keep):
                on_progress(len(pieces) - len(keep))
        for k in range(0, len(keep), self.group):
            part = list(keep[k : k + self.group])
            good = [i for i in part if pieces[i].envelope is not None]
            refused = {i: pieces[i].reason or "refused" for i in part if pieces[i].envelope is None}
            if good:
                try:
                    self._store(pieces, good, result, summary)
                except (AccessDenied, UnknownTenant, TenantShredded):
                    raise
                except LabvaultError:
                    for i in good:  # find the message the store refused: one transaction each
                        try:
                            self._store(pieces, [i], result, summary)
                        except (AccessDenied, UnknownTenant, TenantShredded):
                            raise
                        except LabvaultError as exc:
                            refused[i] = f"{summary.file}, message {pieces[i].index}: {exc}"
            if refused and self.instruction is not None:  # reported, not kept: see the class
                for i, reason in refused.items():
                    result[i] = Outcome("rejected", reason)
                    summary.reasons.append(reason)
                    summary.rejected += 1
            elif refused:
                for i, qid in zip(refused, self._quarantine(pieces, refused), strict=True):
                    result[i] = Outcome("rejected", refused[i], qid)
                    summary.reasons.append(refused[i])
                    summary.quarantine_ids.append(qid)
                    summary.rejected += 1
            if on_progress is not None:
                on_progress(len(part))
        return result

    def _store(self, pieces: Sequence[Piece], idx: list[int], result: list[Outcome], summary: Summary) -> None:
        with self.gw.unit(self.principal, self.purpose) as u:
            under = {} if self.instruction is None else {"instruction": self.instruction.id}
            got = intake.store(u, self.tenant_id, [pieces[i].ready() for i in idx], feed=self.feed, **under)
        for i, status in zip(idx, got, strict=True):  # committed: counted
            result[i] = Outcome(status)
            if status == "accepted":
                summary.accepted += 1
                summary.results += pieces[i].ready().results
            elif status == "queued":
                summary.queued += 1
            else:
                summary.duplicates += 1

    def _quarantine(self, pieces: Sequence[Piece], refused: dict[int, str]) -> list[str]:
        with self.gw.unit(self.principal, self.purpose) as u:
            return [
                intake.put(u, self.tenant_id, pieces[i].raw, reason, fmt=pieces[i].format, feed=self.feed)
                for i, reason in refused.items()
            ]

    def ingest_files(
        self, paths: Iterable[Path], *, progress: Callable[[str, int, int], None] | None = None
    ) -> list[Summary]:
        """Each file in turn (Bulk Data ndjson files together, as one export).

        Every file is read and cut before anything is stored: a missing file, a folder, or a file
        in none of the formats (``NotALabMessage``) stops the run with one error, nothing stored
        and nothing quarantined. ``self.summaries`` grows as files are stored: when an error stops
        the run, it says what was stored before."""
        summaries: list[Summary] = []
        self.summaries = summaries
        bulk: dict[str, bytes] = {}
        inputs: list[tuple[str, list[Piece]]] = []
        for path in paths:
            name = str(path)
            data = _read_file(path)
            fmt = detect(data)
            if fmt is None:
                raise NotALabMessage(f"{name}: {NOT_A_LAB_MESSAGE}: nothing was stored")
            if fmt == "fhir-ndjson":
                bulk[name] = data
                continue
            inputs.append((name, read(data, file=name, fmt=fmt, test_mode=self.test_mode)))
        if bulk:
            inputs.append((", ".join(bulk), read_bulk(bulk, test_mode=self.test_mode)))
        for name, pieces in inputs:
            summary = Summary(name, pieces[0].format if pieces else "unknown")
            summaries.append(summary)
            total = len(pieces)
            done = 0

            def step(n: int, name: str = name, total: int = total) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(name, done, total)

            self.ingest_pieces(pieces, summary, step)
            if self.instruction is not None:
                with self.gw.unit(self.principal, self.purpose) as u:
                    u.audit(
                        self.tenant_id, "instruction:use", "instruction", summary.results, refs=[self.instruction.id]
                    )
        return summaries

    def within_instruction(self, pieces: Sequence[Piece], summary: Summary) -> tuple[list[Piece], list[int]]:
        """The pieces cut down to what the instruction names, and the indexes of those that still
        hold a result (the others are skipped: counted in ``summary.outside``, not refused)."""
        if self.instruction is None:
            raise RuntimeError("within_instruction needs an instruction")
        tally = intake_filter.Tally()
        out: list[Piece] = list(pieces)
        keep: list[int] = []
        for i, p in enumerate(pieces):
            if p.envelope is not None:
                mapped = [
                    m
                    for m in (intake_filter.apply(self.instruction, m, tally) for m in p.envelope.mapped)
                    if m is not None
                ]
                if not mapped:
                    summary.outside += 1
                    continue
                out[i] = dataclasses.replace(p, envelope=intake.Envelope(p.envelope.key, p.envelope.format, mapped))
            keep.append(i)
        for reason, n in tally.dropped.items():
            summary.dropped[reason] = summary.dropped.get(reason, 0) + n
        for name, n in tally.cleared.items():
            summary.cleared[name] = summary.cleared.get(name, 0) + n
        summary.cleared = dict(sorted(summary.cleared.items()))
        return out, keep

    def replay(self, quarantine_id: str) -> Summary:
        """Read a quarantined message again with the current readers; store it if it now passes."""
        with self.gw.unit(self.principal, self.purpose) as u:
            item, raw = intake.get(u, self.tenant_id, quarantine_id)
        if raw is None or item.status != intake.HELD:
            raise InvalidInput(f"this message was already {item.status}")
        name = f"quarantine:{quarantine_id}"
        fmt = item.format if item.format in FORMATS else None
        pieces = read(raw, file=name, fmt=fmt, test_mode=self.test_mode)
        summary = Summary(name, item.format)
        refused = [p.reason for p in pieces if p.envelope is None]
        if refused:
            with self.gw.unit(self.principal, self.purpose) as u:
                intake.update_reason(u, self.tenant_id, quarantine_id, refused[0] or "refused")
            summary.rejected = len(refused)
            summary.reasons = [r or "refused" for r in refused]
            return summary
        with self.gw.unit(self.principal, self.purpose) as u:
            got = intake.store(u, self.tenant_id, [p.ready() for p in pieces], feed=self.feed)
            intake.resolve(u, self.tenant_id, quarantine_id, intake.REPLAYED)
        summary.accepted = got.count("accepted")
        summary.duplicates = got.count("duplicate")
        summary.queued = got.count("queued")
        summary.results = sum(p.ready().results for p, o in zip(pieces, got, strict=True) if o == "accepted")
        return summary


def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path}: {size} bytes exceeds the limit of {MAX_FILE_BYTES} bytes")
        return path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path}: is a directory") from None
    except PermissionError:
        raise InvalidInput(f"{path}: permission denied") from None
