"""`sweeps ui`: the MLflow UI on this project's tracking store."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import click
import sqlalchemy as sa

from sweeps import orphans
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
    host: str,
    port: int,
    artifact_root: Path | None,
    allowed_hosts: str | None,
    app_name: str | None = None,
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
    if app_name is not None:
        args += ["--app-name", app_name]
    if artifact_root is not None:
        args += ["--default-artifact-root", artifact_root.as_uri()]
    if allowed_hosts:
        args += ["--allowed-hosts", allowed_hosts]
    return args


def ui_app_name() -> str | None:
    """`tracking.ui_app`'s name when this installation registers it as an `mlflow.app`
    entry point (pyproject.toml; a source tree used without `pip install` does not)."""
    from importlib.metadata import entry_points

    from tracking import ui_app

    value = f"{ui_app.__name__}:{ui_app.create_app.__name__}"
    registered = entry_points(group="mlflow.app", name=ui_app.APP_NAME)
    return ui_app.APP_NAME if any(ep.value == value for ep in registered) else None


def ui_env(tracking_uri: str) -> dict[str, str]:
    """The environment `mlflow server` gets beside ours: the store (its
    `--backend-store-uri` option reads this variable), no telemetry, no job runner (the
    huey consumers serve GenAI jobs, not a UI over runs, and take processes and memory),
    no deprecation warnings from MLflow's dependencies."""
    return {
        "MLFLOW_BACKEND_STORE_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
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
@click.option("--study", help="Print the link to this study's runs.")
@store_options
def ui_command(
    host: str,
    port: int,
    allowed_hosts: str | None,
    study: str | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Serve the MLflow UI for this project's studies (Ctrl-C stops it)."""
    from sweeps.errors import StorageError, UsageError
    from sweeps.storage import resolve_stores

    if not host.strip():  # an empty host binds every interface, IPv4 and IPv6
        raise UsageError(
            "--host is empty; give an interface (127.0.0.1, or 0.0.0.0 to expose the UI)"
        )
    stores = resolve_stores(home, storage, tracking_uri)
    stores.check_files(write=False, storage=False)
    from tracking.server import check_reachable

    check_reachable(stores.tracking_uri)  # a store that is down is an error, not a hang
    if stores.tracking_uri.startswith(("http://", "https://")):
        shown = mask_secrets(stores.tracking_uri)
        click.echo(f"the MLflow server at {shown} serves the UI itself; open it")
        return
    db = sa.make_url(stores.tracking_uri).database or ""
    if stores.tracking_uri.startswith("sqlite") and not Path(db).exists():
        raise StorageError(f"no MLflow store at {db} yet: run `sweeps run` or `sweeps train` first")
    check_port_free(host, port)
    if not _is_loopback(host):
        click.echo(
            f"sweeps: warning: binding {host} exposes the UI and its API without authentication;"
            " prefer an SSH tunnel or a reverse proxy with auth",
            err=True,
        )
    env = {**os.environ, **ui_env(stores.tracking_uri)}  # before this process quiets MLflow
    path = "" if study is None else study_path(stores.tracking_uri, study)
    app_name = ui_app_name()
    if app_name is None:
        click.echo(
            "sweeps: warning: this installation does not register sweeps' MLflow app"
            " (pip install -e . does); run pages may open in MLflow's GenAI view",
            err=True,
        )
    args = ui_args(host, port, stores.artifact_root, allowed_hosts, app_name)
    stores.make_home()
    raise SystemExit(serve(args, env, host, port, stores.ui_log, path))


def check_port_free(host: str, port: int) -> None:
    """Refuse (UsageError) a port another process listens on, before starting the server.

    Once started, the server would fail to bind and log it only to its log file, while the
    readiness probe got its answer from the other process's server. The probe binds as the
    server does (every address the host resolves to, SO_REUSEADDR, so a port left in
    TIME_WAIT by an earlier `sweeps ui` is not taken for busy)."""
    from sweeps.errors import UsageError

    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r} does not resolve: {e.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise UsageError(
                        f"port {port} on {host} is already in use by another process;"
                        " stop it or choose another --port"
                    ) from None
                raise UsageError(f"cannot serve on {host}:{port}: {e.strerror}") from None


def study_path(tracking_uri: str, study: str) -> str:
    """The UI's path to the study's runs, in its model-training view even where the UI is
    served without sweeps' app (`tracking.ui_app`): MLflow's UI opens every experiment in
    its GenAI view unless the link says otherwise (its view is a per-browser setting; the
    experiment's kind tag does not override it)."""
    from sweeps.cli.process import quiet_mlflow
    from sweeps.errors import UsageError

    quiet_mlflow()
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(study)
    if found is None:
        raise UsageError(
            f"no MLflow experiment for study {study!r} in {mask_secrets(tracking_uri)}"
        )
    return f"/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


STARTUP_TIMEOUT_S = 180.0  # a first start (MLflow's migrations) on a busy machine is slow


def serve(
    args: list[str], env: dict[str, str], host: str, port: int, log: Path, path: str = ""
) -> int:
    """Run `mlflow server` until it ends or Ctrl-C / SIGTERM; say where it serves once it
    answers, not before. Returns the exit code for `sweeps ui`."""
    from sweeps.errors import StorageError

    # SIGTERM (a service manager, `kill`) ends the server too, as Ctrl-C does: handled
    # from before the server exists, so no signal can leave it running on its own.
    signal.signal(signal.SIGTERM, _interrupt)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # SIGTERM waits while the server is being started: raised inside Popen, it would
        # leave a started server that `proc` does not name yet. The server itself starts
        # with it unblocked.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    args,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_server_setup(),
                )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if not _wait_until_serving(proc, host, port):
            last = _last_line(log)
            raise StorageError(
                f"mlflow server exited with code {proc.returncode} before serving"
                f" ({last}); its log: {log}"
            )
        shown = f"[{host}]" if ":" in host else host
        click.echo(
            f"MLflow UI on http://{shown}:{port}{path}  (Ctrl-C to stop; log {log})", err=True
        )
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            _stop(proc)


def _server_setup() -> Callable[[], None]:
    """What the server's process does before it execs: SIGTERM unblocked, and sent to it
    when `sweeps ui` dies, even killed outright (`mlflow server` passes SIGTERM on to the
    processes it starts), so that no server is left holding the port."""
    call = orphans.prctl()
    parent = os.getpid()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        if call is not None:
            orphans.die_with_parent(call, signal.SIGTERM, parent)
        if os.getppid() != parent:
            os._exit(1)  # `sweeps ui` died before this: nobody would stop the server

    return setup


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_serving(proc: subprocess.Popen[bytes], host: str, port: int) -> bool:
    """Until /health answers (True) or the server exits (False)."""
    probe = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in probe and not probe.startswith("["):
        probe = f"[{probe}]"
    url = f"http://{probe}:{port}/health"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.25)
    return proc.poll() is None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """The server and everything it started (its process group)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"
