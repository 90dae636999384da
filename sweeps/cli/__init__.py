"""The `sweeps` command line: a thin layer over the library."""

from __future__ import annotations

import click

from sweeps import __version__
from sweeps.cli import stops
from sweeps.cli.base import SweepsGroup
from sweeps.cli.check_cmd import check_command
from sweeps.cli.confirm_cmd import confirm_command
from sweeps.cli.faults import report_bus_errors
from sweeps.cli.query_cmd import (
    best_command,
    compare_command,
    export_command,
    studies_command,
    trials_command,
)
from sweeps.cli.run_cmd import run_command, worker_command
from sweeps.cli.train_cmd import train_command
from sweeps.cli.ui_cmd import ui_command
from tracking.connections import set_command


@click.group(cls=SweepsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sweeps")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Hyperparameter sweeps over regularization: λ × penalty type, with Optuna and MLflow."""
    if ctx.invoked_subcommand:  # database connections say `sweeps <command> <pid>`
        set_command(ctx.invoked_subcommand)


for command in (
    train_command,
    run_command,
    worker_command,
    studies_command,
    trials_command,
    best_command,
    compare_command,
    export_command,
    ui_command,
    check_command,
    confirm_command,
):
    cli.add_command(command)


def main() -> None:
    """The process's entry point (console script and `python -m sweeps`)."""
    stops.install()
    report_bus_errors()
    cli.main(prog_name="sweeps")
