"""What a vendor account, or a lab account of another lab, can reach of a lab's breach response,
and the letters' second factor, through every face (the gateway, the API's JSON, the timeline).

The standing rule: the vendor never acts on a lab's data or people without the lab. A lab's
decision (notify / no risk), its authority reference, its Art. 34 exemption and letters are the
lab's: the vendor's security officer and platform admin read each lab's clock, state and counts.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from labvault.access import Purpose
from labvault.access.policy import MFA_REQUIRED, Role
from labvault.accounts import service
from labvault.ids import utcnow
from labvault.store import schema as t
from tests.api.conftest import (  # noqa: F401  (fixtures)
    LAB_A,
    LAB_B,
    LOGIN,
    MFA,
    admin_a,
    admin_b,
    api,
    cheap_argon2,
    db_url,
    operator,
    security_officer,
    support,
)
from tests.conftest import totp_code

REASONING = "Le fichier contient des résultats VIH: risque élevé pour les personnes"
AUTHORITY_REF = "CNIL-2026-004217"
PASSWORD = "Api-tests-pass-review-1!"


@contextmanager
def store(api):
    with api.gateway.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.set_config("labvault.tenant", "*", True)))
        yield conn


def _dpo(api, lab: str, email: str):
    """A lab_dpo-only account logged in over the API (its TOTP when the role needs one)."""
    with api.gateway.unit(api.accounts.creator(lab, "lab_dpo"), Purpose.ADMINISTRATION) as u:
        service.create_account(u, tenant_id=lab, name="Agathe Delorme", email=email, roles=["lab_dpo"])
    with api.gateway.auth_unit(source_addr="setup", user_agent="setup") as u:
        secret = service.enrol_directly(u, email, PASSWORD)
    c = api.client()
    r = c.post(LOGIN, json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    if secret is not None:
        r = c.post(MFA, json={"code": totp_code(secret)})
        assert r.status_code == 200, r.text
    c.headers["x-csrf-token"] = r.json()["csrf_token"]
    return c, secret


def _leak(api) -> bytes:
    lines = ["NIR;Code;Libellé;Résultat;Unité"]
    for lab in (LAB_A, LAB_B):
        for nir in api.nirs[lab][:3]:
            lines.append(f"{nir};718-7;Hémoglobine;13,2;g/dL")
    return ("\n".join(lines) + "\n").encode()


def _incident(api, security_officer) -> str:
    r = security_officer.post("/api/v1/breach/analyses", params={"name": "fuite.csv"}, content=_leak(api))
    assert r.status_code == 201, r.text
    body = {"title": "Fichier publié", "aware_at": utcnow().isoformat(), "analysis_id": r.json()["analysis_id"]}
    r = security_officer.post("/api/v1/incidents", json=body)
    assert r.status_code == 201, r.text
    iid = r.json()["incident_id"]
    assert security_officer.post(f"/api/v1/incidents/{iid}/notices", json={}).status_code == 200
    return iid


def test_the_vendor_reads_no_labs_decision_reference_or_letters_over_the_api(
    api, security_officer, admin_a, operator, support
):
    """I1, I5, G1, E2: once lab A decided, recorded the authority's notification and an Art. 34
    exemption, the security officer and the platform admin read lab A's clock, state and counts
    over the API (list, one incident, timeline), never its decision, authority reference,
    exemption ground or letters (the pages hide them; the JSON did not)."""
    iid = _incident(api, security_officer)
    base = f"/api/v1/incidents/{iid}/labs/{LAB_A}"
    r = admin_a.post(f"{base}/decision", json={"decision": "notify", "reasoning": REASONING})
    assert r.status_code == 200, r.text
    r = admin_a.post(f"{base}/notified", json={"at": utcnow().isoformat(), "reference": AUTHORITY_REF})
    assert r.status_code == 200 and r.json()["authority_ref"] == AUTHORITY_REF  # the lab reads its own
    r = admin_a.post(f"{base}/exemption", json={"ground": "encrypted", "reason": "copie chiffrée"})
    assert r.status_code == 200, r.text
    padmin = api.login("platform_admin")
    for vendor in (security_officer, padmin):
        listed = vendor.get("/api/v1/incidents")
        one = vendor.get(f"/api/v1/incidents/{iid}")
        steps = vendor.get(f"/api/v1/incidents/{iid}/timeline")
        for r in (listed, one, steps):
            assert r.status_code == 200, r.text
            assert AUTHORITY_REF not in r.text and REASONING not in r.text
            assert "encrypted" not in r.text and "exempt" not in r.text.replace('"exempted"', "")
        part = next(p for p in one.json()["parts"] if p["tenant"] == LAB_A)
        assert part["state"] == "notified" and part["patients"] == 3  # the state and counts stay
        assert part["decision"] is None and part["authority_ref"] is None and part["art34"] is None
        lab_steps = [s for s in steps.json() if s["tenant"] == LAB_A]
        assert {s["step"] for s in lab_steps} >= {"decided", "notified", "exempted"}
        assert all(s["detail"] == {} for s in lab_steps if s["step"] in ("decided", "notified", "exempted"))
    for vendor in (operator, support):
        assert vendor.get(f"/api/v1/incidents/{iid}").status_code == 403
    mine = admin_a.get(f"/api/v1/incidents/{iid}", params={"tenant": LAB_A}).json()
    assert mine["parts"][0]["authority_ref"] == AUTHORITY_REF and mine["parts"][0]["decision"] == "notify"


def test_the_api_letters_need_a_recent_step_up(api, security_officer):
    """I4, E2: the letters open the affected patients' names and addresses: over the API as on the
    page, a DPO session whose TOTP code is older than the step-up window gets a 403 naming the
    step-up, and no ZIP."""
    iid = _incident(api, security_officer)
    dpo, _secret = _dpo(api, LAB_A, f"dpo-api-letters@{LAB_A}.api.invalid")
    with store(api) as conn:
        conn.execute(
            update(t.login_session)
            .where(t.login_session.c.tenant_id == LAB_A)
            .values(totp_at=utcnow() - service.STEP_UP_WINDOW - timedelta(minutes=1))
        )
    r = dpo.post(f"/api/v1/incidents/{iid}/labs/{LAB_A}/letters", json={})
    assert r.status_code == 403 and "step-up" in r.json()["error"], r.status_code
    assert not r.content.startswith(b"PK")


def test_a_dpo_account_needs_a_second_factor(api):
    """E2, I4: the lab_dpo role opens patients' identities (the letters' names and addresses, the
    audit's identity view): like lab_admin, it must enrol TOTP; its login asks for the code, and the
    letters' step-up can then be passed."""
    assert Role.LAB_DPO in MFA_REQUIRED
    _c, secret = _dpo(api, LAB_A, f"dpo-mfa@{LAB_A}.api.invalid")
    assert secret is not None


