"""What every part of a unit of work holds: the parts (``authorisation``, ``trail``, ``tenants``,
``records``, ``rotation``, ``work``) are mixins of ``labvault.access.gateway.Unit``, which sets these.

For the type checker only, it also declares the methods one part calls on another (each is
defined, with the same signature, by the part named beside it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from datetime import date, datetime

    from sqlalchemy import ColumnElement, Connection, Table

    from labvault.access.gateway import Gateway, Unit
    from labvault.access.grants import Grant
    from labvault.access.principal import Principal, Purpose
    from labvault.access.tenants import TenantCrypto
    from labvault.access.work import Judge, JudgedResult
    from labvault.domain.models import Request, Result, Specimen, Tenant
    from labvault.instructions.document import Instruction


class UnitState:
    _gw: Gateway
    conn: Connection
    principal: Principal
    purpose: Purpose
    _seq: dict[str, tuple[int, bytes]]  # per lab: (last sequence number, its hash)
    _scoped: str | None  # the lab row-level security shows (PostgreSQL)
    _grant: Grant | None  # the support grant the current operation found
    _instruction: Instruction | None  # the lab's signed instruction this unit works under (instructed.enter)
    _deletion_ground: dict[str, dict[str, Any]]
    _side_events: list[tuple[str, dict[str, Any]]]
    _side_actions: list[Callable[[Unit], None]]
    _pending_events: list[dict[str, Any]]
    _holds_writer: bool  # this unit holds its gateway's SQLite writer lock (Unit._take_writer)
    _unit_crypto: dict[str, TenantCrypto]  # per lab: its keys, checked once per unit (tenants._crypto)
    _on_commit: list[Callable[[], None]]
    _committed: bool
    _service_purpose: str | None
    _check: bool
    _final: bool  # the unit run after another ended (``Unit.after``): nothing left to roll back

    if TYPE_CHECKING:
        # authorisation.Authorisation
        def _tf(self, table: Table, tenant_id: str) -> ColumnElement[bool]: ...
        def _scope(self, tenant_id: str) -> None: ...
        def _deny(self, tenant_id: str, action: str, reason: str) -> NoReturn: ...
        def _authorise(self, tenant_id: str, action: str, vendor_refusal: str | None = None) -> None: ...
        def _in_grant_scope(self, patient_id: str, tenant_id: str) -> bool: ...
        def _readable_categories(self, tenant_id: str) -> frozenset[str] | None: ...
        def _authorise_identity_search(self, tenant_id: str) -> None: ...

        # trail.AuditAppend
        def _record(
            self,
            tenant_id: str,
            action: str,
            object_type: str,
            count: int,
            *,
            outcome: str = "allowed",
            refs: Sequence[str] | None = None,
        ) -> None: ...

        # tenants.Tenants
        def tenant(self, tenant_id: str) -> Tenant: ...
        def is_synthetic(self, tenant_id: str) -> bool: ...
        def _crypto(self, tenant_id: str) -> TenantCrypto: ...

        # records.Records
        def _insert(self, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None: ...
        def _result(self, c: TenantCrypto, r: Any) -> Result: ...
        def _add_requests(self, tenant_id: str, requests: Sequence[Request], *, audit: bool = True) -> int: ...
        def _add_specimens(self, tenant_id: str, specimens: Sequence[Specimen], *, audit: bool = True) -> int: ...
        def _add_results(
            self,
            tenant_id: str,
            results: Sequence[Result],
            *,
            pseudonyms: dict[str, str] | None = None,
            said: Mapping[str, tuple[str | None, datetime]] | None = None,
            audit: bool = True,
        ) -> int: ...
        @staticmethod
        def _patient_of_request(
            c: TenantCrypto, request_id: str, pseudonym: str, sealed: bytes | None
        ) -> str | None: ...
        def _requests_collected_between(
            self, c: TenantCrypto, tenant_id: str, request_ids: list[str], start: date | None, end: date | None
        ) -> list[str]: ...

        # work.Work
        def _enter_value(
            self,
            tenant_id: str,
            result_id: str,
            value: str | float | int,
            unit: str | None,
            *,
            comment: str | None,
            action: str,
            ref_text: str | None = None,
            flag: str | None = None,
            message_key: str | None = None,
            correcting: bool = False,
        ) -> Result: ...
        def _judge(self, tenant_id: str, result_id: str, judge: Judge, *, calculate: bool = True) -> JudgedResult: ...

        # canaries.Canaries
        def _canary_check(self, tenant_id: str) -> Callable[[str], bytes | None] | None: ...
        def _is_canary(self, tenant_id: str, patient_id: str) -> bool: ...
        def _canary_own_package(self, tenant_id: str, marker: bytes) -> bool: ...
        def _canary_touched(
            self, tenant_id: str, patient_ids: Iterable[str] = (), *, pseudonyms: Iterable[str] = ()
        ) -> None: ...

        # gateway.Unit
        def on_commit(self, action: Callable[[], None]) -> None: ...
        def _take_writer(self) -> None: ...

        # trail.AuditAppend
        def _flush_events(self) -> None: ...
