"""Ids of an order are the message's: a number another message carries takes nothing of it."""

from __future__ import annotations

from labvault.ingest import service as ingest
from labvault.ingest.service import Ingestor, Summary
from tests.conftest import lab_user, make_lab
from tests.interop.messages import oru


def _nir(body13: str) -> str:
    return body13 + f"{97 - int(body13) % 97:02d}"


def _ingest(gateway, who, data: bytes) -> Summary:
    summary = Summary("f.hl7", "hl7v2")
    Ingestor(gateway, who, "lab-a", group=1).ingest_pieces(ingest.read(data, file="f.hl7"), summary)
    return summary


def test_an_order_number_carried_by_another_message_does_not_block_a_patients_order(gateway):
    """A message for another patient, from another sender, that carries the number of a
    patient's order (chosen or by accident) takes nothing of that order: the patient's own order
    is stored when it comes. (With ids derived from the order's number alone, the first message
    took the order's ids and the patient's results were refused.)"""
    make_lab(gateway, "lab-a")
    tech = lab_user(gateway, "lab-a", "technician")
    other = oru("B1", nir=_nir("2850775123457"), facility="OTHER").replace(b"F-B1", b"F-A1")
    assert b"F-A1" in other
    first = _ingest(gateway, tech, other)
    assert (first.accepted, first.rejected) == (1, 0)
    own = _ingest(gateway, tech, oru("A1"))
    assert (own.accepted, own.rejected) == (1, 0)
