"""HL7 v2 benchmark: parse + map N synthetic ORU^R01 v2.5 messages, against python-hl7's parser alone.

The messages are built once, before any timing, from ``labvault.synth`` patients (a pool cycled with
new control ids): an INS-NIR with a valid key under OID 1.2.250.1.213.1.4.8, names with accents
(UTF-8, declared in MSH-18), an ordering prescriber with an RPPS number, one OBR, 10 to 25 OBX
(numeric with UCUM unit, reference range and flag, or coded text), NTE comments, one SPM.
Deterministic from the seed.

Then, in the same process and on the same bytes, one pass each after a short warm-up, with the
objects left by the generator moved out of the garbage collector's way (``gc.freeze``): (a)
``hl7v2.parse`` + ``hl7v2.to_domain`` of every message; (b) ``hl7.parse`` (python-hl7, a parser only:
no mapping) of every message, as the baseline. One process, one thread: figures are per core.
"""

from __future__ import annotations

import gc
import platform
import random
import time
from collections.abc import Callable
from datetime import date, datetime

from labvault.domain.models import Identity, Result

ORG_OID = "1.2.250.1.999.1"  # a made-up lab OID for the local patient id and the sending facility
RPPS_OID = "1.2.250.1.71.4.2.1"
NIR_OID = "1.2.250.1.213.1.4.8"
_POOL = 256  # generated patients cycled through the messages


