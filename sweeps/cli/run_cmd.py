"""`sweeps run` and `sweeps worker`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import click

from sweeps.cli.base import (
    echo_json,
    format_table,
    stdout_for_json_only,
    store_options,
)
from sweeps.cli.launch_options import LaunchOptions, launch_options, make_launcher
from sweeps.cli.options import (
    F,
    accept_data_change_option,
    apply_threads,
    collect_task_options,
    field_flag,
    shown,
    threads_option,
    training_flags,
)
from sweeps.cli.query_cmd import STANDING_COLUMNS, table_columns
from sweeps.cli.stops import interrupted_exit_code
from sweeps.config import (
    MAX_COUNTS,
    PrunerKind,
    SamplerKind,
    SweepConfig,
    default_penalties_text,
)
from sweeps.errors import mask_secrets
from tracking.records import LARGE_ROUND, History
from trainer.config import field_default

if TYPE_CHECKING:
    from sweeps.api import RunResult
    from sweeps.storage import Stores

SAMPLERS = [s.value for s in SamplerKind]
PRUNERS = [p.value for p in PrunerKind]


def sweep_flag(name: str, *decls: str, **kw: Any) -> Callable[[F], F]:
    """A flag of `sweeps run` left unset (None) unless given, its help naming SweepConfig's
    default for it."""
    return field_flag(SweepConfig, name, *decls, defaults=False, **kw)


# Columns of `sweeps best` that a run's own summary needs not repeat.
NOT_IN_SUMMARY = ("study", "mlflow_run_id")


@click.command("run")
@click.option("--study", help="Study name; running it again resumes it.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML file with any of these options; flags override it.",
)
@training_flags(defaults=False)
@click.option(
    "--penalties",
    help=f"Comma-separated penalties to search [{default_penalties_text()}].",
)
@sweep_flag("lambda_min", "--lambda-min", type=float, help="Lower end of the log-uniform λ range.")
@sweep_flag("lambda_max", "--lambda-max", type=float, help="Upper end of the λ range.")
@click.option(
    "--lr-min",
    type=float,
    help="Search the learning rate too, log-uniform from A to --lr-max (give both; not with"
    " --lr) [off: every trial takes --lr].",
)
@click.option("--lr-max", type=float, help="Upper end of the searched lr range.")
@sweep_flag("trials", "--trials", type=int, help="Trials to add to the study.")
@click.option(
    "--per-penalty",
    type=int,
    help="A stratified search: every penalty gets exactly N trials (--trials is N ×"
    " penalties), λ sampled within each.",
)
@click.option("--timeout", type=float, help="Stop starting trials after S seconds.")
@sweep_flag("sampler", "--sampler", type=click.Choice(SAMPLERS))
@sweep_flag("pruner", "--pruner", type=click.Choice(PRUNERS))
@sweep_flag("workers", "--workers", type=int, help="Worker processes, started by --launcher.")
@sweep_flag("batch", "--batch", type=int, help="Trials trained together as one stacked model.")
@click.option("--devices", help="Spread workers over devices, e.g. cuda:0,cuda:1.")
@sweep_flag("repeats", "--repeats", type=int, help="Seeds per trial; the objective is their mean.")
@sweep_flag(
    "grid_points", "--grid-points", type=int, help="λ values per penalty for --sampler grid."
)
@click.option("--report-every", type=int, help="Epochs between pruning reports [epochs/10].")
@click.option(
    "--history",
    type=click.Choice([h.value for h in History]),
    help="Epochs logged as MLflow metrics: every epoch, every pruning checkpoint, or the"
    " final one; each trial's history.csv holds them all"
    f" [{shown(field_default(SweepConfig, 'history'))}: checkpoints, or final in rounds of"
    f" {LARGE_ROUND} or more].",
)
@click.option(
    "--create-only", is_flag=True, help="Create the study for `sweeps worker`s; run none."
)
@accept_data_change_option
@click.option("--no-track", is_flag=True, help="Do not log to MLflow (results table only).")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--confirm",
    "confirm_seeds",
    type=int,
    default=None,
    help="When the study ends, `sweeps confirm` it on S fresh seeds.",
)
@launch_options
@threads_option
@store_options
def run_command(
    launch: LaunchOptions,
    config_file: str | None,
    confirm_seeds: int | None,
    create_only: bool,
    accept_data_change: bool,
    no_track: bool,
    quiet: bool,
    as_json: bool,
    threads: int | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
    **flags: Any,
) -> None:
    """Run (or resume) a study over λ × penalty type."""
    import sweeps
    from sweeps.config import load_toml
    from sweeps.errors import UsageError
    from sweeps.storage import resolve_stores

    config = load_toml(config_file) if config_file else {}
    study = flags.pop("study") or config.get("study")
    if study is None:
        raise UsageError("--study NAME is required")
    task_options = dict(collect_task_options(flags))  # taken out of `flags`
    options = {**flags, **task_options}
    apply_threads(threads)
    launcher = make_launcher(launch)
    with stdout_for_json_only(as_json), study_process(track=not no_track) as ready:
        outcome = sweeps.run(
            str(study),
            config=config,
            track=not no_track,
            progress=not quiet,
            confirm=confirm_seeds,
            create_only=create_only,
            accept_data_change=accept_data_change,
            home=home,
            storage=storage,
            tracking_uri=tracking_uri,
            on_ready=ready,
            worker_output="inherit",
            launcher=launcher,
            detach=launch.detach,
            **options,
        )
    if outcome.note is not None:  # once the study ran: a refused one says only why
        click.echo(f"sweeps: {outcome.note}", err=True)
    confirmed = outcome.confirmation
    if as_json:
        echo_json(outcome.as_json())
    elif outcome.job is not None:
        click.echo(detached_lines(resolve_stores(home, storage, tracking_uri), outcome))
    else:
        click.echo(f"study {outcome.study}: {state_counts(outcome.states)}")
        if outcome.reused:
            click.echo(
                f"{outcome.reused} trial(s) repeated an earlier trial's configuration and took"
                " its result instead of training again (column reused_from; not counted"
                " toward --trials, up to --trials of them)"
            )
        if outcome.best:
            shown = table_columns(STANDING_COLUMNS, outcome.best, lr=outcome.searches_lr)
            click.echo(format_table(outcome.best, [c for c in shown if c not in NOT_IN_SUMMARY]))
        click.echo(where_results_are(resolve_stores(home, storage, tracking_uri), outcome))
        for line in placement_lines(outcome):
            click.echo(line)
        if confirmed is not None:
            click.echo(f"confirmed on seeds {confirmed.seeds[0]}…{confirmed.seeds[-1]}:")
            for line in confirmed.verdict_lines():
                click.echo(f"  {line}")
    if outcome.untracked:
        from sweeps.recording import untracked_message

        click.echo(f"sweeps: {untracked_message(outcome.untracked)}", err=True)
    if outcome.interrupted:
        click.echo("sweeps: interrupted; completed trials are kept", err=True)
        raise SystemExit(interrupted_exit_code())
    if outcome.failed_workers:
        raise SystemExit(1)
    from sweeps.fencing import TrialsLost, lost_message

    if outcome.lost:
        raise TrialsLost(lost_message(outcome.lost))
    if outcome.lost_workers:
        raise TrialsLost(
            f"{outcome.lost_workers} worker process(es) lost trials to another worker while "
            "they did not beat; their results there were discarded"
        )
    if outcome.untracked:
        from sweeps.recording import EXIT_UNTRACKED

        raise SystemExit(EXIT_UNTRACKED)


def state_counts(counts: dict[str, int]) -> str:
    """`3 complete, 1 pruned`; `no trials yet` for a study without any (created only, or
    a --timeout that ran out before its first trial started)."""
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials yet"


def placement_lines(outcome: RunResult) -> list[str]:
    """Where an engine placed each worker, for the runs of one that says so."""
    lines = []
    for report in outcome.workers:
        if report.node is None:
            continue
        gpus = f", GPU {','.join(report.gpus)}" if report.gpus else ""
        lines.append(f"worker:  {report.index} on {report.node}{gpus}, exit {report.exit_code}")
    return lines


def detached_lines(stores: Stores, outcome: RunResult) -> str:
    """What `sweeps run --detach` prints: the job, where its output goes, how to watch."""
    job, study = outcome.job, shlex.quote(outcome.study)
    return "\n".join(
        [
            f"study {outcome.study}: submitted as Slurm job {job}",
            f"output:  {stores.home / 'slurm'}/{job}_<element>.out",
            f"watch:   squeue -j {job}  ·  {query_command('trials', stores, outcome.study)}",
            f"cancel:  scancel {job}  (then `sweeps run --study {study}` resumes)",
        ]
    )


def query_command(command: str, stores: Stores, study: str) -> str:
    """`sweeps COMMAND --study STUDY` with the options that find this study's stores."""
    home = ["--home", shlex.quote(str(stores.home))]
    storage = (
        []
        if stores.storage == stores.home_storage
        else ["--storage", shlex.quote(mask_secrets(stores.storage))]
    )
    return f"sweeps {command} --study {shlex.quote(study)} {' '.join([*home, *storage])}"


