"""Pages of the incident register (I1..I5): the list with each lab's live 72-hour countdown, one
incident's timeline, analysis, notices and Art. 33 drafts, and the lab's decision forms.

A lab's lab_admin and lab_dpo see the incidents their lab has a part in, their own part only (the
gateway gives nothing else: ``Unit.incidents``); the vendor's security officer (and the platform
admin, read only) sees the processor's incidents with each lab's clock, state and counts, never a
lab's reasoning, draft, letters or affected list. The decisions (notify / no risk, the authority's
notification, the Art. 34 exemption) are the lab's (``incident:decide``); the letters, which open
the affected patients' names and addresses, are its DPO's, after a TOTP step-up, built in memory
and never written to disk. Every read and write goes through the gateway, which authorises and
audits again.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labvault.access import Principal, Purpose
from labvault.access.incidents import Incident, LabPart, Step
from labvault.api.deps import gateway
from labvault.breach import incidents as register
from labvault.crypto.keys import PLATFORM
from labvault.errors import InvalidInput, NotFound
from labvault.ids import utcnow
from labvault.web.errors import refuse
from labvault.web.pages import LAB_ZONE, Approver, SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)

LAB_ROLES = frozenset({"lab_admin", "lab_dpo"})
VENDOR_ROLES = frozenset({"security_officer", "platform_admin"})
MEDIA = {"json": "application/json", "html": "text/html; charset=utf-8", "pdf": "application/pdf"}
# A kept notice or draft shown as its own HTML document: its own style sheet inline, never a script.
DOCUMENT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; sandbox"
STATES = {
    "open": "en cours",
    "notified": "notifié à l'autorité",
    "not-notified": "non notifié (pas de risque)",
    "contained": "maîtrisé",
    "closed": "clos",
}
KINDS = {"confidentiality": "confidentialité", "integrity": "intégrité", "availability": "disponibilité"}
STEPS = {
    "opened": "ouvert",
    "analysed": "analyse du fichier",
    "notice": "notification du sous-traitant",
    "notice-sent": "notification transmise au laboratoire",
    "reminder-24h": "rappel à 24 h",
    "reminder-48h": "rappel à 48 h",
    "reminder-66h": "rappel à 66 h",
    "drafted": "projet de notification (art. 33)",
    "decided": "décision",
    "notified": "notification à l'autorité",
    "letters": "courriers aux personnes (art. 34)",
    "exempted": "dispense de communication (art. 34(3))",
    "updated": "mise à jour",
    "closed": "clôture",
}


def _who(request: Request, principal: Principal) -> str:
    """ "lab" (its lab_admin or lab_dpo) or "vendor" (the security team); anyone else is refused."""
    roles = set(principal.roles)
    if principal.is_platform and VENDOR_ROLES & roles:
        return "vendor"
    if not principal.is_platform and LAB_ROLES & roles:
        return "lab"
    refuse(request, principal, "incident:read", "this page is for a lab's admin and DPO and the vendor's security team")


def _lab(request: Request, principal: Principal, action: str) -> str:
    if principal.is_platform or not LAB_ROLES & set(principal.roles):
        refuse(request, principal, action, "a lab's decision is taken by the lab's admin or DPO only")
    return principal.tenant_id


def _field(sent: SentForm, name: str, limit: int = 20_000) -> str:
    return str(sent.get(name) or "")[:limit]


def _id(value: str) -> str:
    return (value or "")[:64]


def remaining(deadline: datetime, now: datetime) -> str:
    """The time left to the deadline as H:MM:SS, a minus sign once past (the script ticks the same)."""
    seconds = int((deadline - now).total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _clock(part: LabPart, now: datetime) -> dict[str, Any]:
    return {
        "started": part.clock_started,
        "deadline": part.deadline.astimezone(UTC).isoformat(),
        "left": remaining(part.deadline, now),
        "late": part.deadline < now,
        "running": part.clock_started and part.state == "open",
    }


def _rows(found: list[Incident], now: datetime, who: str) -> list[dict[str, Any]]:
    out = []
    for inc in found:
        parts = [
            {
                "lab": p.tenant_id,
                "state": STATES.get(p.state, p.state),
                "clock": _clock(p, now),
                "deadline": p.deadline,
                "patients": p.patients,
                "records": p.records,
                "decision": p.decision if who == "lab" else None,
            }
            for p in inc.parts
        ]
        out.append({"inc": inc, "state": STATES.get(inc.state, inc.state), "parts": parts})
    return out


@router.get("/incidents")
def listing(request: Request, caller: Viewer) -> HTMLResponse:
    """The register: a lab's own parts (its clock each), or the processor's incidents with each lab's."""
    principal = caller[0]
    who = _who(request, principal)
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        found = u.incidents()
    now = utcnow()
    return render(request, "incidents_list.html", rows=_rows(found, now, who), who=who)


