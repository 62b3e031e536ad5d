"""HL7 v2 ADT^A40 (merge patient, patient identifier list): which patient survives and which one
is merged into it, as the sending system (the hospital's patient administration) says.

Each PID segment names the surviving patient by its identifiers (PID-3: the INS by its OID, the
sender's local identifiers by their assigning authority); the MRG segment after it names the
patient merged into it (MRG-1, the prior patient identifier list). A message may carry several
PID/MRG pairs. Pure format: the identities are found and merged when the message is stored
(``labvault.access.identities.merge_as_sent``). The message is read with ``hl7v2.parse``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.interop.hl7v2 import SUPPORTED_VERSIONS, Hl7Error, Message, Segment

MERGE_TYPES = {("ADT", "A40")}
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+\Z")


@dataclass(frozen=True, slots=True)
class PatientMerge:
    """One merge: the surviving patient's INS and local identifiers, and the merged one's."""

    surviving_ins: str | None
    surviving_ids: list[tuple[str, str]] = field(default_factory=list)
    merged_ins: str | None = None
    merged_ids: list[tuple[str, str]] = field(default_factory=list)


def is_merge(message: Message) -> bool:
    """An ADT^A40 (whatever its structure name in MSH-9.3)."""
    msh = message.first("MSH")
    return msh is not None and (msh.value(9, 1), msh.value(9, 2)) in MERGE_TYPES


def read(message: Message, *, test_mode: bool = False) -> list[PatientMerge]:
    """The merges an ADT^A40 asks for. Every fault is an ``Hl7Error`` located at its field."""
    try:
        return _read(message, test_mode)
    except Hl7Error as exc:
        raise exc.located(file=message.file, message_index=message.index) from None


def _read(message: Message, test_mode: bool) -> list[PatientMerge]:
    msh = message.all_segments[0]
    if not is_merge(message):
        raise msh.err(9, "not an ADT^A40 message")
    if message.version not in SUPPORTED_VERSIONS:
        raise msh.err(12, "unsupported version (expected 2.3 to 2.5.1)")
    out: list[PatientMerge] = []
    pid: Segment | None = None
    for seg in message.all_segments:
        if seg.name == "PID":
            if pid is not None:
                raise seg.err(None, "PID without its MRG segment (the patient to merge)")
            pid = seg
        elif seg.name == "MRG":
            if pid is None:
                raise seg.err(None, "MRG before any PID (no surviving patient)")
            kept_ins, kept_ids = _identifiers(pid, 3, test_mode)
            gone_ins, gone_ids = _identifiers(seg, 1, test_mode)
            if kept_ins is None and not kept_ids:
                raise pid.err(3, "the surviving patient has no identifier")
            if gone_ins is None and not gone_ids:
                raise seg.err(1, "the patient to merge has no identifier")
            out.append(PatientMerge(kept_ins, kept_ids, gone_ins, gone_ids))
            pid = None
    if pid is not None:
        raise pid.err(None, "PID without its MRG segment (the patient to merge)")
    if not out:
        raise message.err("no PID/MRG pair: nothing to merge")
    return out


def _identifiers(seg: Segment, n: int, test_mode: bool) -> tuple[str | None, list[tuple[str, str]]]:
    """(INS, [(system, value)]) of a CX list: the INS by its OID; the others named as the ORU
    reader names a patient's identifiers (``urn:oid:``, the assigner, or the identifier type)."""
    ins: str | None = None
    others: list[tuple[str, str]] = []
    for rep in seg.repetitions(n):
        value = rep[0][0].strip() if rep and rep[0] else ""
        if not value:
            continue
        hd = rep[3] if len(rep) > 3 else []
        ns = hd[0] if hd else ""
        uid = hd[1] if len(hd) > 1 else ""
        oid = uid if _OID.match(uid) else ns if _OID.match(ns) else ""
        if oid in (OID_NIR, OID_NIA) or (oid == OID_INS_TEST and test_mode):
            ins = ins or value
            continue
        if oid == OID_INS_TEST:
            raise seg.err(n, "test INS (OID 1.2.250.1.213.1.4.10) refused outside test mode")
        id_type = rep[4][0] if len(rep) > 4 and rep[4] else ""
        if oid:
            system = f"urn:oid:{oid}"
        elif ns:
            system = f"urn:hl7v2:assigner:{quote(ns, safe='')}"
        else:
            system = f"urn:hl7v2:idtype:{quote(id_type or 'unknown', safe='')}"
        others.append((system, value))
    return ins, others
