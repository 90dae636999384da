"""The search space and its samplers: `suggest`, the grid, and `RoundSampler`.

`suggest` is the one place that turns an Optuna trial into a TrialConfig. λ is suggested
only when the penalty is not `none` (a conditional space), `l1_ratio` only for
elastic_net, and lr (log-uniform) for every penalty when the study searches it. Under the
grid sampler λ, l1_ratio and lr come from fixed log-spaced / linear grids as categorical
choices (lr on `grid_points` values, every other point at each), so Optuna's
BruteForceSampler (`GridSampler`) can enumerate the conditional space exactly (Optuna's
own GridSampler cannot express conditional parameters). Where the storage allows, a grid
study's rounds claim their points (`grid_points`) in the transaction that creates their
trials (`sweeps._optuna.ask`) instead: BruteForceSampler picks from the trials it reads,
and concurrent asks reading the same trials pick the same point.

`RoundSampler` draws a round's proposals from one model of the history.
Optuna's TPE fits its Parzen estimators to the whole history on every ask, and with the
constant liar it also reads every running trial each time: asking a round of K trials fits
K models, each costlier as the history grows. A `--batch K` round instead fits one model
when it starts (`RoundSampler.plan`) and draws its K proposals from it; each of them is
asked and suggested as usual (through `BaseSampler.sample_independent`), so the study
stays an ordinary Optuna study: same parameters, distributions and storage rows, readable
by Optuna's dashboard, its CLI and other workers. Rounds of one (sequential trials) and
retried trials (enqueued with their parameters) are sampled by the wrapped Optuna sampler
exactly as before; a round that starts before STARTUP_TRIALS trials finished draws from
the prior, as TPE's own startup does (random trials).

The model is TPE (Bergstra et al. 2011), on the conditional space of this product:
the penalty is categorical; log λ (and l1_ratio for elastic_net, log lr when searched)
are modelled per penalty, each by a Parzen estimator of truncated Gaussians with a
uniform-ish prior component, fitted to the trials of that penalty. Trials are split into
the best γ(n) = min(⌈n/10⌉, 25) (Optuna's default) and the rest; pruned trials count
among the rest. Each proposal is the best of `CANDIDATES` draws from the good density by
the ratio good/rest; a proposal made earlier in the round then counts among the rest for
its penalty (TPE's constant liar), so a round spreads over the penalties instead of
repeating the best one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from scipy.special import ndtr, ndtri

from sweeps.config import SamplerKind, SweepConfig
from trainer.config import Penalty, TrialConfig

CANDIDATES = 24  # draws per proposal, as Optuna's n_ei_candidates
# Components of one Parzen estimator at most: past this, evenly spaced order statistics of
# the observations stand for all of them (the density keeps its shape; the cost of a round
# stops growing with the history).
MAX_COMPONENTS = 128
GRID_POINTS = 1024  # where a density evaluated at many points is interpolated
STARTUP_TRIALS = 10  # finished trials before the model is used, as Optuna's TPE
_FIXED_PARAMS = "fixed_params"  # system attr of an enqueued trial (Study.enqueue_trial)
L1_RATIO_GRID = (0.25, 0.5, 0.75)
LOG_SCALED = ("lambda", "lr")  # parameters the model sees as their logarithm


def log_grid(low: float, high: float, n: int) -> list[float]:
    """n values log-spaced over [low, high], ends included; one where low == high."""
    if n == 1 or low == high:
        return [low]
    lo, hi = math.log10(low), math.log10(high)
    return [10 ** (lo + (hi - lo) * i / (n - 1)) for i in range(n)]


def lambda_grid(cfg: SweepConfig) -> list[float]:
    """`grid_points` values log-spaced over [lambda_min, lambda_max], ends included."""
    return log_grid(cfg.lambda_min, cfg.lambda_max, cfg.grid_points)


def lr_grid(cfg: SweepConfig) -> list[float]:
    """The grid's lr values: `grid_points` log-spaced over [lr_min, lr_max] when lr is
    searched, else none (the base lr)."""
    if cfg.lr_min is None or cfg.lr_max is None:
        return []
    return log_grid(cfg.lr_min, cfg.lr_max, cfg.grid_points)


def suggest(trial: optuna.trial.BaseTrial, cfg: SweepConfig) -> TrialConfig:
    """Sample penalty, λ, l1_ratio and (when searched) lr; everything else comes from the
    study's base config."""
    penalty = Penalty(trial.suggest_categorical("penalty", [p.value for p in cfg.penalties]))
    lam, l1_ratio, lr = 0.0, None, cfg.base.lr
    grid = cfg.sampler is SamplerKind.GRID
    if penalty is not Penalty.NONE:
        if grid:
            lam = float(trial.suggest_categorical("lambda", lambda_grid(cfg)))
        else:
            lam = trial.suggest_float("lambda", cfg.lambda_min, cfg.lambda_max, log=True)
    if penalty is Penalty.ELASTIC_NET:
        if grid:
            l1_ratio = float(trial.suggest_categorical("l1_ratio", list(L1_RATIO_GRID)))
        else:
            l1_ratio = trial.suggest_float("l1_ratio", 0.0, 1.0)
    if cfg.lr_min is not None and cfg.lr_max is not None:  # in every penalty's branch
        if grid:
            lr = float(trial.suggest_categorical("lr", lr_grid(cfg)))
        else:
            lr = trial.suggest_float("lr", cfg.lr_min, cfg.lr_max, log=True)
    return cfg.base.replace(penalty=penalty, lambda_=lam, l1_ratio=l1_ratio, lr=lr)


