"""`sweeps check`: Optuna, the results table and MLflow agree one to one?"""

from __future__ import annotations

import click

from sweeps.cli.base import echo_json, store_options


@click.command("check")
@click.option("--study", required=True)
@click.option("--repair", is_flag=True, help="Fill missing rows/runs, close orphaned RUNNING runs.")
@click.option("--no-track", is_flag=True, help="Check Optuna against the results table only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@store_options
def check_command(
    study: str,
    repair: bool,
    no_track: bool,
    as_json: bool,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Check that Optuna, the results table and MLflow hold every finished trial once,
    in the same state; --repair fixes what differs.

    Exit 0 when consistent (after --repair), 1 when problems remain.
    """
    import sweeps
    from sweeps.cli.process import quiet_mlflow, quiet_optuna

    quiet_mlflow()  # this process's settings, before MLflow's first import
    quiet_optuna()
    report = sweeps.check(
        study,
        repair=repair,
        track=not no_track,
        home=home,
        storage=storage,
        tracking_uri=tracking_uri,
    )
    if as_json:
        echo_json(report.as_dict())
    else:
        click.echo(
            f"study {study}: {report.optuna_finished} finished Optuna trials, "
            f"{report.results_rows} results rows, {report.mlflow_runs} MLflow runs"
        )
        if report.confirmation_rows or report.confirmation_runs:
            click.echo(
                f"  confirmations: {report.confirmation_rows} results rows,"
                f" {report.confirmation_runs} MLflow runs"
            )
        for problem in report.problems:
            mark = "repaired" if problem in report.repaired else "problem"
            click.echo(f"  {mark}: {problem}")
        click.echo("consistent" if report.consistent else "INCONSISTENT (try --repair)")
    if not report.consistent:
        raise SystemExit(1)