def cpu_model() -> str:
    """The CPU model name, as lscpu shows it (``platform.processor()`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _esc(s: str) -> str:
    """HL7 v2 escaping for the default encoding characters |^~\\&, and line breaks."""
    if not any(c in s for c in "|^~\\&\r\n"):
        return s
    return (
        s.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("~", "\\R\\")
        .replace("&", "\\T\\")
        .replace("\r\n", "\\.br\\")
        .replace("\n", "\\.br\\")
        .replace("\r", "\\.br\\")
    )


def _ts(d: datetime | date | None) -> str:
    if d is None:
        return ""
    if isinstance(d, datetime):
        return d.strftime("%Y%m%d%H%M%S")
    return d.strftime("%Y%m%d")


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


def _obx(i: int, r: Result, collected: str) -> str:
    if r.value_num is not None:
        vtype, value = "NM", _num(r.value_num)
    else:
        vtype, value = "ST", _esc(r.value_text or "")
    if r.ref_low is not None and r.ref_high is not None:
        ref = f"{_num(r.ref_low)}-{_num(r.ref_high)}"
    elif r.ref_high is not None:
        ref = f"<{_num(r.ref_high)}"
    elif r.ref_low is not None:
        ref = f">{_num(r.ref_low)}"
    else:
        ref = _esc(r.ref_text or "")
    status = {"final": "F", "corrected": "C", "preliminary": "P"}[str(r.status)]
    unit = f"{_esc(r.unit)}^^UCUM" if r.unit else ""
    fields = [
        "OBX",
        str(i),
        vtype,
        f"{_esc(r.code)}^{_esc(r.label)}^LN",
        "",
        value,
        unit,
        ref,
        r.flag or "",
        "",
        "",
        status,
        "",
        "",
        collected,
        "",
        _esc(r.validated_by or ""),
        "",
        "",
        _ts(r.validated_at),
    ]
    return "|".join(fields)


def _message(
    k: int,
    ident: Identity,
    local_id: str,
    prescriber: tuple[str, str, str],
    results: list[Result],
    requested: datetime,
    collected: datetime,
    received: datetime,
) -> bytes:
    family, given = _esc(ident.family_name), _esc(ident.given_names)
    names = f"{family}^{given}^^^^^L"
    if ident.birth_name:
        names = f"{_esc(ident.birth_name)}^{given}^^^^^L~{family}^{given}^^^^^D"
    address = _esc(ident.address or "")
    pid = [
        "PID",
        "1",
        "",
        f"{ident.nir}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^INS~{local_id}^^^LAB&{ORG_OID}&ISO^PI",
        "",
        names,
        "",
        _ts(ident.birth_date),
        ident.sex,
        "",
        "",
        address,
        "",
        _esc(ident.phone or ""),
    ]
    pid += [""] * (32 - len(pid)) + ["VALI" if ident.identity_status == "qualified" else "PROV"]
    rpps, pfam, pgiv = prescriber
    xcn = f"{rpps}^{_esc(pfam)}^{_esc(pgiv)}^^^^^^RPPS&{RPPS_OID}&ISO"
    reported = max((r.validated_at for r in results if r.validated_at), default=None)
    obr = [
        "OBR",
        "1",
        f"P{k}",
        f"A{k:09d}",
        "24331-1^Panel^LN",
        "",
        "",
        _ts(requested),
        "",
        "",
        "",
        "",
        "",
        "",
        _ts(received),
        "",
        xcn,
        "",
        "",
        "",
        "",
        "",
        _ts(reported),
        "",
        "",
        "",
        "F",
    ]
    segs = [
        f"MSH|^~\\&|LIS|LAB^{ORG_OID}^ISO|GW|HOSP|{_ts(received)}+0100||ORU^R01^ORU_R01|CTL{k:08d}|P|2.5"
        "|||||FRA|UNICODE UTF-8",
        "|".join(pid),
        f"ORC|RE|P{k}|A{k:09d}|||||||||{xcn}",
        "|".join(obr),
    ]
    ts_collected = _ts(collected)
    for i, r in enumerate(results, start=1):
        segs.append(_obx(i, r, ts_collected))
        if r.comment:
            segs.append(f"NTE|1|L|{_esc(r.comment)}")
    segs.append(f"SPM|1|S{k}^LAB||SER^Serum^HL70487|||||||||||||{ts_collected}|{_ts(received)}")
    return ("\r".join(segs) + "\r").encode("utf-8")


def build_messages(n: int, seed: int = 7) -> tuple[list[bytes], int]:
    """N ORU^R01 v2.5 messages (deterministic) and their total number of OBX segments."""
    from labvault.synth import LabGenerator

    gen = LabGenerator("bench-hl7", seed)
    pool = list(gen.patients(_POOL))
    flat = [r for p in pool for r in p.results]
    prescribers = [(p.rpps, p.family_name, p.given_name) for p in gen.prescribers]
    rng = random.Random(seed)
    out: list[bytes] = []
    total_obx = 0
    cursor = 0
    for k in range(n):
        rec = pool[k % _POOL]
        count = rng.randint(10, 25)
        results = [flat[(cursor + j) % len(flat)] for j in range(count)]
        cursor = (cursor + count) % len(flat)
        req = rec.requests[k % len(rec.requests)]
        spec = next(s for s in rec.specimens if s.request_id == req.request_id)
        out.append(
            _message(
                k,
                rec.identity,
                rec.identity.patient_id[:12],
                prescribers[k % len(prescribers)],
                results,
                req.requested_at,
                spec.collected_at,
                spec.received_at or spec.collected_at,
            )
        )
        total_obx += count
    return out, total_obx


def run_hl7(n: int, *, seed: int = 7, on_progress: Callable[[str, int], None] | None = None) -> dict[str, object]:
    import hl7

    from labvault.interop.hl7v2 import parse, to_domain

    messages, total_obx = build_messages(n, seed)
    if on_progress:
        on_progress("generate", n)
    step = max(1, n // 20)

    def ours() -> tuple[float, int]:
        mapped = 0
        t0 = time.perf_counter()
        for i, raw in enumerate(messages, start=1):
            mapped += len(to_domain(parse(raw, index=i)).results)
            if on_progress and i % step == 0:
                on_progress("labvault", step)
        return time.perf_counter() - t0, mapped

    def baseline() -> float:
        t0 = time.perf_counter()
        for i, raw in enumerate(messages, start=1):
            hl7.parse(raw, encoding="utf-8")
            if on_progress and i % step == 0:
                on_progress("python-hl7", step)
        return time.perf_counter() - t0

    for raw in messages[:50]:  # warm-up (imports, caches) outside the timings
        to_domain(parse(raw))
        hl7.parse(raw, encoding="utf-8")
    # The generator (Faker) leaves about a million long-lived objects that every full collection
    # would walk again: set them aside, for both timings alike, so that the parsers are measured.
    gc.collect()
    gc.freeze()
    try:
        seconds, mapped = ours()
        if mapped != total_obx:
            raise RuntimeError(f"mapped {mapped} results, expected {total_obx}")
        gc.collect()
        baseline_s = baseline()
    finally:
        gc.unfreeze()
    per_s = n / seconds
    base_per_s = n / baseline_s
    return {
        "bench": "hl7",
        "messages": n,
        "obx_per_message_avg": round(total_obx / n, 2),
        "bytes_per_message_avg": round(sum(map(len, messages)) / n),
        "messages_per_s": round(per_s),
        "results_per_s": round(total_obx / seconds),
        "seconds": round(seconds, 3),
        "baseline": f"python-hl7 {getattr(hl7, '__version__', '?')} hl7.parse",
        "baseline_per_s": round(base_per_s),
        "baseline_seconds": round(baseline_s, 3),
        "ratio": round(per_s / base_per_s, 2),
        "python": platform.python_version(),
        "cpu": cpu_model(),
    }
