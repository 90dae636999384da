"""Moved to `sweeps._optuna.ask_view` (it shadows Optuna's private names); this name stays
importable until every caller imports it from there."""

from sweeps._optuna.ask_view import AskView

__all__ = ["AskView"]
