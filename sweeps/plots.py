"""Optuna's own plots, rendered to PNG bytes for the parent run."""

from __future__ import annotations

import io
import warnings

import optuna
from optuna.trial import TrialState


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
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            figure = first.get_figure(root=True)
            if figure is None:
                continue
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            plt.close(figure)
            plots[name] = buffer.getvalue()
    return plots
