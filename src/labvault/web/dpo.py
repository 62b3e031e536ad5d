"""The pages of the lab's data protection officer (and its admin): the audit explorer, who saw a
patient's data, and the state of the lab's audit chain with its retention rules and legal holds.

The lab's ``lab_dpo`` and ``lab_admin`` only, on their own lab: a vendor account (even a security
officer, whom the policy lets read a lab's trail through the API) gets nothing of a lab here. A
patient is searched by NIR or INS through the blind index, posted in a form (never in a URL, so
never in an access log or the browser's history). People are shown by name and e-mail, read from
the lab's accounts and the vendor accounts its grants name; every search is itself audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from labvault.access import Principal, Purpose
from labvault.api.deps import gateway
from labvault.audit import service as audit
from labvault.errors import InvalidInput
from labvault.retention import policy as retention
from labvault.web.pages import LAB_ZONE, SentForm, Viewer, Writer, render

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 100
READERS = frozenset({"lab_dpo", "lab_admin"})
# The families of actions the explorer filters on (a prefix of the action).
ACTIONS = (
    ("patient:", "Données des patients"),
    ("account:", "Comptes et connexions"),
    ("grant:", "Accès du support"),
    ("instruction:", "Instructions signées"),
    ("audit:", "Journal d'audit"),
    ("retention:", "Conservation"),
    ("identity:", "Identitovigilance"),
    ("quarantine:", "Quarantaine"),
)
# How an action reads on the page (the code stays visible next to it).
ACTION_LABELS = {
    "patient:identity:read": "Lecture de l'identité",
    "patient:identity:search": "Recherche de patient",
    "patient:request:read": "Lecture des demandes",
    "patient:result:read": "Lecture des résultats",
    "patient:identity:create": "Création d'identité",
    "patient:request:create": "Création de demande",
    "patient:result:create": "Création de résultat",
    "account:login": "Connexion",
    "account:login:failure": "Échec de connexion",
    "audit:search": "Recherche dans le journal",
    "audit:verify": "Vérification du journal",
    "audit:export": "Export du journal",
    "audit:pull": "Relevé des points de contrôle",
    "audit:checkpoint": "Point de contrôle signé",
}
OUTCOMES = {"allowed": "Autorisé", "denied": "Refusé", "alert": "Alerte"}
PURPOSES = {
    "care": "Soins",
    "ingest": "Intégration",
    "administration": "Administration",
    "support": "Support (accès accordé)",
    "export": "Export (instruction signée)",
    "authentication": "Authentification",
    "generate": "Données de synthèse",
    "benchmark": "Mesure de performance",
    "demo": "Démonstration",
}


def _lab_of(u: Any, principal: Principal) -> str:
    """The caller's lab, for the lab's DPO or admin; a vendor account or another role is refused
    (and the refusal recorded in its own trail)."""
    if principal.is_platform or not READERS & set(principal.roles):
        u.refuse(
            principal.tenant_id, "audit:read", "the audit pages are for the lab's data protection officer and admin"
        )
    return principal.tenant_id


Person = audit.Person


def _people(u: Any, lab: str) -> tuple[dict[str, Person], dict[str, Any]]:
    return audit.people(u, lab)


def _matching(people: dict[str, Person], who: str) -> list[str]:
    """The account ids whose e-mail is ``who`` or whose name contains it (case and accents as typed)."""
    text = who.strip().casefold()
    by_email = [k for k, p in people.items() if p.email and p.email.casefold() == text]
    return by_email or [k for k, p in people.items() if text in p.name.casefold()]


def _at(value: Any) -> datetime:
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _day(text: str, *, end: bool) -> datetime | None:
    """A day of the form (the lab's time) as the UTC instant it starts, or the one the next starts."""
    if not text:
        return None
    try:
        d = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput("a period is given as dates") from None
    if end:
        d += timedelta(days=1)
    return datetime.combine(d, time(), tzinfo=LAB_ZONE).astimezone(UTC) - (
        timedelta(microseconds=1) if end else timedelta()
    )


@dataclass(frozen=True)
class Row:
    seq: int
    at: datetime
    who: Person | None
    roles: str
    action: str
    action_label: str | None
    outcome: str
    object_type: str
    count: int
    refs: list[str]
    purpose: str
    grant: Any


def _rows(events: list[dict[str, Any]], people: dict[str, Person], grants: dict[str, Any]) -> list[Row]:
    import json

    rows = []
    for e in events:
        refs = e.get("object_refs")
        try:
            refs = json.loads(refs) if isinstance(refs, str) else refs
        except ValueError:
            refs = None
        rows.append(
            Row(
                seq=int(e["seq"]),
                at=_at(e["at"]),
                who=people.get(e["actor"]),
                roles=", ".join(json.loads(e["actor_roles"]))
                if str(e.get("actor_roles", "")).startswith("[")
                else str(e.get("actor_roles") or ""),
                action=e["action"],
                action_label=ACTION_LABELS.get(e["action"]),
                outcome=e.get("outcome") or "",
                object_type=e.get("object_type") or "",
                count=int(e.get("record_count") or 0),
                refs=[str(r) for r in refs] if isinstance(refs, list) else [],
                purpose=e.get("purpose") or "",
                grant=grants.get(e["grant_id"]) if e.get("grant_id") else None,
            )
        )
    return rows


def _int(value: Any) -> int | None:
    try:
        return max(0, min(int(value), 2**62)) if value not in (None, "") else None
    except ValueError:
        return None


def _context() -> dict[str, Any]:
    return {"actions": ACTIONS, "outcomes": OUTCOMES, "purposes": PURPOSES}


# -- the audit explorer ---------------------------------------------------------------------------


def _explore(request: Request, principal: Principal, form: dict[str, str]) -> HTMLResponse:
    who, action = form.get("person", "").strip()[:320], form.get("action", "")[:64]
    nir = form.get("nir", "").strip()[:32]
    page, before, after = (_int(form.get(k)) for k in ("page", "before", "after"))
    page = max(1, page or 1)
    if action and action not in dict(ACTIONS):
        action = ""
    error = None
    rows: list[Row] = []
    newer = older = False
    try:
        since, until = _day(form.get("since", ""), end=False), _day(form.get("until", ""), end=True)
        with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
            lab = _lab_of(u, principal)
            people, grants = _people(u, lab)
            actors = _matching(people, who) if who else None
            patient_id = None
            if nir:
                patient_id = u.patient_id_for_nir(lab, nir)
                if patient_id is None:
                    error = "patient"
            if error is None and actors == []:
                error = "person"
            if error is None:
                events = audit.search(
                    u,
                    lab,
                    actors=actors,
                    action=action or None,
                    since=since,
                    until=until,
                    patient_id=patient_id,
                    limit=PAGE_SIZE + 1,
                    before_seq=None if after is not None else before,
                    after_seq=after,
                    newest_first=after is None,
                )
                beyond = len(events) > PAGE_SIZE
                events = events[:PAGE_SIZE]
                if after is not None:  # the page before, read oldest first
                    events.reverse()
                    newer, older = beyond, True
                else:
                    newer, older = before is not None, beyond
                rows = _rows(events, people, grants)
    except InvalidInput:
        error = "input"
    form = {"person": who, "action": action, "since": form.get("since", "")[:10], "until": form.get("until", "")[:10]}
    return render(
        request,
        "dpo_audit.html",
        rows=rows,
        form=form,
        nir=nir,
        page=page,
        newer=newer and page > 1,
        older=older,
        error=error,
        **_context(),
    )


@router.get("/dpo/audit")
def audit_page(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's audit events, newest first; in the URL only filters that name no one (action,
    period, page): a person or a patient is searched by the posted form, out of URLs and logs."""
    return _explore(request, caller[0], {k: v for k, v in request.query_params.items() if k not in ("nir", "person")})


@router.post("/dpo/audit")
def audit_search(request: Request, caller: Writer, form: SentForm) -> HTMLResponse:
    """The same with a patient's NIR or INS, posted: it stays out of URLs and access logs."""
    return _explore(request, caller[0], {k: str(v) for k, v in form.items() if k != "csrf"})


# -- who saw this patient's data ------------------------------------------------------------------


def _is_read(action: str) -> bool:
    return action.startswith("patient:") and action.endswith((":read", ":search"))


@router.get("/dpo/patient-access")
def patient_access_page(request: Request, caller: Viewer) -> HTMLResponse:
    with gateway(request).unit(caller[0], Purpose.ADMINISTRATION) as u:
        _lab_of(u, caller[0])
    return render(request, "dpo_patient_access.html", searched=False, rows=[], error=None, **_context())


@router.post("/dpo/patient-access")
def patient_access(request: Request, caller: Writer, form: SentForm) -> HTMLResponse:
    """Every read of one patient's data in the lab (GDPR Art. 15): who, when, for what purpose,
    under which grant or instruction."""
    principal = caller[0]
    nir = str(form.get("nir", "")).strip()[:32]
    rows: list[Row] = []
    error = None
    try:
        with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
            lab = _lab_of(u, principal)
            patient_id = u.patient_id_for_nir(lab, nir)
            if patient_id is None:
                error = "patient"
            else:
                people, grants = _people(u, lab)
                events = audit.search(u, lab, action="patient:", patient_id=patient_id, limit=10_000, newest_first=True)
                rows = _rows([e for e in events if _is_read(e["action"])], people, grants)
    except InvalidInput:
        error = "input"
    return render(request, "dpo_patient_access.html", searched=True, rows=rows, error=error, **_context())


# -- the chain, its checkpoints, retention ---------------------------------------------------------


@router.get("/dpo/chain")
def chain_page(request: Request, caller: Viewer) -> HTMLResponse:
    """The lab's chain verified now (as ``GET .../audit/verify``), its last signed checkpoint, the
    downloads of the export and the checkpoints, and the lab's retention rules and legal holds."""
    principal = caller[0]
    with gateway(request).unit(principal, Purpose.ADMINISTRATION) as u:
        lab = _lab_of(u, principal)
        report = audit.verify_log(u, lab)
        last = audit.last_checkpoint(u, lab)
        rules = retention.list_rules(u, lab)
        holds = retention.list_holds(u, lab)
        people, _ = _people(u, lab)
    checkpoint = None
    if last is not None:
        body = last["body"]
        checkpoint = {
            "index": body.get("index"),
            "size": body.get("size"),
            "root": body.get("root"),
            "at": _at(body["at"]),
        }
    return render(
        request,
        "dpo_chain.html",
        report=report,
        checkpoint=checkpoint,
        rules=rules,
        holds=holds,
        people=people,
        lab=lab,
        at=_at,
    )
