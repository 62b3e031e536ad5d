"""Messages and lookups for the identity-vigilance tests: ORU^R01 with the PID one wants, ADT^A40."""

from __future__ import annotations

from datetime import date

from labvault.access import Gateway, Principal, Purpose
from labvault.ingest.service import Ingestor, Summary, read

TENANT = "lab-a"


def nir(prefix13: str) -> str:
    """An INS-NIR with its key."""
    return prefix13 + f"{97 - int(prefix13) % 97:02d}"


JONES_NIR = nir("1610675123456")
DUPONT_NIR = nir("1850775123456")
MARTIN_NIR = nir("2700269123456")


def oru(
    control: str,
    *,
    ins: str | None,
    family: str,
    given: str,
    born: str,
    sex: str = "M",
    value: str = "4.2",
    name_types: str = "L",
    facility: str = "LAB1",
) -> bytes:
    """One ORU^R01 with one potassium (and a sodium): PID-5 as ``family^given`` of type ``name_types``
    (``family`` may hold several repetitions, ``~``-separated, each with its type)."""
    pid3 = f"{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS" if ins else ""
    names = "~".join(
        f"{fam}^{given}^^^^^{kind}" for fam, kind in zip(family.split("~"), name_types.split("~"), strict=True)
    )
    lines = [
        f"MSH|^~\\&|LIS|{facility}^1.2.3^ISO|GW|HOSP|20240101120000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{pid3}||{names}||{born}|{sex}",
        "ORC|RE|||||||||||10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
        f"OBR|1|P-{control}|F-{control}|24326-1^Electrolytes^LN|||20240101083000",
        f"OBX|1|NM|2823-3^Potassium^LN||{value}|mmol/L^^UCUM|3.5-5.1|N|||F",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|135-145|N|||F",
    ]
    return ("\r".join(lines) + "\r").encode()


def a40(control: str, *, kept_ins: str, merged_ins: str) -> bytes:
    lines = [
        f"MSH|^~\\&|HIS|HOSP^1.2.9^ISO|GW|LAB|20240102120000+0100||ADT^A40^ADT_A39|{control}|P|2.5",
        "EVN|A40|20240102120000",
        f"PID|1||{kept_ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||KEPT^Name^^^^^L||19850704|M",
        f"MRG|{merged_ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS",
    ]
    return ("\r".join(lines) + "\r").encode()


def ingest(gw: Gateway, who: Principal, data: bytes, *, tenant: str = TENANT) -> Summary:
    summary = Summary("test", "hl7v2")
    pieces = read(data, file="test")
    Ingestor(gw, who, tenant, feed="test").ingest_pieces(pieces, summary)
    return summary


def patient_by_nir(gw: Gateway, who: Principal, value: str) -> str:
    with gw.unit(who, Purpose.CARE) as u:
        found = u.find_patients_by_nir(TENANT, value)
    assert len(found) == 1, len(found)
    return found[0].patient_id


def by_name(gw: Gateway, who: Principal, family: str, given: str, born: date) -> list[str]:
    with gw.unit(who, Purpose.CARE) as u:
        return [p.patient_id for p in u.find_patients_by_name(TENANT, family, given, born)]


def state(gw: Gateway, who: Principal, patient_id: str) -> tuple[list[str], list[tuple[str, str, float | None]]]:
    """A patient's request ids and (request, code, value) of its results, sorted."""
    with gw.unit(who, Purpose.CARE) as u:
        requests = sorted(q.request_id for q in u.requests_of(TENANT, patient_id))
        results = sorted((r.request_id, r.code, r.value_num) for r in u.results_of(TENANT, patient_id))
    return requests, results
