"""The readers' errors: every failure a sender can cause, located (file, message, segment, line,
row, field) in one line that never quotes a value."""

from __future__ import annotations

from labvault.errors import InvalidInput


class NumberFault(InvalidInput):
    """A text that looks like a number but cannot be stored (non-finite, absurdly long or precise:
    ``labvault.interop._common.number_fault``); names no value. Readers turn it into their located
    error."""


class LocatedInputError(InvalidInput):
    """An input that cannot be read or mapped; ``str()`` is one line naming where, never a value.

    Subclasses name their locations in ``_LOCATION`` as (attribute, prefix) pairs, in order.
    """

    _LOCATION: tuple[tuple[str, str], ...] = ()

    def __init__(self, reason: str, *, file: str | None = None, field: str | None = None, **where: object) -> None:
        self.reason = reason.replace("\r", " ").replace("\n", " ")
        self.file = file
        self.field = field
        for name, _ in self._LOCATION:
            setattr(self, name, where.pop(name, None))
        if where:
            raise TypeError(f"unknown location {', '.join(where)}")
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.file] if self.file else []
        for name, prefix in self._LOCATION:
            value = getattr(self, name)
            if value is not None and value != "":
                parts.append(f"{prefix}{value}")
        if self.field:
            parts.append(self.field)
        return f"{', '.join(parts)}: {self.reason}" if parts else self.reason

    def __str__(self) -> str:
        return self._render()


class Hl7Error(LocatedInputError):
    """An HL7 v2 input that cannot be read or mapped; ``str()`` is one line without personal values."""

    _LOCATION = (("message_index", "message "), ("segment", ""))
    message_index: int | None
    segment: str | None

    def located(self, *, file: str | None = None, message_index: int | None = None) -> Hl7Error:
        if file is not None and self.file is None:
            self.file = file
        if message_index is not None and self.message_index is None:
            self.message_index = message_index
        self.args = (self._render(),)
        return self


class HprimError(LocatedInputError):
    """An HPRIM input that cannot be read or mapped; ``str()`` is one line without personal values."""

    _LOCATION = (("line", "line "), ("record", ""))

    def located(self, *, file: str | None = None) -> HprimError:
        if file is not None and self.file is None:
            self.file = file
        self.args = (self._render(),)
        return self


class FhirError(LocatedInputError):
    """A FHIR input that cannot be read or mapped; ``str()`` is one line without personal values.

    Locations: ``file``, ``entry`` (1-based index in Bundle.entry), ``line`` (ndjson line),
    ``resource`` (``Type/id``) and ``field`` (element path, e.g. ``Observation.valueQuantity.value``).
    """

    _LOCATION = (("entry", "entry "), ("line", "line "), ("resource", ""))

    def located(self, *, file: str | None = None) -> FhirError:
        if file is not None and self.file is None:
            self.file = file
        self.args = (self._render(),)
        return self


class CsvError(LocatedInputError):
    """A CSV input that cannot be read or mapped; ``str()`` is one line without personal values."""

    _LOCATION = (("row", "row "),)

    def located(self, file: str) -> CsvError:
        if self.file is None:
            self.file = file
        self.args = (self._render(),)
        return self
