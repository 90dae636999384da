"""`sweeps confirm`: a study's winners retrained on fresh seeds, compared paired."""

from __future__ import annotations

import click

from sweeps.cli.base import echo_json, store_options
from sweeps.cli.options import apply_threads, field_flag, threads_option
from sweeps.confirm_options import ConfirmOptions


@click.command("confirm")
@click.option("--study", required=True)
@field_flag(
    ConfirmOptions, "seeds", "--seeds", type=int, defaults=True, help="Fresh seeds per candidate."
)
@field_flag(
    ConfirmOptions, "top", "--top", type=int, defaults=True, help="Best trials per penalty."
)
@click.option(
    "--trial", "trials", type=int, multiple=True, help="Confirm exactly these trials (repeat)."
)
@click.option(
    "--fixed-data", is_flag=True, help="Keep the study's data; seeds vary init and order only."
)
@click.option("--batch", type=int, default=None, help="At most K runs per stack [all that fit].")
@click.option("--device", default=None, help="auto|cpu|cuda|cuda:N|mps [the study's].")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow (results table only).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@threads_option
@store_options
def confirm_command(
    study: str,
    seeds: int,
    top: int,
    trials: tuple[int, ...],
    fixed_data: bool,
    batch: int | None,
    device: str | None,
    no_track: bool,
    as_json: bool,
    threads: int | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Retrain each penalty's best trial (or --trial N ...) on fresh seeds and compare
    them paired: mean and 95% CI per candidate, differences against the best with CIs,
    wins, Wilcoxon p-values (Holm), Friedman over three or more."""
    import sweeps
    from sweeps.cli.process import quiet_mlflow, quiet_optuna

    quiet_mlflow()
    quiet_optuna()
    apply_threads(threads)
    result = sweeps.confirm(
        study,
        seeds=seeds,
        top=top,
        trials=trials,
        fixed_data=fixed_data,
        batch=batch,
        device=device,
        track=not no_track,
        home=home,
        storage=storage,
        tracking_uri=tracking_uri,
    )
    if as_json:
        echo_json(result.as_json())
        return
    click.echo(f"study {study}: {len(result.candidates)} candidates × {len(result.seeds)} seeds")
    click.echo(f"seeds {_seed_range(result.seeds)}; {result.data_note}")
    click.echo(f"trained {result.trained} run(s), kept {_kept(result)}")
    for line in result.verdict_lines():
        click.echo(line)


def _seed_range(seeds: list[int]) -> str:
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _kept(result: object) -> str:
    from sweeps.confirm_report import Confirmation

    assert isinstance(result, Confirmation)
    return f"{len(result.candidates) * len(result.seeds) - result.trained} from earlier confirms"
