"""Typed errors of the sweep layer and the one place secrets are masked in messages."""

from __future__ import annotations

from tracking.secrets import mask_secrets

__all__ = ["StorageError", "SweepsError", "UsageError", "mask_secrets"]


class SweepsError(Exception):
    """Something the user asked for cannot be done; shown as one line, exit code 2."""


class UsageError(SweepsError, ValueError):
    """Invalid options or configuration."""


class StorageError(SweepsError):
    """A storage or tracking URL is malformed, unreachable or incompatible."""
