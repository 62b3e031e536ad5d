"""The FHIR R4 read API: ``/fhir/R4``. A lab's accounts read their own lab's data as FHIR.

Every read goes through the gateway (so it is authorised and audited like ``/api/v1``); the
resources are written by ``labvault.interop.fhir_out``. Searches are exact matches through the
blind indexes (INS, or family + given name + birth date) or a patient's own rows; there is no
lab-wide search. Paging: ``_count`` (default 50, at most 500) and ``_offset``, with ``next`` and
``previous`` links. Errors are ``OperationOutcome`` bodies with the HTTP status of ``/api/v1``.

Every link written (``fullUrl``, ``Bundle.link``, the CapabilityStatement's url) is built on the
configured public base URL (``LABVAULT_PUBLIC_BASE_URL``), never on the request's ``Host`` header,
which the client chooses: a forged Host cannot make the API hand out links to another server.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from labvault import __version__
from labvault.access import Purpose
from labvault.api.deps import Caller, Public, Reader, gateway
from labvault.config import DEFAULT_PUBLIC_BASE_URL
from labvault.domain.identifiers import OID_INS_TEST, OID_NIA, OID_NIR
from labvault.errors import AccessDenied, InvalidInput, NotFound
from labvault.interop import fhir_out

FHIR_JSON = "application/fhir+json"
BASE = "/fhir/R4"
DEFAULT_COUNT, MAX_COUNT = 50, 500
OID_NIA_TEST = "1.2.250.1.213.1.4.11"  # the test NIA (the ANS test platform's), beside the test INS-NIR .4.10
# An INS search: INS-NIR (.4.8), NIA (.4.9), and their test OIDs (.4.10, .4.11), bare or as urn:oid:.
INS_SYSTEMS = {f"urn:oid:{oid}" for oid in (OID_NIR, OID_NIA, OID_INS_TEST, OID_NIA_TEST)}
_DATE = re.compile(r"^(eq|ge|le|gt|lt)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_SEARCH = {
    "Patient": {"identifier", "family", "given", "birthdate", "_id"},
    "Observation": {"patient", "subject", "code", "date"},
    "DiagnosticReport": {"patient", "subject"},
    "ServiceRequest": {"patient", "subject"},
}
_COMMON = {"_count", "_offset", "_format"}

router = APIRouter(prefix=BASE, include_in_schema=False)


def outcome(status: int, code: str, text: str) -> JSONResponse:
    """An OperationOutcome: one issue, severity error, with its reason."""
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


class FhirJSONResponse(JSONResponse):
    """FHIR JSON written by ``fhir_out.dumps``: a value as written (``12.50``) keeps its digits."""

    media_type = FHIR_JSON

    def render(self, content: object) -> bytes:
        return fhir_out.dumps(content).encode("utf-8")


def _fhir(body: dict, status: int = 200) -> JSONResponse:
    return FhirJSONResponse(body, status_code=status, media_type=FHIR_JSON)


def base_url(request: Request) -> str:
    """The FHIR base every link is built on: the configured public base URL + ``/fhir/R4``."""
    runtime = getattr(request.app.state, "runtime", None)
    settings = getattr(runtime, "settings", None)
    return (getattr(settings, "public_base_url", None) or DEFAULT_PUBLIC_BASE_URL).rstrip("/") + BASE


def _lab(caller: Caller) -> str:
    p = caller.principal
    if p.is_platform:
        raise AccessDenied(
            "the FHIR API serves a lab's own accounts; vendor support reads through /api/v1 under a grant"
        )
    return p.tenant_id


@router.get("/metadata", dependencies=[Public])
def metadata(request: Request) -> JSONResponse:
    """The CapabilityStatement (public, as FHIR servers do: it holds no data)."""

    def res(rtype: str, params: list[tuple[str, str]], read: bool) -> dict:
        out = {
            "type": rtype,
            "interaction": ([{"code": "read"}] if read else []) + [{"code": "search-type"}],
            "searchParam": [{"name": n, "type": t} for n, t in params],
        }
        return out

    body = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-24",
        "kind": "instance",
        "software": {"name": "Labvault", "version": __version__},
        "implementation": {"description": "Labvault FHIR R4 read API", "url": base_url(request)},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {"description": "Session cookie or bearer token of a lab account; every read is audited."},
                "resource": [
                    res(
                        "Patient",
                        [
                            ("identifier", "token"),
                            ("family", "string"),
                            ("given", "string"),
                            ("birthdate", "date"),
                            ("_id", "token"),
                        ],
                        True,
                    ),
                    res(
                        "Observation",
                        [("patient", "reference"), ("subject", "reference"), ("code", "token"), ("date", "date")],
                        False,
                    ),
                    res("DiagnosticReport", [("patient", "reference"), ("subject", "reference")], False),
                    res("ServiceRequest", [("patient", "reference"), ("subject", "reference")], False),
                ],
            }
        ],
    }
    return _fhir(body)


def _check_params(request: Request, rtype: str) -> None:
    unknown = set(request.query_params) - _SEARCH[rtype] - _COMMON
    if unknown:
        raise InvalidInput(f"unsupported search parameter(s) for {rtype}: {', '.join(sorted(unknown))}")
    fmt = request.query_params.get("_format")
    if fmt and fmt not in ("json", FHIR_JSON, "application/json"):
        raise InvalidInput("only JSON is served (_format=json)")


def _paging(request: Request) -> tuple[int, int]:
    def number(name: str, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        if not raw.isdigit():
            raise InvalidInput(f"{name} must be a non-negative integer")
        return int(raw)

    return min(number("_count", DEFAULT_COUNT), MAX_COUNT), number("_offset", 0)


def _bundle(request: Request, rtype: str, resources: list[dict]) -> JSONResponse:
    count, offset = _paging(request)
    page = resources[offset : offset + count] if count else []
    base = base_url(request)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_count", "_offset")]

    def link(relation: str, off: int) -> dict:
        return {
            "relation": relation,
            "url": f"{base}/{rtype}?" + urlencode([*params, ("_count", count), ("_offset", off)]),
        }

    links = [link("self", offset)]
    if count and offset + count < len(resources):
        links.append(link("next", offset + count))
    if offset > 0 and count:
        links.append(link("previous", max(0, offset - count)))
    return _fhir(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(resources),
            "link": links,
            "entry": [
                {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                for r in page
            ],
        }
    )


def _patient_param(request: Request) -> str:
    values = request.query_params.getlist("patient") + request.query_params.getlist("subject")
    if len(values) != 1:
        raise InvalidInput("give exactly one patient (patient=<id> or subject=Patient/<id>)")
    ref = values[0]
    if ref.startswith(("Patient/", "http://", "https://")):
        ref = ref.rsplit("/", 1)[-1] if "Patient/" in ref else ""
    if not ref:
        raise InvalidInput("patient must be a Patient id or reference")
    return ref


def _date_range(values: list[str]) -> tuple[date | None, date | None]:
    """FHIR date prefixes (eq, ge, le, gt, lt) at day, month or year precision -> an inclusive day range."""
    lo: date | None = None
    hi: date | None = None
    for raw in values:
        m = _DATE.match(raw)
        if not m:
            raise InvalidInput("date must be [eq|ge|le|gt|lt]YYYY[-MM[-DD]]")
        prefix, y, mo, d = m.group(1) or "eq", int(m.group(2)), m.group(3), m.group(4)
        try:
            if d:
                first = last = date(y, int(mo), int(d))
            elif mo:
                first = date(y, int(mo), 1)
                last = date(y, int(mo), calendar.monthrange(y, int(mo))[1])
            else:
                first, last = date(y, 1, 1), date(y, 12, 31)
        except ValueError:
            raise InvalidInput("date is not a valid calendar date") from None
        if prefix in ("eq", "ge"):
            lo = max(lo, first) if lo else first
        if prefix in ("eq", "le"):
            hi = min(hi, last) if hi else last
        if prefix == "gt":
            nxt = date.fromordinal(last.toordinal() + 1)
            lo = max(lo, nxt) if lo else nxt
        if prefix == "lt":
            prev = date.fromordinal(first.toordinal() - 1)
            hi = min(hi, prev) if hi else prev
    return lo, hi


def _read(request: Request, caller: Caller, work: Callable) -> JSONResponse:
    tenant = _lab(caller)
    with gateway(request).unit(caller.principal, Purpose.CARE) as u:
        return work(u, tenant)


@router.get("/Patient/{patient_id}")
def read_patient(patient_id: str, request: Request, caller: Reader) -> JSONResponse:
    return _read(request, caller, lambda u, lab: _fhir(fhir_out.patient(u.get_patient(lab, patient_id), lab)))


@router.get("/Patient")
def search_patient(request: Request, caller: Reader) -> JSONResponse:
    _check_params(request, "Patient")
    q = request.query_params

    def work(u, lab: str) -> JSONResponse:
        if q.get("_id"):
            try:
                found = [u.get_patient(lab, q["_id"])]
            except NotFound:
                found = []
        elif q.get("identifier"):
            system, sep, value = q["identifier"].rpartition("|")
            if sep and system and not system.startswith("urn:oid:"):
                system = "urn:oid:" + system
            if not sep or system not in INS_SYSTEMS:
                raise InvalidInput(
                    "identifier must be an INS: urn:oid:1.2.250.1.213.1.4.8|<NIR> "
                    "(.4.9 for an NIA, .4.10 and .4.11 for the test INS and NIA)"
                )
            found = u.find_patients_by_nir(lab, value)
        elif q.get("family") or q.get("given") or q.get("birthdate"):
            if not (q.get("family") and q.get("given") and q.get("birthdate")):
                raise InvalidInput("a name search needs family, given and birthdate together (exact match)")
            try:
                born = date.fromisoformat(q["birthdate"])
            except ValueError:
                raise InvalidInput("birthdate must be YYYY-MM-DD") from None
            found = u.find_patients_by_name(lab, q["family"], q["given"], born)
        else:
            raise InvalidInput("search patients by identifier, by family + given + birthdate, or by _id")
        return _bundle(request, "Patient", [fhir_out.patient(p, lab) for p in found])

    return _read(request, caller, work)


def _code(value: str | None) -> str | None:
    if value is None:
        return None
    return value.rpartition("|")[2] or None


@router.get("/Observation")
def search_observation(request: Request, caller: Reader) -> JSONResponse:
    _check_params(request, "Observation")
    patient = _patient_param(request)
    lo, hi = _date_range(request.query_params.getlist("date"))
    code = _code(request.query_params.get("code"))

    def work(u, lab: str) -> JSONResponse:
        results = u.results_of(lab, patient, code=code, collected_from=lo, collected_to=hi)
        return _bundle(request, "Observation", [fhir_out.observation(r, patient) for r in results])

    return _read(request, caller, work)


@router.get("/Observation/{result_id}/_history")
def observation_history(result_id: str, request: Request, caller: Reader) -> JSONResponse:
    """Every version of one Observation, newest first (a ``history`` Bundle): each the Observation
    as it was, with ``meta.versionId``; the current one is the last version."""

    def work(u, lab: str) -> JSONResponse:
        versions = u.result_history(lab, result_id)
        patient = u.patient_of_result(lab, result_id)
        base = base_url(request)
        entries = []
        for res in reversed(versions):
            o = fhir_out.observation(res, patient)
            o["meta"] = {"versionId": str(res.version)}
            entries.append(
                {
                    "fullUrl": f"{base}/Observation/{o['id']}",
                    "resource": o,
                    "request": {"method": "PUT" if res.version > 1 else "POST", "url": f"Observation/{o['id']}"},
                    "response": {"status": "200" if res.version > 1 else "201"},
                }
            )
        link = [{"relation": "self", "url": f"{base}/Observation/{result_id}/_history"}]
        return _fhir(
            {"resourceType": "Bundle", "type": "history", "total": len(entries), "link": link, "entry": entries}
        )

    return _read(request, caller, work)


@router.get("/ServiceRequest")
def search_service_request(request: Request, caller: Reader) -> JSONResponse:
    _check_params(request, "ServiceRequest")
    patient = _patient_param(request)

    def work(u, lab: str) -> JSONResponse:
        requests = u.requests_of(lab, patient)
        statuses = _statuses(u.results_of(lab, patient))
        orders = [fhir_out.service_request(q, result_statuses=statuses.get(q.request_id, [])) for q in requests]
        return _bundle(request, "ServiceRequest", orders)

    return _read(request, caller, work)


def _statuses(results: list) -> dict[str, list]:
    """request id -> its results' statuses (what a request's status follows when its row has none)."""
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(r.request_id, []).append(r.status)
    return out


@router.get("/DiagnosticReport")
def search_diagnostic_report(request: Request, caller: Reader) -> JSONResponse:
    _check_params(request, "DiagnosticReport")
    patient = _patient_param(request)

    def work(u, lab: str) -> JSONResponse:
        requests = u.requests_of(lab, patient)
        results = u.results_of(lab, patient)
        by_request: dict[str, list[str]] = {}
        for r in results:
            by_request.setdefault(r.request_id, []).append(r.result_id)
        statuses = _statuses(results)
        reports = [
            fhir_out.diagnostic_report(
                q, by_request.get(q.request_id, []), result_statuses=statuses.get(q.request_id, [])
            )
            for q in requests
        ]
        return _bundle(request, "DiagnosticReport", reports)

    return _read(request, caller, work)
