"""Results judged by the lab's catalogue as they arrive, by hand or from an analyser matched by the
specimen's barcode: reference range, flag, catalogue version, critical value's call-back task,
delta check, calculated tests (eGFR by CKD-EPI 2021, LDL by Friedewald), auto-validation by the
lab's activated rules; and the issue's path end to end, from the request to the corrected report."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta

import pdfplumber
import pypdfium2
import pytest
import zxingcpp
from sqlalchemy import select

from labvault.access import Purpose
from labvault.domain.models import Identity, IdentityStatus, ResultStatus, Workflow
from labvault.errors import AccessDenied
from labvault.lab import service, work
from labvault.lab.catalogue import default_catalogue, default_text
from labvault.lab.labels import BarcodeKind, Label, labels_pdf
from labvault.lab.report import report_from_domain, report_pdf
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab
from tests.identity.helpers import ingest

TENANT = "lab-j"
COLLECTED = datetime(2026, 12, 7, 7, 30, tzinfo=UTC)
CAT = default_catalogue()
K, NA, CREA, EGFR = (work.ordered_test(CAT.test(c)) for c in ("K", "NA", "CREA", "EGFR"))  # type: ignore[arg-type]
CT, HDL, TG, LDL = (work.ordered_test(CAT.test(c)) for c in ("CT", "HDL", "TG", "LDL"))  # type: ignore[arg-type]
RULES = 'version = "av-1"\n[[rule]]\nid = "AV"\ntests = ["*"]\nrequire = ["in_reference_range", "no_critical"]\n'
BORN = date(1970, 3, 4)  # 56 on the day of collection


@pytest.fixture
def lab(gateway):
    make_lab(gateway, TENANT)
    people = {
        "tech": lab_user(gateway, TENANT, "technician", name="Tech"),
        "bio": lab_user(gateway, TENANT, "biologist", name="Bio"),
        "bio2": lab_user(gateway, TENANT, "biologist", name="Dumas"),
        "feed": lab_user(gateway, TENANT, "service", name="Analyser"),
    }
    with gateway.unit(people["bio"], Purpose.CARE) as u:
        u.add_patients(TENANT, [Identity("pat-j1", None, IdentityStatus.PROVISIONAL, "ROUX", "Anna", BORN, "F")])
    return gateway, people


def enter(gw, who, tests, *, collected=COLLECTED, pregnant=False):
    with gw.unit(who, Purpose.CARE) as u:
        return work.enter_request(u, TENANT, "pat-j1", list(tests), collected_at=collected, pregnant=pregnant)


def ids(entered):
    return {code: rid for rid, code in entered.results}


def stored(gw, who, request_id):
    with gw.unit(who, Purpose.CARE) as u:
        return {r.code: r for r in u.results_of_request(TENANT, request_id)}


def activate(gw, p):
    with gw.unit(p["bio"], Purpose.CARE) as u:
        number = service.write_rules(u, TENANT, RULES).number
        service.activate_rules(u, TENANT, number)


def events(raw_engine, action):
    with raw_engine.connect() as conn:
        rows = conn.execute(select(t.audit_event.c.object_refs).where(t.audit_event.c.action == action)).all()
    return [json.loads(r.object_refs) for r in rows]


def test_critical_potassium_entered_by_hand_opens_a_callback_task(lab, raw_engine):
    """A potassium of 6.8 mmol/L (critical high 6.2 in the catalogue) entered by hand: flagged HH
    against the catalogue's range, judged by catalogue version 0 (the default one), and a call-back
    task opened at once, due within 30 minutes."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K, NA))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        res, judged = work.enter_result(u, TENANT, ids(entered)[K.code], "6,8")
        tasks = u.callbacks(TENANT)
    assert (res.flag, res.ref_low, res.ref_high, res.catalogue_version) == ("HH", 3.5, 5.1, 0)
    assert judged.callback_task_id is not None
    assert [(x.task_id, x.result_id, x.state) for x in tasks] == [(judged.callback_task_id, res.result_id, "open")]
    assert tasks[0].due_at - tasks[0].opened_at == timedelta(minutes=work.CALLBACK_MINUTES)
    assert "valeur critique (haute) : appel à faire" in work.review(res).notes
    assert events(raw_engine, "callback:open") == [[judged.callback_task_id, res.result_id]]
    row = stored(gw, p["bio"], entered.request_id)[K.code]
    assert (row.flag, row.catalogue_version, row.value_num) == ("HH", 0, 6.8)


