"""Deterministic, French-shaped synthetic medical biology lab data.

``LabGenerator(tenant_id, seed).patient(index)`` depends on ``(tenant_id, seed, index)`` only:
each patient gets its own ``random.Random`` and re-seeds the generator's single Faker, so
records can be generated in any order, in parallel processes, or one at a time, and are always
the same. (Determinism holds for a given version of Faker and Python; Faker's name lists may
change between releases.) A ``LabGenerator`` is not thread-safe: it shares one Faker instance.

``results_stream(tenant_id, seed, n)`` is the fast path for benchmarks: it yields ``Result``
objects only (no identities, requests or specimens), cycling through a pool of pre-drawn results.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from faker import Faker
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from labvault.crypto import derive
from labvault.domain.models import (
    LOINC,
    Identity,
    IdentityStatus,
    Prescriber,
    Request,
    Result,
    ResultStatus,
    Sensitivity,
    Specimen,
)
from labvault.interop._common import unit_system
from labvault.synth import panels as P

__all__ = ["LabGenerator", "PatientRecord", "field_count", "results_stream"]

INS_NIR_OID = "1.2.250.1.213.1.4.8"
INS_NIA_OID = "1.2.250.1.213.1.4.9"

BIRTH_FIRST = date(1930, 1, 1)
BIRTH_LAST = date(2018, 12, 31)
COLLECTION_FIRST = date(2015, 1, 1)
COLLECTION_LAST = date(2020, 12, 31)

# Real INSEE codes: (code, weight). Births in Paris, Lyon and Marseille are registered per
# arrondissement. Codes starting with 99 are countries of birth (COG "pays"), as in an NIR/NIA
# of a person born abroad. Corsica (2A/2B) was department 20 before 1976: see _nir_location.
BIRTHPLACES: tuple[tuple[str, float], ...] = (
    ("75112", 5),
    ("75114", 5),
    ("75115", 4),
    ("69383", 3),
    ("69388", 2),
    ("13205", 3),
    ("13215", 2),
    ("31555", 3),
    ("06088", 2),
    ("44109", 2),
    ("67482", 2),
    ("34172", 2),
    ("33063", 2),
    ("59350", 3),
    ("35238", 2),
    ("51454", 1),
    ("76351", 1),
    ("42218", 1),
    ("83137", 1),
    ("38185", 1),
    ("21231", 1),
    ("49007", 1),
    ("30189", 1),
    ("63113", 1),
    ("37261", 1),
    ("87085", 1),
    ("80021", 1),
    ("57463", 1),
    ("25056", 1),
    ("45234", 1),
    ("14118", 1),
    ("29019", 1),
    ("64445", 1),
    ("78646", 1),
    ("2A004", 1),
    ("2B033", 1),
    ("97411", 1),
    ("97209", 1),
    ("97105", 0.5),
    # born abroad: Algeria, Morocco, Tunisia, Portugal, Spain, Italy, Senegal, Belgium,
    # Turkey, Viet Nam, Romania, Côte d'Ivoire
    ("99352", 1.5),
    ("99350", 1.5),
    ("99351", 1),
    ("99139", 1),
    ("99134", 0.5),
    ("99127", 0.5),
    ("99341", 0.5),
    ("99131", 0.3),
    ("99208", 0.4),
    ("99243", 0.3),
    ("99114", 0.3),
    ("99326", 0.4),
)
_BP_CODES = tuple(c for c, _ in BIRTHPLACES)
_BP_CUM = tuple(itertools.accumulate(w for _, w in BIRTHPLACES))

_BIOLOGISTS_FIXED = (
    "Dr Claire Moreau",
    "Dr Julien Lefèvre",
    "Dr Nathalie Girard",
    "Dr Antoine Mercier",
    "Dr Sophie Lambert",
)

GENERIC_COMMENTS = (
    "Prélèvement légèrement hémolysé.",
    "Patient non à jeun au moment du prélèvement.",
    "Résultat contrôlé sur le même prélèvement.",
    "À interpréter en fonction du contexte clinique.",
    "Résultat à confirmer sur un nouveau prélèvement.",
    "Sérum lactescent : interprétation prudente.",
    "Délai d'acheminement du prélèvement supérieur aux recommandations.",
    "Valeur en diminution par rapport au bilan précédent.",
    "Valeur en augmentation par rapport au bilan précédent.",
    "Résultat transmis par téléphone au prescripteur.",
    "Traitement en cours signalé par le patient.",
    "Prélèvement réalisé à domicile par une infirmière.",
)
OUT_OF_RANGE_COMMENTS = (
    "Valeur contrôlée : résultat confirmé.",
    "Résultat communiqué au prescripteur.",
    "Contrôle conseillé à distance.",
)
CORRECTED_COMMENT = "Résultat corrigé : annule et remplace le résultat transmis précédemment."
HIV_POSITIVE_COMMENT = (
    "Dépistage positif : confirmation par immunoblot sur le même prélèvement et contrôle "
    "sur un second prélèvement indispensables."
)
SEROLOGY_POSITIVE_COMMENT = "Résultat positif contrôlé avec un second réactif."
P_COMMENT = 0.045  # plus the comments that always come with positives and corrections
P_PRELIMINARY = 0.025
P_CORRECTED = 0.015


@dataclass(slots=True)
class PatientRecord:
    """Everything about one patient."""

    identity: Identity
    requests: list[Request]
    specimens: list[Specimen]
    results: list[Result]


def field_count(record: PatientRecord) -> int:
    """Non-None fields across a record's identity, requests, specimens and results."""
    n = 0
    parts: tuple[Identity | Request | Specimen | Result, ...] = (
        record.identity,
        *record.requests,
        *record.specimens,
        *record.results,
    )
    for obj in parts:
        for f in dataclasses.fields(obj):
            if getattr(obj, f.name) is not None:
                n += 1
    return n


