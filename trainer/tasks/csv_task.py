"""`--task csv`: a numeric table from `--train-csv` (and optionally `--test-csv`).

The first line is the header. Every column but `--target` is a feature and must be numeric
with no empty or NaN cell. Regression targets must be numeric; with `--classification` the
target may hold any labels, which become class indices in sorted order (numeric order when
every label is a number). Without `--test-csv` the training file is split into train /
validation / test (`--val-fraction`, `--test-fraction`, both 0.2 by default); with it, the
training file is split into train / validation and the test file is the test split. The
split is fixed (trainer.tasks.tabular), or drawn from the config's `split_seed`; a
`--test-csv` file is never split, so it stays the test split whatever the seed. The
objective is the validation loss; the test loss is reported, never used for selection.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from trainer import task_options
from trainer.config import TaskOption
from trainer.errors import TaskError
from trainer.tasks.base import Split, Task, resolve_options
from trainer.tasks.tabular import split_rows, tabular_task

NAME = task_options.CSV
OPTIONS = task_options.CSV_OPTIONS

Rows = list[list[str]]


def check_regular_file(path_text: str, what: str) -> None:
    """A TaskError unless the path names a regular file: a device (/dev/zero) never ends
    and a pipe can be read only once (its data is hashed, then loaded). A missing or
    unreadable file is left to the read that follows."""
    try:
        mode = os.stat(path_text).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise TaskError(
            f"{what} {path_text!r} is not a regular file (a device or a pipe); give a CSV file"
        )


def read_table(path_text: str, what: str) -> tuple[list[str], Rows]:
    """Header and rows of a CSV file, or a TaskError naming the file and the problem."""
    path = Path(path_text)
    check_regular_file(path_text, what)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except FileNotFoundError:
        raise TaskError(f"{what} {path_text!r}: no such file") from None
    except UnicodeDecodeError:
        raise TaskError(f"{what} {path_text!r}: not a UTF-8 text file") from None
    except (OSError, csv.Error) as e:
        raise TaskError(f"{what} {path_text!r}: cannot read it: {e}") from None
    lines = [line for line in lines if any(cell.strip() for cell in line)]
    if not lines:
        raise TaskError(f"{what} {path_text!r} is empty")
    header, rows = [h.strip() for h in lines[0]], lines[1:]
    if "" in header:
        raise TaskError(
            f"{what} {path_text!r}: column {header.index('') + 1} of the header has no name"
        )
    duplicated = sorted(h for h, n in Counter(header).items() if n > 1)
    if duplicated:
        raise TaskError(f"{what} {path_text!r}: column {duplicated[0]!r} appears twice")
    if not rows:
        raise TaskError(f"{what} {path_text!r} has a header but no data rows")
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise TaskError(
                f"{what} {path_text!r}: line {i} has {len(row)} cells, the header {len(header)}"
            )
    return header, rows


SHOWN_COLUMNS = 20  # an error names a wide table's first columns, not all of them
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _number(cell: str, path: str, column: str, line: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        if not cell.strip():
            raise TaskError(
                f"{path!r}: column {column!r} has an empty cell (line {line})"
            ) from None
        raise TaskError(
            f"{path!r}: column {column!r} is not numeric (line {line}: {cell.strip()!r});"
            " features must be numbers"
        ) from None
    if not math.isfinite(value):
        raise TaskError(f"{path!r}: column {column!r} has a NaN or infinite cell (line {line})")
    if abs(value) > FLOAT32_MAX:  # the trainer computes in float32: it would be inf there
        raise TaskError(
            f"{path!r}: column {column!r} holds {cell.strip()} (line {line}), beyond float32's"
            f" range (±{FLOAT32_MAX:.4g}); rescale the column"
        )
    return value


def _features(header: list[str], rows: Rows, target: str, path: str) -> torch.Tensor:
    columns = [j for j, h in enumerate(header) if h != target]
    if not columns:
        raise TaskError(f"{path!r} has no feature column besides the target {target!r}")
    values = [
        [_number(row[j], path, header[j], i) for j in columns] for i, row in enumerate(rows, 2)
    ]
    return torch.tensor(values, dtype=torch.float32)


def _class_index(labels: Sequence[str]) -> dict[str, int]:
    distinct = sorted(set(labels))
    with contextlib.suppress(ValueError):  # numeric labels in numeric order ("10" after "9")
        distinct.sort(key=float)
    return {label: i for i, label in enumerate(distinct)}


def _target_column(header: list[str], target: str, path: str) -> int:
    if not target:
        raise TaskError("task csv needs --target COLUMN")
    if target not in header:
        shown = ", ".join(header[:SHOWN_COLUMNS])
        more = f", … {len(header)} in all" if len(header) > SHOWN_COLUMNS else ""
        raise TaskError(f"{path!r} has no column {target!r} (columns: {shown}{more})")
    return header.index(target)


def _load(opts: Mapping[str, TaskOption]) -> tuple[list[Split], int]:
    """The (train+val file, optional test file) splits before splitting, and the classes."""
    train_path, test_path, target = (
        str(opts["train_csv"]),
        str(opts["test_csv"]),
        str(opts["target"]),
    )
    if not train_path:
        raise TaskError("task csv needs --train-csv FILE")
    files = [(train_path, *read_table(train_path, "--train-csv"))]
    if test_path:
        files.append((test_path, *read_table(test_path, "--test-csv")))
    features = [h for h in files[0][1] if h != target]
    tables: list[tuple[str, torch.Tensor, list[str]]] = []
    for path, header, rows in files:
        col = _target_column(header, target, path)
        own = [h for h in header if h != target]
        if sorted(own) != sorted(features):
            raise TaskError(f"{path!r} has other feature columns than {train_path!r}")
        position = {h: j for j, h in enumerate(own)}
        X = _features(header, rows, target, path)[:, [position[h] for h in features]]
        tables.append((path, X, [row[col].strip() for row in rows]))
    if opts["classification"]:
        index = _class_index([label for _, _, labels in tables for label in labels])
        splits = [Split(X, torch.tensor([index[v] for v in ys])) for _, X, ys in tables]
        return splits, len(index)
    splits = []
    for path, X, labels in tables:
        ys = [_number(v, path, target, i) for i, v in enumerate(labels, 2)]
        splits.append(Split(X, torch.tensor(ys, dtype=torch.float32).reshape(-1, 1)))
    return splits, 1


def build(options: Mapping[str, TaskOption], data_seed: int, split_seed: int | None) -> Task:
    del data_seed  # the files are fixed: only split_seed varies the split (not --test-csv)
    opts = resolve_options(NAME, OPTIONS, options)
    if "test_fraction" in options and opts["test_csv"]:
        raise TaskError("--test-fraction applies only without --test-csv")
    splits, n_classes = _load(opts)
    data = splits[0]
    val_fraction = float(opts["val_fraction"])
    if len(splits) == 2:
        train_idx, val_idx = split_rows(len(data), (val_fraction,), split_seed)
        parts = (_rows(data, train_idx), _rows(data, val_idx), splits[1])
    else:
        train_idx, val_idx, test_idx = split_rows(
            len(data), (val_fraction, float(opts["test_fraction"])), split_seed
        )
        parts = (_rows(data, train_idx), _rows(data, val_idx), _rows(data, test_idx))
    return tabular_task(
        NAME,
        parts,
        classification=bool(opts["classification"]),
        n_classes=n_classes,
        options=opts,
        given=options,
        standardized=bool(opts["standardize"]),
    )


def _rows(split: Split, index: torch.Tensor) -> Split:
    return Split(split.X[index], split.y[index])
