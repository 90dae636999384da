"""Optuna's own plots, rendered to PNG bytes for the parent run."""

from __future__ import annotations

import warnings

import optuna
from matplotlib.axes import Axes
from matplotlib.category import StrCategoryConverter
from matplotlib.figure import Figure
from optuna.trial import TrialState

from tracking.figures import png_bytes


def optuna_plots(study: optuna.Study) -> dict[str, bytes]:
    """optimization_history.png and param_slices.png; empty when nothing completed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    plots: dict[str, bytes] = {}
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
            _make_room(figure, all_axes)
            plots[name] = png_bytes(figure)
            plt.close(figure)
    return plots


def _make_room(figure: Figure, axes: list[Axes]) -> None:
    """Fixed margins instead of a second, "tight" drawing pass (~0.1 s a plot): room on the
    right for the history plot's legend, which Optuna puts outside the axes; category names
    (penalties) slanted and smaller, so that they neither overlap nor leave the figure."""
    if axes[0].get_legend() is not None:
        width, height = figure.get_size_inches()
        figure.set_size_inches(width * 1.4, height)
        figure.subplots_adjust(right=0.72)
    for ax in axes:
        if isinstance(ax.xaxis.get_converter(), StrCategoryConverter):
            for label in ax.get_xticklabels():
                label.set(rotation=20, horizontalalignment="right", fontsize="small")
