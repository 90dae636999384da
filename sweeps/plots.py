"""Optuna's plots of a study (its optimization history, its parameter slices), rendered
to PNG bytes for the parent run."""

from __future__ import annotations

import math

import matplotlib
import optuna
import sqlalchemy as sa
from matplotlib.axes import Axes
from matplotlib.category import StrCategoryConverter
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from sweeps._optuna import fenced
from tracking.figures import png_bytes


def optuna_plots(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> dict[str, bytes]:
    """optimization_history.png and param_slices.png of the study, or of the study as
    `trials` (the finished trials a process holds) make it; empty when nothing completed."""
    from sweeps._optuna.read import Snapshot

    drawn = _read_once(study) if trials is None else Snapshot(study, trials)
    return {name: png_bytes(figure) for name, figure in draw_optuna_plots(drawn).items()}


def _read_once(study: optuna.Study) -> optuna.Study:
    """The study with its trials read in one go: Optuna's plots read them three times,
    twice deep-copied, through the ORM."""

    def make(engine: sa.Engine) -> optuna.Study:
        from sweeps._optuna.read import Snapshot

        return Snapshot.read(engine, study, user_attrs=False)  # the plots read none

    return fenced(study, "reading a study's trials", make) or study


# Past this ratio of the largest to the smallest objective value, a linear axis puts every
# good trial on the floor (the d2l objective spans 0.01 to ~50): the y axis goes log.
LOG_SPAN = 100.0


def draw_optuna_plots(study: optuna.Study) -> dict[str, Figure]:
    """Optuna's optimization history and parameter slices, as matplotlib figures.

    Drawn as `optuna.visualization.matplotlib` draws them, on bare `Figure`s: Optuna's own
    functions draw through pyplot, whose figures and backend belong to the application
    (a notebook's inline figures, its backend), which a library call leaves alone."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in complete if t.value is not None]
    if not complete:
        return {}
    values = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN
    figures = {"optimization_history.png": _history(complete)}
    slices = _slices(complete)
    if slices is not None:
        figures["param_slices.png"] = slices
    for figure in figures.values():
        axes = list(figure.axes)
        if log_y:  # the objective's axes (a slice plot's colour bar counts trials)
            for ax in axes:
                if ax.get_ylabel() == OBJECTIVE:
                    ax.set_yscale("log")
        _make_room(figure, axes)
    return figures


OBJECTIVE = "Objective Value"


def _history(trials: list[FrozenTrial]) -> Figure:
    """The objective of each trial by number, and the best so far."""
    figure = Figure()
    ax = figure.add_subplot()
    ax.set_title("Optimization History Plot")
    ax.set_xlabel("Trial")
    ax.set_ylabel(OBJECTIVE)
    numbers = [t.number for t in trials]
    values = [float(t.value) for t in trials if t.value is not None]
    best = [min(values[: i + 1]) for i in range(len(values))]
    ax.scatter(numbers, values, color="tab:blue", alpha=1, label=OBJECTIVE)
    ax.plot(numbers, best, marker="o", color="tab:red", alpha=0.5, label="Best Value")
    ax.legend(bbox_to_anchor=(1.05, 1.0), loc="upper left")
    return figure


def _slices(trials: list[FrozenTrial]) -> Figure | None:
    """The objective against each parameter, coloured by trial number; None without any."""
    params = sorted({name for t in trials for name in t.params})
    if not params:
        return None
    figure = Figure(figsize=(6.4 * min(len(params), 3) / 1.5, 4.8))
    axes = figure.subplots(1, len(params), sharey=True, squeeze=False)[0]
    figure.suptitle("Slice Plot")
    cmap = matplotlib.colormaps["Blues"]
    norm = matplotlib.colors.Normalize(vmin=0, vmax=max(t.number for t in trials))
    mappable = None
    for ax, name in zip(axes, params, strict=True):
        having = [t for t in trials if name in t.params]
        xs = [_x(t.params[name]) for t in having]
        ys = [float(t.value) for t in having if t.value is not None]
        colours = [t.number for t in having]
        mappable = ax.scatter(xs, ys, c=colours, cmap=cmap, norm=norm, edgecolors="grey")
        ax.set_xlabel(name)
        distribution = having[0].distributions.get(name)
        if getattr(distribution, "log", False):
            ax.set_xscale("log")
    axes[0].set_ylabel(OBJECTIVE)
    if mappable is not None:
        figure.colorbar(mappable, ax=list(axes)).set_label("Trial")
    return figure


def _x(value: object) -> object:
    """A parameter's value on its axis: categories (the penalty) as their names."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def _make_room(figure: Figure, axes: list[Axes]) -> None:
    """Fixed margins instead of a second, "tight" drawing pass (which draws every plot
    twice): room on the right for the history plot's legend, which Optuna puts outside the
    axes; category names (penalties) slanted and smaller, so that they neither overlap nor
    leave the figure."""
    if axes[0].get_legend() is not None:
        width, height = figure.get_size_inches()
        figure.set_size_inches(width * 1.4, height)
        figure.subplots_adjust(right=0.72)
    for ax in axes:
        if isinstance(ax.xaxis.get_converter(), StrCategoryConverter):
            for label in ax.get_xticklabels():
                label.set(rotation=20, horizontalalignment="right", fontsize="small")
