"""The d2l-style λ figure renders for every shape of study."""

from __future__ import annotations

import gc
import io
import math
import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from tracking.figures import PENALTY_COLOURS, draw_lambda_figure, lambda_figure
from tracking.records import TrialRecord, TrialState

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def trial(
    number: int,
    penalty: str,
    lambda_: float | None,
    state: TrialState = TrialState.COMPLETE,
    w_norm: float | None = None,
) -> TrialRecord:
    effective = lambda_ or 0.0
    params = {"penalty": penalty, "lambda": lambda_}
    if penalty == "elastic_net":
        params["l1_ratio"] = 0.5
    final: dict[str, float | None] = {
        "train_loss": 1e-4 + 0.05 * effective / (1 + effective),
        "val_loss": 0.01 + 50 / (1 + 20 * effective),
        "test_loss": 0.01 + 50 / (1 + 20 * effective),
        "w_norm": 14 / (1 + 3 * effective) if w_norm is None else w_norm,
        "penalty_value": 0.5 * effective,
    }
    return TrialRecord(
        study="fig",
        number=number,
        state=state,
        params=params,
        final=final,
        value=final["val_loss"],
        duration_s=0.1,
        device="cpu",
        start_time_ms=0,
        end_time_ms=100,
    )


def assert_png(data: bytes) -> None:
    assert data.startswith(PNG_HEADER)
    height, width, _ = imread(io.BytesIO(data), format="png").shape
    assert (width, height) == (1200, 480)


def test_several_penalties() -> None:
    penalties = ["l1", "l2", "l2_unsquared", "elastic_net", "weight_decay", "custom"]
    records = [trial(i, penalties[i % len(penalties)], 10 ** (-5 + 7 * i / 36)) for i in range(36)]
    records += [
        trial(36, "none", None),
        trial(37, "none", 0.0),
        trial(38, "l2", 0.0),  # λ ≤ 0 cannot go on a log axis: left out
        trial(39, "l2", 1.0, w_norm=math.nan),
        trial(40, "l2", 2.0, state=TrialState.PRUNED),
        trial(41, "l1", 2.0, state=TrialState.FAIL),
    ]
    assert_png(lambda_figure(records))


def _legend(ax: object) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]  # type: ignore[attr-defined]


def test_each_penalty_is_a_series_that_says_how_many_trials_it_holds() -> None:
    records = [trial(i, "l2", 10.0 ** (i - 3)) for i in range(5)]
    records += [trial(5 + i, "weight_decay", 10.0 ** (i - 2)) for i in range(2)]
    records += [trial(7, "none", None), trial(8, "l2", 1.0, state=TrialState.PRUNED)]
    figure = draw_lambda_figure(records)
    loss_ax, norm_ax = figure.axes
    assert _legend(norm_ax) == [
        "l2 (5 trials)",
        "none (1 trial; no λ: reference lines)",
        "weight_decay (2 trials)",
    ]
    assert _legend(loss_ax) == ["train", "test"]
    assert (loss_ax.get_xscale(), loss_ax.get_yscale(), norm_ax.get_xscale()) == (
        "log",
        "log",
        "log",
    )
    series = {line.get_marker(): line for line in norm_ax.lines if line.get_gid() is None}
    assert sorted(series) == ["s", "v"]  # a marker shape per penalty
    assert len(series["s"].get_xdata()) == 5 and len(series["v"].get_xdata()) == 2
    train, test = loss_ax.lines[0], loss_ax.lines[1]
    assert (train.get_linestyle(), test.get_linestyle()) == ("-", "--")
    assert test.get_markerfacecolor() == "none"  # hollow: test; filled: train


def test_the_palette_reads_on_white() -> None:
    """No light colour (the yellow the default cycle has) and every pair distinct."""
    colours = [to_rgb(c) for c in PENALTY_COLOURS.values()]
    luminance = [0.2126 * r + 0.7152 * g + 0.0722 * b for r, g, b in colours]
    assert max(luminance) < 0.65
    assert len({tuple(round(v, 2) for v in c) for c in colours}) == len(colours)


def test_none_only() -> None:
    assert_png(lambda_figure([trial(0, "none", None), trial(1, "none", 0.0)]))


def test_single_point() -> None:
    assert_png(lambda_figure([trial(0, "l2", 3.0)]))


@pytest.mark.parametrize(
    "records",
    [
        [],
        [trial(0, "l2", 1.0, state=TrialState.PRUNED), trial(1, "l1", 0.1, TrialState.FAIL)],
    ],
    ids=["no trials", "none completed"],
)
def test_zero_completed(records: list[TrialRecord]) -> None:
    assert_png(lambda_figure(records))


def test_renders_without_warnings(recwarn: pytest.WarningsRecorder) -> None:
    gc.collect()  # an earlier test's unclosed connection must not warn inside this one
    recwarn.clear()
    lambda_figure([trial(0, "none", None)])
    lambda_figure([])
    # ResourceWarnings come from the garbage collector, which may run here at any time
    ours = [w for w in recwarn if not issubclass(w.category, ResourceWarning)]
    assert [str(w.message) for w in ours] == []


def _with_lr(rec: TrialRecord, lr: float) -> TrialRecord:
    from dataclasses import replace

    return replace(rec, params={**rec.params, "lr": lr})


def test_trials_of_several_lrs_get_a_panel_of_test_loss_against_lr() -> None:
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    records = [_with_lr(trial(i, "l2", 10.0 ** (i - 3)), lrs[i % 4]) for i in range(8)]
    records += [_with_lr(trial(8 + i, "none", None), lrs[i]) for i in range(2)]
    records += [_with_lr(trial(10, "l2", 1.0, state=TrialState.PRUNED), 0.5)]  # not drawn
    figure = draw_lambda_figure(records)
    loss_ax, norm_ax, lr_ax = figure.axes
    assert (lr_ax.get_xlabel(), lr_ax.get_xscale(), lr_ax.get_yscale()) == ("lr", "log", "log")
    series = {line.get_gid(): line for line in lr_ax.lines}
    assert sorted(series) == ["l2", "none"]  # `none` has an lr, if no λ
    for penalty, line in series.items():
        complete = [r for r in records if r.penalty == penalty and r.state is TrialState.COMPLETE]
        drawn = sorted((r.params["lr"], r.final["test_loss"]) for r in complete)
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == drawn
        assert line.get_linestyle() == "None" and line.get_color() == PENALTY_COLOURS[penalty]
    # On the λ panels no line joins two trials of different lr: markers only.
    for ax in (loss_ax, norm_ax):
        assert {line.get_linestyle() for line in ax.lines if line.get_gid() is None} == {"None"}
    assert "lr" in figure.get_suptitle()
    height, width, _ = imread(io.BytesIO(lambda_figure(records)), format="png").shape
    assert (width, height) == (1800, 480)


def test_trials_of_one_lr_keep_two_panels_and_their_lines() -> None:
    records = [_with_lr(trial(i, "l2", 10.0 ** (i - 3)), 0.003) for i in range(4)]
    figure = draw_lambda_figure(records)
    assert len(figure.axes) == 2
    assert figure.axes[0].lines[0].get_linestyle() == "-"
    assert_png(lambda_figure(records))
