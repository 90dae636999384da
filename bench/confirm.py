"""`make bench BENCH_ARGS=--confirm`: what `sweeps confirm` costs beside its training.

A d2l study over none, l2 and l1 (untracked) is confirmed on 10 fresh seeds (3 × 10 =
30 runs in one stack, each member on its own seed's data), and with --fixed-data (one
stack of 30 on the study's data); against it, the bare `trainer.batched.train_batch` of the same 30
configurations in the same stacks, and `trainer.train` one at a time. The confirm is timed
as the library call (`sweeps.confirm_study.confirm_study`: reading the study, training, the
results rows, the statistics); process start-up is not. Prints seconds and ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from trainer.config import TrialConfig

SEEDS = 10


def _study(home: Path, name: str) -> None:
    from sweeps.config import SweepConfig
    from sweeps.runner import run_study
    from sweeps.storage import resolve_stores

    cfg = SweepConfig.from_mapping({"study": name, "penalties": "none,l2,l1", "trials": 12})
    run_study(cfg, resolve_stores(str(home), None, None), track=False, quiet=True)


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def run(repeats: int) -> None:
    import torch

    from sweeps.cli.process import quiet_optuna
    from sweeps.confirm_study import ConfirmOptions, confirm_study
    from sweeps.confirm_train import load_tasks, stacks
    from sweeps.storage import resolve_stores
    from trainer import load_task, train
    from trainer.batched import train_batch

    quiet_optuna()
    torch.set_num_threads(1)
    home = Path(tempfile.mkdtemp(prefix="sweeps-bench-confirm-"))
    stores = resolve_stores(str(home), None, None)
    for fixed in (False, True):
        confirm_s, bare_s, one_s = [], [], []
        for r in range(repeats):
            name = f"c{int(fixed)}-{r}"
            _study(home, name)
            options = ConfirmOptions(seeds=SEEDS, fixed_data=fixed, device="cpu")
            result = None

            def confirm(name: str = name, options: ConfirmOptions = options) -> None:
                nonlocal result
                result = confirm_study(name, stores, options, track=False)

            confirm_s.append(_timed(confirm))
            assert result is not None
            cfgs = _configs(stores, name, result.seeds, fixed)
            tasks = load_tasks(cfgs)
            groups = [[c for _, c in s] for s in stacks([(0, c) for c in cfgs], None, tasks)]
            bare_s.append(_timed(lambda g=groups, t=tasks: [train_batch(s, t) for s in g]))
            one_s.append(_timed(lambda cs=cfgs: [train(c, load_task(c)) for c in cs]))
        c, b, o = min(confirm_s), min(bare_s), min(one_s)
        label = "fixed data" if fixed else "fresh data"
        label += f" ({len(groups)} stack(s) of {len(cfgs) // len(groups)})"
        print(f"confirm 3 penalties × {SEEDS} seeds on d2l, {label}, best of {repeats}:")
        print(f"  sweeps confirm (library call)   {c:7.3f} s")
        print(f"  bare train_batch, same stacks   {b:7.3f} s   confirm / bare = {c / b:.2f}×")
        print(
            f"  train() one at a time           {o:7.3f} s   one at a time / confirm = {o / c:.1f}×"
        )


def _configs(stores: object, name: str, seeds: list[int], fixed: bool) -> list[TrialConfig]:
    """The 30 configurations `confirm_study` trained, rebuilt from its rows."""
    from sweeps.confirm_study import _config
    from sweeps.lookup import open_results
    from sweeps.study import config_from_stored

    store = open_results(stores)  # type: ignore[arg-type]
    try:
        sweep = config_from_stored(store.get_study(name).config)
        trials = {r["number"]: r for r in store.trials(name)}
        chosen = sorted({r["candidate"] for r in store.confirmations(name)})
    finally:
        store.dispose()
    return [_config(sweep, trials[n], s, fixed, "cpu") for n in chosen for s in seeds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.confirm")
    parser.add_argument("--repeats", type=int, default=3)
    run(parser.parse_args(argv).repeats)


if __name__ == "__main__":
    main()
