"""Small ORU^R01 messages for ingest tests: one patient (a structure-only NIR with a valid key)."""

from __future__ import annotations

NIR = "185077512345608"
OID_NIR = "1.2.250.1.213.1.4.8"


def oru(
    control: str = "CTRL1",
    *,
    nir: str = NIR,
    oid: str = OID_NIR,
    value: str = "4.2",
    obx_type: str = "NM",
    facility: str = "LAB1",
) -> bytes:
    lines = [
        f"MSH|^~\\&|LIS|{facility}^1.2.3^ISO|GW|HOSP|20240101120000+0100||ORU^R01^ORU_R01|{control}|P|2.5.1",
        f"PID|1||{nir}^^^ASIP-SANTE-INS-NIR&{oid}&ISO^INS||DUPONT^Jean^^^^^L||19850704|M",
        "ORC|RE|||||||||||10001234567^HOUSE^Greg^^^^^^RPPS&1.2.250.1.71.4.2.1&ISO",
        f"OBR|1|P-{control}|F-{control}|24326-1^Electrolytes^LN|||20240101083000",
        f"OBX|1|{obx_type}|2823-3^Potassium^LN||{value}|mmol/L^^UCUM|3.5-5.1|N|||F",
        "OBX|2|NM|2951-2^Sodium^LN||140|mmol/L^^UCUM|135-145|N|||F",
    ]
    return ("\r".join(lines) + "\r").encode()


def framed(message: bytes) -> bytes:
    return b"\x0b" + message + b"\x1c\r"