def grid_size(cfg: SweepConfig) -> int:
    """How many distinct points the grid sampler has."""
    per = {Penalty.NONE: 1, Penalty.ELASTIC_NET: cfg.grid_points * len(L1_RATIO_GRID)}
    per_lr = max(1, len(lr_grid(cfg)))
    return per_lr * sum(per.get(p, cfg.grid_points) for p in cfg.penalties)


def grid_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every point of the grid (`grid_size` of them), as `suggest` asks for them, in one
    order shuffled by the study's seed: the same order in every worker, so that a study
    stopped early (--trials below the grid's size) has spread over the penalties."""
    points: list[dict[str, Any]] = []
    for penalty in cfg.penalties:
        if penalty is Penalty.NONE:
            points.append({"penalty": penalty.value})
            continue
        for lam in lambda_grid(cfg):
            if penalty is not Penalty.ELASTIC_NET:
                points.append({"penalty": penalty.value, "lambda": lam})
                continue
            for ratio in L1_RATIO_GRID:
                points.append({"penalty": penalty.value, "lambda": lam, "l1_ratio": ratio})
    if cfg.searches_lr:  # every point at each lr
        points = [{**point, "lr": lr} for point in points for lr in lr_grid(cfg)]
    order = np.random.default_rng(cfg.base.seed).permutation(len(points))
    return [points[i] for i in order]


@dataclass(frozen=True)
class Space:
    """The searched space (`suggest`): penalty, then λ and l1_ratio as it says, and lr in
    every branch when `lr` (its range) is given."""

    penalties: tuple[str, ...]
    lambda_min: float
    lambda_max: float
    lr: tuple[float, float] | None = None

    @classmethod
    def of(cls, cfg: SweepConfig) -> Space:
        lr = None if cfg.lr_min is None or cfg.lr_max is None else (cfg.lr_min, cfg.lr_max)
        return cls(tuple(p.value for p in cfg.penalties), cfg.lambda_min, cfg.lambda_max, lr)

    def dims(self, penalty: str) -> dict[str, tuple[float, float]]:
        """Continuous dimensions of a penalty's branch, in the model's coordinates (log λ,
        log lr); an lr range of one value is no dimension (`_params` fixes it)."""
        dims: dict[str, tuple[float, float]] = {}
        if penalty != Penalty.NONE.value:
            dims["lambda"] = (math.log(self.lambda_min), math.log(self.lambda_max))
        if penalty == Penalty.ELASTIC_NET.value:
            dims["l1_ratio"] = (0.0, 1.0)
        if self.lr is not None and self.lr[0] < self.lr[1]:
            dims["lr"] = (math.log(self.lr[0]), math.log(self.lr[1]))
        return dims


class GridSampler(optuna.samplers.BruteForceSampler):
    """Optuna's BruteForceSampler, without its stop at the end of the grid.

    BruteForceSampler ends an exhausted grid with `Study.stop()`, which Optuna allows only
    inside `optimize`: under ask-and-tell, `tell` stores the trial and then raises. The
    rounds here stop asking when the grid's points are all finished (`grid_size`),
    so the sampler has nothing to stop.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


class RoundSampler(optuna.samplers.BaseSampler):
    """Wraps the study's sampler; `plan(trials, k)` makes the next k asks one round.

    `stratified` (`--per-penalty`): every round is planned, rounds of one included, as
    k proposals for each penalty (`propose_within`: TPE on that penalty's trials when
    `modelled`, else the prior); which penalty each of the k trials takes is decided by
    count (`balanced`) where the trials are created: under the study's lock
    (`sweeps._optuna.ask.BulkAsker.ask_balanced`), or by `assign` from a read of the
    study's trials.
    """

    def __init__(
        self,
        inner: optuna.samplers.BaseSampler,
        space: Space,
        seed: int,
        *,
        stratified: bool = False,
        modelled: bool = True,
    ) -> None:
        self.inner = inner
        self.stratified = stratified
        self._modelled = modelled
        self._space = space
        self._rng = np.random.default_rng(seed)
        self._queue: list[dict[str, Any]] = []
        self._by_penalty: dict[str, list[dict[str, Any]]] = {}
        self._planned: dict[int, dict[str, Any]] = {}  # trial number → its proposal
        self._features = Features(space)  # the history as the model reads it

    def plan(self, trials: Sequence[FrozenTrial], k: int) -> int:
        """Proposals for the next `k` asks from one model of `trials` (the round's snapshot
        of the study); returns how many were planned (0 for a round of one: the inner
        sampler decides). Stratified: k for each penalty, none queued until `assign`."""
        if self.stratified:
            history = self._features.history(trials)
            self._by_penalty = {
                penalty: propose_within(history, self._space, penalty, k, self._rng, self._modelled)
                for penalty in self._space.penalties
            }
            self._queue = []
            return k
        self._queue = propose(trials, self._space, k, self._rng, self._features) if k > 1 else []
        return len(self._queue)

    def take(self) -> list[dict[str, Any]]:
        """The planned proposals, for a caller that creates the round's trials itself."""
        taken, self._queue = self._queue, []
        return taken

    def take_by_penalty(self) -> dict[str, list[dict[str, Any]]]:
        """A stratified plan's proposals per penalty, for a caller that assigns them."""
        taken, self._by_penalty = self._by_penalty, {}
        return taken

    def assign(self, counts: Mapping[str, int], k: int) -> None:
        """Queue a stratified plan's proposals for the next k asks, each of the penalty
        with the fewest trials (`counts`, then the ones queued before it)."""
        by_penalty = self.take_by_penalty()
        self._queue = [by_penalty[p].pop(0) for p in balanced(counts, self._space.penalties, k)]

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._queue and _FIXED_PARAMS not in trial.system_attrs:
            self._planned[trial.number] = self._queue.pop(0)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if trial.number in self._planned:
            return {}  # every parameter comes from the plan, through sample_independent
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.number in self._planned:
            return {}
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        planned = self._planned.get(trial.number, {})
        if param_name in planned:
            return planned[param_name]
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._planned.pop(trial.number, None)
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()
        self._rng = np.random.default_rng()


def propose(
    trials: Sequence[FrozenTrial],
    space: Space,
    k: int,
    rng: np.random.Generator,
    features: Features | None = None,
) -> list[dict[str, Any]]:
    """k proposals (parameter dicts as `suggest` asks for them) from one TPE fit; before
    STARTUP_TRIALS trials of this space finished, from the prior (uniform penalty,
    log-uniform λ, uniform l1_ratio), as TPE starts with random trials. `features`: what
    earlier rounds read of the same trials (`Features`)."""
    history = (features or Features(space)).history(trials)
    if history.size < STARTUP_TRIALS:
        return [_random(space, rng) for _ in range(k)]
    ranked = np.argsort(history.loss, kind="stable")  # pruned trials last, ties in order
    n_good = min(math.ceil(history.size / 10), 25)
    good, rest = ranked[:n_good], ranked[n_good:]
    penalties = list(space.penalties)
    n_penalties = len(penalties)
    good_counts = np.bincount(history.penalty[good], minlength=n_penalties) + 1.0  # +1: prior
    rest_counts = np.bincount(history.penalty[rest], minlength=n_penalties) + 1.0
    # Every proposal's candidates at once: penalty from the good counts, then its branch.
    n = k * CANDIDATES
    choice = rng.choice(n_penalties, size=n, p=good_counts / good_counts.sum())
    values: dict[str, np.ndarray] = {}
    branch_score = np.zeros(n)
    for index, penalty in enumerate(penalties):
        rows = np.flatnonzero(choice == index)
        for name, bounds in space.dims(penalty).items():
            good_kde = Parzen.fit(history.values(good, index, name), bounds)
            rest_kde = Parzen.fit(history.values(rest, index, name), bounds)
            drawn = good_kde.sample(rng, rows.size)
            values.setdefault(name, np.full(n, np.nan))[rows] = drawn
            branch_score[rows] += good_kde.log_pdf(drawn) - rest_kde.log_pdf(drawn)
    # Each proposal is its best candidate by branch score plus its penalty's term, and the
    # penalty's term changes as the round goes (earlier proposals count as "rest"); it is
    # the same for all candidates of a penalty, so each proposal's best candidate of each
    # penalty is found at once, and only the choice among penalties is made in turn.
    block = np.where(choice == np.arange(n_penalties)[:, None], branch_score, -np.inf)
    block = block.reshape(n_penalties, k, CANDIDATES)
    best_of = block.argmax(axis=2)  # (penalty, proposal): the first best candidate
    best_score = np.take_along_axis(block, best_of[:, :, None], axis=2)[:, :, 0].T.tolist()
    first = (best_of + np.arange(k)[None, :] * CANDIDATES).T.tolist()
    log_good = np.log(good_counts / good_counts.sum())
    proposals = []
    for j in range(k):
        ratio = (log_good - np.log(rest_counts / rest_counts.sum())).tolist()
        scores, candidates = best_score[j], first[j]
        # As one argmax over all the proposal's candidates: the highest, the first if tied.
        c = max(
            (c for c in range(n_penalties) if scores[c] != -math.inf),
            key=lambda c: (scores[c] + ratio[c], -candidates[c]),
        )
        best = candidates[c]
        rest_counts[c] += 1.0
        proposals.append(_params(penalties[c], {n: v[best] for n, v in values.items()}, space))
    return proposals


STRATUM_STARTUP = 4  # a penalty's finished trials before its own model is used


def balanced(counts: Mapping[str, int], order: Sequence[str], k: int) -> list[str]:
    """The penalties of the next k trials: each takes the penalty with the fewest trials
    so far (`counts`, and the ones chosen before it), ties to the first in `order`."""
    held = {p: counts.get(p, 0) for p in order}
    chosen = []
    for _ in range(k):
        pick = min(order, key=lambda p: held[p])  # min keeps the first of equals
        held[pick] += 1
        chosen.append(pick)
    return chosen


def penalty_counts(trials: Sequence[FrozenTrial]) -> Counter[str]:
    """Trials per penalty, in any state (a WAITING retry by its fixed parameters)."""
    counts: Counter[str] = Counter()
    for trial in trials:
        penalty = trial.params.get("penalty")
        if penalty is None:
            penalty = trial.system_attrs.get(_FIXED_PARAMS, {}).get("penalty")
        if isinstance(penalty, str):
            counts[penalty] += 1
    return counts


def propose_within(
    history: _History,
    space: Space,
    penalty: str,
    k: int,
    rng: np.random.Generator,
    modelled: bool = True,
) -> list[dict[str, Any]]:
    """k proposals of one penalty: TPE on that penalty's finished trials alone (their own
    best γ(n) against the rest), or, before STRATUM_STARTUP of them finished or when not
    `modelled`, from the prior."""
    index = space.penalties.index(penalty)
    dims = space.dims(penalty)
    rows = np.flatnonzero(history.penalty == index)
    if not dims:
        return [_params(penalty, {}, space) for _ in range(k)]
    if not modelled or rows.size < STRATUM_STARTUP:
        values = {n: rng.uniform(lo, hi, size=k) for n, (lo, hi) in dims.items()}
        return [_params(penalty, {n: v[j] for n, v in values.items()}, space) for j in range(k)]
    ranked = rows[np.argsort(history.loss[rows], kind="stable")]
    n_good = min(math.ceil(rows.size / 10), 25)
    good, rest = ranked[:n_good], ranked[n_good:]
    n = k * CANDIDATES
    drawn: dict[str, np.ndarray] = {}
    score = np.zeros(n)
    for name, bounds in dims.items():
        good_kde = Parzen.fit(history.values(good, index, name), bounds)
        rest_kde = Parzen.fit(history.values(rest, index, name), bounds)
        drawn[name] = good_kde.sample(rng, n)
        score += good_kde.log_pdf(drawn[name]) - rest_kde.log_pdf(drawn[name])
    best = score.reshape(k, CANDIDATES).argmax(axis=1) + np.arange(k) * CANDIDATES
    return [_params(penalty, {n: v[b] for n, v in drawn.items()}, space) for b in best]


@dataclass(frozen=True)
class _History:
    """The finished trials a space can model, in order, as arrays (`Features`)."""

    penalty: np.ndarray  # each one's penalty, as its index in the space
    loss: np.ndarray  # for ranking (`_loss`)
    params: dict[str, np.ndarray]  # in the model's coordinates (log λ); NaN off its branch

    @property
    def size(self) -> int:
        return int(self.penalty.size)

    def values(self, rows: np.ndarray, penalty: int, name: str) -> np.ndarray:
        """`name` of the trials at `rows` (in that order) that have this penalty."""
        return np.asarray(self.params[name][rows[self.penalty[rows] == penalty]])


_Row = tuple[float, ...]  # penalty index, loss, then each of `Features.names`


class Features:
    """Reads each finished trial's row of the model's `_History` once per process.

    A round's model is fitted to the whole history, and reading every trial's state,
    value and parameters again each round would cost more than the fit once the history
    is in the thousands. A finished trial never changes, and the study's
    trials arrive as the same objects round after round (`sweeps._optuna.read.TrialCache`),
    so each is read when first seen; a trial object seen in another state is read again.
    """

    def __init__(self, space: Space) -> None:
        self._index = {p: i for i, p in enumerate(space.penalties)}
        self._needs = {p: tuple(space.dims(p)) for p in space.penalties}
        self.names = sorted({name for dims in self._needs.values() for name in dims})
        self._seen: dict[int, tuple[FrozenTrial, TrialState, _Row | None]] = {}

    def history(self, trials: Sequence[FrozenTrial]) -> _History:
        seen: dict[int, tuple[FrozenTrial, TrialState, _Row | None]] = {}
        rows = []
        for trial in trials:
            key = id(trial)  # the entry keeps the trial alive, so the id stays its own
            entry = self._seen.get(key)
            if entry is None or entry[0] is not trial or entry[1] is not trial.state:
                entry = (trial, trial.state, self._row(trial))
            seen[key] = entry
            if entry[2] is not None:
                rows.append(entry[2])
        self._seen = seen  # only this round's trials: earlier rounds' previews are let go
        table = np.array(rows, dtype=float).reshape(len(rows), 2 + len(self.names))
        params = {name: table[:, 2 + i] for i, name in enumerate(self.names)}
        for name in LOG_SCALED:
            if name in params:
                params[name] = np.log(params[name])
        return _History(table[:, 0].astype(np.intp), table[:, 1], params)

    def _row(self, trial: FrozenTrial) -> _Row | None:
        """None for a trial the space cannot model: not finished with a usable result, or
        of another space."""
        state = trial.state
        if state is TrialState.COMPLETE:
            value = trial.value
            if value is None or math.isnan(value):
                return None
        elif state is not TrialState.PRUNED:
            return None
        params = trial.params
        penalty = params.get("penalty")
        if not isinstance(penalty, str) or penalty not in self._needs:
            return None
        required = self._needs[penalty]
        if any(name not in params for name in required):
            return None
        return (
            self._index[penalty],
            _loss(trial),
            *(float(params[name]) if name in required else math.nan for name in self.names),
        )


@dataclass(frozen=True)
class Parzen:
    """A mixture of Gaussians truncated to [low, high]: one per observation and a prior."""

    mu: np.ndarray
    sigma: np.ndarray
    low: float
    high: float

    @classmethod
    def fit(cls, observations: np.ndarray, bounds: tuple[float, float]) -> Parzen:
        """Bandwidths from the gaps to the neighbours (Bergstra's rule), clipped below at
        range / min(100, n+1) so that a cluster does not collapse, above at the range; the
        prior is one wide Gaussian at the centre."""
        low, high = bounds
        width = high - low
        observed = np.asarray(observations, dtype=float)
        if observed.size > MAX_COMPONENTS:
            picks = np.linspace(0, observed.size - 1, MAX_COMPONENTS).round().astype(int)
            observed = np.sort(observed)[picks]
        mu = np.append(observed, (low + high) / 2)
        order = np.argsort(mu)
        ordered = np.concatenate(([low], mu[order], [high]))
        gaps = np.maximum(ordered[1:-1] - ordered[:-2], ordered[2:] - ordered[1:-1])
        sigma = np.empty_like(mu)
        sigma[order] = np.clip(gaps, width / min(100, mu.size), width)
        sigma[-1] = width  # the prior
        return cls(mu, sigma, low, high)

    def _mass(self) -> np.ndarray:
        upper, lower = (
            ndtr((self.high - self.mu) / self.sigma),
            ndtr((self.low - self.mu) / self.sigma),
        )
        return np.asarray(upper - lower, dtype=float)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Inverse-CDF draws from components chosen uniformly (equal weights)."""
        pick = rng.integers(self.mu.size, size=size)
        mu, sigma = self.mu[pick], self.sigma[pick]
        lo, hi = ndtr((self.low - mu) / sigma), ndtr((self.high - mu) / sigma)
        u = lo + rng.random(size) * (hi - lo)
        drawn = mu + sigma * ndtri(np.clip(u, 1e-12, 1 - 1e-12))
        return np.asarray(np.clip(drawn, self.low, self.high), dtype=float)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """The log density at each of `x`; for many points, interpolated from a grid of
        GRID_POINTS (bandwidths are at least range/100, so 10+ grid steps per σ: the
        error is far below the differences TPE ranks by)."""
        if x.size <= GRID_POINTS:
            return self._exact_log_pdf(x)
        grid = np.linspace(self.low, self.high, GRID_POINTS)
        return np.asarray(np.interp(x, grid, self._exact_log_pdf(grid)))

    def _exact_log_pdf(self, x: np.ndarray) -> np.ndarray:
        # Each component's normalizer (Gaussian, truncation mass, equal weight) once.
        log_norm = np.log(self.sigma * math.sqrt(2 * math.pi) * self._mass() * self.mu.size)
        z = (x[:, None] - self.mu[None, :]) * (1.0 / self.sigma)[None, :]
        log_component = -0.5 * z * z - log_norm[None, :]
        top = log_component.max(axis=1)  # log-sum-exp, shifted by each row's largest term
        return np.asarray(top + np.log(np.exp(log_component - top[:, None]).sum(axis=1)))


def _random(space: Space, rng: np.random.Generator) -> dict[str, Any]:
    penalty = space.penalties[int(rng.integers(len(space.penalties)))]
    values = {name: rng.uniform(low, high) for name, (low, high) in space.dims(penalty).items()}
    return _params(penalty, values, space)


def _loss(trial: FrozenTrial) -> float:
    """Pruned trials rank after every complete one."""
    return float(trial.value) if trial.state is TrialState.COMPLETE else math.inf  # type: ignore[arg-type]


def _params(penalty: str, values: dict[str, float], space: Space) -> dict[str, Any]:
    """What `suggest` asks for, in its units, inside its distributions."""
    params: dict[str, Any] = {"penalty": penalty}
    dims = space.dims(penalty)
    if "lambda" in dims:
        lam = math.exp(values["lambda"])
        params["lambda"] = min(max(lam, space.lambda_min), space.lambda_max)
    if "l1_ratio" in dims:
        params["l1_ratio"] = min(max(float(values["l1_ratio"]), 0.0), 1.0)
    if space.lr is not None:
        low, high = space.lr
        params["lr"] = min(max(math.exp(values["lr"]), low), high) if "lr" in dims else low
    return params


__all__ = [
    "CANDIDATES",
    "L1_RATIO_GRID",
    "MAX_COMPONENTS",
    "STARTUP_TRIALS",
    "STRATUM_STARTUP",
    "GridSampler",
    "Parzen",
    "RoundSampler",
    "Space",
    "balanced",
    "grid_points",
    "grid_size",
    "lambda_grid",
    "log_grid",
    "lr_grid",
    "penalty_counts",
    "propose",
    "propose_within",
    "suggest",
]
