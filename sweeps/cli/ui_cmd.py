"""`sweeps ui`: the MLflow UI on this project's tracking store."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
from pathlib import Path

import click

from sweeps.cli.base import store_options
from sweeps.errors import mask_secrets


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ui_args(
    host: str, port: int, artifact_root: Path | None, allowed_hosts: str | None
) -> list[str]:
    """The `mlflow server` command line serving the UI over our store; the store's URI
    itself goes through the environment (`ui_env`), since a command line is visible to
    every user in `ps` and a database URI may hold a password."""
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    args = [
        mlflow,
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if artifact_root is not None:
        args += ["--default-artifact-root", artifact_root.as_uri()]
    if allowed_hosts:
        args += ["--allowed-hosts", allowed_hosts]
    return args


def ui_env(tracking_uri: str) -> dict[str, str]:
    """The environment `mlflow server` gets beside ours: the store (its
    `--backend-store-uri` option reads this variable) and no telemetry."""
    return {
        "MLFLOW_BACKEND_STORE_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }


@click.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind. Anything but loopback exposes the UI: see README.",
)
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--allowed-hosts", help="Host headers MLflow accepts when exposed (e.g. a DNS name).")
@store_options
def ui_command(
    host: str,
    port: int,
    allowed_hosts: str | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Serve the MLflow UI for this project's studies (Ctrl-C stops it)."""
    from sweeps.errors import StorageError
    from sweeps.storage import resolve_stores

    stores = resolve_stores(home, storage, tracking_uri)
    stores.check_files(write=False, storage=False)
    if stores.tracking_uri.startswith(("http://", "https://")):
        from tracking.server import check_reachable

        check_reachable(stores.tracking_uri)  # a server that is down is an error, not advice
        shown = mask_secrets(stores.tracking_uri)
        click.echo(f"the MLflow server at {shown} serves the UI itself; open it")
        return
    db = stores.tracking_uri.removeprefix("sqlite:///")
    if stores.tracking_uri.startswith("sqlite:///") and not Path(db).exists():
        raise StorageError(f"no MLflow store at {db} yet: run `sweeps run` or `sweeps train` first")
    if not _is_loopback(host):
        click.echo(
            f"sweeps: warning: binding {host} exposes the UI and its API without authentication;"
            " prefer an SSH tunnel or a reverse proxy with auth",
            err=True,
        )
    click.echo(f"MLflow UI on http://{host}:{port}  (Ctrl-C to stop)", err=True)
    env = {**os.environ, **ui_env(stores.tracking_uri)}
    args = ui_args(host, port, stores.artifact_root, allowed_hosts)
    sys.stdout.flush()
    os.execvpe(args[0], args, env)
