"""The SQL results store: one typed row per study and per finished trial.

Imports neither torch, MLflow, Optuna nor Alembic, so query commands answer fast; Alembic is
loaded only when the schema has to be created or upgraded.
"""

from tracking.results.engine import make_engine
from tracking.results.migrate import upgrade
from tracking.results.models import HEAD_REVISION, VERSION_TABLE, StudyRow, TrialRow
from tracking.results.store import ResultsStore

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "ResultsStore",
    "StudyRow",
    "TrialRow",
    "make_engine",
    "upgrade",
]
