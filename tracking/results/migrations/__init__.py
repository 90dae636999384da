"""Alembic migrations of the results tables (run programmatically by tracking.results)."""