def _seed_int(*parts: object) -> int:
    """A 128-bit seed from parts, stable across processes (unlike ``hash``)."""
    text = "\x1f".join(str(p) for p in parts)
    return derive.seed(text)


def _hex_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def _ascii(s: str) -> str:
    s = unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode("ascii").lower()
    return "".join(ch for ch in s if ch.isalnum() or ch == "-")


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _nir_location(birthplace: str, birth_year: int) -> str:
    if birthplace[:2] in ("2A", "2B") and birth_year < 1976:
        return "20" + birthplace[2:]
    return birthplace


def make_nir(sex: str, birth: date, birthplace: str, order: int) -> str:
    """An NIR (or NIA, same shape) with its key computed by python-stdnum."""
    body = (
        f"{1 if sex == 'M' else 2}{birth.year % 100:02d}{birth.month:02d}"
        f"{_nir_location(birthplace, birth.year)}{order:03d}"
    )
    return body + stdnum_nir.calc_check_digits(body)


def make_rpps(rng: random.Random) -> str:
    """An 11-digit RPPS number: "10", 8 digits, Luhn check digit."""
    body = f"10{rng.randrange(10**8):08d}"
    return body + luhn.calc_check_digit(body)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------

# Patient traits and their effect on analytes: code -> (kind, amount); "mul" multiplies the
# centre of a lognormal analyte, "add" shifts the mean of a normal one.
TRAITS: dict[str, dict[str, tuple[str, float]]] = {
    "diabetic": {"2345-7": ("mul", 1.5), "4548-4": ("mul", 1.32), "2571-8": ("mul", 1.3)},
    "ckd": {"2160-0": ("mul", 2.0), "22664-7": ("mul", 1.9), "2823-3": ("add", 0.45), "718-7": ("add", -1.3)},
    "anemia": {"718-7": ("add", -2.3), "787-2": ("add", -9.0), "2276-4": ("mul", 0.2)},
    "dyslipidemia": {"2093-3": ("add", 0.55), "2571-8": ("mul", 1.7), "2085-9": ("add", -0.06)},
    "hypothyroid": {"3016-3": ("mul", 4.5)},
    "hyperthyroid": {"3016-3": ("mul", 0.06)},
    "hemochromatosis": {"2276-4": ("mul", 6.0)},
}


