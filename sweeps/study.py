"""Creating, loading and checking Optuna studies; samplers and pruners."""

from __future__ import annotations

from typing import Any

import optuna

from sweeps.attr_keys import CONFIG_ATTR, SPACE_ATTR
from sweeps.config import PrunerKind, SamplerKind, SweepConfig
from sweeps.data_pins import DataFiles, hash_data, pin
from sweeps.errors import UnknownStudyError, UsageError
from sweeps.sampling import GridSampler, RoundSampler, Space, suggest


def make_sampler(cfg: SweepConfig, worker: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler. Each worker process gets its own seed: identically seeded
    workers would propose the very same trials in parallel."""
    seed = cfg.base.seed if worker is None else cfg.base.seed * 10_007 + 1 + worker
    space = Space.of(cfg)
    if cfg.per_penalty is not None:  # a stratified study: the penalty chosen by count
        inner = (
            optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
            if cfg.sampler is SamplerKind.TPE
            else optuna.samplers.RandomSampler(seed=seed)
        )
        modelled = cfg.sampler is SamplerKind.TPE
        return RoundSampler(inner, space, seed, stratified=True, modelled=modelled)
    if cfg.sampler is SamplerKind.TPE:
        # group=True splits the conditional space (λ only when penalty != none) cleanly.
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
        # A --batch round draws its proposals from one fit (sweeps.sampling); asks outside
        # a planned round (sequential trials, the startup trials) go to TPE as they are.
        return RoundSampler(tpe, space, seed)
    if cfg.sampler is SamplerKind.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler is SamplerKind.GRID:
        return GridSampler(seed=seed)
    if cfg.sampler is SamplerKind.CMAES:
        # CMA-ES cannot model the categorical penalty; it samples that one independently.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed)


def check_space(cfg: SweepConfig) -> None:
    """Sample one trial of the space in memory with the study's sampler: a configuration
    whose space cannot be sampled, or whose sampled trial is not a valid config, fails here
    (a one-line UsageError), before the study exists in any storage."""
    study = optuna.create_study(sampler=make_sampler(cfg), pruner=make_pruner(cfg))
    try:
        suggest(study.ask(), cfg)  # builds the trial's TrialConfig, which validates itself
    except (ValueError, OverflowError, ArithmeticError) as e:
        raise UsageError(f"this search space cannot be sampled: {e}") from None


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """Pruners see the validation loss every `checkpoint_every` epochs."""
    if cfg.pruner is PrunerKind.MEDIAN:
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if cfg.pruner is PrunerKind.HYPERBAND:
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.checkpoint_every, max_resource=cfg.base.epochs, reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def study_exists(name: str, storage: optuna.storages.BaseStorage) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def create_or_load(
    cfg: SweepConfig,
    storage: optuna.storages.BaseStorage,
    data: DataFiles | None = None,
    *,
    accept_data_change: bool = False,
) -> optuna.Study:
    """Create the study, or resume it when its search space is the same as before and its
    data (`data`, else hashed here) is what it pinned (`sweeps.data_pins.pin`)."""
    data = hash_data(cfg.base) if data is None else data
    study = optuna.create_study(
        study_name=cfg.study,
        storage=storage,
        sampler=make_sampler(cfg),
        pruner=make_pruner(cfg),
        direction="minimize",
        load_if_exists=True,
    )
    signature = cfg.space_signature()
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        pin(study, data, accept_change=accept_data_change)  # first: SPACE_ATTR marks it made
        study.set_user_attr(SPACE_ATTR, signature)
        study.set_user_attr(CONFIG_ATTR, cfg.as_dict())
    elif stored != signature:
        raise UsageError(
            f"study {cfg.study!r} exists with a different search space"
            f" ({_diff(stored, signature)}); use another --study name"
        )
    else:
        pin(study, data, accept_change=accept_data_change)
    return study


def _diff(stored: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in keys[:3])


def load_existing(
    name: str, storage: optuna.storages.BaseStorage, worker: int
) -> tuple[optuna.Study, SweepConfig]:
    """Load a study created by `sweeps run`, with the config it was created with."""
    try:
        summary = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise UnknownStudyError(f"no study named {name!r} in this storage") from None
    stored = summary.user_attrs.get(CONFIG_ATTR)
    if stored is None:
        raise UsageError(f"study {name!r} was not created by `sweeps run`")
    cfg = config_from_stored(stored)
    study = optuna.load_study(
        study_name=name, storage=storage, sampler=make_sampler(cfg, worker), pruner=make_pruner(cfg)
    )
    return study, cfg


def config_from_stored(stored: dict[str, Any]) -> SweepConfig:
    values = {k: v for k, v in stored.items() if k not in {"data_seed", "grid_points"}}
    if not values.get("devices"):
        values.pop("devices", None)
    if stored.get("grid_points") is not None:
        values["grid_points"] = stored["grid_points"]
    for key in [k for k in values if k.startswith("task.")]:
        values[key[5:]] = values.pop(key)
    return SweepConfig.from_mapping(values)