def _timeline(steps: list[Step], who: str) -> list[dict[str, Any]]:
    out = []
    for s in steps:  # the vendor reads a lab's step by its name only (a lab's decisions are its own)
        shown = who == "lab" or s.tenant_id == PLATFORM
        detail = {k: v for k, v in s.detail.items() if k != "alert"} if shown else {}
        out.append(
            {
                "at": s.at,
                "lab": None if s.tenant_id == PLATFORM else s.tenant_id,
                "step": STEPS.get(s.step, s.step),
                "detail": ", ".join(f"{k}: {v}" for k, v in sorted(detail.items()) if v is not None),
            }
        )
    return out


@router.get("/incidents/{incident_id}")
def one(request: Request, caller: Viewer, incident_id: str) -> HTMLResponse:
    """One incident: the lab's part (clock, analysis, notices, drafts, decisions), or for the vendor
    each lab's clock, state and counts."""
    principal = caller[0]
    who = _who(request, principal)
    now = utcnow()
    match = notices = drafts = reasons = None
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        inc = u.incident(_id(incident_id))
        steps = _timeline(u.incident_timeline(inc.incident_id), who)
        if who == "lab":
            lab = principal.tenant_id
            if inc.analysis_id:
                try:
                    match = u.leak_match(lab, inc.analysis_id)
                except NotFound:
                    match = None
            notices = u.incident_versions(inc.incident_id, lab, "notice")
            drafts = u.incident_versions(inc.incident_id, lab, "art33")
            opened = u.incident_reasons(inc.incident_id, lab)
            reasons = {k: opened[k] for k in ("decision", "delay", "exemption") if opened.get(k)}
    rows = _rows([inc], now, who)[0]
    part = inc.parts[0] if who == "lab" and inc.parts else None
    return render(
        request,
        "incidents_one.html",
        inc=inc,
        row=rows,
        who=who,
        part=part,
        clock=_clock(part, now) if part else None,
        match=match,
        notices=notices or [],
        drafts=drafts or [],
        reasons=reasons or {},
        steps=steps,
        processor=inc.owner == PLATFORM,
        kinds=KINDS,
        officer=who == "vendor" and "security_officer" in principal.roles,
        dpo="lab_dpo" in principal.roles,
    )


@router.get("/incidents/{incident_id}/documents/{document}/{version}")
def document(
    request: Request,
    caller: Viewer,
    incident_id: str,
    document: str,
    version: int,
    format: str = "html",  # noqa: A002 - the query parameter's name
) -> Response:
    """A kept version of the lab's notice or Art. 33 draft, as HTML, PDF or JSON (the lab's own)."""
    principal = caller[0]
    lab = _lab(request, principal, "incident:read")
    if document not in ("notice", "art33") or format not in MEDIA:
        raise InvalidInput("a document is notice or art33, its format html, pdf or json")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        kept = u.incident_versions(_id(incident_id), lab, document)
    chosen = next((v for v in kept if v.version == version), None)
    if chosen is None:
        raise NotFound("no such version of this document")
    response = Response(register.render(chosen, format), media_type=MEDIA[format])
    if format == "html":
        response.headers["content-security-policy"] = DOCUMENT_CSP
    else:
        name = f"{document}-{chosen.incident_id[:12]}-v{chosen.version}.{format}"
        response.headers["content-disposition"] = f'attachment; filename="{name}"'
    return response


def _back(incident_id: str) -> RedirectResponse:
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)


