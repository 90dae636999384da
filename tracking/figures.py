"""The d2l-style figure of a study: train/test loss and ‖w‖₂ against λ, one series per penalty;
where the trials differ in lr (a study that searches it), a third panel: test loss against lr.

Drawn on a bare `matplotlib.figure.Figure` rendered by Agg: no pyplot, so no global figure
registry or backend state is touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from tracking.records import TrialRecord, TrialState

TITLE = "train/test loss and ‖w‖₂ against λ"
LR_TITLE = "test loss against lr"
NO_PENALTY = "none"
# Fixed colours and markers, so a penalty looks the same in every study's figure: the
# Okabe–Ito palette (distinct for the colour-blind, dark enough on white; no yellow), and a
# marker shape per penalty, so series stay apart in greyscale too.
PENALTY_COLOURS = {
    "none": "#000000",
    "l1": "#0072B2",
    "l2": "#D55E00",
    "l2_unsquared": "#009E73",
    "elastic_net": "#CC79A7",
    "weight_decay": "#E69F00",
}
PENALTY_MARKERS = {
    "l1": "o",
    "l2": "s",
    "l2_unsquared": "^",
    "elastic_net": "D",
    "weight_decay": "v",
}
_SPARE_COLOURS = ("#56B4E9", "#882255", "#117733", "#332288", "#999933")
# The CLI's default λ range: the x extent when no trial has a λ to plot (none-only studies).
_DEFAULT_LAMBDA_RANGE = (1e-5, 1e2)
_REFERENCE = "reference"  # gid of the horizontal lines of the `none` penalty
# Train and test: a solid line through filled markers, a dashed one through hollow ones.
# Lines are thin and faint: with few trials, neighbours on the λ axis can be decades apart,
# and the markers are the data.
_TRAIN_STYLE: dict[str, Any] = {"linestyle": "-"}
_TEST_STYLE: dict[str, Any] = {"linestyle": "--", "markerfacecolor": "none"}


# Points of several learning rates: markers only, since a line through neighbours on the λ
# axis would join trials of different lr.
_UNJOINED: dict[str, Any] = {"linestyle": "none"}
_UNJOINED_STYLES = (_UNJOINED, {**_UNJOINED, "markerfacecolor": "none"})  # train, test


@dataclass(frozen=True)
class _Point:
    lambda_: float
    train_loss: float | None
    test_loss: float | None
    w_norm: float | None


def lambda_figure(records: Sequence[TrialRecord]) -> bytes:
    """`draw_lambda_figure` as a PNG."""
    return png_bytes(draw_lambda_figure(records))


def draw_lambda_figure(records: Sequence[TrialRecord]) -> Figure:
    """Losses (log-log) and ‖w‖₂ (log λ) of the COMPLETE trials against λ, one series per
    penalty, its legend entry saying how many trials it holds.

    The `none` penalty has no λ and is drawn as horizontal reference lines; λ ≤ 0 and
    non-finite or (on log axes) non-positive values are left out. Where the complete trials
    differ in lr, the λ panels show markers only (no line joins two lrs) and a third panel
    shows each trial's test loss against its lr (log-log), `none` included, in the same
    colours and markers.
    """
    complete = [r for r in records if r.state is TrialState.COMPLETE]
    several_lrs = len({lr for r in complete if (lr := _lr(r)) is not None}) > 1
    fig = Figure(figsize=(18 if several_lrs else 12, 4.8), layout=None)
    axes = fig.subplots(1, 3 if several_lrs else 2)
    loss_ax, norm_ax = axes[0], axes[1]
    # Fixed margins: a constrained or tight layout draws the log ticks a second time.
    left = 0.05 if several_lrs else 0.075
    fig.subplots_adjust(left=left, right=0.985, bottom=0.11, top=0.86, wspace=0.2)
    fig.suptitle(f"{TITLE}; {LR_TITLE}" if several_lrs else TITLE)
    if complete:
        _draw(loss_ax, norm_ax, complete, joined=not several_lrs)
    # Log scales only now: on an empty log axis matplotlib warns about singular limits.
    _scale_and_label(loss_ax, norm_ax, joined=not several_lrs)
    if several_lrs:
        _draw_lr(axes[2], complete)
    if not complete:
        for ax in (loss_ax, norm_ax):
            _say(ax, "no completed trials yet")
    return fig


def _lr(rec: TrialRecord) -> float | None:
    return _usable(rec.params.get("lr"), positive=True)


def _draw_lr(ax: Axes, complete: Sequence[TrialRecord]) -> None:
    """Each complete trial's test loss against its lr, one series per penalty."""
    by_penalty: dict[str, list[tuple[float, float]]] = {}
    for rec in complete:
        lr, loss = _lr(rec), _usable(rec.final.get("test_loss"), positive=True)
        if lr is not None and loss is not None:
            by_penalty.setdefault(rec.penalty, []).append((lr, loss))
    colours = _colours(sorted({r.penalty for r in complete}))
    for penalty in sorted(by_penalty):
        xs, ys = zip(*sorted(by_penalty[penalty]), strict=True)
        marker = "o" if penalty == NO_PENALTY else _marker(penalty)
        line = ax.plot(xs, ys, color=colours[penalty], marker=marker, markersize=6, **_UNJOINED)
        line[0].set_gid(penalty)
        line[0].set_markerfacecolor("none")  # hollow: test loss, as on the λ panel
    ax.set_xscale("log")
    if ax.lines:
        ax.set_yscale("log")
    else:
        _say(ax, "nothing to plot on these axes")
    ax.set_xlabel("lr")
    ax.set_ylabel("test data loss")
    ax.set_title(f"{LR_TITLE} (every penalty, none included)")
    ax.grid(True, which="major", alpha=0.3)


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG, drawn once.

    Log axes get plain decade labels ("1e-5", "0.1", "100") and no minor ticks: matplotlib's
    default typesets every decade label with mathtext and builds a tick object per minor
    tick, which was half of the drawing time. Margins are
    the caller's: fitting the figure to its contents ("tight") takes a second drawing pass.
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_formatter(FuncFormatter(_decade_label))
                axis.set_minor_locator(NullLocator())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _decade_label(value: float, _position: int) -> str:
    """1e-5 … 0.01, 0.1, 1, 10, 100, 1000 … 1e6: short enough for narrow axes."""
    exponent = math.log10(value) if value > 0 else math.nan
    decade = math.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9
    return f"1e{round(exponent)}" if decade and not -2 <= exponent <= 3 else f"{value:g}"


