"""The demo's step on the lab's day: a request entered, its labels printed and read back, the
specimen received, the analyser's results matched by barcode and judged, validated by two people,
the report, then a correction and the corrected report that names the one it replaces."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from labvault.access import Purpose
from labvault.access.principal import Principal
from labvault.accounts import service
from labvault.cli.common import console
from labvault.cli.demo import DEMO_PASSWORD, DemoAccount, lab_admin_of
from labvault.errors import AccessDenied

TESTS = ("K", "NA", "CREA")  # potassium, sodium, creatinine (eGFR is computed from it)
LABELS_PDF = "etiquettes.pdf"
REPORT_PDF = "compte-rendu-v{version}.pdf"


def _say(text: str) -> None:
    console.print(f"  {text}", highlight=False, markup=False)


def add_lab_staff(rt, tenant: str, accounts: list[DemoAccount]) -> None:
    """The lab's technician and a second biologist, added and enrolled by the lab's admin as the
    demo's other lab accounts are (appended to ``accounts``)."""
    admin = lab_admin_of(rt, tenant)
    for role, email, name in (
        ("technician", f"technician@{tenant}.demo.invalid", f"Léa Girard ({tenant})"),
        ("biologist", f"biologist2@{tenant}.demo.invalid", f"Dr Julien Dumas ({tenant})"),
    ):
        password = DEMO_PASSWORD.format(k=len(accounts) + 1)
        with rt.gateway.unit(admin, Purpose.ADMINISTRATION) as u:
            service.create_account(u, tenant_id=tenant, name=name, email=email, roles=[role])
        with rt.gateway.auth_unit(source_addr="demo", user_agent="labvault-demo") as u:
            secret = service.enrol_directly(u, email, password)
        accounts.append({"tenant": tenant, "role": role, "email": email, "password": password, "totp": secret})
        _say(f"{email:<32} {role:<17} {tenant:<12} password {password}")


def _acting(rt, tenant: str, email: str) -> Principal:
    """A lab account acting in this demo process."""
    with rt.unit(Purpose.ADMINISTRATION) as u:
        a = next(a for a in service.list_accounts(u, tenant) if a["email"] == email)
    return Principal(a["account_id"], a["name"], tenant, frozenset(a["roles"].split(",")), a["kind"])


def _oru(ident, barcode: str, potassium: str, sodium: str, creatinine: str) -> bytes:
    """The analyser's ORU^R01: the specimen named by its barcode (SPM-2), the patient's traits as
    the analyser's middleware had them from the order."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    lines = [
        f"MSH|^~\\&|ANALYSER|AU5800^1.2.250.1.999^ISO|LIS|LAB|{now}+0000||ORU^R01^ORU_R01|DEMO-DAY-1|P|2.5.1",
        f"PID|1||||{ident.family_name}^{ident.given_names.split(' ')[0]}^^^^^L||{ident.birth_date:%Y%m%d}|{ident.sex}",
        f"OBR|1|||24326-1^Electrolytes^LN|||{now}",
        f"OBX|1|NM|2823-3^Potassium^LN||{potassium}|mmol/L^^UCUM|||||F",
        f"OBX|2|NM|2951-2^Sodium^LN||{sodium}|mmol/L^^UCUM|||||F",
        f"OBX|3|NM|2160-0^Creatinine^LN||{creatinine}|mg/L^^UCUM|||||F",
        f"SPM|1|{barcode}||SER^Serum^HL70487",
    ]
    return ("\r".join(lines) + "\r").encode()


def _pdf_lines(pdf: bytes) -> list[str]:
    try:
        import pdfplumber
    except ImportError:  # a test dependency (the lock installs it): the PDF is written all the same
        _say("(pdfplumber is not installed here: the report's text is not read back)")
        return []

    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return [line for page in doc.pages for line in (page.extract_text() or "").splitlines()]


def _barcodes(pdf: bytes) -> list[str]:
    """The barcodes a reader finds on the PDF's first page, rendered at about 430 dpi."""
    import zxingcpp

    try:
        import pypdfium2  # type: ignore[import-untyped]
    except ImportError:  # installed with pdfplumber, a test dependency (the lock installs it)
        _say("(pypdfium2 is not installed here: the label is not read back)")
        return []

    doc = pypdfium2.PdfDocument(pdf)
    try:
        return [b.text for b in zxingcpp.read_barcodes(doc[0].render(scale=6).to_pil())]
    finally:
        doc.close()


