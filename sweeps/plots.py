"""Optuna's own plots, rendered to PNG bytes for the parent run."""

from __future__ import annotations

import math
import warnings

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
    import matplotlib.pyplot as plt

    from sweeps._optuna.read import Snapshot

    plots = {}
    drawn = _read_once(study) if trials is None else Snapshot(study, trials)
    for name, figure in draw_optuna_plots(drawn).items():
        plots[name] = png_bytes(figure)
        plt.close(figure)
    return plots


def _read_once(study: optuna.Study) -> optuna.Study:
    """The study with its trials read in one go: Optuna's plots read them three times,
    twice deep-copied, through the ORM (~0.3 ms a trial; 0.03 ms here)."""

    def make(engine: sa.Engine) -> optuna.Study:
        from sweeps._optuna.read import Snapshot

        return Snapshot.read(engine, study, user_attrs=False)  # the plots read none

    return fenced(study, "reading a study's trials", make) or study


# Past this ratio of the largest to the smallest objective value, a linear axis puts every
# good trial on the floor (the d2l objective spans 0.01 to ~50): the y axis goes log.
LOG_SPAN = 100.0


def draw_optuna_plots(study: optuna.Study) -> dict[str, Figure]:
    """Optuna's optimization history and parameter slices, as matplotlib figures."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return {}
    values = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) > LOG_SPAN
    figures: dict[str, Figure] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw in (
            ("optimization_history.png", ovm.plot_optimization_history),
            ("param_slices.png", ovm.plot_slice),
        ):
            try:
                axes = draw(study)
            except (ValueError, RuntimeError):  # e.g. no parameter to slice
                continue
            all_axes = list(axes.flat) if hasattr(axes, "flat") else [axes]
            figure = all_axes[0].get_figure(root=True)
            if figure is None:
                continue
            if log_y:  # the objective's axes (a slice plot's colour bar counts trials)
                for ax in all_axes:
                    if ax.get_ylabel() == "Objective Value":
                        ax.set_yscale("log")
            _make_room(figure, all_axes)
            figures[name] = figure
    return figures


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
