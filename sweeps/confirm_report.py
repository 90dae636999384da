"""What `sweeps confirm` reports: the candidates' per-seed values, their statistics
(`sweeps.confirm_stats`), the JSON document, the verdict lines and confirm.csv."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sweeps.confirm_stats import (
    MIN_SEEDS_FOR_TESTS,
    Comparison,
    Summary,
    compare,
    friedman,
    holm,
    summarize,
)

if TYPE_CHECKING:
    import pandas as pd

METRIC = "test_loss"  # never used by the search's objective (unless the task has no val split)


@dataclass(frozen=True)
class Candidate:
    """One candidate trial's confirmation: its values per seed, in the report's seed order
    (None where that seed's run did not complete: diverged)."""

    trial_number: int
    penalty: str
    lambda_: float | None
    l1_ratio: float | None
    search_value: float | None  # the trial's test loss in the search
    values: list[float | None]
    val_losses: list[float | None]
    accuracies: list[float | None] | None  # test accuracy per seed (classification)
    summary: Summary | None  # None when some seed did not complete
    lr: float | None = None  # the trial's learning rate, which every seed trains with
    lr_searched: bool = False  # the study searched lr: the label says it

    @property
    def label(self) -> str:
        """`l2 λ=2.93`, `elastic_net λ=0.1 α=0.5`, `none`; `l2 λ=2.93 lr=0.01` where the
        study searched lr."""
        text = self.penalty
        if self.penalty != "none" and self.lambda_ is not None:
            text += f" λ={self.lambda_:.3g}"
        if self.l1_ratio is not None:
            text += f" α={self.l1_ratio:.2g}"
        if self.lr_searched and self.lr is not None:
            text += f" lr={self.lr:.3g}"
        return text


@dataclass(frozen=True)
class Versus:
    """A candidate against the best (`Comparison`: differences candidate − best)."""

    candidate: Candidate
    comparison: Comparison


@dataclass(frozen=True)
class Confirmation:
    """The result of `confirm_study`: what the CLI prints and `--json` writes."""

    study: str
    seeds: list[int]
    fixed_data: bool
    data_note: str  # which data the seeds trained on, in words
    candidates: list[Candidate]
    best: Candidate | None  # the lowest confirmed mean; None when no candidate completed
    comparisons: list[Versus]
    friedman_p: float | None
    trained: int  # (candidate, seed) runs trained by this call; the others were kept
    metric: str = METRIC

    @property
    def tests_note(self) -> str | None:
        """Why there are no p-values, when there are none."""
        if len(self.seeds) >= MIN_SEEDS_FOR_TESTS:
            return None
        return (
            f"no p-values with {len(self.seeds)} seeds: a two-sided Wilcoxon test on fewer"
            f" than {MIN_SEEDS_FOR_TESTS} pairs cannot go below 0.0625; CIs only"
            f" (use --seeds {MIN_SEEDS_FOR_TESTS} or more)"
        )

    def as_json(self) -> dict[str, Any]:
        """The `--json` document (docs/confirm.md lists the fields)."""
        return {
            "study": self.study,
            "metric": self.metric,
            "seeds": self.seeds,
            "fixed_data": self.fixed_data,
            "candidates": [_candidate_json(c) for c in self.candidates],
            "best": None if self.best is None else self.best.trial_number,
            "comparisons": [_versus_json(v) for v in self.comparisons],
            "friedman_p": self.friedman_p,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate (CSV_COLUMNS: its mean and CI over the seeds, and its
        difference from the best with CI, wins and p-values; None in the best's own)."""
        versus = {v.candidate.trial_number: _versus_json(v) for v in self.comparisons}
        return [
            {
                k: {**_candidate_json(c), **versus.get(c.trial_number, {})}.get(k)
                for k in CSV_COLUMNS
            }
            for c in self.candidates
        ]

    def as_frame(self) -> pd.DataFrame:
        """`rows()` as a pandas DataFrame."""
        from sweeps.api._results import to_frame

        return to_frame(self.rows(), CSV_COLUMNS)

    def verdict_lines(self) -> list[str]:
        """Plain words, best first: one line per candidate."""
        n = len(self.seeds)
        lines = []
        if self.best is not None and self.best.summary is not None:
            b, s = self.best, self.best.summary
            said = "" if b.search_value is None else f" (search said {_num(b.search_value)})"
            lines.append(
                f"{b.label} best: test loss {_num(s.mean)} [{_num(s.ci_low)}, {_num(s.ci_high)}]"
                f" over {n} {'fresh' if not self.fixed_data else ''} seeds{said}".replace("  ", " ")
            )
        for v in self.comparisons:
            lines.append(_verdict(v, n))
        for c in self.candidates:
            if c.summary is None:
                failed = sum(1 for x in c.values if x is None)
                lines.append(f"{c.label}: did not complete on {failed}/{n} seeds; not compared")
        if self.friedman_p is not None:
            lines.append(
                f"Friedman test over all {len(self.comparisons) + 1}: p = {_p(self.friedman_p)}"
            )
        if self.tests_note:
            lines.append(self.tests_note)
        return lines


def _verdict(v: Versus, n: int) -> str:
    c, cmp = v.candidate, v.comparison
    if cmp.identical:
        return f"{c.label}: identical on every seed ({n}/{n}) to the best"
    ci = f"[{_num(cmp.diff_ci_low)}, {_num(cmp.diff_ci_high)}]"
    p = "" if cmp.p_holm is None else f", p = {_p(cmp.p_holm)} (Holm)"
    if cmp.diff_ci_low > 0:  # the CI of the difference excludes 0
        return f"{c.label}: worse by {_num(cmp.diff_mean)} {ci}, on {cmp.losses}/{n} seeds{p}"
    return (
        f"{c.label}: not distinguishable, {_num(cmp.diff_mean)} {ci}, better on {cmp.wins}/{n}{p}"
    )


def _num(x: float) -> str:
    return f"{x:.3g}"


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def _candidate_json(c: Candidate) -> dict[str, Any]:
    s = c.summary
    doc: dict[str, Any] = {
        "trial_number": c.trial_number,
        "penalty": c.penalty,
        "lambda": c.lambda_,
        "l1_ratio": c.l1_ratio,
        "lr": c.lr,
        "search_value": c.search_value,
        "values": c.values,
        "val_losses": c.val_losses,
        "mean": None if s is None else s.mean,
        "std": None if s is None else s.std,
        "ci_low": None if s is None else s.ci_low,
        "ci_high": None if s is None else s.ci_high,
    }
    if c.accuracies is not None:
        doc["test_accuracies"] = c.accuracies
    return doc


def _versus_json(v: Versus) -> dict[str, Any]:
    cmp = v.comparison
    return {
        "trial_number": v.candidate.trial_number,
        "penalty": v.candidate.penalty,
        "diff_mean": cmp.diff_mean,
        "diff_ci_low": cmp.diff_ci_low,
        "diff_ci_high": cmp.diff_ci_high,
        "wins": cmp.wins,
        "p_value": cmp.p_value,
        "p_holm": cmp.p_holm,
        "identical": cmp.identical,
    }


def analyse(
    study: str,
    seeds: Sequence[int],
    fixed_data: bool,
    data_note: str,
    candidates: Sequence[Candidate],
    trained: int,
) -> Confirmation:
    """The statistics over the candidates' values (see `sweeps.confirm_stats`)."""
    complete = [c for c in candidates if c.summary is not None]
    best = min(complete, key=lambda c: (c.summary.mean, c.trial_number), default=None)  # type: ignore[union-attr]
    others = [c for c in complete if c is not best]
    raw = [compare(_floats(c.values), _floats(best.values)) for c in others] if best else []
    adjusted = holm([cmp.p_value for cmp in raw])
    versus = [
        Versus(c, _with_holm(cmp, p)) for c, cmp, p in zip(others, raw, adjusted, strict=True)
    ]
    versus.sort(key=lambda v: (v.comparison.diff_mean, v.candidate.trial_number))
    groups = [_floats(c.values) for c in ([best, *others] if best else [])]
    return Confirmation(
        study=study,
        seeds=list(seeds),
        fixed_data=fixed_data,
        data_note=data_note,
        candidates=list(candidates),
        best=best,
        comparisons=versus,
        friedman_p=friedman(groups),
        trained=trained,
    )


def _with_holm(cmp: Comparison, p_holm: float | None) -> Comparison:
    from dataclasses import replace

    return replace(cmp, p_holm=p_holm)


def _floats(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def candidate_of(
    trial: Mapping[str, Any],
    seeds: Sequence[int],
    by_seed: Mapping[int, Mapping[str, Any]],
    *,
    lr_searched: bool = False,
) -> Candidate:
    """A candidate from its search row and its confirmation rows keyed by seed."""
    rows = [by_seed[s] for s in seeds]
    complete = all(r["state"] == "COMPLETE" and r[METRIC] is not None for r in rows)
    values = [r[METRIC] if r["state"] == "COMPLETE" else None for r in rows]
    accuracies = [r.get("test_accuracy") for r in rows]
    return Candidate(
        trial_number=int(trial["number"]),
        penalty=str(trial["penalty"]),
        lambda_=trial.get("lambda"),
        l1_ratio=trial.get("l1_ratio"),
        search_value=trial.get(METRIC),
        values=values,
        val_losses=[r["val_loss"] if r["state"] == "COMPLETE" else None for r in rows],
        accuracies=accuracies if any(a is not None for a in accuracies) else None,
        summary=summarize(_floats(values)) if complete else None,
        lr=None if trial.get("lr") is None else float(trial["lr"]),
        lr_searched=lr_searched,
    )


CSV_COLUMNS = (
    "trial_number",
    "penalty",
    "lambda",
    "l1_ratio",
    "lr",
    "search_value",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "wins",
    "p_value",
    "p_holm",
    "identical",
)


def confirm_csv(result: Confirmation) -> bytes:
    """The comparison table, one row per candidate (the best's comparison cells empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in result.rows():
        writer.writerow(
            {
                k: (
                    ""
                    if row.get(k) is None
                    else repr(row[k])
                    if isinstance(row.get(k), float)
                    else row[k]
                )
                for k in CSV_COLUMNS
            }
        )
    return out.getvalue().encode()
