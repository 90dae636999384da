"""`sweeps train`: one training run, tracked in MLflow unless --no-track."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

import click

from sweeps.cli.base import echo_json, fail, stdout_for_json_only, store_options
from sweeps.cli.options import (
    PENALTIES,
    apply_threads,
    collect_task_options,
    field_flag,
    shown,
    threads_option,
    training_flags,
)
from sweeps.errors import mask_secrets
from trainer.config import DEFAULT_L1_RATIO, TrialConfig

if TYPE_CHECKING:
    from sweeps.storage import Stores


@click.command("train")
@training_flags()
@field_flag(TrialConfig, "penalty", "--penalty", type=click.Choice(PENALTIES), defaults=True)
@field_flag(
    TrialConfig, "lambda_", "--lambda", "lambda_", type=float, defaults=True, help="λ >= 0."
)
@click.option(
    "--l1-ratio",
    type=float,
    default=None,
    help=f"elastic_net mix α in [0,1] [{shown(DEFAULT_L1_RATIO)}].",
)
@click.option(
    "--split-seed",
    type=int,
    default=None,
    help="diabetes, digits, csv: draw the train/validation/test split from this seed"
    " (as `sweeps confirm` does on fresh data); default: the task's fixed split.",
)
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@threads_option
@store_options
def train_command(no_track: bool, as_json: bool, threads: int | None, **kwargs: Any) -> None:
    """Train one configuration and print its final metrics."""
    import sweeps
    from sweeps.cli.process import quiet_mlflow

    quiet_mlflow()  # this process's settings, before MLflow's first import
    options: dict[str, Any] = dict(collect_task_options(kwargs))
    lambda_ = kwargs.pop("lambda_")
    apply_threads(threads)
    with stdout_for_json_only(as_json):
        outcome = sweeps.train(lambda_=lambda_, track=not no_track, **kwargs, **options)
    summary = outcome.summary
    if as_json:
        echo_json(summary)
    else:
        _print_human(summary)
        if summary.get("mlflow_run_id"):
            from sweeps.storage import resolve_stores

            where = (kwargs["home"], kwargs["storage"], kwargs["tracking_uri"])
            click.echo(_where(resolve_stores(*where)))
    if summary["status"] == "diverged":
        causes = "--lr" if summary["penalty"] == "none" else "--lr or --lambda"
        fail(f"training diverged at epoch {summary['diverged_epoch']}; try a smaller {causes}", 1)


def _where(stores: Stores) -> str:
    """Where the run is shown (passwords masked)."""
    home = shlex.quote(str(stores.home))
    tracking = stores.tracking_uri
    if tracking.startswith(("http://", "https://")):
        return f"open:    {mask_secrets(tracking)} (experiment sweeps-train)"
    extra = ""
    if tracking != stores.home_tracking:
        extra = f" --tracking-uri {shlex.quote(mask_secrets(tracking))}"
    return f"open:    sweeps ui --home {home}{extra} (experiment sweeps-train)"


def _print_human(s: dict[str, Any]) -> None:
    lam = f" λ={s['lambda']:g}" if s["penalty"] != "none" else ""
    click.echo(
        f"{s['task']}  {s['penalty']}{lam}  {s['optimizer']} lr={s['lr']:g}  on {s['device']}"
    )
    if s["epochs_run"]:
        val_name = "test_loss (used as val)" if s["val_is_test"] else "val_loss"
        click.echo(
            f"epochs {s['epochs_run']}: train_loss {s['train_loss']:.6g}  "
            f"{val_name} {s['val_loss']:.6g}  w_norm {s['w_norm']:.6g}  "
            f"({s['duration_s']:.3f}s)"
        )
    if s.get("mlflow_run_id"):
        click.echo(f"MLflow:  run {s['mlflow_run_id']}")
