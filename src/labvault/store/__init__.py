"""SQLAlchemy tables, engines, Alembic migrations. Knows nothing of keys or of HTTP."""