def _scale_and_label(loss_ax: Axes, norm_ax: Axes, *, joined: bool = True) -> None:
    for ax in (loss_ax, norm_ax):
        has_lambda = any(not _is_reference(line) for line in ax.lines)
        ax.set_xscale("log")
        if not has_lambda:  # nothing fixes the λ range: show the CLI's default one
            ax.set_xlim(*_DEFAULT_LAMBDA_RANGE)
        ax.set_xlabel("λ")
        ax.grid(True, which="major", alpha=0.3)
    if loss_ax.lines:  # every value drawn is > 0
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("data loss (no penalty)")
    styles = "solid, filled) and test (dashed, hollow" if joined else "filled) and test (hollow"
    loss_ax.set_title(f"train ({styles}) loss")
    norm_ax.set_ylabel("‖w‖₂")
    norm_ax.set_title("‖w‖₂ of the penalized weights")


def _draw(loss_ax: Axes, norm_ax: Axes, complete: Sequence[TrialRecord], *, joined: bool) -> None:
    by_penalty: dict[str, list[TrialRecord]] = {}
    for rec in complete:
        by_penalty.setdefault(rec.penalty, []).append(rec)
    colours = _colours(sorted(by_penalty))
    for penalty in sorted(by_penalty):
        colour = colours[penalty]
        if penalty == NO_PENALTY:
            _draw_reference(loss_ax, norm_ax, by_penalty[penalty], colour)
            continue
        points = sorted(_points(by_penalty[penalty]), key=lambda p: p.lambda_)
        marker = _marker(penalty)
        train, test = (_TRAIN_STYLE, _TEST_STYLE) if joined else _UNJOINED_STYLES
        _plot(loss_ax, points, "train_loss", colour, marker, train, positive=True)
        _plot(loss_ax, points, "test_loss", colour, marker, test, positive=True)
        _plot(norm_ax, points, "w_norm", colour, marker, train, positive=False)
    for ax in (loss_ax, norm_ax):
        if not ax.lines:
            _say(ax, "nothing to plot on these axes")
    handles = [
        Line2D(
            [],
            [],
            color=colours[p],
            marker=None if p == NO_PENALTY else _marker(p),
            label=legend_label(p, len(by_penalty[p])),
        )
        for p in sorted(by_penalty)
    ]
    norm_ax.legend(handles=handles, title="penalty (trials)", fontsize="small")
    train, test = (_TRAIN_STYLE, _TEST_STYLE) if joined else _UNJOINED_STYLES
    loss_ax.legend(
        handles=[
            Line2D([], [], color="0.2", marker="o", label="train", **train),
            Line2D([], [], color="0.2", marker="o", label="test", **test),
        ],
        fontsize="small",
    )


