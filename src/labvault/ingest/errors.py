"""The ingest service's errors (a message the readers refuse is no error: it goes to the quarantine
with its reason; see ``labvault.interop.errors``)."""

from __future__ import annotations

from labvault.errors import InvalidInput


class NotALabMessage(InvalidInput):
    """An input in none of the formats read (HL7 v2, HPRIM Santé, FHIR JSON or ndjson, CSV): a file
    given by mistake. Refused whole before anything is stored, and not kept in the quarantine,
    which holds a lab's refused messages (415 over HTTP)."""

    http_status = 415