@router.post("/incidents/{incident_id}/draft")
def new_draft(request: Request, caller: Writer, sent: SentForm, incident_id: str) -> Response:
    """A new version of the lab's Art. 33 draft (initial, then complementary)."""
    principal = caller[0]
    lab = _lab(request, principal, "incident:decide")

    def lines(name: str) -> list[str]:
        return [x.strip()[:2000] for x in _field(sent, name).splitlines() if x.strip()][:50]

    with gateway(request).unit(principal, Purpose.BREACH) as u:
        taken, proposed = lines("measures_taken"), lines("measures_proposed")
        register.draft(u, _id(incident_id), lab, measures_taken=taken, measures_proposed=proposed)
    return _back(_id(incident_id))


@router.post("/incidents/{incident_id}/decision")
def decide(request: Request, caller: Writer, sent: SentForm, incident_id: str) -> Response:
    principal = caller[0]
    lab = _lab(request, principal, "incident:decide")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        u.incident_decide(
            _id(incident_id), lab, decision=_field(sent, "decision", 16), reasoning=_field(sent, "reasoning")
        )
    return _back(_id(incident_id))


def _local_time(text: str) -> datetime:
    """A datetime-local field, in the lab's zone (the form's own), or an ISO time with its offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("the notification's time is a date and a time") from None
    return value.replace(tzinfo=LAB_ZONE) if value.tzinfo is None else value


@router.post("/incidents/{incident_id}/notified")
def notified(request: Request, caller: Writer, sent: SentForm, incident_id: str) -> Response:
    """The authority's notification: its time and reference; past 72 hours, the reason for the delay."""
    principal = caller[0]
    lab = _lab(request, principal, "incident:decide")
    at = _local_time(_field(sent, "at", 40))
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        u.incident_notified(
            _id(incident_id),
            lab,
            at=at,
            reference=_field(sent, "reference", 100),
            delay_reason=_field(sent, "delay_reason") or None,
        )
    return _back(_id(incident_id))


@router.post("/incidents/{incident_id}/exemption")
def exempt(request: Request, caller: Writer, sent: SentForm, incident_id: str) -> Response:
    """Art. 34(3): no letters, on a ground and a reason."""
    principal = caller[0]
    lab = _lab(request, principal, "incident:decide")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        u.incident_exempt(_id(incident_id), lab, ground=_field(sent, "ground", 32), reason=_field(sent, "reason"))
    return _back(_id(incident_id))


def one_pdf(pdfs: list[bytes]) -> bytes:
    """The letters as one PDF (for one print run), joined in memory."""
    import pypdfium2  # type: ignore[import-untyped]

    out = pypdfium2.PdfDocument.new()
    for data in pdfs:
        out.import_pages(pypdfium2.PdfDocument(data))
    buf = io.BytesIO()
    out.save(buf)
    return buf.getvalue()


@router.post("/incidents/{incident_id}/letters")
def letters(request: Request, caller: Approver, sent: SentForm, incident_id: str) -> Response:
    """Art. 34: the letters to the lab's affected patients (its DPO, after a TOTP step-up): a ZIP of
    one PDF each, or one PDF of them all; built in memory, never written to disk."""
    principal = caller[0]
    lab = _lab(request, principal, "incident:letters")
    shape = _field(sent, "as", 8) or "zip"
    if shape not in ("zip", "pdf"):
        raise InvalidInput("the letters come as a zip or as one pdf")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        pdfs = register.letters(u, _id(incident_id), lab)
    stem = f"lettres-{_id(incident_id)[:12]}"
    if shape == "pdf":
        body, media = one_pdf(pdfs), "application/pdf"
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for n, pdf in enumerate(pdfs, 1):
                z.writestr(f"lettre-{n:05d}.pdf", pdf)
        body, media = buf.getvalue(), "application/zip"
    response = Response(body, media_type=media)
    response.headers["content-disposition"] = f'attachment; filename="{stem}.{shape}"'
    return response


@router.post("/incidents/{incident_id}/notices")
def send_notices(request: Request, caller: Writer, incident_id: str) -> Response:
    """The vendor's security officer sends each lab its notice (a new version each time)."""
    principal = caller[0]
    if not principal.is_platform or "security_officer" not in principal.roles:
        refuse(request, principal, "incident:manage", "the processor's notices are sent by its security officer")
    with gateway(request).unit(principal, Purpose.BREACH) as u:
        register.send_notices(u, _id(incident_id))
    return _back(_id(incident_id))