def _draw_traits(rng: random.Random, sex: str, age: int) -> frozenset[str]:
    t = set()
    r = rng.random
    if r() < (0.03 if age < 45 else 0.11 if age < 65 else 0.16):
        t.add("diabetic")
    if age >= 60 and r() < 0.09:
        t.add("ckd")
    if r() < (0.1 if sex == "F" and age < 50 else 0.035):
        t.add("anemia")
    if age >= 35 and r() < 0.18:
        t.add("dyslipidemia")
    if r() < (0.06 if sex == "F" else 0.02):
        t.add("hypothyroid")
    elif r() < 0.01:
        t.add("hyperthyroid")
    if r() < 0.004:
        t.add("hemochromatosis")
    return frozenset(t)


class _Patho:
    """Per-patient (or per-pool) state: traits and per-analyte baselines, for coherent series."""

    __slots__ = ("baseline", "rng", "sex", "traits")

    def __init__(self, rng: random.Random, sex: str, traits: frozenset[str]) -> None:
        self.rng = rng
        self.sex = sex
        self.traits = traits
        self.baseline: dict[str, float] = {}

    def raw(self, a: P.Analyte, factor: float = 1.0) -> float:
        rng = self.rng
        base = self.baseline.get(a.code)
        if base is None:
            c = a.center[self.sex]
            for t in self.traits:
                eff = TRAITS[t].get(a.code)
                if eff is not None:
                    c = c * eff[1] if eff[0] == "mul" else c + eff[1]
            if a.dist == "normal":
                base = rng.gauss(c, a.spread * 0.85)
            else:
                base = c * math.exp(rng.gauss(0.0, a.spread * 0.85))
            self.baseline[a.code] = base
        if a.dist == "normal":
            v = base + rng.gauss(0.0, a.spread * 0.45)
        else:
            v = base * math.exp(rng.gauss(0.0, a.spread * 0.45))
        return v * factor

    def value(self, a: P.Analyte, factor: float = 1.0) -> float:
        return _finish(a, self.raw(a, factor))


def _finish(a: P.Analyte, v: float) -> float:
    if v < a.floor:
        v = a.floor
    if a.cap is not None and v > a.cap:
        v = a.cap
    return round(v, a.decimals)


def _flag(v: float, lo: float | None, hi: float | None) -> str:
    if lo is not None and v < lo:
        return "L"
    if hi is not None and v > hi:
        return "H"
    return "N"


# An item: one result before ids, timestamps and status are attached.
# (code, label, specimen type, value_num, value_text, unit, ref_low, ref_high, ref_text, flag,
#  sensitivity, forced comment, slow)
_Item = tuple[
    str,
    str,
    str,
    float | None,
    str | None,
    str | None,
    float | None,
    float | None,
    str | None,
    str | None,
    Sensitivity,
    str | None,
    bool,
]


def _num(a: P.Analyte, sex: str, v: float) -> _Item:
    lo, hi = a.ref[sex]
    return (
        a.code,
        a.label,
        a.specimen,
        v,
        None,
        a.unit,
        lo,
        hi,
        a.ref_text,
        _flag(v, lo, hi),
        a.sensitivity,
        None,
        False,
    )


def _qual(q: P.Qualitative, positive: bool, comment: str | None = None) -> _Item:
    if positive:
        return (
            q.code,
            q.label,
            q.specimen,
            None,
            P.QUALITATIVE_POSITIVE,
            None,
            None,
            None,
            P.QUALITATIVE_NEGATIVE,
            "POS",
            q.sensitivity,
            comment,
            False,
        )
    return (
        q.code,
        q.label,
        q.specimen,
        None,
        P.QUALITATIVE_NEGATIVE,
        None,
        None,
        None,
        P.QUALITATIVE_NEGATIVE,
        "NEG",
        q.sensitivity,
        None,
        False,
    )