def test_an_incident_names_only_an_advisory_of_the_register(api, security_officer, admin_a):
    """I1: ``advisory_id`` (``incident open --advisory ID``) names an outside report of the vendor's
    advisory register: an id that is not in it is refused (400, one line), and a lab's own
    incident cannot name the processor's register (which it cannot read)."""
    body = {"title": "T", "aware_at": utcnow().isoformat(), "labs": [LAB_A], "advisory_id": "no-such-advisory"}
    r = security_officer.post("/api/v1/incidents", json=body)
    assert r.status_code == 400 and "advisory" in r.json()["error"], (r.status_code, r.text)
    assert len(r.json()["error"].splitlines()) == 1
    mine = {"title": "T", "aware_at": utcnow().isoformat(), "tenant": LAB_A, "advisory_id": "no-such-advisory"}
    r = admin_a.post("/api/v1/incidents", json=mine)
    assert r.status_code == 400 and "advisory" in r.json()["error"], (r.status_code, r.text)
    with store(api) as conn:
        assert conn.execute(select(func.count()).select_from(t.incident)).scalar_one() == 0
    owner = api.accounts["security_officer"].email
    told = {"source": "researcher", "severity": "high", "owner": owner, "summary": "Fichier en vente"}
    r = security_officer.post("/api/v1/advisories", json=told)
    assert r.status_code == 201, r.text
    r = security_officer.post("/api/v1/incidents", json={**body, "advisory_id": r.json()["advisory_id"]})
    assert r.status_code == 201 and r.json()["advisory_id"], r.text


def test_a_workbook_zip_bomb_is_refused_before_it_is_expanded(tmp_path):
    """I1 (any layout, bad input one line): an XLSX whose sheet expands from a few hundred KB into
    400 MB (one cell the XML parser would hold whole in memory) is refused as LeakUnreadable naming
    the workbook, before it is expanded."""
    import time
    import zipfile

    import openpyxl

    from labvault.breach.errors import LeakUnreadable
    from labvault.breach.reader import open_leak

    plain = tmp_path / "plain.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["NIR", "Nom"])
    wb.save(plain)
    path = tmp_path / "bombe.xlsx"
    sheet = "xl/worksheets/sheet1.xml"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for info in src.infolist():
            if info.filename != sheet:
                z.writestr(info.filename, src.read(info.filename))
        with z.open(sheet, "w") as f:
            f.write(b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>')
            f.write(b'<row r="1"><c r="A1" t="inlineStr"><is><t>')
            for _ in range(400):
                f.write(b"A" * 1_000_000)
            f.write(b"</t></is></c></row></sheetData></worksheet>")
    assert path.stat().st_size < 2_000_000
    started = time.perf_counter()
    with pytest.raises(LeakUnreadable) as e:
        leak = open_leak(path)
        for _row in leak.rows():
            pass
    assert time.perf_counter() - started < 2.0
    assert str(e.value).startswith("xlsx file") and "\n" not in str(e.value) and "AAAA" not in str(e.value)


def test_a_file_of_hundreds_of_thousands_of_columns_is_refused_at_once():
    """I1 (bad input one line): 200,000 columns in 1 MB (each header weighed against the words of
    every kind: seconds per MB, half an hour for an upload's 256 MB) are refused at once as
    LeakUnreadable; a table of 60 fields (the 2021 file) reads."""
    import time

    from labvault.breach.errors import LeakUnreadable
    from labvault.breach.reader import MAX_COLUMNS, open_bytes

    cols = 200_000
    data = (";".join(f"c{i}" for i in range(cols)) + "\n" + ";".join("1" for _ in range(cols)) + "\n").encode()
    started = time.perf_counter()
    with pytest.raises(LeakUnreadable) as e:
        open_bytes(data, "large.csv", index=1)
    assert time.perf_counter() - started < 1.0
    assert str(MAX_COLUMNS) in str(e.value) and "\n" not in str(e.value)
    wide = ["nom", "prenom", "nir"] + [f"champ{i}" for i in range(57)]
    row = ["MARTIN", "Claire", "2840375123456"] + ["x"] * 57
    leak = open_bytes((";".join(wide) + "\n" + ";".join(row) + "\n").encode(), "wide.csv", index=1)
    assert len(leak.layout.columns) == 60 and [r.family for r in leak.rows()] == ["MARTIN"]
