"""The lab's workflow as the faces (CLI, API, pages) call it: thin functions over a gateway unit.

Everything is done by the unit's ``access.work`` methods (authorised, sealed, audited); this module
only turns what a face reads (a scanned barcode, a value typed) into those calls. Judging a result
against the lab's catalogue (ranges, critical limits, delta checks) is not done here: a face passes
a ``judge`` callable (the catalogue's), called with each result once its value is entered, whose
verdict is returned beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labvault.access.work import EnteredRequest
from labvault.domain.models import Nonconformity, OrderedTest, Result, Specimen, SpecimenStatus, Urgency
from labvault.errors import InvalidInput

if TYPE_CHECKING:
    from labvault.access.gateway import Unit

Judge = Callable[[Result], Any]

# Tests the CLI can order by code before a catalogue is loaded: (LOINC code, label, UCUM unit,
# specimen type, container). The lab's catalogue (``labvault.lab.catalogue``), when loaded, is
# what a face passes as ``resolve`` instead.
BASIC_TESTS: dict[str, OrderedTest] = {
    code: OrderedTest("http://loinc.org", code, label, unit, kind, box)
    for code, label, unit, kind, box in (
        ("2823-3", "Potassium", "mmol/L", "SER", "SST gold"),
        ("2951-2", "Sodium", "mmol/L", "SER", "SST gold"),
        ("2160-0", "Creatinine", "umol/L", "SER", "SST gold"),
        ("2345-7", "Glucose", "mmol/L", "PLAS", "fluoride grey"),
        ("718-7", "Hemoglobin", "g/dL", "BLD", "EDTA lavender"),
        ("6690-2", "Leukocytes", "10*9/L", "BLD", "EDTA lavender"),
        ("777-3", "Platelets", "10*9/L", "BLD", "EDTA lavender"),
        ("1988-5", "C reactive protein", "mg/L", "SER", "SST gold"),
    )
}


def ordered_tests(
    codes: Sequence[str], resolve: Callable[[str], OrderedTest | None] | None = None
) -> list[OrderedTest]:
    """The tests named by their codes: through ``resolve`` (the lab's catalogue) when given, else
    ``BASIC_TESTS``. An unknown code is refused, by name (codes are not personal)."""
    out = []
    for code in codes:
        code = code.strip()
        found = resolve(code) if resolve is not None else BASIC_TESTS.get(code)
        if found is None:
            raise InvalidInput(f"unknown test code {code[:40]!r}")
        out.append(found)
    if not out:
        raise InvalidInput("a request names at least one test")
    return out


def enter_request(
    u: Unit,
    tenant: str,
    patient_id: str,
    tests: Sequence[OrderedTest],
    *,
    collected_at: datetime,
    collector: str | None = None,
    prescriber_id: str | None = None,
    urgent: bool = False,
    clinical: str | None = None,
    pregnant: bool | None = None,
) -> EnteredRequest:
    """A request entered by hand: its specimens (one per container) and ordered results."""
    return u.enter_request(
        tenant,
        patient_id,
        tests,
        prescriber_id=prescriber_id,
        urgency=Urgency.URGENT if urgent else Urgency.ROUTINE,
        clinical=clinical,
        pregnant=pregnant,
        collected_at=collected_at,
        collector=collector,
    )


def scanned(barcode: str) -> str:
    """The specimen id a barcode reader gives (a scanner may add spaces or a line end)."""
    value = barcode.strip()
    if not value:
        raise InvalidInput("no barcode read")
    return value


def receive(u: Unit, tenant: str, barcode: str) -> Specimen:
    """A specimen received at the lab, by scanning its label."""
    return u.specimen_event(tenant, scanned(barcode), SpecimenStatus.RECEIVED)


def reject(u: Unit, tenant: str, barcode: str, nonconformity: Nonconformity | str) -> Specimen:
    """A specimen rejected with its non-conformity: its results are cancelled, the request told."""
    return u.specimen_event(tenant, scanned(barcode), SpecimenStatus.REJECTED, nonconformity=nonconformity)


def move(u: Unit, tenant: str, barcode: str, status: SpecimenStatus | str) -> Specimen:
    """Any other move of a specimen (in analysis, stored, discarded)."""
    return u.specimen_event(tenant, scanned(barcode), status)


def enter_result(
    u: Unit,
    tenant: str,
    result_id: str,
    value: str | float,
    unit: str | None = None,
    *,
    comment: str | None = None,
    judge: Judge | None = None,
) -> tuple[Result, Any]:
    """A value entered by hand; with ``judge`` (the catalogue's), its verdict beside it."""
    res = u.enter_result(tenant, result_id, value, unit, comment=comment)
    return res, (None if judge is None else judge(res))


def validate_technical(u: Unit, tenant: str, result_ids: Sequence[str]) -> list[Result]:
    return u.validate(tenant, result_ids, "technical")


def validate_biological(u: Unit, tenant: str, result_ids: Sequence[str]) -> list[Result]:
    return u.validate(tenant, result_ids, "biological")