def _request_items(st: _Patho, age: int, has_previous: bool) -> list[_Item]:
    """The results of one request: panels picked by probability, sex and age."""
    rng = st.rng
    r = rng.random
    sex = st.sex
    traits = st.traits
    items: list[_Item] = []
    inflamed = r() < 0.12

    if r() < P.P_BLOOD_COUNT or (not has_previous and r() < 0.5):
        wbc = st.value(P.WBC, 1.7 if inflamed else 1.0)
        hgb = st.value(P.HGB)
        hct = _finish(P.HCT, hgb * 3.0 * math.exp(rng.gauss(0.0, 0.02)))
        mcv = st.value(P.MCV)
        rbc = _finish(P.RBC, hct / mcv * 10.0)
        for a, v in ((P.WBC, wbc), (P.RBC, rbc), (P.HGB, hgb), (P.HCT, hct), (P.MCV, mcv), (P.PLT, st.value(P.PLT))):
            items.append(_num(a, sex, v))
    p_met = P.P_METABOLIC + (0.25 if ("diabetic" in traits or "ckd" in traits) else 0.0)
    if r() < p_met:
        for a in P.METABOLIC:
            items.append(_num(a, sex, st.value(a)))
    if age >= 18 and r() < P.P_LIPIDS + (0.25 if "dyslipidemia" in traits else 0.0):
        chol = st.value(P.CHOL)
        hdl = st.value(P.HDL)
        trig = st.value(P.TRIG)
        items.append(_num(P.CHOL, sex, chol))
        items.append(_num(P.HDL, sex, hdl))
        if trig > 3.4:
            lo, hi = P.LDL.ref[sex]
            items.append(
                (
                    P.LDL.code,
                    P.LDL.label,
                    P.LDL.specimen,
                    None,
                    P.LDL_NOT_COMPUTABLE,
                    P.LDL.unit,
                    lo,
                    hi,
                    None,
                    None,
                    P.LDL.sensitivity,
                    None,
                    False,
                )
            )
        else:
            items.append(_num(P.LDL, sex, _finish(P.LDL, chol - hdl - trig / 5.0)))
        items.append(_num(P.TRIG, sex, trig))
    thyro = "hypothyroid" in traits or "hyperthyroid" in traits
    if r() < P.P_TSH + (0.4 if thyro else 0.0):
        items.append(_num(P.TSH, sex, st.value(P.TSH)))
    if r() < (0.75 if "diabetic" in traits else P.P_HBA1C):
        items.append(_num(P.HBA1C, sex, st.value(P.HBA1C)))
    if r() < P.P_FERRITIN + (0.3 if ("anemia" in traits or "hemochromatosis" in traits) else 0):
        items.append(_num(P.FERRITIN, sex, st.value(P.FERRITIN)))
    if r() < P.P_CRP + (0.4 if inflamed else 0.0):
        items.append(_num(P.CRP, sex, st.value(P.CRP, 14.0 if inflamed else 1.0)))

    urine = r() < P.P_URINE + (0.2 if ("diabetic" in traits or "ckd" in traits) else 0.0)
    if urine:
        for a in P.URINALYSIS:
            items.append(_num(a, sex, st.value(a, 3.0 if "ckd" in traits else 1.0)))

    if age >= 15 and r() < P.P_HIV:
        q = P.HIV_COMBO if r() < 0.7 else P.HIV_COMBO_2
        items.append(_qual(q, r() < q.positive_rate, HIV_POSITIVE_COMMENT))
    if r() < P.P_HEPATITIS:
        for q in (P.HBS_AG, P.HBC_AB):
            items.append(_qual(q, r() < q.positive_rate, SEROLOGY_POSITIVE_COMMENT))
        if r() < 0.7:
            items.append(_num(P.HBS_AB, sex, st.value(P.HBS_AB)))
        if r() < 0.85:
            items.append(_qual(P.HCV_AB, r() < P.HCV_AB.positive_rate, SEROLOGY_POSITIVE_COMMENT))
        if r() < 0.05:
            items.append(_qual(P.HAV_IGM, r() < P.HAV_IGM.positive_rate, SEROLOGY_POSITIVE_COMMENT))
    if sex == "F" and 15 <= age <= 50 and r() < P.P_PREGNANCY:
        pregnant = r() < P.PREGNANCY_RATE
        if urine and r() < 0.5:
            items.append(_qual(P.HCG_URINE, pregnant))
        else:
            if pregnant:
                v = _finish(P.BHCG, min(250000.0, 8.0 + rng.lognormvariate(math.log(6000), 1.5)))
            else:
                v = _finish(P.BHCG, rng.lognormvariate(0.0, 0.5))
            items.append(_num(P.BHCG, sex, v))
    if age >= 50 and r() < P.P_ONCOLOGY:
        chosen = [a for a, p in P.ONCOLOGY[sex] if r() < p] or [P.ONCOLOGY[sex][0][0]]
        # age drift (PSA rises with age) and a rare clearly pathological marker
        for a in chosen:
            f = (1.0 + (age - 50) * 0.03) if a is P.PSA else 1.0
            if r() < 0.04:
                f *= 6.0
            items.append(_num(a, sex, st.value(a, f)))
    if r() < P.P_GENETICS:
        tests = rng.choices([g for g, _ in P.GENETICS], [w for _, w in P.GENETICS])[0]
        if sex == "M" and tests[0] is P.BRCA1:
            tests = (P.HFE,)
        for g in tests:
            text, flag, _ = rng.choices(g.outcomes, [w for *_, w in g.outcomes])[0]
            items.append(
                (g.code, g.label, g.specimen, None, text, None, None, None, None, flag, g.sensitivity, None, True)
            )

    if not items:  # a request asks for something: fall back on a CRP
        items.append(_num(P.CRP, sex, st.value(P.CRP)))
    return items


