"""`python -m bench.one`: the bare loop replays exactly the trials a study searched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def one(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.one", *args], capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_bare_replays_the_trials_an_unpruned_study_searched(tmp_path: Path) -> None:
    study = one("unpruned", "--trials", "3")
    searched = study["searched"]
    assert len(searched) == 3 and study["seconds"] > 0
    assert {p["penalty"] for p in searched} <= {"none", "l2", "weight_decay"}
    assert all((p["lambda"] is None) == (p["penalty"] == "none") for p in searched)
    configs = tmp_path / "searched.json"
    configs.write_text(json.dumps(searched))
    bare = one("bare", "--trials", "3", "--configs", str(configs))
    assert bare["searched"] == [] and bare["seconds"] > 0
    # A config the trainer refuses would fail the run: the replay really trains them.
    configs.write_text(json.dumps([{"penalty": "l2", "lambda": -1.0, "l1_ratio": None}]))
    with pytest.raises(subprocess.CalledProcessError):
        one("bare", "--trials", "1", "--configs", str(configs))


def test_scale_kinds_run_the_same_configs_batched(tmp_path: Path) -> None:
    study = one("scale-untracked", "--trials", "4", "--batch", "2")
    searched = study["searched"]
    assert len(searched) == 4 and study["seconds"] > 0
    configs = tmp_path / "searched.json"
    configs.write_text(json.dumps(searched))
    bare = one("scale-bare", "--trials", "4", "--batch", "2", "--configs", str(configs))
    assert bare["searched"] == [] and bare["seconds"] > 0
    configs.write_text(json.dumps([{"penalty": "l2", "lambda": -1.0, "l1_ratio": None}] * 2))
    with pytest.raises(subprocess.CalledProcessError):  # it really trains what it is given
        one("scale-bare", "--trials", "2", "--batch", "2", "--configs", str(configs))
