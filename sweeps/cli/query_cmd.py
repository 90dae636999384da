"""Query commands: studies, trials, best, compare, export (over `sweeps.lookup`). They import
neither torch nor MLflow: a question about a study should not wait for training or
tracking code to load."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from sweeps.cli.base import echo_json, format_table, storage_options, store_options
from sweeps.cli.options import PENALTIES
from tracking.records import BEST_COLUMNS, COUNT_COLUMNS, TRIAL_COLUMNS
from trainer.metrics import ACCURACY_METRICS

if TYPE_CHECKING:
    pass

# A penalty's best trial and its trials by how they ended (`sweeps best`, `compare`).
STANDING_COLUMNS = (*BEST_COLUMNS, *COUNT_COLUMNS)
STUDY_COLUMNS = ["study", "task", "trials", "complete", "pruned", "failed", "best_value", "created"]
# Left out of the tables so that they fit a terminal; --json and export have every column.
NOT_IN_TABLES = frozenset({"val_loss", "penalty_value", "train_accuracy", "reused_from"})


def table_columns(
    columns: Sequence[str], rows: Sequence[dict[str, Any]], *, lr: bool = False
) -> list[str]:
    """`columns` as a table shows them: less NOT_IN_TABLES, less the accuracies when no
    row has one (regression tasks have none), and less `lr` unless it was searched (`lr`)."""
    return [
        c
        for c in columns
        if c not in NOT_IN_TABLES
        and (c != "lr" or lr)
        and (c not in ACCURACY_METRICS or any(row.get(c) is not None for row in rows))
    ]


def _table(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    where: tuple[str, str | None],
    studies: Sequence[str],
) -> str:
    """The rows as a table; with an `lr` column where one of `studies` (in the storage
    `where`: home, storage) searches lr."""
    from sweeps.lookup import searches_lr
    from sweeps.storage import resolve_stores

    lr = searches_lr(resolve_stores(*where, None), studies)
    return format_table(rows, table_columns(columns, rows, lr=lr))


@click.command("studies")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@storage_options
def studies_command(as_json: bool, home: str, storage: str | None) -> None:
    """List the studies in the storage."""
    import sweeps

    rows = sweeps.studies(home=home, storage=storage)
    if as_json:
        echo_json(rows)
    else:
        shown = [{**r, "created": _minute(r["created"])} for r in rows]
        click.echo(format_table(shown, STUDY_COLUMNS) if rows else "no studies")


def _minute(iso: str) -> str:
    """`2026-11-30T00:36:29.811510+00:00` → `2026-11-30 00:36 UTC` (JSON keeps it all)."""
    return f"{iso[:10]} {iso[11:16]} UTC"


@click.command("trials")
@click.option("--study", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@storage_options
def trials_command(study: str, as_json: bool, home: str, storage: str | None) -> None:
    """Every trial of a study with its state, λ and losses."""
    import sweeps

    rows = sweeps.trials(study, home=home, storage=storage)
    if as_json:
        echo_json(rows)
    elif rows:
        click.echo(_table(rows, TRIAL_COLUMNS, (home, storage), [study]))
    else:
        click.echo(f"study {study!r} has no trials")


@click.command("best")
@click.option("--study", required=True)
@click.option("--penalty", type=click.Choice(PENALTIES), help="Only this penalty type.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@storage_options
def best_command(
    study: str,
    penalty: str | None,
    as_json: bool,
    home: str,
    storage: str | None,
) -> None:
    """The best λ per penalty type (best first), or for one penalty with --penalty.

    --json prints a list of the same rows, one object per penalty.
    """
    import sweeps
    from sweeps.errors import UsageError

    rows = sweeps.best(study, penalty=penalty, home=home, storage=storage)
    if not any(row["value"] is not None for row in rows):
        if as_json:
            echo_json([])  # what a JSON reader can parse; the reason goes to stderr
        what = f"penalty {penalty!r}" if penalty else "any penalty"
        why = _unfinished(home, storage, study, penalty)
        raise UsageError(f"study {study!r} has no complete trial for {what}{why}")
    if as_json:
        echo_json(rows)
    else:
        click.echo(_table(rows, _best_columns(rows), (home, storage), [study]))


def _best_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """STANDING_COLUMNS, and the confirmed mean and CI beside them when a row has them."""
    from sweeps.lookup import CONFIRMED_COLUMNS

    extra = [c for c in CONFIRMED_COLUMNS if any(c in row for row in rows)]
    return [*STANDING_COLUMNS, *extra]


def _unfinished(home: str, storage: str | None, study: str, penalty: str | None) -> str:
    """Why there is no best: e.g. ` (3 pruned, 1 failed)`; empty when it has no trials."""
    import sweeps

    counts: dict[str, int] = {}
    for row in sweeps.trials(study, home=home, storage=storage):
        if penalty is None or row.get("penalty") == penalty:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
    named = {"PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
    parts = [f"{n} {named[state]}" for state, n in sorted(counts.items()) if state in named]
    return f" ({', '.join(parts)})" if parts else " (no trials)"


@click.command("compare")
@click.option("--study", "studies", multiple=True, help="Repeat for several studies [all].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@storage_options
def compare_command(
    studies: tuple[str, ...],
    as_json: bool,
    home: str,
    storage: str | None,
) -> None:
    """Best λ and losses per study × penalty."""
    import sweeps

    rows = sweeps.compare(*studies, home=home, storage=storage)
    if as_json:
        echo_json(rows)
    else:
        names = [str(row["study"]) for row in rows]
        click.echo(
            _table(rows, _best_columns(rows), (home, storage), names)
            if rows
            else "no complete trials"
        )


@click.command("export")
@click.option("--study", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(allow_dash=True),
    help="File, written whole; never one of the stores' [- : stdout].",
)
@store_options
def export_command(
    study: str,
    fmt: str,
    output: str | None,
    home: str,
    storage: str | None,
    tracking_uri: str | None,
) -> None:
    """Export a study's trials as CSV or JSON (same column names as everywhere).

    --tracking-uri names the MLflow store only so that -o never replaces it.
    """
    import sweeps
    from sweeps.lookup import render_export
    from sweeps.outputs import STDOUT, output_path, write_whole
    from sweeps.storage import resolve_stores

    stores = resolve_stores(home, storage, tracking_uri)
    target = None if output in (None, STDOUT) else output_path(output, stores)
    text = render_export(sweeps.trials(study, home=home, storage=storage), fmt)
    if target is not None:
        write_whole(target, text)
        return
    click.echo(text, nl=False)  # a full standard output is one line (`sweeps.cli.base`)
