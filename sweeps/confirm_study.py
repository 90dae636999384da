"""`sweeps confirm`: a study's winners retrained on fresh seeds and compared, paired.

Candidates: each penalty's best `top` COMPLETE trials of distinct configurations (or the
trials named). Seeds: `confirm_seeds`, disjoint from every seed the study trained with.
Seed s drives init and shuffling of every candidate alike and, by default, the data too:
`data_seed = s` (d2l-synthetic draws a new sample, a `python:` task gets it), and for the
tasks that split one table (bundled, csv) `split_seed = s`, a new train/validation/test
permutation (a `--test-csv` file stays the test split); `fixed_data` keeps the study's
data. Every (candidate, seed) is kept like a trial: an MLflow run under the study's parent
run and a results row (`tracking.results.confirmations`); a rerun trains only the pairs
without a row, so a larger `seeds` adds seeds, and runs left by a killed confirm (a run
without its row) are deleted before their pair trains again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeps import killpoints
from sweeps.confirm_options import ConfirmOptions as ConfirmOptions
from sweeps.confirm_report import Confirmation, analyse, candidate_of, confirm_csv
from sweeps.errors import UsageError
from sweeps.storage import Stores
from sweeps.study import config_from_stored
from tracking.records import TrialRecord
from tracking.results.confirmations import Key
from trainer.config import MAX_SEED, TrialConfig
from trainer.task_options import splits_table

if TYPE_CHECKING:
    from sweeps.config import SweepConfig
    from sweeps.recording import Recorder

CONFIRM_CSV = "confirm.csv"
CONFIRM_FIGURE = "confirm.png"
DEFAULT_OPTIONS = ConfirmOptions()  # frozen: one instance serves every call
LOGGED = "confirm_logged"  # kill point: a stack's MLflow runs written, its rows not


def confirm_seeds(study_seed: int, repeats: int, n: int) -> list[int]:
    """The rule: a study with `--seed S --repeats R` trained with seeds S … S+R−1 (and
    data seed S); its confirmation seeds are the next n, S+R … S+R+n−1 (modulo 2³²)."""
    return [(study_seed + repeats + i) % (MAX_SEED + 1) for i in range(n)]


def confirm_study(
    name: str,
    stores: Stores,
    options: ConfirmOptions = DEFAULT_OPTIONS,
    *,
    track: bool = True,
) -> Confirmation:
    """Confirm study `name`'s candidates on fresh seeds (see the module) and compare them.

    Raises:
        UsageError: unknown study or trial, or nothing complete to confirm.
        TrackingError: a store cannot be read or written.
    """
    from sweeps.recording import Recorder

    recorder = Recorder(stores, name, track=track)
    try:
        stored = recorder.results.get_study(name)
        sweep = config_from_stored(stored.config)
        recorder.cfg = sweep
        trials = _candidates(recorder.results.trials(name), options)
        seeds = confirm_seeds(sweep.base.seed, sweep.repeats, options.seeds)
        fixed = options.fixed_data
        configs = {
            (t["number"], s): _config(sweep, t, s, fixed, options.device)
            for t in trials
            for s in seeds
        }
        trained = _train_missing(recorder, name, configs, options.batch)
        rows = {
            (r["candidate"], r["seed"], r["data_seed"]): r
            for r in recorder.results.confirmations(name)
        }
        candidates = [
            candidate_of(
                t,
                seeds,
                {s: rows[_key(t["number"], configs[t["number"], s])] for s in seeds},
                lr_searched=sweep.searches_lr,
            )
            for t in trials
        ]
        note = _data_note(sweep, fixed)
        result = analyse(name, seeds, fixed, note, candidates, trained)
        _attach(recorder, result)
        return result
    finally:
        recorder.close()


def _candidates(rows: list[dict[str, Any]], options: ConfirmOptions) -> list[dict[str, Any]]:
    by_number = {int(r["number"]): r for r in rows}
    if options.trials:
        chosen = []
        for number in dict.fromkeys(options.trials):
            row = by_number.get(number)
            if row is None:
                raise UsageError(f"the study has no finished trial {number}")
            if row["state"] != "COMPLETE":
                raise UsageError(f"trial {number} is {row['state']}: only COMPLETE trials")
            chosen.append(row)
        return chosen
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    complete.sort(key=lambda r: (r["value"], r["number"]))
    chosen, seen, per_penalty = [], set(), dict[str, int]()
    for row in complete:
        config = (row["penalty"], row["lambda"], row["l1_ratio"], row.get("lr"))
        if config in seen or per_penalty.get(row["penalty"], 0) >= options.top:
            continue
        seen.add(config)
        per_penalty[row["penalty"]] = per_penalty.get(row["penalty"], 0) + 1
        chosen.append(row)
    if not chosen:
        raise UsageError("the study has no COMPLETE trial to confirm")
    return sorted(chosen, key=lambda r: int(r["number"]))


def _config(
    sweep: SweepConfig, trial: Mapping[str, Any], seed: int, fixed: bool, device: str | None
) -> TrialConfig:
    """The trial's configuration (the study's, with its searched values) on `seed`."""
    lr = trial.get("lr")
    split = None if fixed or not splits_table(sweep.base.task) else seed
    return sweep.base.replace(
        penalty=trial["penalty"],
        lambda_=float(trial["lambda"] or 0.0),
        l1_ratio=trial["l1_ratio"],
        lr=sweep.base.lr if lr is None else float(lr),
        seed=seed,
        data_seed=sweep.base.seed if fixed else seed,
        split_seed=split,
        device=device or sweep.base.device,
    )


def _data_note(sweep: SweepConfig, fixed_data: bool) -> str:
    if fixed_data:
        return "the study's data (--fixed-data): seeds vary init and shuffling only"
    if splits_table(sweep.base.task) and sweep.base.options.get("test_csv"):
        return "fresh data per seed: each seed its own train/validation split; --test-csv stays"
    if splits_table(sweep.base.task):
        return "fresh data per seed: each seed draws its own train/validation/test split"
    return "fresh data per seed: each seed draws its own data, init and shuffling"


def _key(number: int, cfg: TrialConfig) -> Key:
    return number, cfg.seed, cfg.effective_data_seed


def _train_missing(
    recorder: Recorder,
    study: str,
    configs: Mapping[tuple[int, int], TrialConfig],
    batch: int | None,
) -> int:
    """Train and record the (candidate, seed) pairs without a results row; their runs
    left by a killed confirm are deleted first. Returns how many trained."""
    have = {
        (r["candidate"], r["seed"], r["data_seed"]) for r in recorder.results.confirmations(study)
    }
    missing = {
        _key(number, cfg): (number, cfg)
        for (number, _), cfg in configs.items()
        if _key(number, cfg) not in have
    }
    if not missing:
        return 0
    parent = _parent(recorder)
    if parent is not None:
        assert recorder.mlflow is not None
        runs = recorder.mlflow.confirmation_runs(parent.experiment_id)
        orphans = [run for key in missing for run in runs.get(key, [])]
        if orphans:
            recorder.mlflow.delete_runs(orphans)
    from sweeps.confirm_train import train_pairs

    pairs = list(missing.values())
    for recs in train_pairs(study, pairs, batch=batch, tracked=parent is not None):
        if parent is not None:
            assert recorder.mlflow is not None
            ids = recorder.mlflow.log_confirmations(parent, recs)
            recs = [_with_run(rec, run_id) for rec, run_id in zip(recs, ids, strict=True)]
            killpoints.passing(LOGGED)
        recorder.results.record_confirmations(recs)
    return len(missing)


def _with_run(rec: TrialRecord, run_id: str) -> TrialRecord:
    from dataclasses import replace

    return replace(rec, mlflow_run_id=run_id)


def _parent(recorder: Recorder) -> Any:
    if recorder.mlflow is None:
        return None
    recorder.parent = recorder.find_parent(create=True)
    return recorder.parent


def _attach(recorder: Recorder, result: Confirmation) -> None:
    """confirm.csv and the figure on the study's parent run."""
    if recorder.mlflow is None:
        return
    parent = recorder.parent or recorder.find_parent(create=True)
    if parent is None:
        return
    from tracking.confirm_figure import Column, confirm_figure

    columns = [
        Column(
            c.label,
            c.penalty,
            [v for v in c.values if v is not None],
            c.summary.mean,
            c.summary.ci_low,
            c.summary.ci_high,
            c.search_value,
        )
        for c in result.candidates
        if c.summary is not None
    ]
    files = {CONFIRM_CSV: confirm_csv(result), CONFIRM_FIGURE: confirm_figure(columns)}
    recorder.mlflow.log_files(parent.run_id, files)