def test_a_creatinine_jump_beyond_its_delta_rule_is_flagged(lab):
    """Creatinine's delta rule: at most 50 % change within 7 days. 8.0 then 16.0 mg/L two days later
    fails it (+100 %), flagged on the result for the validation screen; 9.0 passes."""
    gw, p = lab
    first = enter(gw, p["tech"], (CREA,), collected=COLLECTED - timedelta(days=2))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        before, _ = work.enter_result(u, TENANT, ids(first)[CREA.code], "8.0")
    assert not work.review(before).delta_failed  # no previous result
    jump = enter(gw, p["tech"], (CREA,))
    calm = enter(gw, p["tech"], (CREA,), collected=COLLECTED - timedelta(days=1))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        high, _ = work.enter_result(u, TENANT, ids(jump)[CREA.code], "16.0")
        fine, _ = work.enter_result(u, TENANT, ids(calm)[CREA.code], "9.0")
    seen = work.review(high)
    assert seen.delta_failed and seen.flag == "H" and (seen.ref_low, seen.ref_high) == (5.5, 10.5)
    assert "delta-check échoué : +8 mg/L, +100 % depuis le 2026-12-05" in seen.notes
    assert not work.review(fine).delta_failed
    assert "delta-check conforme : +1 mg/L, +12 % depuis le 2026-12-05" in work.review(fine).notes


def ckd_epi_2021_by_hand(scr_mg_l: float, age: int, female: bool) -> float:
    """The CKD-EPI 2021 equation written out again (Inker et al., NEJM 2021), creatinine in mg/L."""
    scr = scr_mg_l / 10  # mg/dL
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    return 142 * min(scr / kappa, 1) ** alpha * max(scr / kappa, 1) ** -1.2 * 0.9938**age * (1.012 if female else 1)


def test_egfr_is_computed_into_the_request_when_creatinine_arrives(lab):
    """Creatinine 9.0 mg/L for a woman of 56 at collection: an eGFR result is added to the same
    request with the CKD-EPI 2021 value (rounded as the catalogue says), itself judged."""
    gw, p = lab
    entered = enter(gw, p["tech"], (CREA,))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        _, judged = work.enter_result(u, TENANT, ids(entered)[CREA.code], "9.0")
    assert len(judged.calculated) == 1
    rows = stored(gw, p["bio"], entered.request_id)
    egfr = rows[EGFR.code]
    assert egfr.result_id == judged.calculated[0] and egfr.request_id == entered.request_id
    expected = round(ckd_epi_2021_by_hand(9.0, 56, True))
    assert expected == 75  # the equation gives 74.8...
    assert (egfr.value_num, egfr.unit, egfr.workflow) == (expected, "mL/min/{1.73_m2}", Workflow.ENTERED)
    assert (egfr.flag, egfr.ref_low, egfr.catalogue_version) == ("L", 90, 0)


def test_ldl_by_friedewald_or_the_reason_it_is_not(lab):
    """LDL = total - HDL - TG/5 (g/L) once the three are in the request; with triglycerides at or
    above 3.4 g/L it is not computed and the reason is on the result that completed the inputs."""
    gw, p = lab
    ok = enter(gw, p["tech"], (CT, HDL, TG))
    too_high = enter(gw, p["tech"], (CT, HDL, TG))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        for request, tg in ((ok, "1.00"), (too_high, "4.00")):
            work.enter_result(u, TENANT, ids(request)[CT.code], "2.20")
            work.enter_result(u, TENANT, ids(request)[HDL.code], "0.55")
            last, judged = work.enter_result(u, TENANT, ids(request)[TG.code], tg)
    assert stored(gw, p["bio"], ok.request_id)[LDL.code].value_num == pytest.approx(2.20 - 0.55 - 1.00 / 5)
    assert LDL.code not in stored(gw, p["bio"], too_high.request_id)
    assert judged.calculated == ()
    assert "Cholestérol LDL (calculé, Friedewald) non calculé : triglycérides trop élevés" in work.review(last).notes


def test_activated_rules_release_a_normal_result_and_hold_an_abnormal_one(lab, raw_engine):
    """The lab's activated rule set (av-1: rule AV, in range and not critical): a normal sodium is
    released (workflow biological, final, released_by_rule av-1:AV, the audit event names the rule);
    a high potassium is held, its reason kept for the validation screen."""
    gw, p = lab
    activate(gw, p)
    entered = enter(gw, p["tech"], (K, NA))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        na, _ = work.enter_result(u, TENANT, ids(entered)[NA.code], "140")
        k, _ = work.enter_result(u, TENANT, ids(entered)[K.code], "5.6")
    assert (na.workflow, na.status, na.released_by_rule, na.flag) == (
        Workflow.BIOLOGICAL,
        ResultStatus.FINAL,
        "av-1:AV",
        "N",
    )
    assert events(raw_engine, "result:autovalidate") == [[na.result_id, "rule:av-1:AV"]]
    rows = stored(gw, p["bio"], entered.request_id)
    assert (rows[NA.code].workflow, rows[NA.code].released_by_rule) == (Workflow.BIOLOGICAL, "av-1:AV")
    assert (k.workflow, k.released_by_rule, k.flag) == (Workflow.ENTERED, None, "H")
    assert work.review(rows[K.code]).held == "hors des valeurs de référence"
    assert work.review(rows[NA.code]).held is None


