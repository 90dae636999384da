"""The figure of `sweeps confirm`, for the study's parent run: per candidate its per-seed
test losses as dots, their mean with the CI as a bar, the search's value as a hollow
marker; a log axis when the values span more than a decade."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.figure import Figure

from tracking.figures import PENALTY_COLOURS, png_bytes


@dataclass(frozen=True)
class Column:
    """One candidate: its label, penalty, per-seed values, mean, CI and search value."""

    label: str
    penalty: str
    values: Sequence[float]
    mean: float
    ci_low: float
    ci_high: float
    search_value: float | None


def confirm_figure(columns: Sequence[Column]) -> bytes:
    """The PNG (see the module)."""
    fig = Figure(figsize=(max(4.0, 1.6 * len(columns) + 1.5), 4.0))
    ax = fig.add_subplot()
    shown: list[float] = []
    for x, col in enumerate(columns):
        colour = PENALTY_COLOURS.get(col.penalty, "#555555")
        n = len(col.values)
        offsets = [x - 0.15 + 0.3 * i / max(n - 1, 1) for i in range(n)]
        ax.scatter(offsets, col.values, s=14, color=colour, alpha=0.6, zorder=2)
        ax.errorbar(
            [x + 0.28],
            [col.mean],
            yerr=[[col.mean - col.ci_low], [col.ci_high - col.mean]],
            fmt="_",
            markersize=14,
            capsize=5,
            color=colour,
            zorder=3,
        )
        shown += [*col.values, col.ci_low, col.ci_high]
        if col.search_value is not None:
            ax.scatter(
                [x + 0.28],
                [col.search_value],
                s=60,
                facecolors="none",
                edgecolors=colour,
                zorder=4,
            )
            shown.append(col.search_value)
    positive = [v for v in shown if v > 0]
    if positive and len(positive) == len(shown) and max(positive) / min(positive) > 10:
        ax.set_yscale("log")
    ax.set_xticks(range(len(columns)), [c.label for c in columns], rotation=15)
    ax.set_ylabel("test loss")
    ax.set_title("confirmed on fresh seeds: dots per seed, mean ± 95% CI, ○ the search's value")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return png_bytes(fig)
