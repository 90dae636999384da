from pathlib import Path

import pytest

from tests.sweeps.cli_helpers import assert_usage_error, invoke, invoke_json


def test_train_json_has_the_contract_keys(tmp_path: Path) -> None:
    doc = invoke_json(
        "train",
        "--penalty",
        "l2",
        "--lambda",
        "3",
        "--epochs",
        "5",
        "--no-track",
        "--home",
        str(tmp_path / "h"),
    )
    for key in [
        "task",
        "penalty",
        "lambda",
        "l1_ratio",
        "epochs",
        "lr",
        "seed",
        "device",
        "train_loss",
        "val_loss",
        "test_loss",
        "w_norm",
        "penalty_value",
        "duration_s",
        "mlflow_run_id",
    ]:
        assert key in doc
    assert doc["lambda"] == 3.0 and doc["penalty"] == "l2" and doc["device"] == "cpu"
    assert doc["mlflow_run_id"] is None and doc["epochs"] == 5
    assert not (tmp_path / "h").exists()  # --no-track writes nothing


def test_train_human_output() -> None:
    result = invoke("train", "--epochs", "3", "--no-track", "--n-train", "10")
    assert result.exit_code == 0
    assert "train_loss" in result.stdout and "w_norm" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--lambda", "-1"], "lambda"),
        (["--penalty", "l9"], "--penalty"),
        (["--penalty", "elastic_net", "--l1-ratio", "2"], "l1_ratio"),
        (["--epochs", "0"], "epochs"),
        (["--batch-size", "-5"], "batch size"),
        (["--task", "imagenet"], "unknown task"),
        (["--device", "quantum"], "unknown device"),
        (["--lambda", "abc"], "--lambda"),
        (["--n-train", "0"], "n_train"),
        (["--bogus"], "--bogus"),
        (["--penalize", "encoder.*"], "matches no parameter"),
        # Within the options' maxima, but ~37,000 GiB of data: the allocator refuses at once.
        (["--n-train", "9999999", "--num-inputs", "999999"], "cannot allocate the data"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    home = tmp_path / "home"
    result = invoke("train", *args, "--home", str(home))
    assert_usage_error(result, fragment)
    assert not home.exists()


def test_cuda_on_a_machine_without_it(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the missing-device path needs one without")
    result = invoke("train", "--device", "cuda", "--home", str(tmp_path / "h"))
    assert_usage_error(result, "CUDA is not available")
    assert not (tmp_path / "h").exists()


def test_divergence_exits_1_with_status() -> None:
    result = invoke("train", "--lr", "5", "--epochs", "50", "--no-track", "--json")
    assert result.exit_code == 1
    assert '"status": "diverged"' in result.stdout
    assert "diverged at epoch" in result.stderr


def test_divergence_under_a_huge_lambda_names_lambda_as_a_cause() -> None:
    args = ["--penalty", "l2", "--lambda", "1e308", "--epochs", "2", "--no-track"]
    result = invoke("train", *args)
    assert result.exit_code == 1  # a diverged run is a result (status diverged), not bad input
    assert result.stderr.strip().splitlines() == [
        "sweeps: error: training diverged at epoch 1; try a smaller --lr or --lambda"
    ]


def test_a_tracked_diverged_run_ends_as_a_diverged_trial_does(tmp_path: Path) -> None:
    """One rule for divergence (`sweeps.records.conclude`): PRUNED, its run KILLED."""
    from mlflow.tracking import MlflowClient

    home = tmp_path / "h"
    result = invoke("train", "--lr", "5", "--epochs", "50", "--home", str(home), "--json")
    assert result.exit_code == 1
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeps-train")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.tags["sweeps.state"] == "PRUNED"
    assert run.data.tags["sweeps.error"].startswith("diverged at epoch")


def test_help_everywhere() -> None:
    assert invoke("--help").exit_code == 0
    assert "--penalize" in invoke("train", "--help").stdout


def test_a_study_cannot_take_over_the_experiment_of_train_runs(tmp_path: Path) -> None:
    """A study named like the experiment `sweeps train` logs to is refused, so `check
    --repair` has no study there to take a training run for a trial of."""
    from mlflow.tracking import MlflowClient

    home = str(tmp_path / "h")
    trained = invoke_json(
        "train", "--penalty", "l2", "--lambda", "1", "--epochs", "2", "--home", home
    )
    args = ["--penalties", "l2", "--trials", "2", "--epochs", "2", "--quiet", "--home", home]
    assert_usage_error(invoke("run", "--study", "sweeps-train", *args), "is reserved")
    assert_usage_error(
        invoke("check", "--study", "sweeps-train", "--repair", "--home", home),
        "no study named 'sweeps-train'",
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweeps-train")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == trained["mlflow_run_id"]
    assert (run.info.status, run.info.lifecycle_stage) == ("FINISHED", "active")
    assert run.data.tags["sweeps.role"] == "train"