def _draw_reference(
    loss_ax: Axes, norm_ax: Axes, records: Sequence[TrialRecord], colour: str
) -> None:
    """The unpenalized trials as horizontal lines (their mean, if several)."""
    for ax, name, style, positive in (
        (loss_ax, "train_loss", "-", True),
        (loss_ax, "test_loss", "--", True),
        (norm_ax, "w_norm", "-", False),
    ):
        values = [v for r in records if (v := _usable(r.final.get(name), positive)) is not None]
        if values:
            line = ax.axhline(sum(values) / len(values), color=colour, linestyle=style, lw=1.2)
            line.set_gid(_REFERENCE)


def _plot(
    ax: Axes,
    points: Sequence[_Point],
    name: str,
    colour: str,
    marker: str,
    style: dict[str, Any],
    *,
    positive: bool,
) -> None:
    xy = [(p.lambda_, y) for p in points if (y := _usable(getattr(p, name), positive)) is not None]
    if xy:
        xs, ys = zip(*xy, strict=True)
        line = ax.plot(xs, ys, color=colour, marker=marker, markersize=6, linewidth=0.8, **style)
        line[0].set_alpha(0.9)


def _points(records: Sequence[TrialRecord]) -> list[_Point]:
    points = []
    for rec in records:
        lambda_ = _usable(rec.params.get("lambda"), positive=True)
        if lambda_ is not None:
            final = rec.final
            points.append(
                _Point(
                    lambda_, final.get("train_loss"), final.get("test_loss"), final.get("w_norm")
                )
            )
    return points


def _usable(value: object, positive: bool) -> float | None:
    """The value as a float if a (log) axis can show it, else None."""
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or (positive and number <= 0):
        return None
    return number


def _colours(penalties: Sequence[str]) -> dict[str, str]:
    unknown = [p for p in penalties if p not in PENALTY_COLOURS]
    spare = {p: _SPARE_COLOURS[i % len(_SPARE_COLOURS)] for i, p in enumerate(unknown)}
    return {p: PENALTY_COLOURS.get(p) or spare[p] for p in penalties}


def _marker(penalty: str) -> str:
    return PENALTY_MARKERS.get(penalty, "P")


def legend_label(penalty: str, trials: int) -> str:
    """A series' legend entry: the penalty and how many trials it holds."""
    what = f"{trials} trial" + ("s" if trials != 1 else "")
    if penalty == NO_PENALTY:
        return f"none ({what}; no λ: reference lines)"
    return f"{penalty} ({what})"


def _is_reference(line: Line2D) -> bool:
    return bool(line.get_gid() == _REFERENCE)


def _say(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")
