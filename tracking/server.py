"""Reachability of an MLflow tracking server, asked once before any work starts.

MLflow's own HTTP client retries a refused connection 7 times with exponential backoff
(about four minutes) so that a running study survives a server restart. That is right in
the middle of a study and wrong at its start: a mistyped URI should fail in seconds.
"""

from __future__ import annotations

import requests  # an MLflow dependency

from tracking.errors import TrackingError
from tracking.secrets import mask_secrets

PROBE_TIMEOUT_S = 5.0


def check_reachable(tracking_uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise TrackingError (URI masked) unless `tracking_uri` answers: an MLflow server's
    /health, or a PostgreSQL store's connection. MLflow's own SQL store retries a refused
    connection for about two minutes before it raises; here it is one try. SQLite files are
    checked by `tracking.store_files`."""
    if tracking_uri.startswith("postgresql"):
        _check_database(tracking_uri)
        return
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    shown = mask_secrets(tracking_uri)
    try:
        response = requests.get(url, timeout=timeout_s)
    except requests.RequestException as e:
        reason = type(e).__name__.replace("Error", " error").strip()
        raise TrackingError(f"MLflow server {shown} is unreachable ({reason})") from None
    if response.status_code != 200:
        raise TrackingError(
            f"MLflow server {shown} answered /health with HTTP {response.status_code}"
        )


def _check_database(uri: str) -> None:
    from tracking.db import connect_error

    reason = connect_error(uri)
    if reason is not None:
        raise TrackingError(
            f"MLflow store {mask_secrets(uri)} is unreachable: {mask_secrets(reason)}"
        )
