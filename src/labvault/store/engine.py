"""Engines, migrations and bulk inserts. Knows nothing of keys or of HTTP."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    Table,
    TextClause,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.types import TypeEngine

from labvault.errors import ConfigError, NotInitialised, SchemaOutdated, StoreError
from labvault.store.schema import WAITING_SQL

_REVISIONS = Path(__file__).parent / "revisions"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, durable: bool = False) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives the process dying, not a power cut; FULL (``durable``) syncs the
    # WAL at every commit, for feeds whose senders forget a message once it is acknowledged.
    cur.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache per connection
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.execute("PRAGMA wal_autocheckpoint=10000")  # checkpoint every ~40 MB of WAL, not every 4 MB
    cur.close()


def make_engine(url: str, *, durable: bool = False) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode, PostgreSQL uses psycopg 3.

    ``durable``: on SQLite, every commit is synced to disk before it returns (PostgreSQL always
    does, with its default ``synchronous_commit``).

    ``hide_parameters``: SQL errors and logs never show bound values (ciphertexts, but also
    blind indexes and pseudonyms have no business in a log).
    """
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and not Path(path).parent.is_dir():
                raise NotInitialised(f"no database directory {Path(path).parent}: run 'labvault init' first")
            # The gateway's pipelined bulk writes hand the connection to one writer thread while
            # the caller's thread encrypts the next batch; never two threads at once.
            engine = create_engine(
                url, connect_args={"check_same_thread": False}, hide_parameters=True, pool_size=10, max_overflow=30
            )
            event.listen(engine, "connect", functools.partial(_sqlite_pragmas, durable=durable))
        else:
            engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, pool_size=10, max_overflow=30)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"invalid database URL: {exc.args[0] if exc.args else exc}") from None
    return engine


def _alembic_config(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_REVISIONS))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (harmless when it already is)."""
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    except OperationalError as exc:
        raise StoreError(f"cannot reach the database: {exc.orig}") from None


def check_schema(engine: Engine) -> None:
    """Raise unless the database exists and is at the newest revision."""
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            head = ScriptDirectory.from_config(_alembic_config(conn)).get_current_head()
    except OperationalError as exc:
        raise StoreError(f"cannot reach the database: {str(exc.orig).strip()}") from None
    if current is None:
        raise NotInitialised("the database has no Labvault schema: run 'labvault init' first")
    if current != head:
        raise SchemaOutdated(f"the database schema is at {current}, this Labvault needs {head}: run 'labvault init'")


def _pg_type(sa_type: TypeEngine) -> str:
    if isinstance(sa_type, LargeBinary):
        return "bytea"
    if isinstance(sa_type, BigInteger):
        return "int8"
    if isinstance(sa_type, Integer):
        return "int4"
    if isinstance(sa_type, DateTime):
        return "timestamptz"
    return "text"


def _driver(conn: Connection) -> Any:
    """The DB-API connection under SQLAlchemy's (psycopg or sqlite3): bulk paths talk to it directly."""
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the database connection is closed")
    return raw


def bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple]) -> None:
    """Insert many rows fast: executemany on SQLite, binary COPY through a staging table on PostgreSQL."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # COPY FROM is refused on tables under row-level security: rows are copied (binary COPY)
        # into a temporary table of the same shape, which has no policies, then moved with one
        # INSERT ... SELECT, which the policies check row by row as for any insert.
        raw = _driver(conn)
        cols = ", ".join(columns)
        stage = f"_lv_stage_{table.name}"
        with raw.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DROP")
            with cur.copy(f"COPY {stage} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types([_pg_type(table.c[name].type) for name in columns])
                write = copy.write_row
                for row in rows:
                    write(row)
            cur.execute(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {stage}")
            cur.execute(f"TRUNCATE {stage}")
        return
    placeholders = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({placeholders})"
    _driver(conn).executemany(sql, rows)


def delete_audit_range(conn: Connection, tenant_id: str, after: int, upto: int) -> int:
    """Delete a lab's audit events ``after`` < seq <= ``upto`` (retention only).

    The append-only guards (trigger, and on PostgreSQL the revoked privilege) are lifted for
    this one statement inside the caller's transaction and restored before it commits.
    """
    from sqlalchemy import text

    where = "tenant_id = :t AND seq > :a AND seq <= :b"
    params = {"t": tenant_id, "a": after, "b": upto}
    if conn.dialect.name == "postgresql":
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update"))
        conn.execute(text("GRANT DELETE ON audit_event TO CURRENT_USER"))
        n = conn.execute(text(f"DELETE FROM audit_event WHERE {where}"), params).rowcount
        conn.execute(text("REVOKE DELETE ON audit_event FROM CURRENT_USER"))
        conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_no_update"))
        return n
    conn.execute(text("DROP TRIGGER audit_event_no_delete"))
    n = conn.execute(text(f"DELETE FROM audit_event WHERE {where}"), params).rowcount
    conn.execute(
        text(
            "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
            "BEGIN SELECT RAISE(ABORT, 'labvault: audit records are append-only'); END"
        )
    )
    return n


def iter_audit_rows(conn: Connection, tenant_id: str, columns: Sequence[str], batch: int = 20_000):
    """A lab's audit rows in sequence order as plain tuples, straight from the driver (no row
    objects, no date parsing): verification reads millions of them. Times come as stored."""
    cols = ", ".join(columns)
    raw = _driver(conn)
    if conn.dialect.name == "postgresql":
        sql = f"SELECT {cols} FROM audit_event WHERE tenant_id = %s ORDER BY seq"
    else:
        sql = f"SELECT {cols} FROM audit_event WHERE tenant_id = ? ORDER BY seq"
    yield from _fetch(raw.cursor(), sql, (tenant_id,), batch)


def _fetch(cur, sql: str, params: tuple, batch: int):
    """Rows of ``sql`` from a driver cursor, ``batch`` at a time; the cursor is closed after."""
    try:
        cur.execute(sql, params)
        while rows := cur.fetchmany(batch):
            yield from rows
    finally:
        cur.close()


_NAME = frozenset("abcdefghijklmnopqrstuvwxyz_0123456789")


def iter_tenant_rows(
    conn: Connection,
    table: str,
    columns: Sequence[str],
    tenant_id: str,
    *,
    order: Sequence[str] = (),
    batch: int = 5000,
):
    """One lab's rows of ``table`` as plain tuples straight from the driver (no row objects), in
    ``order`` (code point order on PostgreSQL too), streamed: a server-side cursor on PostgreSQL,
    ``fetchmany`` on SQLite. For whole-lab scans through the gateway, which has authorised them
    and scoped the transaction to the lab (row-level security applies as usual)."""
    for name in (table, *columns, *order):
        if not name or not set(name) <= _NAME:
            raise ValueError("table and column names are identifiers of the schema")
    cols = ", ".join(columns)
    raw = _driver(conn)
    if conn.dialect.name == "postgresql":
        by = ", ".join(f'{c} COLLATE "C"' for c in order)
        sql = f"SELECT {cols} FROM {table} WHERE tenant_id = %s" + (f" ORDER BY {by}" if order else "")
        cur = raw.cursor(name=f"labvault_scan_{table}")
    else:
        sql = f"SELECT {cols} FROM {table} WHERE tenant_id = ?" + (f" ORDER BY {', '.join(order)}" if order else "")
        cur = raw.cursor()
    yield from _fetch(cur, sql, (tenant_id,), batch)


def waiting_results_query(dialect: str, tenant_id: str, gone: Sequence[str]) -> TextClause:
    """A lab's results waiting in its workflow (``schema.WAITING_SQL``), not cancelled (``gone``:
    the statuses left out), oldest request first. The partial index's condition is written out
    (SQLite and PostgreSQL use a partial index only for a query that implies it, which bound
    parameters do not show) and on SQLite the index is named: without statistics its planner would
    rather walk the lab's primary key. Statuses are the code's own constants; the lab is bound."""
    if not all(re.fullmatch(r"[a-z-]+", g) for g in gone):
        raise ValueError("statuses are lower-case words")
    hint = " INDEXED BY ix_result_waiting" if dialect == "sqlite" else ""
    left_out = ", ".join(f"'{g}'" for g in gone)
    sql = "SELECT * FROM result" + hint + " WHERE tenant_id = :tenant AND " + WAITING_SQL
    sql += f" AND status NOT IN ({left_out}) ORDER BY request_id, result_id"
    return text(sql).bindparams(tenant=tenant_id)
