"""Routes. Public: health, login, MFA, enrolment. Everything else requires ``authenticated``, and
each route declares the access it needs in its signature (``Reader``, ``SessionOnly``,
``SteppedUp``; see ``deps``): a bearer token only reads or ingests, approvals need a recent step-up."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Annotated, Any, cast, overload
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response

from labvault.access import Purpose, grants
from labvault.accounts import service
from labvault.api import schemas
from labvault.api.deps import (
    CSRF_COOKIE,
    PREAUTH_COOKIE,
    SESSION_COOKIE,
    Caller,
    Public,
    Reader,
    SessionOnly,
    SteppedUp,
    authenticated,
    client,
    gateway,
)
from labvault.errors import InvalidInput
from labvault.ids import stored_utc
from labvault.instructions import signers
from labvault.migration import service as migration

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut, "description": text}
    for code, text in (
        (400, "Bad input"),
        (401, "Not authenticated"),
        (403, "Refused"),
        (404, "Unknown"),
        (410, "Lab crypto-shredded"),
        (413, "Body too large"),
        (422, "Malformed request"),
        (429, "Locked after repeated failures"),
    )
}
public = APIRouter(responses=ERRORS)
private = APIRouter(dependencies=[Depends(authenticated)], responses=ERRORS)


def _cookie(response: Response, request: Request, name: str, value: str, *, http_only: bool, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=http_only,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


@public.get("/health", tags=["public"], dependencies=[Public])
def health() -> dict[str, str]:
    return {"status": "ok"}


@public.post("/api/v1/auth/login", response_model=schemas.LoginOut, tags=["public"], dependencies=[Public])
def login(body: schemas.LoginIn, request: Request, response: Response) -> schemas.LoginOut:
    addr, ua = client(request)
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        result = service.login(u, body.email, body.password, addr=addr, user_agent=ua)
    if result.mfa_pending:
        _cookie(response, request, PREAUTH_COOKIE, result.session, http_only=True, max_age=300)
        return schemas.LoginOut(mfa_required=True)
    return _start_session(request, response, result.session)


def _start_session(request: Request, response: Response, secret: str) -> schemas.LoginOut:
    csrf = service.csrf_token(secret)
    _cookie(response, request, SESSION_COOKIE, secret, http_only=True, max_age=int(service.SESSION_TTL.total_seconds()))
    _cookie(response, request, CSRF_COOKIE, csrf, http_only=False, max_age=int(service.SESSION_TTL.total_seconds()))
    response.delete_cookie(PREAUTH_COOKIE, path="/")
    return schemas.LoginOut(mfa_required=False, csrf_token=csrf)


@public.post("/api/v1/auth/mfa", response_model=schemas.LoginOut, tags=["public"], dependencies=[Public])
def mfa(body: schemas.MfaIn, request: Request, response: Response) -> schemas.LoginOut:
    pre = request.cookies.get(PREAUTH_COOKIE)
    if not pre:
        raise service.AuthenticationFailed("no login in progress: start again")
    addr, ua = client(request)
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        result = service.verify_mfa(u, pre, body.code, addr=addr, user_agent=ua)
    return _start_session(request, response, result.session)


@public.post("/api/v1/auth/enrol", response_model=schemas.EnrolOut, tags=["public"], dependencies=[Public])
def enrol(body: schemas.EnrolIn, request: Request) -> schemas.EnrolOut:
    addr, ua = client(request)
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        e = service.enrol(u, body.token, body.password, accept_commitment=body.accept_commitment)
    return schemas.EnrolOut(mfa_required=e.mfa_required, totp_uri=e.totp_uri, qr_svg=e.qr_svg)


@public.post("/api/v1/auth/enrol/confirm", status_code=204, tags=["public"], dependencies=[Public])
def enrol_confirm(body: schemas.EnrolConfirmIn, request: Request) -> Response:
    addr, ua = client(request)
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        service.confirm_enrolment(u, body.token, body.code)
    return Response(status_code=204)


@private.post("/api/v1/auth/step-up", status_code=204)
def step_up(caller: SessionOnly, request: Request, body: schemas.MfaIn) -> Response:
    """Check this session's TOTP code again: approvals are accepted for the next few minutes
    (``service.STEP_UP_WINDOW``). A wrong code counts as a failed login."""
    addr, ua = client(request)
    with gateway(request).auth_unit(source_addr=addr, user_agent=ua) as u:
        service.step_up(u, cast(str, caller.session), body.code, addr=addr, user_agent=ua)
    return Response(status_code=204)


@private.post("/api/v1/auth/logout", status_code=204)
def logout(caller: SessionOnly, request: Request, response: Response) -> Response:
    with gateway(request).auth_unit() as u:
        service.logout(u, cast(str, caller.session))  # SessionOnly refused callers without one
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/")
    out.delete_cookie(CSRF_COOKIE, path="/")
    return out


@private.get("/api/v1/me", response_model=schemas.MeOut)
def me(caller: Reader) -> schemas.MeOut:
    p = caller.principal
    return schemas.MeOut(account_id=p.account_id, name=p.name, tenant=p.tenant_id, roles=sorted(p.roles))


@private.get("/api/v1/tenants", response_model=list[schemas.TenantOut])
def tenants(caller: Reader, request: Request) -> list[schemas.TenantOut]:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return [
            schemas.TenantOut(id=t.id, name=t.name, finess=t.finess, status=t.status, synthetic=t.synthetic)
            for t in u.list_tenants()
        ]


def _purpose(caller: Caller) -> Purpose:
    return Purpose.SUPPORT if caller.principal.is_platform else Purpose.CARE


@private.get("/api/v1/tenants/{tenant}/patients", response_model=list[schemas.PatientOut])
def search_patients(
    caller: Reader,
    request: Request,
    tenant: str,
    nir: Annotated[str | None, Query(max_length=32)] = None,
    family_name: Annotated[str | None, Query(max_length=200)] = None,
    given_name: Annotated[str | None, Query(max_length=200)] = None,
    birth_date: date | None = None,
    prefix: bool = False,
) -> list[schemas.PatientOut]:
    """Exact match on NIR/INS, or on family name + given name + birth date (blind indexes);
    ``prefix=true``: the family name (birth or used name, 2 letters at least) and the given name
    (optional) are the start of the names, with the birth date (required)."""
    if nir is None and prefix and not (family_name and birth_date):
        raise InvalidInput("a prefix search needs family_name and birth_date (given_name optional)")
    if nir is None and not prefix and not (family_name and given_name and birth_date):
        raise InvalidInput("search by nir, or by family_name, given_name and birth_date")
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        if nir is not None:
            found = u.find_patients_by_nir(tenant, nir)
        elif family_name and birth_date and prefix:
            found = u.find_patients_by_prefix(tenant, family_name, given_name, birth_date)
        elif family_name and given_name and birth_date:
            found = u.find_patients_by_name(tenant, family_name, given_name, birth_date)
        else:  # refused above
            raise InvalidInput("search by nir, or by family_name, given_name and birth_date")
    return [schemas.PatientOut(**dataclasses.asdict(p)) for p in found]


@private.get("/api/v1/tenants/{tenant}/patients/{patient_id}", response_model=schemas.PatientOut)
def patient(caller: Reader, request: Request, tenant: str, patient_id: str) -> schemas.PatientOut:
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        return schemas.PatientOut(**dataclasses.asdict(u.get_patient(tenant, patient_id)))


LAB_TIME = ZoneInfo("Europe/Paris")


@overload
def _aware(value: datetime) -> datetime: ...
@overload
def _aware(value: datetime | None) -> datetime | None: ...
def _aware(value: datetime | None) -> datetime | None:
    """Lab times without an offset are the lab's local time (France); the API always gives one."""
    return value.replace(tzinfo=LAB_TIME) if value is not None and value.tzinfo is None else value