def _comment_and_status(rng: random.Random, it: _Item) -> tuple[ResultStatus, str | None]:
    r = rng.random()
    if r < P_PRELIMINARY:
        status = ResultStatus.PRELIMINARY
    elif r < P_PRELIMINARY + P_CORRECTED:
        status = ResultStatus.CORRECTED
    else:
        status = ResultStatus.FINAL
    if it[9] == "POS" and it[11] is not None:
        return status, it[11]
    if status is ResultStatus.CORRECTED:
        return status, CORRECTED_COMMENT
    if rng.random() < P_COMMENT:
        if it[9] in ("L", "H") and rng.random() < 0.5:
            return status, rng.choice(OUT_OF_RANGE_COMMENTS)
        return status, rng.choice(GENERIC_COMMENTS)
    return status, None


# Result's field order, to build results positionally (twice as fast) while it holds.
_RESULT_FIELDS = (
    "result_id",
    "request_id",
    "code",
    "label",
    "code_system",
    "specimen_id",
    "value_num",
    "value_text",
    "unit",
    "ref_low",
    "ref_high",
    "ref_text",
    "flag",
    "status",
    "validated_by",
    "validated_at",
    "comment",
    "sensitivity",
)
_POSITIONAL = tuple(f.name for f in dataclasses.fields(Result)) == _RESULT_FIELDS
_SECONDS = tuple(timedelta(seconds=s) for s in range(300))


# --------------------------------------------------------------------------------------------
# Lab generator
# --------------------------------------------------------------------------------------------


