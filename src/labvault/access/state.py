"""What every part of a unit of work holds: the parts (``authorisation``, ``trail``, ``tenants``,
``records``, ``rotation``) are mixins of ``labvault.access.gateway.Unit``, which sets these."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from labvault.access.gateway import Gateway, Unit
    from labvault.access.grants import Grant
    from labvault.access.principal import Principal, Purpose


class UnitState:
    _gw: Gateway
    conn: Connection
    principal: Principal
    purpose: Purpose
    _seq: dict[str, tuple[int, bytes]]  # per lab: (last sequence number, its hash)
    _scoped: str | None  # the lab row-level security shows (PostgreSQL)
    _grant: Grant | None  # the support grant the current operation found
    _instruction: Any  # a lab's signed instruction this unit works under (labvault.access.instructed.enter)
    _deletion_ground: dict[str, dict[str, Any]]
    _side_events: list[tuple[str, dict[str, Any]]]
    _side_actions: list[Callable[[Unit], None]]
    _pending_events: list[dict[str, Any]]
    _on_commit: list[Callable[[], None]]
    _committed: bool
    _service_purpose: str | None
    _check: bool
    _final: bool  # the unit run after another ended (``Unit.after``): nothing left to roll back
