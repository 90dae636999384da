"""Torch CPU threads per process: one by default, --threads, and the launcher's workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json
from trainer.devices import set_cpu_threads

# A python: task that notes, in every process that loads it, that process's torch threads.
SPY_TASK = """
import os
import torch
from trainer.tasks import Split, Task, squared_loss
from trainer.models import ModelSpec, make_model_factory


def build(data_seed):
    with open(os.environ["THREADS_SPY_FILE"], "a") as out:
        out.write(f"{os.getpid()} {torch.get_num_threads()}\\n")
    gen = torch.Generator().manual_seed(data_seed)
    X = torch.randn(30, 2, generator=gen)
    y = X @ torch.tensor([[1.0], [-1.0]])
    splits = [Split(X[i : i + 10], y[i : i + 10]) for i in (0, 10, 20)]
    return Task("spy", *splits, make_model=make_model_factory(ModelSpec(), 2, 1), loss=squared_loss)
"""


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_one_thread_unless_told() -> None:
    torch.set_num_threads(3)  # whatever torch or an earlier caller chose
    assert set_cpu_threads(None) == 1 == torch.get_num_threads()
    assert set_cpu_threads(2) == 2 == torch.get_num_threads()  # given wins
    with pytest.raises(ValueError, match=">= 1"):
        set_cpu_threads(0)


@pytest.mark.parametrize("command", ["train", "run", "worker"])
def test_bad_thread_count_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    extra = ["--study", "s"] if command != "train" else []
    result = invoke(command, *extra, "--threads", "0", "--home", str(tmp_path / "h"))
    assert_usage_error(result, "--threads must be in [1, 4096], got 0")


@pytest.mark.slow
@pytest.mark.parametrize("threads", [None, 2])
def test_launcher_passes_its_thread_count_to_workers(
    tmp_path: Path, threads: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "threads_spy_mod.py").write_text(SPY_TASK)
    monkeypatch.syspath_prepend(str(tmp_path))  # the launcher checks the task itself
    spy = tmp_path / "threads.txt"
    env = {"PYTHONPATH": str(tmp_path), "THREADS_SPY_FILE": str(spy)}
    given = [] if threads is None else ["--threads", str(threads)]
    doc = invoke_json(
        "run", "--study", "spy", "--task", "python:threads_spy_mod:build", "--workers", "2",
        "--trials", "2", "--epochs", "2", "--batch-size", "0", "--penalties", "l2",
        "--no-track", "--quiet", "--home", str(tmp_path / "h"), *given, env=env,
    )  # fmt: skip
    assert doc["states"] == {"COMPLETE": 2}
    seen = {tuple(map(int, line.split())) for line in spy.read_text().splitlines()}
    expected = threads or 1
    assert len({pid for pid, _ in seen}) >= 2  # the workers, each in its own process
    assert {n for _, n in seen} == {expected}, seen