def where_results_are(stores: Stores, outcome: RunResult) -> str:
    """The closing lines of `sweeps run`: where everything went and the commands that
    read it (passwords masked: give them through SWEEPS_STORAGE / SWEEPS_TRACKING_URI)."""
    home = ["--home", shlex.quote(str(stores.home))]
    study = shlex.quote(outcome.study)
    lines = [
        f"stores:  {mask_secrets(stores.storage)} (Optuna, results)",
        f"query:   {query_command('best', stores, outcome.study)}",
    ]
    if outcome.mlflow_parent_run_id is None:
        return "\n".join(lines)
    lines[0] += (
        f"; {mask_secrets(stores.tracking_uri)} (MLflow experiment"
        f" {outcome.mlflow_experiment_id}, parent run {outcome.mlflow_parent_run_id})"
    )
    if stores.tracking_uri.startswith(("http://", "https://")):
        lines.append(f"open:    {mask_secrets(stores.tracking_uri)}")
    else:
        tracking = []
        if stores.tracking_uri != stores.home_tracking:
            tracking = ["--tracking-uri", shlex.quote(mask_secrets(stores.tracking_uri))]
        lines.append(f"open:    sweeps ui {' '.join([*home, *tracking])} --study {study}")
    return "\n".join(lines)


@click.command("worker")
@click.option("--study", required=True, help="An existing study to join.")
@click.option("--trials", type=int, help="Trials this worker runs [the study's --trials].")
@click.option("--device", help="Device for this worker [the study's].")
@click.option("--timeout", type=float, help="Stop starting trials after S seconds.")
@click.option("--batch", type=int, help="Trials trained together [the study's --batch].")
@accept_data_change_option
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--no-summary",
    is_flag=True,
    hidden=True,
    help="Leave the parent run's figures to the launcher (`sweeps run --workers`).",
)
@click.option("--worker-index", type=int, hidden=True, help="Seeds this worker's sampler.")
@click.option(
    "--share-id",
    hidden=True,
    help="This worker's share of a launch (`sweeps run --workers`): --trials is the share,"
    " of which the trials told under this id are done (a restarted worker runs the rest).",
)
@threads_option
@store_options
def worker_command(
    study: str,
    trials: int | None,
    device: str | None,
    timeout: float | None,
    batch: int | None,
    accept_data_change: bool,
    no_track: bool,
    quiet: bool,
    no_summary: bool,
    worker_index: int | None,
    share_id: str | None,
    threads: int | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Join an existing study from any shell or machine."""
    from sweeps.errors import UsageError
    from sweeps.runner import run_worker
    from sweeps.storage import resolve_stores

    most = MAX_COUNTS["trials"]
    if trials is not None and not 1 <= trials <= most:
        raise UsageError(f"--trials must be in [1, {most}], got {trials}")
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {timeout}")
    if batch is not None and batch <= 0:
        raise UsageError(f"--batch must be >= 1, got {batch}")
    stores = resolve_stores(home, storage, tracking_uri)
    stores.check_files(write=True, tracking=not no_track)
    apply_threads(threads)
    if device is not None:
        from trainer import resolve_device

        resolve_device(device)
    try:
        with study_process(track=not no_track) as ready:
            outcome = run_worker(
                study,
                stores,
                trials=trials,
                device=device,
                track=not no_track,
                timeout=timeout,
                batch=batch,
                quiet=quiet,
                summarize=not no_summary,
                worker_index=worker_index,
                share_id=share_id,
                accept_data_change=accept_data_change,
                on_ready=ready,
            )
    except KeyboardInterrupt:
        click.echo("sweeps: interrupted; completed trials are kept", err=True)
        raise SystemExit(interrupted_exit_code()) from None
    if not quiet:
        click.echo(state_counts(outcome.counts))
    if outcome.untracked:
        from sweeps.recording import untracked_message

        click.echo(f"sweeps: {untracked_message(outcome.untracked)}", err=True)
    if outcome.lost:
        from sweeps.fencing import TrialsLost, lost_message

        raise TrialsLost(lost_message(outcome.lost))
    if outcome.untracked:
        from sweeps.recording import EXIT_UNTRACKED

        raise SystemExit(EXIT_UNTRACKED)


def study_process(*, track: bool) -> AbstractContextManager[Callable[[], None]]:
    """What a process that runs trials settles for itself, here and not in the library:
    Optuna and MLflow quiet (MLflow's settings before its first import), then the heap
    frozen once everything the study lives with is imported, and again by the call the
    block gets, once the study's stores are open (`sweeps.cli.heap`)."""
    from sweeps.cli.heap import study_heap
    from sweeps.cli.process import quiet_mlflow, quiet_optuna

    quiet_mlflow()
    quiet_optuna()
    return study_heap(track=track)
