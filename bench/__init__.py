"""`make bench`: trials/s of sweeps against a plain Optuna + MLflow script (docs/performance.md)."""
