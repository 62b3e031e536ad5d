"""The Alembic revisions build the schema ``store.schema`` declares, and revision 0015 (the birth
date's blind index) goes up and down cleanly, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from labvault.store import engine as store
from labvault.store import schema as t


def _columns_and_indexes(eng: sa.Engine, table: str) -> tuple[set[str], set[str]]:
    insp = sa.inspect(eng)
    return {c["name"] for c in insp.get_columns(table)}, {i["name"] for i in insp.get_indexes(table)}


def _to(eng: sa.Engine, revision: str, *, down: bool = False) -> None:
    with eng.begin() as conn:
        cfg = store._alembic_config(conn)
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_the_revisions_build_the_declared_tables(db_url):
    """F1, C1: every table the schema declares has, once migrated, exactly its columns and indexes."""
    eng = store.make_engine(db_url)
    try:
        store.migrate(eng)
        for table in t.metadata.sorted_tables:
            columns, indexes = _columns_and_indexes(eng, table.name)
            assert columns == {c.name for c in table.columns}, table.name
            assert indexes >= {i.name for i in table.indexes}, table.name
    finally:
        eng.dispose()


def test_revision_0015_adds_the_birth_date_index_and_takes_it_back(db_url):
    """C1: 0015 adds ``patient_identity.born_bidx`` (nullable) and its (tenant, index) index;
    downgraded to 0014, both are gone and the other columns stay; upgraded again, back."""
    eng = store.make_engine(db_url)
    try:
        _to(eng, "0014")
        before, before_ix = _columns_and_indexes(eng, "patient_identity")
        assert "born_bidx" not in before and "ix_patient_identity_born" not in before_ix
        _to(eng, "head")
        after, after_ix = _columns_and_indexes(eng, "patient_identity")
        assert after == before | {"born_bidx"} and "ix_patient_identity_born" in after_ix
        col = next(c for c in sa.inspect(eng).get_columns("patient_identity") if c["name"] == "born_bidx")
        assert col["nullable"] is True
        ix = next(i for i in sa.inspect(eng).get_indexes("patient_identity") if i["name"] == "ix_patient_identity_born")
        assert ix["column_names"] == ["tenant_id", "born_bidx"]
        _to(eng, "0014", down=True)
        assert _columns_and_indexes(eng, "patient_identity") == (before, before_ix)
        _to(eng, "head")
        assert "born_bidx" in _columns_and_indexes(eng, "patient_identity")[0]
    finally:
        eng.dispose()
