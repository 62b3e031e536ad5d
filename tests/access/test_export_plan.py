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


def test_a_vendor_export_beyond_the_instruction_in_force_is_refused_in_the_gateway(gateway):
    """A1, A2: a vendor operator working under a lab's export instruction that lets out result codes
    only, for 2019-2020, who asks the gateway's export directly for identities and values over every
    year (a plan nobody compiled from the instruction) is refused before anything is read, with an
    alert in the lab's trail."""
    from pyrage import x25519

    from labvault.access import Purpose, instructed, scan
    from labvault.access.errors import ScopeExceeded
    from labvault.crypto.keys import PLATFORM
    from labvault.synth.load import load_lab
    from tests.conftest import ADMIN, lab_user, make_lab
    from tests.migration.test_migration import admin_signer, instruction, receive

    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=8, seed=3)
    admin, private = admin_signer(gateway)
    recipient = str(x25519.Identity.generate().to_public())
    codes_only = {"result": ["code", "code_system"]}
    receive(gateway, admin, instruction(recipient, 100_000, fields=codes_only, kind="export"), private)
    operator = lab_user(gateway, PLATFORM, "operator", name="Op")
    wide = scan.ExportPlan(
        tenant="lab-a",
        collected_from=date(1900, 1, 1),
        collected_to=date(2100, 1, 1),
        fields={"identity": ("nir", "family_name", "birth_date"), "result": ("code", "value_num")},
    )
    with pytest.raises(ScopeExceeded), gateway.unit(operator, Purpose.EXPORT) as u:
        instructed.enter(u, "lab-a", "MIG-2021", kinds=("export",))
        list(scan.export(u, wide, lambda kind, i: i))
    narrow = scan.ExportPlan(
        tenant="lab-a", collected_from=date(2019, 1, 1), collected_to=date(2020, 12, 31), fields=codes_only
    )
    with gateway.unit(operator, Purpose.EXPORT) as u:
        instructed.enter(u, "lab-a", "MIG-2021", kinds=("export",))
        records = list(scan.export(u, narrow, lambda kind, i: i))
    assert records and {r["record"] for r in records} == {"result"}


def test_statements_reaching_personal_tables_are_refused_by_execute(gateway):
    """F1, C1: a domain's statement that names a personal-data table anywhere (a join, a subquery,
    a CTE, a union) or is raw SQL text is refused by the unit, and nothing is changed."""
    from sqlalchemy import exists, select, text, union_all

    from labvault.access import Purpose
    from labvault.errors import AccessDenied
    from labvault.store import schema as t
    from labvault.synth.load import load_lab
    from tests.conftest import ADMIN, lab_user, make_lab

    make_lab(gateway, "lab-a")
    load_lab(gateway, ADMIN, "lab-a", patients=3, seed=3)
    admin = lab_user(gateway, "lab-a", "lab_admin", name="Admin")
    a, p = t.account, t.patient_identity
    statements = {
        "join": select(a.c.account_id).select_from(a.join(p, a.c.tenant_id == p.c.tenant_id)),
        "scalar subquery": select(select(p.c.patient_id).limit(1).scalar_subquery()),
        "exists": select(a.c.account_id).where(exists().where(p.c.tenant_id == "lab-a")),
        "cte": select(select(p.c.patient_id).cte("c")),
        "union": union_all(select(a.c.account_id), select(p.c.patient_id)),
        "text": text("DELETE FROM result WHERE tenant_id = 'lab-a'"),
    }
    for statement in statements.values():
        with pytest.raises(AccessDenied), gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            u.execute("lab-a", statement)
    with gateway.unit(admin, Purpose.ADMINISTRATION) as u:
        assert u.execute("lab-a", select(a.c.account_id).where(a.c.tenant_id == "lab-a")).all()
        assert u.counts("lab-a")["result"] > 0
