"""Test definitions for the synthetic lab: LOINC codes, long names, UCUM units, reference ranges.

Values are synthetic but shaped like a French medical biology lab's reports: mass concentrations
in g/L or mg/L where French labs use them (glucose, creatinine, lipids), counts in 10*9/L.
Every code of a sensitive category (HIV, viral hepatitis, genetics, pregnancy, oncology) is taken
from ``labvault/domain/data/sensitivity.toml``, so ``sensitivity_of`` classifies it.

LOINC codes and names (c) Regenstrief Institute, used under the LOINC licence
(https://loinc.org/license).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labvault.domain.models import LOINC, Sensitivity
from labvault.domain.sensitivity import sensitivity_of

BLOOD = "BLD"  # HL7 table 0487: whole blood
SERUM = "SER"
URINE = "UR"


@dataclass(frozen=True, slots=True)
class Analyte:
    """A quantitative test.

    ``ref`` maps a sex ("M"/"F") to (ref_low, ref_high); either bound may be None.
    ``dist`` is "normal" (``center`` = mean, ``spread`` = standard deviation) or "lognormal"
    (``center`` = median, ``spread`` = sigma of the log). ``center`` is per sex as well.
    ``cap`` is an upper limit of the method (e.g. 1000 for anti-HBs).
    """

    code: str
    label: str
    unit: str
    specimen: str
    decimals: int
    ref: dict[str, tuple[float | None, float | None]]
    dist: str
    center: dict[str, float]
    spread: float
    floor: float = 0.0
    cap: float | None = None
    ref_text: str | None = None
    sensitivity: Sensitivity = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensitivity", sensitivity_of(LOINC, self.code))


@dataclass(frozen=True, slots=True)
class Qualitative:
    """A presence/absence test reported as "Négatif"/"Positif" (flag NEG/POS)."""

    code: str
    label: str
    specimen: str
    positive_rate: float
    sensitivity: Sensitivity = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensitivity", sensitivity_of(LOINC, self.code))


@dataclass(frozen=True, slots=True)
class Genetic:
    """A molecular genetics test with free-text results: (text, flag, weight); flag N or A."""

    code: str
    label: str
    outcomes: tuple[tuple[str, str, float], ...]
    specimen: str = BLOOD
    sensitivity: Sensitivity = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensitivity", sensitivity_of(LOINC, self.code))


def _both(lo: float | None, hi: float | None) -> dict[str, tuple[float | None, float | None]]:
    return {"M": (lo, hi), "F": (lo, hi)}


def _same(v: float) -> dict[str, float]:
    return {"M": v, "F": v}


# --- Blood count (numération formule sanguine) -------------------------------------------------
WBC = Analyte(
    "6690-2",
    "Leukocytes [#/volume] in Blood by Automated count",
    "10*9/L",
    BLOOD,
    2,
    _both(4.0, 10.0),
    "lognormal",
    _same(6.8),
    0.25,
    floor=0.5,
)
RBC = Analyte(
    "789-8",
    "Erythrocytes [#/volume] in Blood by Automated count",
    "10*12/L",
    BLOOD,
    2,
    {"M": (4.5, 5.9), "F": (3.9, 5.2)},
    "normal",
    {"M": 5.05, "F": 4.5},
    0.38,
    floor=1.5,
)  # derived: Hct / MCV
HGB = Analyte(
    "718-7",
    "Hemoglobin [Mass/volume] in Blood",
    "g/dL",
    BLOOD,
    1,
    {"M": (13.0, 17.0), "F": (12.0, 16.0)},
    "normal",
    {"M": 14.9, "F": 13.5},
    1.15,
    floor=6.0,
)
HCT = Analyte(
    "4544-3",
    "Hematocrit [Volume Fraction] of Blood by Automated count",
    "%",
    BLOOD,
    1,
    {"M": (40.0, 52.0), "F": (36.0, 47.0)},
    "normal",
    {"M": 44.5, "F": 40.5},
    3.5,
    floor=18.0,
)  # derived from hemoglobin
MCV = Analyte(
    "787-2",
    "MCV [Entitic volume] by Automated count",
    "fL",
    BLOOD,
    1,
    _both(80.0, 100.0),
    "normal",
    _same(89.0),
    4.6,
    floor=55.0,
)
PLT = Analyte(
    "777-3",
    "Platelets [#/volume] in Blood by Automated count",
    "10*9/L",
    BLOOD,
    0,
    _both(150.0, 400.0),
    "normal",
    _same(255.0),
    62.0,
    floor=15.0,
)
BLOOD_COUNT = (WBC, RBC, HGB, HCT, MCV, PLT)

# --- Metabolic panel (glycémie, ionogramme, créatinine, urée) -----------------------------------
GLUCOSE = Analyte(
    "2345-7",
    "Glucose [Mass/volume] in Serum or Plasma",
    "g/L",
    SERUM,
    2,
    _both(0.70, 1.10),
    "lognormal",
    _same(0.93),
    0.12,
    floor=0.4,
)
SODIUM = Analyte(
    "2951-2",
    "Sodium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    SERUM,
    0,
    _both(136.0, 145.0),
    "normal",
    _same(140.0),
    2.4,
    floor=115.0,
)
POTASSIUM = Analyte(
    "2823-3",
    "Potassium [Moles/volume] in Serum or Plasma",
    "mmol/L",
    SERUM,
    1,
    _both(3.5, 5.1),
    "normal",
    _same(4.25),
    0.38,
    floor=2.3,
)
CHLORIDE = Analyte(
    "2075-0",
    "Chloride [Moles/volume] in Serum or Plasma",
    "mmol/L",
    SERUM,
    0,
    _both(98.0, 107.0),
    "normal",
    _same(102.5),
    2.6,
    floor=80.0,
)
CREATININE = Analyte(
    "2160-0",
    "Creatinine [Mass/volume] in Serum or Plasma",
    "mg/L",
    SERUM,
    1,
    {"M": (7.0, 13.0), "F": (5.5, 10.5)},
    "lognormal",
    {"M": 9.6, "F": 7.6},
    0.17,
    floor=3.0,
)
UREA = Analyte(
    "22664-7",
    "Urea [Moles/volume] in Serum or Plasma",
    "mmol/L",
    SERUM,
    1,
    _both(2.5, 7.5),
    "lognormal",
    _same(5.0),
    0.27,
    floor=1.0,
)
METABOLIC = (GLUCOSE, SODIUM, POTASSIUM, CHLORIDE, CREATININE, UREA)

# --- Lipids (exploration d'une anomalie lipidique) ----------------------------------------------
CHOL = Analyte(
    "2093-3",
    "Cholesterol [Mass/volume] in Serum or Plasma",
    "g/L",
    SERUM,
    2,
    _both(None, 2.00),
    "normal",
    _same(1.90),
    0.34,
    floor=0.9,
)
HDL = Analyte(
    "2085-9",
    "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    "g/L",
    SERUM,
    2,
    {"M": (0.40, None), "F": (0.50, None)},
    "normal",
    {"M": 0.50, "F": 0.63},
    0.12,
    floor=0.15,
)
LDL = Analyte(
    "13457-7",
    "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
    "g/L",
    SERUM,
    2,
    _both(None, 1.60),
    "normal",
    _same(1.20),
    0.3,
    floor=0.2,
)  # derived
TRIG = Analyte(
    "2571-8",
    "Triglyceride [Mass/volume] in Serum or Plasma",
    "g/L",
    SERUM,
    2,
    _both(0.35, 1.50),
    "lognormal",
    _same(1.05),
    0.42,
    floor=0.2,
)
LIPIDS = (CHOL, HDL, LDL, TRIG)
LDL_NOT_COMPUTABLE = "Non calculable (triglycérides > 3,40 g/L)"

# --- Single tests -----------------------------------------------------------------------------
TSH = Analyte(
    "3016-3",
    "Thyrotropin [Units/volume] in Serum or Plasma",
    "mU/L",
    SERUM,
    2,
    _both(0.27, 4.20),
    "lognormal",
    _same(1.6),
    0.5,
    floor=0.01,
)
HBA1C = Analyte(
    "4548-4",
    "Hemoglobin A1c/Hemoglobin.total in Blood",
    "%",
    BLOOD,
    1,
    _both(4.0, 6.0),
    "lognormal",
    _same(5.5),
    0.07,
    floor=3.8,
)
FERRITIN = Analyte(
    "2276-4",
    "Ferritin [Mass/volume] in Serum or Plasma",
    "ug/L",
    SERUM,
    0,
    {"M": (30.0, 400.0), "F": (15.0, 150.0)},
    "lognormal",
    {"M": 140.0, "F": 55.0},
    0.7,
    floor=2.0,
)
CRP = Analyte(
    "1988-5",
    "C reactive protein [Mass/volume] in Serum or Plasma",
    "mg/L",
    SERUM,
    1,
    _both(None, 5.0),
    "lognormal",
    _same(1.8),
    1.0,
    floor=0.3,
)

# --- Urine ------------------------------------------------------------------------------------
URINE_SG = Analyte(
    "5811-5",
    "Specific gravity of Urine by Test strip",
    "1",
    URINE,
    3,
    _both(1.005, 1.030),
    "normal",
    _same(1.018),
    0.0065,
    floor=1.001,
)
URINE_PROTEIN = Analyte(
    "2888-6",
    "Protein [Mass/volume] in Urine",
    "g/L",
    URINE,
    2,
    _both(None, 0.15),
    "lognormal",
    _same(0.06),
    0.8,
    floor=0.01,
)
MICROALBUMIN = Analyte(
    "14957-5",
    "Microalbumin [Mass/volume] in Urine",
    "mg/L",
    URINE,
    1,
    _both(None, 30.0),
    "lognormal",
    _same(8.0),
    0.9,
    floor=1.0,
)
URINALYSIS = (URINE_SG, URINE_PROTEIN, MICROALBUMIN)

# --- Serologies: HIV and viral hepatitis (codes from sensitivity.toml) ---------------------------
HIV_COMBO = Qualitative("56888-1", "HIV 1+2 Ab+HIV1 p24 Ag [Presence] in Serum or Plasma by Immunoassay", SERUM, 0.004)
HIV_COMBO_2 = Qualitative(
    "75622-1", "HIV 1+2 Ab+HIV 1 p24 Ag [Presence] in Serum or Plasma by Immunoassay", SERUM, 0.004
)
HBS_AG = Qualitative("5196-1", "Hepatitis B virus surface Ag [Presence] in Serum by Immunoassay", SERUM, 0.01)
HBC_AB = Qualitative("16933-4", "Hepatitis B virus core Ab [Presence] in Serum", SERUM, 0.06)
HCV_AB = Qualitative("13955-0", "Hepatitis C virus Ab [Presence] in Serum or Plasma by Immunoassay", SERUM, 0.01)
HAV_IGM = Qualitative("22314-9", "Hepatitis A virus IgM Ab [Presence] in Serum", SERUM, 0.03)
HBS_AB = Analyte(
    "16935-9",
    "Hepatitis B virus surface Ab [Units/volume] in Serum",
    "m[IU]/mL",
    SERUM,
    0,
    _both(10.0, None),
    "lognormal",
    _same(90.0),
    1.6,
    floor=2.0,
    cap=1000.0,
    ref_text="Immunisé si >= 10 mUI/mL",
)

# --- Pregnancy (women aged 15-50 only) ---------------------------------------------------------
BHCG = Analyte(
    "21198-7",
    "Choriogonadotropin.beta subunit [Units/volume] in Serum or Plasma",
    "[IU]/L",
    SERUM,
    1,
    _both(None, 5.0),
    "lognormal",
    _same(1.0),
    0.5,
    floor=0.1,
    ref_text="< 5 UI/L en dehors d'une grossesse",
)
HCG_URINE = Qualitative("2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine", URINE, 0.2)
PREGNANCY_RATE = 0.22  # among women tested

# --- Tumour markers (adults aged 50 and over) --------------------------------------------------
PSA = Analyte(
    "2857-1",
    "Prostate specific Ag [Mass/volume] in Serum or Plasma",
    "ng/mL",
    SERUM,
    2,
    _both(None, 4.0),
    "lognormal",
    _same(1.3),
    0.85,
    floor=0.01,
)
CA125 = Analyte(
    "10334-1",
    "Cancer Ag 125 [Units/volume] in Serum or Plasma",
    "U/mL",
    SERUM,
    1,
    _both(None, 35.0),
    "lognormal",
    _same(13.0),
    0.6,
    floor=1.0,
)
CEA = Analyte(
    "2039-6",
    "Carcinoembryonic Ag [Mass/volume] in Serum or Plasma",
    "ng/mL",
    SERUM,
    1,
    _both(None, 5.0),
    "lognormal",
    _same(1.8),
    0.65,
    floor=0.2,
)
CA199 = Analyte(
    "24108-3",
    "Cancer Ag 19-9 [Units/volume] in Serum or Plasma",
    "U/mL",
    SERUM,
    1,
    _both(None, 37.0),
    "lognormal",
    _same(10.0),
    0.85,
    floor=0.6,
)
AFP = Analyte(
    "1834-1",
    "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma",
    "ng/mL",
    SERUM,
    1,
    _both(None, 10.0),
    "lognormal",
    _same(3.0),
    0.55,
    floor=0.5,
)
CA153 = Analyte(
    "6875-9",
    "Cancer Ag 15-3 [Units/volume] in Serum or Plasma",
    "U/mL",
    SERUM,
    1,
    _both(None, 30.0),
    "lognormal",
    _same(15.0),
    0.45,
    floor=1.0,
)
# (marker, probability of being ordered) per sex
ONCOLOGY = {
    "M": ((PSA, 0.8), (CEA, 0.3), (CA199, 0.15), (AFP, 0.1)),
    "F": ((CA125, 0.45), (CA153, 0.4), (CEA, 0.35), (CA199, 0.15), (AFP, 0.1)),
}

# --- Molecular genetics (rare, free-text results) -----------------------------------------------
F5 = Genetic(
    "21668-9",
    "F5 gene mutations found [Identifier] in Blood or Tissue by Molecular genetics method Nominal",
    (
        ("Absence de la mutation c.1601G>A (facteur V Leiden) du gène F5", "N", 0.93),
        ("Hétérozygote pour la mutation c.1601G>A (facteur V Leiden) du gène F5", "A", 0.065),
        ("Homozygote pour la mutation c.1601G>A (facteur V Leiden) du gène F5", "A", 0.005),
    ),
)
HFE = Genetic(
    "21695-2",
    "HFE gene mutations found [Identifier] in Blood or Tissue by Molecular genetics method Nominal",
    (
        ("Absence des mutations C282Y, H63D et S65C du gène HFE", "N", 0.55),
        ("Hétérozygote pour la mutation H63D du gène HFE", "A", 0.25),
        ("Hétérozygote pour la mutation C282Y du gène HFE", "A", 0.1),
        ("Hétérozygote composite C282Y/H63D du gène HFE", "A", 0.04),
        ("Homozygote pour la mutation C282Y du gène HFE", "A", 0.06),
    ),
)
CFTR = Genetic(
    "21656-4",
    "CFTR gene mutations tested for in Blood or Tissue by Molecular genetics method Nominal",
    (
        ("Absence des 32 variants les plus fréquents du gène CFTR", "N", 0.96),
        ("Hétérozygote pour le variant F508del (c.1521_1523del) du gène CFTR", "A", 0.04),
    ),
)
BRCA1 = Genetic(
    "21636-6",
    "BRCA1 gene mutations tested for in Blood or Tissue by Molecular genetics method Nominal",
    (
        ("Absence de variant pathogène ou probablement pathogène du gène BRCA1", "N", 0.9),
        ("Variant pathogène détecté : BRCA1 c.5266dupC (p.Gln1756ProfsTer74)", "A", 0.06),
        ("Variant de signification incertaine (classe 3) du gène BRCA1", "A", 0.04),
    ),
)
BRCA2 = Genetic(
    "21637-4",
    "BRCA2 gene mutations tested for in Blood or Tissue by Molecular genetics method Nominal",
    (
        ("Absence de variant pathogène ou probablement pathogène du gène BRCA2", "N", 0.9),
        ("Variant pathogène détecté : BRCA2 c.5946delT (p.Ser1982ArgfsTer22)", "A", 0.06),
        ("Variant de signification incertaine (classe 3) du gène BRCA2", "A", 0.04),
    ),
)
# (tests ordered together, weight)
GENETICS = (((F5,), 0.4), ((HFE,), 0.35), ((CFTR,), 0.1), ((BRCA1, BRCA2), 0.15))

# Probability that a request includes each panel (sensitive ones depend on sex and age).
P_BLOOD_COUNT = 0.8
P_METABOLIC = 0.6
P_LIPIDS = 0.35
P_TSH = 0.25
P_HBA1C = 0.12
P_FERRITIN = 0.2
P_CRP = 0.3
P_URINE = 0.15
P_HIV = 0.07
P_HEPATITIS = 0.08
P_PREGNANCY = 0.12  # women 15-50
P_ONCOLOGY = 0.15  # age >= 50
P_GENETICS = 0.012

QUALITATIVE_NEGATIVE = "Négatif"
QUALITATIVE_POSITIVE = "Positif"

ALL_TESTS: tuple[Analyte | Qualitative | Genetic, ...] = (
    *BLOOD_COUNT,
    *METABOLIC,
    *LIPIDS,
    TSH,
    HBA1C,
    FERRITIN,
    CRP,
    *URINALYSIS,
    HIV_COMBO,
    HIV_COMBO_2,
    HBS_AG,
    HBC_AB,
    HBS_AB,
    HCV_AB,
    HAV_IGM,
    BHCG,
    HCG_URINE,
    PSA,
    CA125,
    CEA,
    CA199,
    AFP,
    CA153,
    F5,
    HFE,
    CFTR,
    BRCA1,
    BRCA2,
)
