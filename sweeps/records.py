"""What the sweep hands to tracking: a trial's `TrialRecord`, built from its training
results (`build_record`), kept on its Optuna trial for repair (`repair_info`) and rebuilt
from what Optuna or the results table kept (`record_from_trial`, `record_from_row`); the
study's configuration as its MLflow parent run's params (`parent_params`)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeps.attr_keys import RECORD_ATTR
from tracking.records import FINAL_METRICS, TrialRecord, TrialState, now_ms
from trainer.metrics import METRICS

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from sweeps.config import SweepConfig
    from trainer import TrialConfig, TrialResult


def conclude(results: list[TrialResult], pruned_at: int | None) -> tuple[TrialState, str | None]:
    """A trial's state from its repeats (the last one ran, the first to stop ends it)."""
    from trainer import TrainStatus

    last = results[-1]
    if last.status is TrainStatus.DIVERGED:
        return TrialState.PRUNED, f"diverged at epoch {last.diverged_epoch}"
    if last.status is TrainStatus.STOPPED:
        return TrialState.PRUNED, f"pruned at epoch {pruned_at}"
    return TrialState.COMPLETE, None


def build_record(
    study: str,
    number: int,
    cfg: TrialConfig,
    results: list[TrialResult],
    state: TrialState,
    started_ms: int,
    error: str | None,
    *,
    weights: bool = True,
    keep_history: bool = True,
) -> TrialRecord:
    """Average repeats epoch by epoch; weights (serialized only when asked: only MLflow
    keeps them) and device come from the first repeat. Without `keep_history` the record has
    its final values only (only MLflow keeps the rest)."""
    history = _mean_history(results)
    final: dict[str, float | None] = {
        m: (history[m][-1] if history.get(m) else None) for m in METRICS
    }
    final.update(_mean_accuracy(results))
    first = results[0] if results else None
    return TrialRecord(
        study=study,
        number=number,
        state=state,
        params=cfg.as_params(),
        final=final,
        value=final["val_loss"] if state is TrialState.COMPLETE else None,
        duration_s=sum(r.duration_s for r in results),
        device=first.device if first else cfg.device,
        start_time_ms=started_ms,
        end_time_ms=now_ms(),
        history=history if keep_history else {},
        weights=(
            serialize_weights(first.state_dict) if weights and first and first.state_dict else None
        ),
        error=error,
    )


def _mean_history(results: list[TrialResult]) -> dict[str, list[float]]:
    if not results:
        return {m: [] for m in METRICS}
    epochs = min(r.epochs_run for r in results)
    if len(results) == 1:  # the default (one repeat): the mean is the history itself
        history = results[0].history  # its lists shared, not copied: nothing changes them
        return {m: h if len(h := history[m]) == epochs else h[:epochs] for m in METRICS}
    n = len(results)
    return {
        m: [
            sum(values) / n
            for values in zip(*(r.history[m][:epochs] for r in results), strict=True)
        ]
        for m in METRICS
    }


def _mean_accuracy(results: list[TrialResult]) -> dict[str, float]:
    """Classification tasks' final accuracies, averaged over repeats that have them.

    They ride in `final` beside METRICS: tracking stores METRICS per epoch and columns for
    them only, so these extra keys reach the Optuna trial's record (`sweeps check`) and
    whoever reads `final`, without changing the results schema.
    """
    scored = [r.accuracy for r in results if r.accuracy]
    if not scored:
        return {}
    return {k: sum(a[k] for a in scored) / len(scored) for k in scored[0]}


def serialize_weights(state_dict: Mapping[str, Any]) -> bytes:
    """A state_dict as `torch.save` writes it (MLflow keeps it as model_state_dict.pt)."""
    import torch

    buffer = io.BytesIO()
    torch.save(dict(state_dict), buffer)
    return buffer.getvalue()


def repair_info(rec: TrialRecord) -> dict[str, object]:
    """What a told trial keeps of its record (`RECORD_ATTR`), so that `sweeps check
    --repair` can rebuild a lost results row or MLflow run from it."""
    return {
        "state": rec.state.value,
        "params": rec.params,
        "final": rec.final,
        "value": rec.value,
        "duration_s": rec.duration_s,
        "device": rec.device,
        "start_time_ms": rec.start_time_ms,
        "end_time_ms": rec.end_time_ms,
        "error": rec.error,
        "mlflow_run_id": rec.mlflow_run_id,
        "reused_from": rec.reused_from,
    }


