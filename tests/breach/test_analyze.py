"""A leaked file's rows matched through the labs' blind indexes: each lab's affected patients exact,
ambiguous and unmatched rows counted never guessed, merges followed, categories named; who may run
an analysis, what each lab's trail says of it, and that nothing personal is stored in clear.

Rows are built here as the reader gives them (``LeakRow``), so the matching is tested on its own."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import select

from labvault.access import Purpose
from labvault.breach.analyze import analyze, categories_of_text, category_names, nir_of
from labvault.breach.reader import Column, Layout, LeakRow
from labvault.crypto.keys import PLATFORM
from labvault.domain.models import Identity, IdentityStatus
from labvault.errors import AccessDenied, NotFound
from labvault.identity import service as identity
from labvault.store import schema as t
from tests.conftest import lab_user, make_lab

LAB_A, LAB_B = "lab-a", "lab-b"
NIR_1 = "184127645108946"  # a valid INS-NIR (13 digits + key)
NIR_9 = "279056912345680"


def _ident(pid: str, family: str, given: str, born: date, sex: str, nir: str | None = None, **kw) -> Identity:
    status = IdentityStatus.QUALIFIED if nir else IdentityStatus.PROVISIONAL
    return Identity(pid, nir, status, family, given, born, sex, **kw)


def _row(line: int, **kw) -> LeakRow:
    base = {"nir": None, "family": None, "birth_name": None, "given": None, "birth_date": None, "sex": None}
    base.update(kw)
    return LeakRow(1, line, **base)


class _Leak:
    """An opened file as the reader gives it: its layout and its rows."""

    def __init__(self, layout: Layout, rows: list[LeakRow]) -> None:
        self.layout, self._rows = layout, rows

    def rows(self):
        return iter(self._rows)


def _leak(rows: list[LeakRow]) -> _Leak:
    kinds = ("nir", "family_name", "given_names", "birth_date", "sex", "code", "label", "text")
    cols = tuple(Column(k, None, kind, 0.9) for k, kind in enumerate(kinds))
    return _Leak(Layout("0" * 64, 1000, "csv", "utf-8", ";", False, len(rows), 0, cols), rows)


@pytest.fixture
def world(gateway, raw_engine):
    gw = gateway
    make_lab(gw, LAB_A)
    make_lab(gw, LAB_B, "690000025")
    bio_a = lab_user(gw, LAB_A, "biologist")
    bio_b = lab_user(gw, LAB_B, "biologist")
    with gw.unit(bio_a, Purpose.CARE) as u:
        u.add_patients(
            LAB_A,
            [
                _ident("pa-1", "Lefèvre", "Jean Pierre", date(1984, 12, 5), "M", NIR_1),
                _ident("pa-2", "Dupré-Martin", "Élodie", date(1990, 3, 14), "F", birth_name="Martin"),
                _ident("pa-3", "Nguyen", "Anh", date(2001, 7, 1), "M"),  # twins: same name, birth date
                _ident("pa-4", "Nguyen", "Anh", date(2001, 7, 1), "F"),
                _ident("pa-5", "Lefevre", "Jean", date(1984, 12, 5), "M"),  # a duplicate of pa-1
            ],
        )
        identity.merge(u, LAB_A, "pa-1", "pa-5")
    with gw.unit(bio_b, Purpose.CARE) as u:
        u.add_patients(LAB_B, [_ident("pb-1", "Lefevre", "Jean", date(1984, 12, 5), "M", NIR_1)])
    return {
        "gw": gw,
        "raw": raw_engine,
        "so": lab_user(gw, PLATFORM, "security_officer", name="Sec"),
        "dpo_a": lab_user(gw, LAB_A, "lab_dpo", name="Dpo"),
        "dpo_b": lab_user(gw, LAB_B, "lab_dpo", name="Dpo"),
        "admin_a": lab_user(gw, LAB_A, "lab_admin", name="Adm"),
    }


def _rows() -> list[LeakRow]:
    return [
        _row(2, nir=NIR_1[:13], codes=("718-7",)),  # lab-a pa-1 and lab-b pb-1 by NIR (13 digits)
        _row(3, family="DUPRE MARTIN", given="elodie", birth_date=date(1990, 3, 14), codes=("7917-8",)),
        _row(4, family="NGUYEN", given="ANH", birth_date=date(2001, 7, 1)),  # the twins: ambiguous
        _row(5, family="LEFEVRE", given="Jean", birth_date=date(1984, 12, 5), sex="M"),  # pa-5 -> pa-1; pb-1
        _row(6, family="Inconnu", given="Paul", birth_date=date(1950, 1, 1)),  # nobody
        _row(7, birth_name="MARTIN", given="Élodie", birth_date=date(1990, 3, 14), sex="F", texts=("grossesse",)),
    ]


def _events(world: dict, tenant: str, action: str) -> list:
    """The lab's audit events of ``action``, read past row-level security (as an auditor's copy)."""
    with world["raw"].connect() as conn:
        ae = t.audit_event
        return conn.execute(select(ae).where(ae.c.tenant_id == tenant, ae.c.action == action).order_by(ae.c.seq)).all()


def _events_all(world: dict) -> list:
    with world["raw"].connect() as conn:
        return conn.execute(select(t.audit_event)).all()


def test_each_lab_gets_exactly_its_own_patients_ambiguous_and_unmatched_counted(world):
    """I1, H3: the security officer's analysis matches rows by NIR (13 digits, key computed) and by
    name + first given name + birth date (capitals, no accents, birth name, traits), follows a merge to
    its survivor, counts the twins' row as ambiguous and the stranger's as unmatched; lab-a's part is
    pa-1 and pa-2 (rows 2, 3, 5, 7), lab-b's is pb-1 (rows 2 and 5); categories come from a code (HIV)
    and a word (pregnancy)."""
    gw = world["gw"]
    analysis, parts = analyze(gw, world["so"], [_leak(_rows())])
    assert (analysis.rows_total, analysis.rows_matched, analysis.rows_ambiguous, analysis.rows_unmatched) == (
        6,
        4,
        1,
        1,
    )
    assert analysis.tenant_id == PLATFORM and analysis.labs == (LAB_A, LAB_B)
    by_lab = {p.tenant_id: p for p in parts}
    a, b = by_lab[LAB_A], by_lab[LAB_B]
    assert (a.patients, a.records, a.ambiguous) == (2, 4, 1)
    assert (b.patients, b.records, b.ambiguous) == (1, 2, 0)
    assert a.categories == {"hiv": 1, "pregnancy": 1} and b.categories == {}
    assert {"nir", "family_name", "given_names", "birth_date"} <= set(a.fields)
    with gw.unit(world["dpo_a"], Purpose.BREACH) as u:
        assert u.affected_patients(LAB_A, analysis.analysis_id) == ["pa-1", "pa-2"]
        again = u.leak_match(LAB_A, analysis.analysis_id)
        assert (again.patients, again.records, again.categories) == (2, 4, {"hiv": 1, "pregnancy": 1})
    with gw.unit(world["dpo_b"], Purpose.BREACH) as u:
        assert u.affected_patients(LAB_B, analysis.analysis_id) == ["pb-1"]
        with pytest.raises(AccessDenied):
            u.affected_patients(LAB_A, analysis.analysis_id)
    with gw.unit(world["so"], Purpose.BREACH) as u:
        assert u.leak_analysis(analysis.analysis_id).rows_matched == 4
        assert u.leak_match(LAB_B, analysis.analysis_id).patients == 1
        with pytest.raises(AccessDenied):  # the vendor never opens the affected list
            u.affected_patients(LAB_A, analysis.analysis_id)
    # every lab's trail records the analysis, counts only
    ev_a = _events(world, LAB_A, "breach:analyze")
    assert [(e.actor, e.record_count, e.outcome) for e in ev_a] == [(world["so"].account_id, 2, "allowed")]
    assert json.loads(ev_a[0].object_refs)[0] == analysis.analysis_id
    assert [e.record_count for e in _events(world, LAB_B, "breach:analyze")] == [1]
    letters = [(e.actor, e.outcome, e.record_count) for e in _events(world, LAB_A, "incident:letters")]
    assert letters == [
        (world["dpo_a"].account_id, "allowed", 2),
        (world["dpo_b"].account_id, "denied", 0),  # lab-b's DPO tried lab-a's list: in lab-a's trail
        (world["so"].account_id, "denied", 0),
    ]


def test_vendor_accounts_other_than_the_security_officer_cannot_analyse(world):
    """I1, G1: an operator, a support engineer and the platform admin are refused an analysis (the
    refusal is recorded); a lab_admin is refused too (breach:analyze is the DPO's); nothing is stored."""
    gw = world["gw"]
    for role in ("operator", "support", "platform_admin"):
        who = lab_user(gw, PLATFORM, role, name="V")
        with pytest.raises(AccessDenied):
            analyze(gw, who, [_leak(_rows())])
        with pytest.raises(AccessDenied):
            analyze(gw, who, [_leak(_rows())], tenant_id=LAB_A)
    with pytest.raises(AccessDenied):
        analyze(gw, world["admin_a"], [_leak(_rows())], tenant_id=LAB_A)
    with world["raw"].connect() as conn:
        assert conn.execute(select(t.leak_analysis)).all() == []
        assert conn.execute(select(t.leak_match)).all() == []
    assert [e.outcome for e in _events(world, LAB_A, "breach:analyze")] == ["denied", "denied", "denied", "denied"]


def test_a_lab_dpo_analyses_against_its_own_lab_only(world):
    """I1, I5: lab-a's DPO analyses the file against lab-a only: stored on lab-a, lab-b never
    searched (no part, no event in its trail); naming lab-b, or no lab, is refused."""
    gw = world["gw"]
    analysis, parts = analyze(gw, world["dpo_a"], [_leak(_rows())], tenant_id=LAB_A)
    assert analysis.tenant_id == LAB_A and [p.tenant_id for p in parts] == [LAB_A]
    assert parts[0].patients == 2
    assert analysis.rows_matched == 4  # rows 2, 3, 5, 7 of lab-a's patients
    assert _events(world, LAB_B, "breach:analyze") == []
    with gw.unit(world["dpo_b"], Purpose.BREACH) as u, pytest.raises(NotFound):
        u.leak_match(LAB_B, analysis.analysis_id)
    with pytest.raises(AccessDenied):
        analyze(gw, world["dpo_a"], [_leak(_rows())], tenant_id=LAB_B)
    with pytest.raises(AccessDenied):
        analyze(gw, world["dpo_a"], [_leak(_rows())])
    with world["raw"].connect() as conn:
        assert [r.tenant_id for r in conn.execute(select(t.leak_match))] == [LAB_A]


def test_a_one_row_probe_is_visible_in_the_labs_trail(world):
    """I1, G1: the security officer cannot use the analysis as a silent membership oracle: a one-row
    file naming one of lab-a's patients leaves a ``breach:analyze`` event in lab-a's trail with the
    count 1; a row naming nobody leaves one with 0."""
    gw = world["gw"]
    one = [_row(2, family="Dupre-Martin", given="Elodie", birth_date=date(1990, 3, 14))]
    analyze(gw, world["so"], [_leak(one)])
    analyze(gw, world["so"], [_leak([_row(2, family="X", given="Y", birth_date=date(1950, 1, 1))])])
    ev = _events(world, LAB_A, "breach:analyze")
    assert [(e.actor, e.record_count) for e in ev] == [(world["so"].account_id, 1), (world["so"].account_id, 0)]


def test_nothing_personal_is_stored_in_clear_or_audited(world):
    """I1, E*: the stored analysis (files, summary, labs), each lab's clear columns and every audit
    event hold no name, NIR or birth date of the leaked rows; the affected ids are sealed."""
    gw = world["gw"]
    analyze(gw, world["so"], [_leak(_rows())])
    values = ["LEFEVRE", "Lefèvre", "NGUYEN", "MARTIN", "Elodie", "Élodie", "Inconnu", NIR_1, NIR_1[:13], "1984-12-05"]
    with world["raw"].connect() as conn:
        stored = [
            json.dumps([str(v) for v in r._mapping.values() if not isinstance(v, bytes | memoryview)])
            for table in (t.leak_analysis, t.leak_match, t.audit_event)
            for r in conn.execute(select(table))
        ]
        sealed = [bytes(r.patients_enc) for r in conn.execute(select(t.leak_match))]
    blob = "\n".join(stored).upper()
    for v in values:
        assert v.upper() not in blob
    assert all(b"pa-1" not in s and b"pb-1" not in s for s in sealed)
    assert "pa-1" not in "\n".join(stored[: len(stored) - len(_events_all(world))])  # ids sealed, never in clear


def test_categories_and_nir_normalisation():
    """I1: words and codes name the sensitive categories; a 13-digit NIR gets its key."""
    assert category_names(categories_of_text("Sérologie VIH; bêta-HCG; Ag HBs; BRCA1; PSA total")) == [
        "hiv",
        "viral_hepatitis",
        "genetics",
        "pregnancy",
        "oncology",
    ]
    assert category_names(categories_of_text("Hémoglobine glyquée")) == []
    assert nir_of(NIR_1[:13]) == NIR_1 and nir_of(NIR_1) == NIR_1 and nir_of("12") is None


def test_bulk_blind_values_are_the_lab_indexes_own():
    """I1: ``BlindIndex.many`` (the pads hashed once) gives exactly what ``nir``, ``name`` and
    ``traits`` store, from keys normalised once; another lab's key gives other values."""
    import os

    from labvault.crypto.blind import BlindIndex, name_text, traits_text

    index, other = BlindIndex(LAB_A, os.urandom(32)), BlindIndex(LAB_B, os.urandom(32))
    born = date(1990, 3, 14)
    assert index.many("nir", [NIR_1]) == [index.nir(NIR_1)]
    assert index.many("name", [name_text("DUPREMARTIN", "ELODIE", born)]) == [
        index.name("Dupré-Martin", "Élodie Marie", born)
    ]
    assert index.many("traits", [traits_text("MARTIN", "ELODIE", born, "F")]) == [
        index.traits("Martin", "Élodie", born, "f ")
    ]
    assert other.many("nir", [NIR_1]) != index.many("nir", [NIR_1])
    with pytest.raises(ValueError):
        index.many("canary", ["x"])


def test_a_nir_two_patients_share_is_narrowed_by_the_name_never_guessed(gateway):
    """H3, I4: two patients of one lab sharing a NIR (an entry error): a row with that NIR and one of
    their names is that patient; a row with the NIR alone, or with a name that is neither, stays
    ambiguous (never guessed)."""
    gw = gateway
    make_lab(gw, LAB_A)
    bio = lab_user(gw, LAB_A, "biologist")
    with gw.unit(bio, Purpose.CARE) as u:
        u.add_patients(
            LAB_A,
            [
                _ident("pa-1", "Lefèvre", "Jean", date(1984, 12, 5), "M", NIR_1),
                _ident("pa-2", "Roux", "Marc", date(1984, 12, 9), "M", NIR_1),
            ],
        )
    rows = [
        _row(2, nir=NIR_1, family="ROUX", given="Marc", birth_date=date(1984, 12, 9)),  # pa-2
        _row(3, nir=NIR_1),  # either: ambiguous
        _row(4, nir=NIR_1, family="Autre", given="Paul", birth_date=date(1970, 1, 1)),  # neither: ambiguous
    ]
    analysis, _parts = analyze(gw, lab_user(gw, PLATFORM, "security_officer", name="Sec"), [_leak(rows)])
    assert (analysis.rows_matched, analysis.rows_ambiguous, analysis.rows_unmatched) == (1, 2, 0)
    with gw.unit(lab_user(gw, LAB_A, "lab_dpo", name="Dpo"), Purpose.BREACH) as u:
        assert u.affected_patients(LAB_A, analysis.analysis_id) == ["pa-2"]
