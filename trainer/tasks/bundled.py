"""scikit-learn's bundled data sets: `diabetes` (regression) and `digits` (classification).

`diabetes`: 442 patients, 10 raw features (`load_diabetes(scaled=False)`), target a
disease-progression score; squared loss. `digits`: 1797 8×8 images, 64 pixel features,
10 classes (`--model cnn` reads each row as the 1×8×8 image); cross-entropy, accuracy
reported too. Both are split 60/20/20 into
train/validation/test by trainer.tasks.tabular's fixed permutation (seed SPLIT_SEED = 0),
or by the config's `split_seed` when it has one, and standardized with training
statistics. scikit-learn is imported only when one of these tasks is built (it takes
seconds to import).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch

from trainer import task_options
from trainer.config import TaskOption
from trainer.tasks.base import Task, resolve_options
from trainer.tasks.tabular import Table, split_rows, tabular_task

DIABETES = task_options.DIABETES
DIGITS = task_options.DIGITS
VAL_FRACTION = 0.2
TEST_FRACTION = 0.2
OPTIONS = task_options.MODEL_OPTIONS
DIGITS_IMAGE = (1, 8, 8)  # each row's 64 pixels, row by row: `--model cnn` sees the image


@functools.cache
def _load(name: str) -> Table:
    from sklearn import datasets

    if name == DIABETES:
        X, y = datasets.load_diabetes(return_X_y=True, scaled=False)
        return Table(torch.tensor(X, dtype=torch.float32), torch.tensor(y).float().reshape(-1, 1))
    X, y = datasets.load_digits(return_X_y=True)
    return Table(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.long))


def _build(name: str, options: Mapping[str, TaskOption], split_seed: int | None) -> Task:
    opts = resolve_options(name, OPTIONS, options)
    table = _load(name)
    train, val, test = split_rows(len(table.y), (VAL_FRACTION, TEST_FRACTION), split_seed)
    classification = name == DIGITS
    return tabular_task(
        name,
        (table.rows(train), table.rows(val), table.rows(test)),
        classification=classification,
        n_classes=10 if classification else 1,
        options=opts,
        given=options,
        image=DIGITS_IMAGE if classification else None,
    )


def build_diabetes(
    options: Mapping[str, TaskOption], data_seed: int, split_seed: int | None
) -> Task:
    del data_seed  # the table is fixed: only split_seed varies the data
    return _build(DIABETES, options, split_seed)


def build_digits(options: Mapping[str, TaskOption], data_seed: int, split_seed: int | None) -> Task:
    del data_seed
    return _build(DIGITS, options, split_seed)