class LabGenerator:
    """Synthetic patients of one lab (tenant), reproducible from ``(tenant_id, seed, index)``."""

    def __init__(self, tenant_id: str, seed: int, *, prescribers: int = 40) -> None:
        if prescribers < 0:
            raise ValueError("prescribers must be >= 0")
        self.tenant_id = tenant_id
        self.seed = seed
        self._fake = Faker("fr_FR")
        fake = self._fake
        fake.seed_instance(_seed_int("lab", tenant_id, seed))
        rng = random.Random(_seed_int("lab", tenant_id, seed))
        self.prescribers: list[Prescriber] = []
        seen: set[str] = set()
        while len(self.prescribers) < prescribers:
            rpps = make_rpps(rng)
            if rpps in seen:
                continue
            seen.add(rpps)
            female = rng.random() < 0.5
            given = fake.first_name_female() if female else fake.first_name_male()
            self.prescribers.append(
                Prescriber(prescriber_id=_hex_id(rng), rpps=rpps, family_name=fake.last_name(), given_name=given)
            )
        self.biologists: list[str] = []
        for _ in range(rng.randint(3, 6)):
            female = rng.random() < 0.6
            given = fake.first_name_female() if female else fake.first_name_male()
            self.biologists.append(f"Dr {given} {fake.last_name()}")
        self._lab_code = f"{rng.randrange(100):02d}"

    # -- identity ----------------------------------------------------------------------------

    def _identity(self, rng: random.Random) -> Identity:
        fake = self._fake
        r = rng.random
        patient_id = _hex_id(rng)
        sex = "F" if r() < 0.53 else "M"
        birth = BIRTH_FIRST + timedelta(days=rng.randrange((BIRTH_LAST - BIRTH_FIRST).days + 1))
        birthplace = rng.choices(_BP_CODES, cum_weights=_BP_CUM)[0]
        abroad = birthplace.startswith("99")
        order = rng.randrange(1, 1000)
        nir = make_nir(sex, birth, birthplace, order)
        first = fake.first_name_female if sex == "F" else fake.first_name_male
        given = first()
        if r() < 0.3:
            second = first()
            if second != given:
                given = f"{given} {second}"
        family = fake.last_name()
        birth_name = None
        if sex == "F" and _age(birth, COLLECTION_LAST) >= 22 and r() < 0.45:
            birth_name = family
            family = fake.last_name()
        status = IdentityStatus.PROVISIONAL if r() < (0.2 if abroad else 0.07) else IdentityStatus.QUALIFIED
        address = fake.address().replace("\n", ", ") if r() < 0.96 else None
        phone = fake.phone_number() if r() < 0.9 else None
        email = None
        if r() < 0.7:
            local = f"{_ascii(given.split(' ')[0])}.{_ascii(family)}"
            if r() < 0.4:
                local += str(rng.randrange(1, 100))
            email = f"{local}@{fake.free_email_domain()}"
        return Identity(
            patient_id=patient_id,
            nir=nir,
            identity_status=status,
            family_name=family,
            given_names=given,
            birth_date=birth,
            sex=sex,
            birth_name=birth_name,
            birthplace_code=birthplace,
            address=address,
            phone=phone,
            email=email,
            ins_oid=INS_NIA_OID if abroad and r() < 0.35 else INS_NIR_OID,
        )

    # -- one patient -------------------------------------------------------------------------

    def patient(self, index: int) -> PatientRecord:
        """The patient number ``index`` of this lab; depends on (tenant_id, seed, index) only."""
        s = _seed_int("patient", self.tenant_id, self.seed, index)
        rng = random.Random(s)
        self._fake.seed_instance(s)
        ident = self._identity(rng)
        r = rng.random
        birth = ident.birth_date
        first_day = max(COLLECTION_FIRST, birth + timedelta(days=1)).toordinal()
        last_day = COLLECTION_LAST.toordinal()
        n_req = rng.choices((1, 2, 3, 4), (0.3, 0.3, 0.22, 0.18))[0]
        n_req = min(n_req, last_day - first_day + 1)
        days = sorted(rng.sample(range(first_day, last_day + 1), n_req))

        st = _Patho(rng, ident.sex, _draw_traits(rng, ident.sex, _age(birth, COLLECTION_FIRST)))
        pres = self.prescribers
        gp = pres[rng.randrange(len(pres))] if pres else None
        bios = self.biologists
        requests: list[Request] = []
        specimens: list[Specimen] = []
        results: list[Result] = []
        for k, day_ord in enumerate(days):
            day = date.fromordinal(day_ord)
            age = _age(birth, day)
            hour = rng.randint(7, 11) if r() < 0.8 else rng.randint(12, 18)
            collected = datetime.combine(day, time(hour, rng.randrange(60)))
            requested = collected - timedelta(minutes=rng.randrange(3, 40))
            received = collected + timedelta(minutes=rng.randrange(5, 40) if r() < 0.75 else rng.randrange(60, 300))
            request_id = _hex_id(rng)
            if gp is None or r() < 0.04:
                prescriber_id = None
            else:
                prescriber_id = gp.prescriber_id if r() < 0.7 else pres[rng.randrange(len(pres))].prescriber_id
            accession = f"{day:%y%m%d}{self._lab_code}{rng.randrange(10**8):08d}"

            items = _request_items(st, age, k > 0)
            main_type = P.SERUM if any(it[2] == P.SERUM for it in items) else P.BLOOD
            main_id = _hex_id(rng)
            specimens.append(
                Specimen(
                    specimen_id=main_id,
                    request_id=request_id,
                    type=main_type,
                    collected_at=collected,
                    received_at=received,
                )
            )
            urine_id = None
            if any(it[2] == P.URINE for it in items):
                urine_id = _hex_id(rng)
                specimens.append(
                    Specimen(
                        specimen_id=urine_id,
                        request_id=request_id,
                        type=P.URINE,
                        collected_at=collected,
                        received_at=received,
                    )
                )
            biologist = bios[rng.randrange(len(bios))]
            validated_base = received + timedelta(minutes=rng.randrange(40, 30 * 60))
            reported = None
            for it in items:
                status, comment = _comment_and_status(rng, it)
                if status is ResultStatus.PRELIMINARY:
                    v_by = v_at = None
                else:
                    v_by = biologist
                    if it[12]:  # genetics: weeks later
                        v_at = received + timedelta(days=rng.randint(10, 45), minutes=rng.randrange(600))
                    else:
                        v_at = validated_base + _SECONDS[int(r() * 300)]
                    if status is ResultStatus.CORRECTED:
                        v_at += timedelta(hours=rng.randint(2, 72))
                    if reported is None or v_at > reported:
                        reported = v_at
                spec = urine_id if it[2] == P.URINE else main_id
                if _POSITIONAL:
                    res = Result(
                        _hex_id(rng),
                        request_id,
                        it[0],
                        it[1],
                        LOINC,
                        spec,
                        it[3],
                        it[4],
                        it[5],
                        it[6],
                        it[7],
                        it[8],
                        it[9],
                        status,
                        v_by,
                        v_at,
                        comment,
                        it[10],
                        unit_system=unit_system(it[5]),
                    )
                else:  # pragma: no cover - only if models.Result's field order changes
                    res = Result(
                        result_id=_hex_id(rng),
                        request_id=request_id,
                        code=it[0],
                        label=it[1],
                        code_system=LOINC,
                        specimen_id=spec,
                        value_num=it[3],
                        value_text=it[4],
                        unit=it[5],
                        ref_low=it[6],
                        ref_high=it[7],
                        ref_text=it[8],
                        flag=it[9],
                        status=status,
                        validated_by=v_by,
                        validated_at=v_at,
                        comment=comment,
                        sensitivity=it[10],
                        unit_system=unit_system(it[5]),
                    )
                results.append(res)
            requests.append(
                Request(
                    request_id=request_id,
                    patient_id=ident.patient_id,
                    prescriber_id=prescriber_id,
                    requested_at=requested,
                    accession=accession,
                    reported_at=reported,
                )
            )
        return PatientRecord(identity=ident, requests=requests, specimens=specimens, results=results)

    def patients(self, count: int, start: int = 0) -> Iterator[PatientRecord]:
        """Patients ``start`` .. ``start + count - 1``."""
        for i in range(start, start + count):
            yield self.patient(i)


