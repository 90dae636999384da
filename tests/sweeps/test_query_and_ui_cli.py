"""Query commands stay light (no torch, no MLflow); `sweeps ui` really serves our store.

The command line `sweeps ui` execs is tested in test_ui_cmd.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.services import free_port
from tests.sweeps.study_helpers import cli_env, run_cli, sweeps_cmd
from tracking.ui_app import WORKFLOW_KEY


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("q")
    args = ["--study", "q", "--penalties", "l2,none", "--trials", "3", "--epochs", "3"]
    done = run_cli("run", *args, "--quiet", env=cli_env(home))
    assert done.returncode == 0, done.stderr
    return home


@pytest.mark.parametrize(
    "args",
    [
        ["studies"],
        ["trials", "--study", "q"],
        ["best", "--study", "q"],
        ["compare"],
        ["export", "--study", "q", "--format", "csv"],
    ],
)
@pytest.mark.slow
def test_query_commands_import_neither_torch_nor_mlflow(home: Path, args: list[str]) -> None:
    cmd = sweeps_cmd(*args)
    done = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]],
        env=cli_env(home),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "torch" not in imported and "mlflow" not in imported
    assert done.stdout.strip()


@pytest.mark.slow
def test_ui_serves_the_study(home: Path) -> None:
    """`sweeps ui` for real: the server it execs answers with our study's experiment."""
    port = free_port()
    proc = subprocess.Popen(
        sweeps_cmd("ui", "--port", str(port)),
        env=cli_env(home),
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # the exec'd server and its workers form one group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "ui did not start"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            names = {e["name"] for e in json.load(response)["experiments"]}
        with urllib.request.urlopen(f"{base}/", timeout=10) as response:
            index = response.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert "q" in names
    assert WORKFLOW_KEY in index  # served by sweeps' app: the UI opens in model training
