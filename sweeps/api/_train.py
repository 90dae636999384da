"""`sweeps.train`: one configuration trained outside any study."""

from __future__ import annotations

from typing import Any

from sweeps.api._base import PathLike, library_call, store_args
from sweeps.api._results import TrainResult
from sweeps.errors import UsageError
from sweeps.task_refs import TaskLike, serving, task_ref


def train(
    task: TaskLike = "d2l-synthetic",
    *,
    penalty: str | None = None,
    lambda_: float | None = None,
    l1_ratio: float | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    optimizer: str | None = None,
    penalize: str | None = None,
    seed: int | None = None,
    split_seed: int | None = None,
    device: str | None = None,
    track: bool = True,
    home: PathLike | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    **task_options: str | int | float | bool,
) -> TrainResult:
    """Train one configuration, outside any study (`sweeps train`).

    Options left out take the trainer's defaults (those of `sweeps train`).

    Args:
        task: A task name or a callable `data_seed -> trainer.tasks.Task` (as in `run`).
        penalty: `none`, `l1`, `l2`, `l2_unsquared`, `elastic_net` or `weight_decay`.
        lambda_: The penalty's strength λ >= 0.
        l1_ratio: The elastic net's mix α in [0, 1].
        epochs: Epochs to train.
        lr: The optimizer's learning rate.
        batch_size: Minibatch size (0: full batch).
        optimizer: `sgd`, `adam` or `adamw`.
        penalize: The tensors penalized: `weights` (dim >= 2), `all`, or name globs.
        seed: Seed of the data, initialization and shuffling.
        split_seed: Draw the train/validation/test split from this seed (tabular tasks).
        device: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.
        track: Log the run to MLflow (experiment `sweeps-train`).
        home: As in `run`.
        storage: As in `run`.
        tracking_uri: As in `run`.
        **task_options: The task's options (`csv`: `train_csv`, `target`, ...).

    Returns:
        The final metrics, the history per epoch and the trained weights.

    Raises:
        UsageError: An option is invalid (`ConfigError`, `TaskError`, `DeviceError`).
    """
    from sweeps.single_run import run_single
    from trainer.config import Penalty, TrialConfig

    ref = task_ref(task)
    values = {
        "penalty": penalty,
        "lambda_": lambda_,
        "l1_ratio": l1_ratio,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "penalize": penalize,
        "seed": seed,
        "split_seed": split_seed,
        "device": device,
    }
    with library_call(optuna=False, mlflow=track):
        given: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        cfg = TrialConfig(task=ref.name, task_options=tuple(task_options.items()))
        cfg = cfg.replace(**given)
        if cfg.penalty is Penalty.NONE and cfg.lambda_ != 0:  # typed, and it would be ignored
            raise UsageError(f"--lambda {cfg.lambda_:g} has no effect with --penalty none")
        where = store_args(home, storage, tracking_uri)
        with serving(ref):
            outcome = run_single(
                cfg, track=track, home=where[0], storage=where[1], tracking_uri=where[2]
            )
    result = outcome.result
    history = {} if result is None else result.history
    weights = {} if result is None else result.state_dict
    return TrainResult(outcome.summary, history, weights)