# --------------------------------------------------------------------------------------------
# Fast result stream
# --------------------------------------------------------------------------------------------

_POOL_REQUESTS = 509  # prime, so the group cycle and the date cycle rarely line up
_POOL_DATES = 1021


def results_stream(tenant_id: str, seed: int, n: int) -> Iterator[Result]:
    """Yield exactly ``n`` synthetic ``Result`` objects, fast, for benchmarks.

    Results only: no identities, requests or specimens are produced. Results come in groups of
    about 12 under synthetic request ids (and synthetic specimen ids), drawn once from the same
    panels as ``LabGenerator`` and then cycled with cheap variations (ids, dates).
    Deterministic from ``(tenant_id, seed, n)``; every result id is unique within a stream.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(_seed_int("stream", tenant_id, seed))
    result_prefix = f"{rng.getrandbits(64):016x}"
    request_prefix = f"{rng.getrandbits(64):016x}"
    specimen_prefix = f"{rng.getrandbits(64):015x}"[:15]

    # A pool of requests: (list of templates). A template is every Result field but ids and
    # validated_at, plus the validation delay and whether it is on the urine specimen.
    groups: list[list[tuple]] = []
    for _ in range(_POOL_REQUESTS):
        sex = "F" if rng.random() < 0.53 else "M"
        age = rng.randint(0, 90)
        st = _Patho(rng, sex, _draw_traits(rng, sex, age))
        biologist = rng.choice(_BIOLOGISTS_FIXED)
        base = timedelta(minutes=rng.randrange(60, 30 * 60))
        group = []
        for it in _request_items(st, age, False):
            status, comment = _comment_and_status(rng, it)
            if status is ResultStatus.PRELIMINARY:
                v_by, delay = None, None
            else:
                v_by = biologist
                delay = timedelta(days=rng.randint(10, 45)) if it[12] else base + timedelta(seconds=rng.randrange(300))
            group.append(
                (
                    it[0],
                    it[1],
                    it[3],
                    it[4],
                    it[5],
                    it[6],
                    it[7],
                    it[8],
                    it[9],
                    status,
                    v_by,
                    delay,
                    comment,
                    it[10],
                    it[2] == P.URINE,
                )
            )
        groups.append(group)
    span = ((COLLECTION_LAST - COLLECTION_FIRST).days - 7) * 86400
    start = datetime.combine(COLLECTION_FIRST, time(7, 0))
    dates = [start + timedelta(seconds=rng.randrange(span)) for _ in range(_POOL_DATES)]

    i = 0
    k = 0
    ng = len(groups)
    nd = len(dates)
    positional = _POSITIONAL
    while i < n:
        group = groups[k % ng]
        when = dates[k % nd] + timedelta(days=(k // nd) % 7)
        request_id = f"{request_prefix}{k:016x}"
        main_id = f"{specimen_prefix}m{k:016x}"
        urine_id = f"{specimen_prefix}u{k:016x}"
        k += 1
        for code, label, vnum, vtext, unit, lo, hi, rtext, flag, status, v_by, delay, comment, sens, on_urine in group:
            if i >= n:
                return
            rid = f"{result_prefix}{i:016x}"
            i += 1
            if positional:
                yield Result(
                    rid,
                    request_id,
                    code,
                    label,
                    LOINC,
                    urine_id if on_urine else main_id,
                    vnum,
                    vtext,
                    unit,
                    lo,
                    hi,
                    rtext,
                    flag,
                    status,
                    v_by,
                    None if delay is None else when + delay,
                    comment,
                    sens,
                    unit_system=unit_system(unit),
                )
            else:  # pragma: no cover - only if models.Result's field order changes
                yield Result(
                    result_id=rid,
                    request_id=request_id,
                    code=code,
                    label=label,
                    code_system=LOINC,
                    specimen_id=urine_id if on_urine else main_id,
                    value_num=vnum,
                    value_text=vtext,
                    unit=unit,
                    ref_low=lo,
                    ref_high=hi,
                    ref_text=rtext,
                    flag=flag,
                    status=status,
                    validated_by=v_by,
                    validated_at=None if delay is None else when + delay,
                    comment=comment,
                    sensitivity=sens,
                    unit_system=unit_system(unit),
                )
