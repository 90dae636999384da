#!/bin/sh
# MLflow keeps its own database: MLflow and Optuna both own an `alembic_version` table.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE mlflow OWNER \"$POSTGRES_USER\""
