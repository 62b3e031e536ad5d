"""The incident register (I1..I5): the processor's incident over several labs, each lab's 72-hour
clock and its reminders with a moved clock, the delay-reason rule, the phased notices and drafts,
the Art. 34 letters or exemption, and who may do what (no vendor role decides, drafts, exempts or
opens the letters; a lab never reaches another lab's incident)."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pypdfium2
import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.access.breach import _aad
from labvault.access.principal import MONITOR
from labvault.breach import incidents
from labvault.breach.notices import render_html
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Identity, IdentityStatus
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.ids import SIMULATION_MARKER, simulated_clock, utcnow
from labvault.monitoring import dispatch
from labvault.store import schema as t
from tests.access.conftest import vendor_user
from tests.conftest import lab_user, make_lab

LAB_A, LAB_B = "lab-rhone", "lab-isere"
ANALYSIS = "a" * 32
SCOPE = {
    LAB_A: {"patients": 3, "records": 41, "ambiguous": 1, "categories": {"hiv": 2, "pregnancy": 1}},
    LAB_B: {"patients": 7, "records": 93, "ambiguous": 0, "categories": {"oncology": 5}},
}
AFFECTED = {LAB_A: ["pat-a0", "pat-a2"], LAB_B: ["pat-b0"]}
FIELDS = ["nir", "family_name", "given_names", "birth_date", "code", "value", "text"]


def pdf_text(data: bytes) -> str:
    doc = pypdfium2.PdfDocument(data)
    return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def _admin_conn(gw):
    conn = gw.engine.connect()
    if conn.dialect.name == "postgresql":  # the register's tables and the trail, across labs
        conn.exec_driver_sql("SELECT set_config('labvault.tenant', '*', false)")
    return conn


def _as(conn, tenant: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT set_config('labvault.tenant', '{tenant}', true)")


def plant_analysis(gw) -> None:
    """A leak analysis's rows as the analysis writes them: the platform's summary, one match per lab
    (the sealed patient list is the analysis's own; the register never opens it)."""
    now = utcnow()
    with gw.engine.begin() as conn:
        _as(conn, PLATFORM)
        conn.execute(
            t.leak_analysis.insert().values(
                tenant_id=PLATFORM,
                analysis_id=ANALYSIS,
                files="[]",
                rows_total=140,
                rows_matched=134,
                rows_ambiguous=1,
                rows_unmatched=5,
                labs=json.dumps([LAB_A, LAB_B]),
                summary="{}",
                created_by="so",
                created_at=now,
            )
        )
        for lab, sc in SCOPE.items():
            _as(conn, lab)
            conn.execute(
                t.leak_match.insert().values(
                    tenant_id=lab,
                    analysis_id=ANALYSIS,
                    patients=sc["patients"],
                    records=sc["records"],
                    ambiguous=sc["ambiguous"],
                    categories=json.dumps(sc["categories"]),
                    fields=json.dumps(FIELDS),
                    source=json.dumps({"package_id": f"pkg-{lab}", "method": "fingerprint", "score": 1.0, "hits": 9}),
                    key_version=1,
                    patients_enc=gw.keys.wrap(lab, json.dumps(AFFECTED[lab]).encode(), _aad(lab, ANALYSIS)),
                    created_at=now,
                )
            )


@pytest.fixture
def world(gateway):
    gw = gateway
    make_lab(gw, LAB_A)
    make_lab(gw, LAB_B, "380000018")
    people = {
        "so": vendor_user(gw, "security_officer"),
        "support": vendor_user(gw, "support"),
        "operator": vendor_user(gw, "operator"),
        "padmin": vendor_user(gw, "platform_admin"),
        "dpo_a": lab_user(gw, LAB_A, "lab_dpo", name="Dpo"),
        "admin_a": lab_user(gw, LAB_A, "lab_admin", name="Admin"),
        "bio_a": lab_user(gw, LAB_A, "biologist", name="Bio"),
        "dpo_b": lab_user(gw, LAB_B, "lab_dpo", name="Dpo"),
        "admin_b": lab_user(gw, LAB_B, "lab_admin", name="Admin"),
    }
    with gw.unit(people["bio_a"], Purpose.CARE) as u:
        u.add_patients(
            LAB_A,
            [
                Identity(
                    f"pat-a{i}",
                    None,
                    IdentityStatus.PROVISIONAL,
                    f"MARTIN{i}",
                    "Claire",
                    date(1980, 1, 2 + i),
                    "F",
                    address=f"{i} rue de la République;69002 Lyon",
                )
                for i in range(3)
            ],
        )
    plant_analysis(gw)
    return gw, people


def _open(gw, so, aware):
    with gw.unit(so, Purpose.BREACH) as u:
        return incidents.open_incident(
            u, title="Fichier de résultats publié sur un forum", aware_at=aware, analysis_id=ANALYSIS
        )


def _sim(tmp_path):
    (tmp_path / SIMULATION_MARKER).write_text("")
    start = (utcnow() + timedelta(minutes=1)).replace(microsecond=0)
    return simulated_clock(start, home=tmp_path), start


def test_processor_incident_each_lab_its_own_scope_notice_and_draft(world, tmp_path):
    """I1, I2, I3, I5: the processor's incident over two labs: each lab's part carries its own counts
    and ENISA score; each lab's notice and Art. 33 draft (JSON, HTML, PDF) name that lab only, never
    the other's id, name, counts or source; versions are kept (initial, then complementary)."""
    gw, p = world
    inc = _open(gw, p["so"], utcnow() - timedelta(hours=2))
    assert inc.labs == tuple(sorted([LAB_A, LAB_B]))
    part_a, part_b = inc.part(LAB_A), inc.part(LAB_B)
    assert (part_a.patients, part_a.records, part_b.patients, part_b.records) == (3, 41, 7, 93)
    assert part_a.severity["dpc"] == 4 and part_a.severity["ei"] == 1 and part_a.severity["score"] == 5.0
    assert not part_a.clock_started  # the processor's incident: the lab's clock starts at its notice
    with gw.unit(p["so"], Purpose.BREACH) as u:
        first = incidents.send_notices(u, inc.incident_id)
        second = incidents.send_notices(u, inc.incident_id, measures=["fichier retiré du forum"])
    assert sorted((v.tenant_id, v.phase, v.version) for v in first) == [(LAB_B, "initial", 1), (LAB_A, "initial", 1)]
    assert {v.phase for v in second} == {"complementary"}
    for lab, other in ((LAB_A, LAB_B), (LAB_B, LAB_A)):
        admin = p["admin_a"] if lab == LAB_A else p["admin_b"]
        with gw.unit(admin, Purpose.BREACH) as u:
            seen = u.incident(inc.incident_id, lab)
            kept = u.incident_versions(inc.incident_id, lab, "notice")
            d1 = incidents.draft(u, inc.incident_id, lab)
            d2 = incidents.draft(u, inc.incident_id, lab, measures_taken=["mots de passe renouvelés"])
            drafts = u.incident_versions(inc.incident_id, lab, "art33")
        assert seen.labs == (lab,) and [x.tenant_id for x in seen.parts] == [lab]
        assert seen.part(lab).clock_started and seen.part(lab).notice_at is not None
        assert [v.phase for v in kept] == ["initial", "complementary"]
        assert kept[1].body["measures"] == ["fichier retiré du forum"]
        assert (d1.phase, d2.phase) == ("initial", "complementary") and len(drafts) == 2
        texts = [json.dumps(v.body, ensure_ascii=False) for v in (*kept, *drafts)]
        texts += [render_html(v.body) for v in (*kept, *drafts)]
        texts += [pdf_text(incidents.render(drafts[-1], "pdf")), pdf_text(incidents.render(kept[-1], "pdf"))]
        for text in texts:
            assert other not in text and f"Lab {other}" not in text and f"pkg-{other}" not in text
            assert f'"records": {SCOPE[other]["records"]}' not in text
        assert str(SCOPE[lab]["records"]) in texts[-1] and str(SCOPE[lab]["records"]) in texts[-2]
        body = drafts[-1].body
        assert body["nombre_approximatif_de_personnes"] == SCOPE[lab]["patients"]
        assert body["responsable_du_traitement"]["identifiant"] == lab
        assert body["delegue_protection_donnees"]["courriel"].startswith("dpo-")
        assert body["mesures_prises"] == ["mots de passe renouvelés"]
        assert "numéro de sécurité sociale (NIR)" in body["categories_de_donnees"]
        assert "Projet de notification" in texts[-2]
    # the platform's timeline holds the notice steps; lab A's own timeline only its own steps
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        steps = u.incident_timeline(inc.incident_id, LAB_A)
    assert {s.tenant_id for s in steps} == {LAB_A}
    assert [s.step for s in steps][:4] == ["opened", "analysed", "notice", "notice"]


def test_vendor_roles_and_other_labs_are_refused(world, tmp_path):
    """I1, I4, G1: no vendor role decides, records the notification, drafts, exempts or opens the
    letters of a lab; the operator, support and platform admin open no incident; lab B is refused
    on lab A's part, and does not find lab A's own incident."""
    gw, p = world
    inc = _open(gw, p["so"], utcnow() - timedelta(hours=1))
    actions = {
        "decide": lambda u: u.incident_decide(inc.incident_id, LAB_A, decision="notify", reasoning="risque élevé"),
        "notified": lambda u: u.incident_notified(inc.incident_id, LAB_A, at=utcnow(), reference="CNIL-1"),
        "draft": lambda u: incidents.draft(u, inc.incident_id, LAB_A),
        "exempt": lambda u: u.incident_exempt(inc.incident_id, LAB_A, ground="encrypted", reason="chiffré"),
        "letters": lambda u: incidents.write_letters(u, inc.incident_id, LAB_A, tmp_path / "l", patients=["pat-a0"]),
        "art33-read": lambda u: u.incident_versions(inc.incident_id, LAB_A, "art33"),
    }
    for role in ("so", "support", "operator", "padmin"):
        for _name, act in actions.items():
            with pytest.raises(AccessDenied), gw.unit(p[role], Purpose.BREACH) as u:
                act(u)
    for role in ("support", "operator", "padmin"):
        with pytest.raises(AccessDenied), gw.unit(p[role], Purpose.BREACH) as u:
            incidents.open_incident(u, title="x", aware_at=utcnow(), labs=[LAB_A], tenant=PLATFORM)
    with gw.unit(p["padmin"], Purpose.BREACH) as u:  # the platform admin reads the register
        assert [i.incident_id for i in u.incidents()] == [inc.incident_id]
    # lab B on lab A's part: refused and recorded; the biologist of lab A: no incident role
    for who, tenant in ((p["admin_b"], LAB_A), (p["dpo_b"], LAB_A), (p["bio_a"], LAB_A)):
        with pytest.raises(AccessDenied), gw.unit(who, Purpose.BREACH) as u:
            u.incident(inc.incident_id, tenant)
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        own = incidents.open_incident(u, title="Poste volé", aware_at=utcnow(), tenant=LAB_A)
    with pytest.raises(NotFound), gw.unit(p["admin_b"], Purpose.BREACH) as u:
        u.incident(own.incident_id, LAB_B)
    with pytest.raises(AccessDenied), gw.unit(p["admin_b"], Purpose.BREACH) as u:
        u.incident_decide(own.incident_id, LAB_A, decision="no-risk", reasoning="x")
    with gw.unit(p["admin_b"], Purpose.BREACH) as u:
        assert [i.incident_id for i in u.incidents(LAB_B)] == [inc.incident_id]
    # a lab's admin decides but never opens the letters (the lab's DPO only)
    with pytest.raises(AccessDenied), gw.unit(p["admin_a"], Purpose.BREACH) as u:
        u.incident_addressees(own.incident_id, LAB_A, ["pat-a0"])
    denied = _denied(gw, LAB_A)
    assert {"incident:decide", "incident:letters", "incident:read"} <= denied


def _denied(gw, tenant):
    ev = t.audit_event
    with _admin_conn(gw) as conn:
        rows = conn.execute(select(ev.c.action).where(ev.c.tenant_id == tenant, ev.c.outcome == "denied")).all()
    return {r.action for r in rows}


def test_the_clock_reminders_and_the_delay_reason_with_a_moved_clock(world, tmp_path):
    """I3, H1: each lab's 72-hour clock starts at the processor's notice; the monitoring process
    sends the notice to the lab's channels, then reminders at 24, 48 and 66 hours, once each, as
    alerts on the lab; a notification recorded past the deadline is refused without a reason for
    the delay, accepted with one; the lab's own incident runs from its own awareness."""
    gw, p = world
    sim, start = _sim(tmp_path)
    with sim as clock:
        inc = _open(gw, p["so"], start - timedelta(hours=5))
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            assert dispatch.remind_incidents(u) == []  # no notice yet: no clock, nothing to send
        clock.advance(timedelta(hours=1))
        with gw.unit(p["so"], Purpose.BREACH) as u:
            incidents.send_notices(u, inc.incident_id)
        notice_at = clock.now
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            sent = dispatch.remind_incidents(u)
        assert sorted((r.tenant_id, r.kind) for r in sent) == [(LAB_B, "notice"), (LAB_A, "notice")]
        got = []
        for hours in (23, 1, 1, 23, 1, 17, 1, 1, 10):
            clock.advance(timedelta(hours=hours))
            with gw.unit(MONITOR, Purpose.MONITORING) as u:
                got += [
                    (round((clock.now - notice_at) / timedelta(hours=1)), r.kind)
                    for r in dispatch.remind_incidents(u)
                    if r.tenant_id == LAB_A
                ]
        assert got == [(24, "reminder-24h"), (48, "reminder-48h"), (66, "reminder-66h")]
        with gw.unit(p["admin_a"], Purpose.MONITORING) as u:
            rules = sorted(a.rule_id for a in u.alerts(LAB_A))
        assert rules == ["incident-clock-24h", "incident-clock-48h", "incident-clock-66h", "incident-notice"]
        with gw.unit(p["admin_a"], Purpose.BREACH) as u:
            part = u.incident(inc.incident_id, LAB_A).part(LAB_A)
        assert part.deadline == notice_at + timedelta(hours=72) and part.reminders == 3
        late = notice_at + timedelta(hours=75)
        assert clock.now >= late
        with pytest.raises(InvalidInput, match="reason for the delay"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
            u.incident_notified(inc.incident_id, LAB_A, at=late, reference="CNIL-2026-77")
        with gw.unit(p["dpo_a"], Purpose.BREACH) as u:
            done = u.incident_notified(
                inc.incident_id,
                LAB_A,
                at=late,
                reference="CNIL-2026-77",
                delay_reason="le fichier a été analysé par le sous-traitant avant que l'étendue soit connue",
            )
            reasons = u.incident_reasons(inc.incident_id, LAB_A)
            draft = incidents.draft(u, inc.incident_id, LAB_A)
        assert done.state == "notified" and done.authority_ref == "CNIL-2026-77"
        assert reasons["delay"].startswith("le fichier")
        assert draft.body["motifs_du_retard"].startswith("le fichier")
        # within the deadline no reason is asked: lab B notified at 70 h
        with gw.unit(p["dpo_b"], Purpose.BREACH) as u:
            ok = u.incident_notified(inc.incident_id, LAB_B, at=notice_at + timedelta(hours=70), reference="CNIL-B")
        assert ok.state == "notified"
        # notified labs get no more reminders; a lab's own incident runs from its own awareness
        with gw.unit(p["admin_a"], Purpose.BREACH) as u:
            own = incidents.open_incident(u, title="Poste volé", aware_at=clock.now - timedelta(hours=30), tenant=LAB_A)
        assert own.part(LAB_A).deadline == clock.now + timedelta(hours=42) and own.part(LAB_A).clock_started
        with gw.unit(MONITOR, Purpose.MONITORING) as u:
            again = dispatch.remind_incidents(u)
        assert [(r.incident_id, r.kind) for r in again] == [(own.incident_id, "reminder-24h")]
    # the register holds references only: no delay reason in clear
    with _admin_conn(gw) as conn:
        clear = json.dumps([list(map(str, r)) for r in conn.execute(select(t.incident_lab)).all()])
        steps = json.dumps([list(map(str, r)) for r in conn.execute(select(t.incident_step)).all()])
    assert "analysé" not in clear and "analysé" not in steps


def test_letters_one_pdf_per_affected_patient_or_the_exemption(world, tmp_path):
    """I4: the lab's DPO writes one plain-French letter per affected patient, addressed with the
    name and address opened under the breach purpose, audited with the count; patients outside
    the incident's list are refused; the other lab exempts itself with a ground and a reason."""
    gw, p = world
    inc = _open(gw, p["so"], utcnow())
    with gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_decide(inc.incident_id, LAB_A, decision="notify", reasoning="données de santé exposées")
        paths = incidents.write_letters(u, inc.incident_id, LAB_A, tmp_path / "a")  # the analysis's list
    assert [x.name for x in paths] == ["lettre-00001.pdf", "lettre-00002.pdf"]
    first = pdf_text(paths[0].read_bytes()).replace("\r\n", " ")
    assert "Claire MARTIN0" in first and "69002 Lyon" in first and "numéro de sécurité sociale" in first
    assert "protection des données : Dpo lab-rhone" in first and "lab_dpo@lab.invalid" in first
    assert LAB_B not in first
    assert "MARTIN2" in pdf_text(paths[1].read_bytes())
    with pytest.raises(AccessDenied), gw.unit(p["dpo_a"], Purpose.BREACH) as u:  # not in the recorded list
        u.incident_addressees(inc.incident_id, LAB_A, ["pat-a1"])
    with pytest.raises(AccessDenied), gw.unit(p["dpo_a"], Purpose.CARE) as u:  # only under the breach purpose
        u.incident_addressees(inc.incident_id, LAB_A, ["pat-a0"])
    with pytest.raises(AccessDenied), gw.unit(p["dpo_b"], Purpose.BREACH) as u:  # lab A's patient: not B's list
        u.incident_addressees(inc.incident_id, LAB_B, ["pat-a0"])
    with pytest.raises(NotFound), gw.unit(p["dpo_b"], Purpose.BREACH) as u:  # listed, but not stored in lab B
        u.incident_addressees(inc.incident_id, LAB_B)
    with gw.unit(p["admin_b"], Purpose.BREACH) as u:
        ex = u.incident_exempt(inc.incident_id, LAB_B, ground="encrypted", reason="copie chiffrée, clé non dérobée")
    assert ex.art34 == "exempt-encrypted"
    with pytest.raises(InvalidInput, match="exemption"), gw.unit(p["dpo_b"], Purpose.BREACH) as u:
        u.incident_addressees(inc.incident_id, LAB_B, ["pat-b0"])
    with gw.unit(p["admin_a"], Purpose.BREACH) as u:
        part = u.incident(inc.incident_id, LAB_A).part(LAB_A)
        steps = [s.step for s in u.incident_timeline(inc.incident_id, LAB_A)]
    assert (part.art34, part.letters) == ("letters", 2) and "letters" in steps
    ev = t.audit_event
    with _admin_conn(gw) as conn:
        opened = conn.execute(
            select(ev.c.record_count, ev.c.object_refs).where(
                ev.c.tenant_id == LAB_A, ev.c.action == "incident:letters:open"
            )
        ).all()
    assert [r.record_count for r in opened] == [2] and "pat-a0" not in str(opened[0].object_refs)


def test_update_needs_a_reason_for_the_severity_and_close_needs_the_decision(world):
    """I1: facts, effects and remedial action are sealed (never in clear in the store); changing the
    ENISA score needs a reason; a lab's own incident closes only after its decision."""
    gw, p = world
    secret = "Dossier de Mme MARTIN0 vu sur le forum"
    with gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        own = incidents.open_incident(u, title="Poste volé", aware_at=utcnow(), tenant=LAB_A, facts={"facts": secret})
        with pytest.raises(InvalidInput, match="severity reason"):
            u.incident_update(own.incident_id, tenant_id=LAB_A, severity={"dpc": 1, "ei": 1, "cb": 0, "score": 1})
        done = u.incident_update(
            own.incident_id,
            tenant_id=LAB_A,
            facts={"remedial": "poste révoqué"},
            severity={"dpc": 4, "ei": 0.5, "cb": 0, "score": 2, "level": "medium"},
            severity_reason="disque chiffré",
            state="contained",
        )
    assert done.facts["facts"] == secret and done.facts["remedial"] == "poste révoqué"
    assert done.state == "contained" and done.severity["score"] == 2
    with pytest.raises(InvalidInput, match="decision"), gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_close(own.incident_id, LAB_A)
    with gw.unit(p["dpo_a"], Purpose.BREACH) as u:
        u.incident_decide(own.incident_id, LAB_A, decision="no-risk", reasoning="disque chiffré, clé non dérobée")
        closed = u.incident_close(own.incident_id, LAB_A)
        steps = [s.step for s in u.incident_timeline(own.incident_id, LAB_A)]
    assert closed.state == "closed" and steps == ["opened", "updated", "decided", "closed"]
    with _admin_conn(gw) as conn:
        rows = conn.execute(select(t.incident)).all() + conn.execute(select(t.incident_step)).all()
    assert "MARTIN0" not in str(rows) and "chiffré" not in str(rows)
