"""Masking of secrets before anything reaches logs, MLflow params or tags."""

from __future__ import annotations

import re

# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)@")


def mask_secrets(text: str) -> str:
    """Replace passwords embedded in URLs with ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)