_RESULT_FIELDS = tuple(schemas.ResultOut.model_fields)


def _result_out(r) -> schemas.ResultOut:
    d = {name: getattr(r, name) for name in _RESULT_FIELDS}  # not asdict(): no deep copies
    d["status"] = str(r.status)
    d["sensitivity"] = str(r.sensitivity)
    d["validated_at"] = _aware(r.validated_at)
    return schemas.ResultOut.model_construct(**d)


@private.get("/api/v1/tenants/{tenant}/patients/{patient_id}/results", response_model=list[schemas.ResultOut])
def patient_results(
    caller: Reader,
    request: Request,
    tenant: str,
    patient_id: str,
    code: Annotated[str | None, Query(max_length=64)] = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> list[schemas.ResultOut]:
    """A patient's results, optionally one code and a range of request dates."""
    if date_from and date_to and date_from > date_to:
        raise InvalidInput("date_from is after date_to")
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        results = u.results_of(tenant, patient_id, code=code, collected_from=date_from, collected_to=date_to)
    return [_result_out(r) for r in results]


@private.get("/api/v1/tenants/{tenant}/patients/{patient_id}/requests", response_model=list[schemas.RequestOut])
def patient_requests(caller: Reader, request: Request, tenant: str, patient_id: str) -> list[schemas.RequestOut]:
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        return [
            schemas.RequestOut(
                request_id=q.request_id,
                prescriber_id=q.prescriber_id,
                requested_at=_aware(q.requested_at),
                accession=q.accession,
                reported_at=_aware(q.reported_at),
            )
            for q in u.requests_of(tenant, patient_id)
        ]


@private.get("/api/v1/tenants/{tenant}/requests/{request_id}/results", response_model=list[schemas.ResultOut])
def request_results(caller: Reader, request: Request, tenant: str, request_id: str) -> list[schemas.ResultOut]:
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        return [_result_out(r) for r in u.results_of_request(tenant, request_id)]


@private.get("/api/v1/tenants/{tenant}/results/{result_id}/history", response_model=list[schemas.ResultVersionOut])
def result_history(caller: Reader, request: Request, tenant: str, result_id: str) -> list[schemas.ResultVersionOut]:
    """Every version of one result, oldest first (the current one last)."""
    with gateway(request).unit(caller.principal, _purpose(caller)) as u:
        versions = u.result_history(tenant, result_id)
    return [
        schemas.ResultVersionOut.model_construct(
            **_result_out(r).model_dump(), version=r.version, message_at=_aware(r.message_at)
        )
        for r in versions
    ]


def _grant_out(g: grants.Grant) -> schemas.GrantOut:
    return schemas.GrantOut(
        grant_id=g.grant_id,
        tenant=g.tenant_id,
        account=g.account_id,
        requested_by=schemas.PersonOut(name=g.requester_name, email=g.requester_email, account=g.account_id),
        ticket=g.ticket,
        reason=g.reason,
        state=g.state,
        fields=list(g.fields),
        patients=None if g.patients is None else sorted(g.patients),
        period=schemas.GrantPeriodOut(start=g.period_from, end=g.period_to) if g.has_period else None,
        scope=g.scope_text(),
        hours=g.hours,
        requested_at=g.requested_at,
        expires_at=g.expires_at,
    )


@private.get("/api/v1/tenants/{tenant}/grants", response_model=list[schemas.GrantOut])
def list_grants(caller: Reader, request: Request, tenant: str) -> list[schemas.GrantOut]:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return [_grant_out(g) for g in grants.list_grants(u, tenant)]


@private.get("/api/v1/tenants/{tenant}/grants/{grant_id}", response_model=schemas.GrantOut)
def show_grant(caller: Reader, request: Request, tenant: str, grant_id: str) -> schemas.GrantOut:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _grant_out(grants.show_grant(u, tenant, grant_id))


@private.post("/api/v1/tenants/{tenant}/grants", response_model=schemas.GrantOut, status_code=201)
def request_grant(caller: SessionOnly, request: Request, tenant: str, body: schemas.GrantIn) -> schemas.GrantOut:
    with gateway(request).unit(caller.principal, Purpose.SUPPORT) as u:
        return _grant_out(
            grants.request_grant(
                u,
                tenant,
                ticket=body.ticket,
                reason=body.reason,
                hours=body.hours,
                fields=body.fields,
                patients=body.patients,
                period_from=body.period_from,
                period_to=body.period_to,
            )
        )


@private.post("/api/v1/tenants/{tenant}/grants/{grant_id}/approve", response_model=schemas.GrantOut)
def approve_grant(caller: SteppedUp, request: Request, tenant: str, grant_id: str) -> schemas.GrantOut:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _grant_out(grants.approve_grant(u, tenant, grant_id))


@private.post("/api/v1/tenants/{tenant}/grants/{grant_id}/revoke", response_model=schemas.GrantOut)
def revoke_grant(caller: SessionOnly, request: Request, tenant: str, grant_id: str) -> schemas.GrantOut:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _grant_out(grants.revoke_grant(u, tenant, grant_id))


@private.get("/api/v1/tenants/{tenant}/accounts", response_model=list[schemas.AccountOut])
def accounts(caller: Reader, request: Request, tenant: str) -> list[schemas.AccountOut]:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return [schemas.AccountOut(**a) for a in service.list_accounts(u, tenant)]


@private.get("/api/v1/tenants/{tenant}/audit/events", response_model=list[dict])
def audit_events(
    caller: Reader,
    request: Request,
    tenant: str,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    patient_nir: Annotated[str | None, Query(max_length=32)] = None,
    ref: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict]:
    """Search a lab's audit events (security officer; the lab's DPO and admin); audited itself.
    With ``patient_nir``: a patient's access history, for an answer under GDPR Art. 15 (the lab's
    admin and DPO only: a vendor account gets the same 403 whether or not the NIR is a patient's,
    G5). With ``ref``: events naming that pseudonymous reference (a patient or object id)."""
    from labvault.audit import service as audit

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        patient_id = ref
        if patient_nir is not None:
            patient_id = u.patient_id_for_nir(tenant, patient_nir)
            if patient_id is None:
                from labvault.errors import NotFound

                raise NotFound("no patient with this NIR in this lab")
        return audit.search(
            u, tenant, actor=actor, action=action, since=since, until=until, patient_id=patient_id, limit=limit
        )


@private.get("/api/v1/tenants/{tenant}/audit/checkpoints")
def audit_checkpoints(
    caller: Reader,
    request: Request,
    tenant: str,
    since: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """G4, G6: the lab's signed checkpoints after number ``since`` and the platform key's rotation
    records (JSON lines), for the lab's own cron to keep (``labvault audit verify --checkpoint``).
    The lab's admin and DPO only; vendor accounts are refused (and the refusal audited)."""
    import json

    from labvault.audit import service as audit

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        lines = audit.pull_checkpoints(u, tenant, since)
    body = "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines)
    return Response(body, media_type="application/x-ndjson")


@private.get("/api/v1/tenants/{tenant}/audit/verify")
def audit_verify(caller: Reader, request: Request, tenant: str) -> dict:
    """Re-derive the lab's chain and signed roots now."""
    from labvault.audit import service as audit

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return audit.verify_log(u, tenant).as_dict()


@private.get("/api/v1/tenants/{tenant}/audit/export")
def audit_export(caller: Reader, request: Request, tenant: str) -> Response:
    """The lab's events and signed checkpoints (JSON lines), for the lab to keep."""
    import json

    from labvault.audit import service as audit

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        body = "\n".join(json.dumps(x, sort_keys=True) for x in audit.export(u, tenant)) + "\n"
    return Response(body, media_type="application/x-ndjson")


@private.post("/api/v1/tokens", response_model=schemas.TokenOut, status_code=201)
def create_token(caller: SessionOnly, request: Request, body: schemas.TokenIn) -> schemas.TokenOut:
    """A bearer token for yourself (shown once), or, for a lab_admin, for one of its lab's service
    accounts (``email``). Needs a logged-in session: a token cannot mint tokens. Nobody mints a
    token for another person."""
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        token_id, token = service.create_token(
            u, body.email, scopes=body.scopes, days=body.days, authenticated=caller.session is not None
        )
    return schemas.TokenOut(token_id=token_id, token=token)


@private.delete("/api/v1/tokens/{token_id}", status_code=204)
def revoke_token(caller: SessionOnly, request: Request, token_id: str) -> Response:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        service.revoke_token(u, token_id)
    return Response(status_code=204)


# --- a lab's signed instructions and the migration procedure (no endpoint streams data out) ---


def _instruction_out(r: signers.Received) -> schemas.InstructionOut:
    return schemas.InstructionOut(
        id=r.instruction_id,
        kind=r.kind,
        signer=r.signer_id,
        valid_until=stored_utc(r.valid_until),
        received_at=stored_utc(r.received_at),
    )


@private.post("/api/v1/tenants/{tenant}/instructions/draft", response_model=schemas.InstructionDraftOut)
def draft_instruction(
    caller: SessionOnly, request: Request, tenant: str, body: schemas.InstructionDraftIn
) -> schemas.InstructionDraftOut:
    """Check an instruction before it is signed, and give the exact bytes a lab signer signs with
    their own key (on their own machine: the private key never reaches the platform)."""
    import base64

    from labvault.crypto.signing import canonical
    from labvault.instructions import document

    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        u.authorise(tenant, "tenant:read")
        u.tenant(tenant)
    instr = document.from_record(body.instruction)
    if instr.tenant != tenant:
        raise document.WrongTenant("instruction: it is for another lab")
    record = document.to_record(instr)
    return schemas.InstructionDraftOut(
        record=record,
        canonical=base64.b64encode(canonical(record)).decode(),
        next=f"sign the canonical bytes (Ed25519), then POST {{instruction: record, signature: base64, "
        f"signer_public_key: hex}} to /api/v1/tenants/{tenant}/instructions",
    )


@private.post("/api/v1/tenants/{tenant}/instructions", response_model=schemas.InstructionOut, status_code=201)
def receive_instruction(
    caller: SteppedUp, request: Request, tenant: str, body: schemas.SignedInstructionIn
) -> schemas.InstructionOut:
    """Verify a signed instruction (signature, current signer, lab, validity, deadline) and keep it."""
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return _instruction_out(signers.receive(u, tenant, body.model_dump(exclude_none=True), datetime.now(UTC)))


@private.get("/api/v1/tenants/{tenant}/instructions", response_model=list[schemas.InstructionOut])
def list_instructions(caller: Reader, request: Request, tenant: str) -> list[schemas.InstructionOut]:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        return [_instruction_out(r) for r in signers.list_instructions(u, tenant)]


@private.get("/api/v1/tenants/{tenant}/instructions/{instruction_id}", response_model=schemas.SignedInstructionOut)
def get_instruction(caller: Reader, request: Request, tenant: str, instruction_id: str) -> schemas.SignedInstructionOut:
    with gateway(request).unit(caller.principal, Purpose.ADMINISTRATION) as u:
        r = signers.get_instruction(u, tenant, instruction_id)
        key = next((k.public_key for k in signers.list_signers(u, tenant) if k.signer_id == r.signer_id), None)
    return schemas.SignedInstructionOut(
        instruction=r.body,
        signature=r.signature,
        signer=r.signer_id,
        signer_public_key=key,
        received_at=stored_utc(r.received_at),
    )


def _migration_out(job: migration.Job) -> schemas.MigrationOut:
    return schemas.MigrationOut(**job.public())


@private.get("/api/v1/tenants/{tenant}/migrations", response_model=list[schemas.MigrationOut])
def list_migrations(caller: Reader, request: Request, tenant: str) -> list[schemas.MigrationOut]:
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return [_migration_out(j) for j in migration.status(u, tenant)]


@private.get("/api/v1/tenants/{tenant}/migrations/{migration_id}", response_model=schemas.MigrationOut)
def get_migration(caller: Reader, request: Request, tenant: str, migration_id: str) -> schemas.MigrationOut:
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return _migration_out(migration.get(u, tenant, migration_id))


@private.get("/api/v1/tenants/{tenant}/migrations/{migration_id}/approval", response_model=schemas.ApprovalRecordOut)
def migration_approval_record(
    caller: Reader, request: Request, tenant: str, migration_id: str
) -> schemas.ApprovalRecordOut:
    """What a lab signer signs, with their own key on their own machine, to approve the plan."""
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return schemas.ApprovalRecordOut(**migration.approval_record(migration.get(u, tenant, migration_id)))


@private.post("/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals", response_model=schemas.MigrationOut)
def approve_migration_lab(
    caller: SteppedUp, request: Request, tenant: str, migration_id: str, body: schemas.LabApprovalIn
) -> schemas.MigrationOut:
    """The lab's approval: a current signer's signature of the approval record."""
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return _migration_out(
            migration.approve_lab(u, tenant, migration_id, public_key=body.public_key, signature=body.signature)
        )


@private.post(
    "/api/v1/tenants/{tenant}/migrations/{migration_id}/approvals/operator", response_model=schemas.MigrationOut
)
def approve_migration_operator(
    caller: SteppedUp, request: Request, tenant: str, migration_id: str
) -> schemas.MigrationOut:
    """The vendor's approval: an operator, logged in (a person, not a token), stepped up."""
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return _migration_out(migration.approve_operator(u, tenant, migration_id))


@private.post("/api/v1/tenants/{tenant}/migrations/{migration_id}/receipt", response_model=schemas.MigrationOut)
def migration_receipt(
    caller: SessionOnly, request: Request, tenant: str, migration_id: str, body: schemas.ReceiptIn
) -> schemas.MigrationOut:
    """The recipient's receipt: checked, recorded, and the package and its key destroyed at once."""
    with gateway(request).unit(caller.principal, Purpose.EXPORT) as u:
        return _migration_out(migration.import_receipt(u, tenant, migration_id, body.model_dump(exclude_none=True)))