def test_without_activated_rules_nothing_is_released(lab, raw_engine):
    """Rules written but never activated, or none at all: a normal result stays for validation."""
    gw, p = lab
    with gw.unit(p["bio"], Purpose.CARE) as u:
        service.write_rules(u, TENANT, RULES)
    entered = enter(gw, p["tech"], (NA,))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        na, _ = work.enter_result(u, TENANT, ids(entered)[NA.code], "140")
    assert (na.workflow, na.released_by_rule, na.flag) == (Workflow.ENTERED, None, "N")
    assert work.review(na).held == "aucune règle d'auto-validation active"
    assert events(raw_engine, "result:autovalidate") == []


def test_every_result_records_the_catalogue_version_it_was_judged_by(lab):
    """Version 0 (the default catalogue) until the lab loads its own; then version 1, whose
    potassium range the lab changed."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K, NA))
    with gw.unit(p["tech"], Purpose.CARE) as u:
        before, _ = work.enter_result(u, TENANT, ids(entered)[K.code], "5.3")
    own = default_text().replace('version = "labvault-default-2025.1"', 'version = "lab-j-1"')
    own = own.replace("range = [{ low = 3.5, high = 5.1 }]", "range = [{ low = 3.5, high = 5.5 }]", 1)
    with gw.unit(p["bio"], Purpose.CARE) as u:
        assert service.load_catalogue(u, TENANT, own).number == 1
    with gw.unit(p["tech"], Purpose.CARE) as u:
        after, _ = work.enter_result(u, TENANT, ids(entered)[NA.code], "140")
        again, _ = work.enter_result(u, TENANT, ids(entered)[K.code], "5.3")
    assert (before.catalogue_version, before.flag, before.ref_high) == (0, "H", 5.1)
    assert (after.catalogue_version, again.catalogue_version) == (1, 1)
    assert (again.flag, again.ref_high) == ("N", 5.5)


def oru(control: str, barcode: str, *obx: str) -> bytes:
    lines = [
        f"MSH|^~\\&|ANALYSER|LAB1^1.2.3^ISO|LIS|LAB|20261207093000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        "PID|1||||ROUX^Anna^^^^^L||19700304|F",
        "OBR|1|||24326-1^Electrolytes^LN|||20261207083000",
        *(f"OBX|{i}|NM|{x}|||F" for i, x in enumerate(obx, 1)),
        f"SPM|1|{barcode}||SER^Serum^HL70487",
    ]
    return ("\r".join(lines) + "\r").encode()


def test_results_from_an_analyser_matched_by_barcode_are_judged_alike(lab, raw_engine):
    """An analyser's ORU naming the specimen's barcode: each result judged by the catalogue (its
    range, not the analyser's), the critical potassium's call-back task opened, eGFR computed from
    the creatinine, the normal sodium released by the activated rules."""
    gw, p = lab
    activate(gw, p)
    entered = enter(gw, p["tech"], (K, NA, CREA))
    barcode = entered.specimens[0][0]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, barcode)
    summary = ingest(
        gw,
        p["feed"],
        oru(
            "J1",
            barcode,
            "2823-3^Potassium^LN||6,8|mmol/L^^UCUM|3.0-5.0|",
            "2951-2^Sodium^LN||141|mmol/L^^UCUM|130-150|",
            "2160-0^Creatinine^LN||9,0|mg/L^^UCUM||",
        ),
        tenant=TENANT,
    )
    assert summary.accepted == 1, summary.reasons
    rows = stored(gw, p["bio"], entered.request_id)
    k, na, crea = rows[K.code], rows[NA.code], rows[CREA.code]
    assert (k.flag, k.ref_low, k.ref_high, k.catalogue_version, k.workflow) == ("HH", 3.5, 5.1, 0, Workflow.ENTERED)
    assert (na.flag, na.ref_low, na.ref_high, na.workflow, na.released_by_rule) == (
        "N",
        136,
        145,
        Workflow.BIOLOGICAL,
        "av-1:AV",
    )
    assert (crea.flag, crea.entered_by) == ("N", p["feed"].account_id)
    assert rows[EGFR.code].value_num == round(ckd_epi_2021_by_hand(9.0, 56, True))
    assert all(r.catalogue_version == 0 for r in rows.values())
    with gw.unit(p["bio"], Purpose.CARE) as u:
        assert [x.result_id for x in u.callbacks(TENANT)] == [k.result_id]
    assert sorted(e[0] for e in events(raw_engine, "result:autovalidate")) == sorted([na.result_id, crea.result_id])


def _text(pdf: bytes) -> str:
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        return "\n".join(page.extract_text() for page in doc.pages)


def _report(gw, who, request_id, specimen_id, *, version, replaces=None):
    issued = datetime.now(UTC)
    with gw.unit(who, Purpose.CARE) as u:
        identity = u.get_patient(TENANT, "pat-j1")
        request = next(r for r in u.requests_of(TENANT, "pat-j1") if r.request_id == request_id)
        rep = report_from_domain(
            report_id=f"CR-{request_id[:8]}",
            version=version,
            tenant=u.tenant(TENANT),
            lab_address="12 rue des Tilleuls, 75012 Paris",
            identity=identity,
            request=request,
            specimens=[u.specimen(TENANT, specimen_id)],
            results=work.for_report(u.results_of_request(TENANT, request_id)),
            prescriber=None,
            issued_at=issued,
            replaces=replaces,
        )
    return issued, _text(report_pdf(rep))


def test_end_to_end_from_the_request_to_the_corrected_report(lab):
    """The issue's path: a request entered; its labels' barcode, read back from the PDF by
    zxing-cpp, is the specimen id; the specimen received by that id; the analyser's ORU names it;
    technical validation by a technician, biological validation by a biologist who did not enter the
    results; the report PDF holds each value, unit, range, flag and the biologist; a correction
    (entered by a biologist, who may then not validate it biologically) validated again gives a
    corrected report saying which one it replaces."""
    gw, p = lab
    entered = enter(gw, p["tech"], (K, NA))
    ((specimen_id, container, kind),) = entered.specimens
    label = Label(specimen_id, "ROUX", "Anna", BORN, "F", COLLECTED, container, kind)
    # DataMatrix: a 32-character specimen id in Code 128 on 50 mm is too dense to read every time
    # at this resolution (about 430 dpi).
    doc = pypdfium2.PdfDocument(labels_pdf([label], kind=BarcodeKind.DATAMATRIX))
    read = [b.text for b in zxingcpp.read_barcodes(doc[0].render(scale=6).to_pil())]
    assert read == [specimen_id]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.receive(u, TENANT, read[0])
    summary = ingest(
        gw,
        p["feed"],
        oru(
            "J2",
            read[0],
            "2823-3^Potassium^LN||5,6|mmol/L^^UCUM|3.5-5.1|H",
            "2951-2^Sodium^LN||141|mmol/L^^UCUM|136-145|N",
        ),
        tenant=TENANT,
    )
    assert summary.accepted == 1, summary.reasons
    k_id, na_id = ids(entered)[K.code], ids(entered)[NA.code]
    with gw.unit(p["tech"], Purpose.CARE) as u:
        work.validate_technical(u, TENANT, [k_id, na_id])
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        done = work.validate_biological(u, TENANT, [k_id, na_id])
    assert [r.status for r in done] == [ResultStatus.FINAL, ResultStatus.FINAL]
    first_at, text = _report(gw, p["bio"], entered.request_id, specimen_id, version=1)
    assert "5,6 H mmol/L 3,5 à 5,1" in text and "141 N mmol/L 136 à 145" in text
    assert "Dumas lab-j" in text and "Compte rendu corrigé" not in text
    assert "contrôles" not in text  # the judge's notes stay off the patient's report

    with gw.unit(p["bio"], Purpose.CARE) as u:
        fixed, _ = work.correct_result(u, TENANT, na_id, "138")
        work.validate_technical(u, TENANT, [na_id])
    assert (fixed.workflow, fixed.flag) == (Workflow.ENTERED, "N")
    with gw.unit(p["bio"], Purpose.CARE) as u, pytest.raises(AccessDenied):
        work.validate_biological(u, TENANT, [na_id])  # the one who entered the correction
    with gw.unit(p["bio2"], Purpose.CARE) as u:
        (again,) = work.validate_biological(u, TENANT, [na_id])
    assert (again.status, again.value_num, again.version) == (ResultStatus.CORRECTED, 138.0, 3)
    _, corrected = _report(gw, p["bio"], entered.request_id, specimen_id, version=2, replaces=first_at)
    assert "Compte rendu corrigé" in corrected and "remplace le compte rendu du" in corrected
    assert "138 N mmol/L 136 à 145" in corrected and "5,6 H mmol/L 3,5 à 5,1" in corrected
