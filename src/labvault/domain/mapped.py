"""What every reader (HL7 v2, HPRIM, FHIR, CSV) gives for one message: the domain objects of one
patient's request(s), and what the message said about itself."""

from __future__ import annotations

from dataclasses import dataclass

from labvault.domain.models import Identity, Prescriber, Request, Result, Specimen


@dataclass(slots=True)
class Mapped:
    identity: Identity
    prescribers: list[Prescriber]
    requests: list[Request]
    specimens: list[Specimen]
    results: list[Result]
    other_identifiers: list[tuple[str, str]]
    z_segments: list[str]
    control_id: str
    sending_facility: str
