"""Alembic revisions; Alembic loads them by file, this makes them ship with the package."""