def record_from_trial(
    study: str, trial: FrozenTrial, cfg: SweepConfig | None = None
) -> TrialRecord:
    """Rebuild a trial's record from what the objective kept on the Optuna trial.

    A trial whose worker died kept nothing: its config is rebuilt from its parameters.
    """
    kept: dict[str, Any] = trial.user_attrs.get(RECORD_ATTR) or {}
    state = TrialState(trial.state.name)
    params = kept.get("params")
    if params is None and cfg is not None:
        from optuna.trial import FixedTrial

        from sweeps.sampling import suggest

        params = suggest(FixedTrial(trial.params), cfg).as_params()
    if params is None:
        params = {"lambda": 0.0, **trial.params}
    start = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else 0
    end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else start
    error = kept.get("error")
    if not kept and state is TrialState.FAIL:
        error = "worker lost: heartbeat stale"
    return TrialRecord(
        study=study,
        number=trial.number,
        state=state,
        params=params,
        final=kept.get("final") or dict.fromkeys(METRICS),
        value=trial.value if state is TrialState.COMPLETE else None,
        duration_s=float(kept.get("duration_s") or 0.0),
        device=str(kept.get("device") or ""),
        start_time_ms=int(kept.get("start_time_ms") or start),
        end_time_ms=int(kept.get("end_time_ms") or end),
        error=error,
        mlflow_run_id=kept.get("mlflow_run_id"),
        reused_from=kept.get("reused_from"),
    )


def record_from_row(study: str, row: Mapping[str, Any]) -> TrialRecord:
    """A results row back as a (history-less) TrialRecord, for figures and repair."""
    params = {k: row.get(k) for k in ("penalty", "lambda", "l1_ratio", "lr", "epochs", "seed")}
    return TrialRecord(
        study=study,
        number=int(row["number"]),
        state=TrialState(row["state"]),
        params=params,
        final={k: row.get(k) for k in FINAL_METRICS},
        value=row.get("value"),
        duration_s=float(row.get("duration_s") or 0.0),
        device=str(row.get("device") or ""),
        start_time_ms=0,
        end_time_ms=0,
        mlflow_run_id=row.get("mlflow_run_id"),
        error=row.get("error"),
        reused_from=row.get("reused_from"),
    )


def parent_params(cfg: SweepConfig | None, study: str) -> tuple[dict[str, object], str]:
    """The parent run's params (the study's configuration, as `sweeps run` flags) and its
    description."""
    if cfg is None:
        return {}, ""
    params: dict[str, object] = {
        "penalties": ",".join(p.value for p in cfg.penalties),
        "lambda_min": cfg.lambda_min,
        "lambda_max": cfg.lambda_max,
        "lr_min": cfg.lr_min,  # None (left out) unless lr is searched
        "lr_max": cfg.lr_max,
        "sampler": cfg.sampler.value,
        "pruner": cfg.pruner.value,
        "report_every": cfg.checkpoint_every,
        "batch": cfg.batch,
        "repeats": cfg.repeats,
        "history": cfg.history.value,
        **{
            k: v
            for k, v in cfg.base.as_params().items()
            if k not in _PER_TRIAL and not (k == "lr" and cfg.searches_lr)
        },
    }
    lr = f"lr from {cfg.lr_min:g} to {cfg.lr_max:g} (log), " if cfg.searches_lr else ""
    description = (
        f"sweeps study `{study}`: {cfg.base.task}, penalties"
        f" {params['penalties']}, λ from {cfg.lambda_min:g} to {cfg.lambda_max:g} (log), {lr}"
        f"{cfg.sampler.value} sampler, {cfg.pruner.value} pruner, {cfg.base.epochs} epochs."
        " Each child run is one trial; this run holds the λ figure, the trials table and"
        " Optuna's plots when the study ends, and the best trial (tags sweeps.best_*)."
    )
    return {k: v for k, v in params.items() if v is not None}, description


# TrialConfig params that differ per trial (the child runs log them) or per process.
_PER_TRIAL = {"penalty", "lambda", "l1_ratio", "device"}
