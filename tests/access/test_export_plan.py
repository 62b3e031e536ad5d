"""An export plan names only what the gateway can write: a field no record of its type has (a
column name, an internal id) is refused when the plan is made, before anything is read."""

from __future__ import annotations

from datetime import date

import pytest

from labvault.access.scan import ExportPlan
from labvault.errors import InvalidInput


def plan(**fields: tuple[str, ...]) -> ExportPlan:
    return ExportPlan(tenant="lab-a", collected_from=date(2019, 1, 1), collected_to=date(2020, 12, 31), fields=fields)


def test_a_plan_names_fields_the_records_have():
    p = plan(result=("code", "status", "comment"), identity=("nir",), request=())
    assert p.types == ("result", "identity")
    assert p.links == {"result": ("patient",), "identity": ()}


@pytest.mark.parametrize(
    "fields",
    [
        {"result": ("observation_enc",)},
        {"result": ("result_id",)},
        {"identity": ("patient_id",)},
        {"request": ("pseudonym",)},
        {"specimen": ("request_id",)},
        {"audit_event": ("actor",)},
    ],
)
def test_a_plan_naming_anything_else_is_refused(fields):
    with pytest.raises(InvalidInput, match="export plan names"):
        plan(**fields)