def show_lab_day(rt, tenant: str, accounts: list[DemoAccount], seed: int) -> None:
    """The issue's path end to end on one lab, printed a line a step. The patient is generated
    (synthetic names); no NIR is printed."""
    from labvault.ingest import service as ingest
    from labvault.lab import reports, work
    from labvault.lab.catalogue import default_catalogue
    from labvault.lab.labels import BarcodeKind, Label, labels_pdf
    from labvault.synth import LabGenerator

    home: Path = rt.settings.home
    add_lab_staff(rt, tenant, accounts)
    tech = _acting(rt, tenant, f"technician@{tenant}.demo.invalid")
    bio = _acting(rt, tenant, f"biologist@{tenant}.demo.invalid")
    bio2 = _acting(rt, tenant, f"biologist2@{tenant}.demo.invalid")
    feed = _acting(rt, tenant, f"feed@{tenant}.demo.invalid")
    cat = default_catalogue()
    tests = [work.ordered_test(cat.test(code)) for code in TESTS]  # type: ignore[arg-type]
    loinc = {code: work.ordered_test(cat.test(code)).code for code in (*TESTS, "EGFR")}  # type: ignore[arg-type]

    # A new patient of the lab, generated (another seed: not one of the lab's loaded patients).
    ident = LabGenerator(tenant, seed + 15).patient(0).identity
    collected = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    with rt.gateway.unit(tech, Purpose.CARE) as u:
        u.add_patients(tenant, [ident])
        entered = work.enter_request(
            u, tenant, ident.patient_id, tests, collected_at=collected, collector=tech.name, urgent=True
        )
    ((specimen_id, container, kind),) = entered.specimens
    result_of = {code: rid for rid, code in entered.results}
    _say(
        f"request {entered.request_id} entered by {tech.name} for a generated patient "
        f"({ident.sex}, born {ident.birth_date.year}): potassium, sodium, creatinine; "
        f"specimen {specimen_id} ({kind}, {container})"
    )

    # The labels: DataMatrix of the specimen id and the identity of CSP R6211-22, read back.
    given = (ident.used_given_name or ident.given_names.split(" ")[0]) if ident.given_names else ""
    family = ident.birth_name or ident.family_name
    label = Label(specimen_id, family, given, ident.birth_date, ident.sex, collected, container, kind)
    pdf = labels_pdf([label], kind=BarcodeKind.DATAMATRIX)
    with rt.gateway.unit(tech, Purpose.CARE) as u:
        u.audit(tenant, "labels:print", "specimen", 1, refs=[entered.request_id])
    (home / LABELS_PDF).write_bytes(pdf)
    _say(f"labels (50 x 25 mm, DataMatrix): {home / LABELS_PDF}")
    read = _barcodes(pdf)
    _say(f"the label's barcode read back by zxing-cpp: lu: {read[0] if read else '(nothing)'} = {specimen_id}")

    with rt.gateway.unit(tech, Purpose.CARE) as u:
        received = work.receive(u, tenant, read[0] if read else specimen_id)
    _say(f"specimen {received.specimen_id} scanned at reception: {received.status}")

    # The analyser's message names the specimen; ingest matches it and judges each value.
    summary = ingest.Summary("analyser-day.hl7", "hl7v2")
    ing = ingest.Ingestor(rt.gateway, feed, tenant, feed="file", test_mode=rt.settings.test_mode)
    ing.ingest_pieces(ingest.read(_oru(ident, specimen_id, "6,8", "141", "9,0"), file="analyser-day.hl7"), summary)
    _say(
        f"analyser ORU^R01 naming {specimen_id} in SPM-2: {summary.accepted} accepted, "
        f"{summary.rejected} refused{' (' + summary.reasons[0] + ')' if summary.reasons else ''}"
    )
    with rt.gateway.unit(tech, Purpose.CARE) as u:
        rows = {r.code: r for r in u.results_of_request(tenant, entered.request_id)}
        tasks = [x for x in u.callbacks(tenant) if x.result_id == result_of.get(loinc["K"])]
    k, egfr = rows[loinc["K"]], rows.get(loinc["EGFR"])
    critical = " (critical)" if k.flag in ("HH", "LL") else ""
    _say(f"potassium {k.value_num:g} {k.unit}: flag {k.flag}{critical}, judged by catalogue v{k.catalogue_version}")
    for task in tasks:
        minutes = int((task.due_at - task.opened_at).total_seconds() // 60)
        _say(f"call-back task {task.task_id} opened ({task.state}): the prescriber to be called within {minutes} min")
    if egfr is not None:
        _say(f"eGFR (CKD-EPI 2021) computed from the creatinine: {egfr.value_num:g} {egfr.unit}, flag {egfr.flag}")

    every = list(rows)
    ids = [rows[c].result_id for c in every]
    with rt.gateway.unit(tech, Purpose.CARE) as u:
        work.validate_technical(u, tenant, ids)
    _say(f"technical validation by {tech.name}: {len(ids)} results")
    try:
        with rt.gateway.unit(tech, Purpose.CARE) as u:
            work.validate_biological(u, tenant, ids)
    except AccessDenied as exc:
        _say(f"biological validation by {tech.name} too: refused ({exc})")
    with rt.gateway.unit(bio, Purpose.CARE) as u:
        done = work.validate_biological(u, tenant, ids)
    _say(f"biological validation by {bio.name}: {len(done)} results {done[0].status}")

    with rt.gateway.unit(bio, Purpose.CARE) as u:
        first = reports.issue_report(u, tenant, entered.request_id)
    path = home / REPORT_PDF.format(version=first.version)
    path.write_bytes(first.pdf)
    _say(f"report {first.report_id} v{first.version} ({first.status}): {path}")
    labels = [t.label for t in tests] + ["DFG", "Débit de filtration"]
    for line in _pdf_lines(first.pdf):
        if any(line.startswith(x) for x in labels) or "Validé" in line or "validé" in line:
            _say(f"  | {line}")

    # A correction: the sodium was mistyped; corrected by a biologist, validated again by another.
    na = rows[loinc["NA"]].result_id
    with rt.gateway.unit(bio, Purpose.CARE) as u:
        fixed, _ = work.correct_result(u, tenant, na, "138")
        work.validate_technical(u, tenant, [na])
    _say(f"sodium corrected by {bio.name}: {fixed.value_num:g} {fixed.unit}, validated technically")
    try:
        with rt.gateway.unit(bio, Purpose.CARE) as u:
            work.validate_biological(u, tenant, [na])
    except AccessDenied as exc:
        _say(f"biological validation of her own correction by {bio.name}: refused ({exc})")
    with rt.gateway.unit(bio2, Purpose.CARE) as u:
        (again,) = work.validate_biological(u, tenant, [na])
    _say(f"biological validation by {bio2.name}: {again.status}")
    with rt.gateway.unit(bio2, Purpose.CARE) as u:
        second = reports.issue_report(u, tenant, entered.request_id)
    path = home / REPORT_PDF.format(version=second.version)
    path.write_bytes(second.pdf)
    _say(f"report {second.report_id} v{second.version} ({second.status}, replaces {second.replaces}): {path}")
    for line in _pdf_lines(second.pdf):
        if "remplace le compte rendu du" in line or line.startswith(tests[1].label) or "Validé" in line:
            _say(f"  | {line}")
