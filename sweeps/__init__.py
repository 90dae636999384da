"""sweeps: Optuna studies over regularization strength × penalty type."""

__version__ = "0.1.0"
